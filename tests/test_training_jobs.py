"""Training jobs started from the API run on a real training worker (`digitserve worker --queue training`),
report their progress per epoch and can be cancelled, queued or running."""
import signal

import pytest

from conftest import login, process_env, wait_until
from core.db import unit_of_work
from core.repositories import training as repo
from server.cli.processes import Subcommand
from server.services import training

@pytest.fixture
def training_worker(settings, tmp_path):
    started = []

    def start() -> Subcommand:
        process = Subcommand(["worker", "--queue", "training"], process_env(settings), tmp_path / "training.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        print(f"--- {process.log_path.name} ---\n{process.output()[-20000:]}")


def job(services, job_id):
    """Polled through the use case the handler calls: polling through the API would meet the rate limit."""
    return training.get(services, job_id)


@pytest.mark.slow
def test_jobs_run_on_the_training_worker_with_progress_and_cancel(app, services, make_user, account,
                                                                  training_worker):
    body = {"kind": "train", "family": "softmax", "limit": 1000, "epochs": 3, "seed": 1}
    assert app.post_json("/api/v1/training-jobs", body, headers=account.headers,
                         expect_errors=True).status_int == 403  # admins only
    admin = login(app, make_user(role="admin"))
    post = lambda payload, **kw: app.post_json("/api/v1/training-jobs", payload, headers=admin.headers, **kw)  # noqa: E731
    assert post({"kind": "fly"}, expect_errors=True).json["error"]["code"] == "bad_kind"
    assert post({"kind": "train", "family": "svm"}, expect_errors=True).status_int == 400
    assert post({"kind": "train", "family": "mlp", "epochs": 0}, expect_errors=True).status_int == 400
    assert post({"kind": "retrain", "name": "nope"}, expect_errors=True).status_int == 404
    assert app.get("/api/v1/training-jobs/0123456789abcdef", expect_errors=True).status_int == 404

    # cancelled while queued: it never starts
    queued = post({**body, "name": "never"})
    assert queued.status_int == 202 and queued.headers["Location"].endswith(queued.json["id"])
    never = app.post(f"/api/v1/training-jobs/{queued.json['id']}/cancel", headers=admin.headers).json
    assert never["status"] == "cancelled" and never["started_at"] is None

    worker = training_worker()
    done = post(body).json
    finished = wait_until(lambda: (j := job(services, done["id"]))["status"] in ("succeeded", "failed") and j,
                          180, 0.3, "the training job to finish")
    assert finished["status"] == "succeeded", finished["error"]
    assert app.get(f"/api/v1/training-jobs/{done['id']}").json == finished  # what the API shows
    epochs = [p for p in finished["progress"] if p["type"] == "epoch"]
    assert [p["epoch"] for p in epochs] == [1, 2, 3] and all(0 <= p["val_accuracy"] <= 1 for p in epochs)
    assert finished["worker"] and finished["started_at"] and finished["finished_at"]
    version = services.registry.get("softmax", 1)
    assert finished["result"]["model"] == {"name": "softmax", "version": 1, "family": "softmax", "active": False}
    assert finished["result"]["test_accuracy"] == version.test_accuracy > 0.5
    assert version.curves["val_accuracy"] == pytest.approx([p["val_accuracy"] for p in epochs], abs=1e-6)

    # cancelled while running: it stops at the end of an epoch and registers nothing
    long = post({"kind": "train", "family": "mlp", "name": "long", "limit": 2000, "epochs": 500, "seed": 0}).json
    wait_until(lambda: len(job(services, long["id"])["progress"]) >= 2, 120, 0.2, "the long job's first epochs")
    running = app.get(f"/api/v1/training-jobs/{long['id']}").json
    assert running["status"] == "running" and running["progress"][0]["epochs"] == 500
    assert app.post(f"/api/v1/training-jobs/{long['id']}/cancel", headers=admin.headers).json["cancel_requested"]
    cancelled = wait_until(lambda: (j := job(services, long["id"]))["status"] != "running" and j, 60, 0.2,
                           "the running job to stop")
    assert cancelled["status"] == "cancelled" and "stopped after epoch" in cancelled["error"]
    assert 2 <= len(cancelled["progress"]) < 500
    assert services.registry.list("long") == []

    # a search reports its generations as they finish
    search = post({"kind": "tune", "family": "softmax", "name": "soft-ga", "population": 2, "generations": 2,
                   "epochs": 1, "limit": 300, "seed": 2}).json
    searched = wait_until(lambda: (j := job(services, search["id"]))["status"] in ("succeeded", "failed") and j,
                          180, 0.3, "the search job to finish")
    assert searched["status"] == "succeeded", searched["error"]
    generations = [p for p in searched["progress"] if p["type"] == "generation"]
    assert [g["generation"] for g in generations] == [1, 2]
    assert searched["result"]["search"]["history"][-1]["best"] == generations[-1]["best"]
    assert searched["result"]["model"]["active"] is False

    listed = app.get("/api/v1/training-jobs").json["jobs"]
    assert [j["id"] for j in listed] == [search["id"], long["id"], done["id"], queued.json["id"]]
    assert listed[2]["epochs_done"] == 3 and "progress" not in listed[2]
    assert job(services, queued.json["id"])["started_at"] is None  # the worker skipped the cancelled job
    assert worker.alive()

    # a worker asked to stop (SIGTERM) hands its running job back to the queue at the end of the epoch
    handed = post({"kind": "train", "family": "mlp", "name": "handed", "limit": 2000, "epochs": 500}).json
    wait_until(lambda: len(job(services, handed["id"])["progress"]) >= 1, 120, 0.2, "the job's first epoch")
    assert worker.stop(signal.SIGTERM) == 0
    back = job(services, handed["id"])
    assert back["status"] == "queued" and back["worker"] is None and back["progress"][-1]["type"] == "requeued"
    assert services.training_queue.rq.job_ids == [f"{handed['id']}-r1"]
    assert services.registry.list("handed") == []
    assert app.post(f"/api/v1/training-jobs/{handed['id']}/cancel", headers=admin.headers).json["status"] == "cancelled"


def test_a_job_left_running_by_a_lost_training_worker_is_failed(services):
    with unit_of_work(services.sessions) as session:
        lost, alive = (repo.create(session, "train", {"family": "softmax"}, None).id for _ in range(2))
    with unit_of_work(services.sessions) as session:
        assert repo.start(session, lost, "ghost") and repo.start(session, alive, "busy")
    services.training_queue.heartbeat("busy")
    assert training.fail_lost(services) == 1
    gone = training.get(services, lost)
    assert gone["status"] == "failed" and "ghost" in gone["error"] and gone["finished_at"]
    assert training.get(services, alive)["status"] == "running"


def test_cli_queue_submits_instead_of_training(cli_env, services, capsys):
    from server.cli.main import build_parser, main

    assert main(["train", "softmax", "--limit", "1000", "--epochs", "1", "--queue"]) == 0
    out = capsys.readouterr().out
    jobs = training.listing(services)["jobs"]
    assert len(jobs) == 1 and jobs[0]["id"] in out and "digitserve worker --queue training" in out
    assert jobs[0]["status"] == "queued" and jobs[0]["created_by"] is None
    assert jobs[0]["spec"] == {"family": "softmax", "name": "softmax", "epochs": 1, "limit": 1000, "seed": 0,
                               "batch_size": None, "activate": False, "with_feedback": False}
    assert services.training_queue.rq.job_ids == [jobs[0]["id"]]
    assert services.queue.rq.job_ids == []  # never on the predictions' queue
    assert main(["retrain", "nope", "--queue"]) == 1  # validated like the API before anything is queued
    assert "no model named 'nope'" in capsys.readouterr().err
    assert main(["tune", "x", "--family", "mlp", "--population", "1", "--queue"]) == 1
    assert "population" in capsys.readouterr().err
    assert build_parser().parse_args(["worker", "--queue", "training"]).queue == "training"
