"""Real worker processes against the real MariaDB and Redis."""
import dataclasses
import datetime as dt
import signal

import pytest
from rq.job import Job

from conftest import wait_for_worker, wait_until
from core.db import Prediction, unit_of_work, utcnow
from server.queue import jobs
from server.services import predictions

pytestmark = pytest.mark.slow


def status_of(services, prediction_id):
    with unit_of_work(services.sessions) as session:
        return session.get(Prediction, prediction_id).status


def submit(services, png, model=None, wait=0.0):
    document, created = predictions.submit(services, None, predictions.Submission([png], model=model, wait=wait))
    assert created
    return document


def all_succeeded(services, ids):
    return all(status_of(services, pid) == "succeeded" for pid in ids)


def test_submit_queued_then_succeeded_by_a_worker_process(services, registered_mlp, digit_pngs, start_worker):
    document = submit(services, digit_pngs[2])
    assert document["status"] == "queued"
    start_worker()
    wait_until(lambda: status_of(services, document["id"]) == "succeeded", 90, what="the job to finish")
    done = predictions.get(services, None, document["id"])
    assert done["results"][0]["digit"] == 2
    assert done["attempts"] == 1


def test_wait_blocks_on_the_result_notice(services, registered_mlp, digit_pngs, start_worker):
    start_worker()
    wait_for_worker(services)
    document = submit(services, digit_pngs[6], wait=20)
    assert document["status"] == "succeeded" and document["results"][0]["digit"] == 6


def test_worker_killed_mid_queue_loses_nothing(services, registered_mlp, digit_pngs, start_worker):
    ids = [submit(services, digit_pngs[d % 10])["id"] for d in range(40)]
    first = start_worker(JOB_TIMEOUT="3", JOB_STALE_AFTER="3")
    wait_until(lambda: any(status_of(services, pid) == "succeeded" for pid in ids), 90, 0.02, "a first result")
    first.stop(signal.SIGKILL)  # no warm shutdown: whatever it was running is orphaned
    assert not all_succeeded(services, ids), "the worker finished everything before it was killed"
    start_worker(JOB_TIMEOUT="3", JOB_STALE_AFTER="3")
    wait_until(lambda: all_succeeded(services, ids), 120, 0.2, "every prediction to succeed")
    digits = [predictions.get(services, None, pid)["results"][0]["digit"] for pid in ids]
    assert sum(d == i % 10 for i, d in enumerate(digits)) >= 36


def test_activating_a_new_version_switches_without_restart(services, registered_mlp, tiny_mlp_file, digit_pngs,
                                                           start_worker):
    worker = start_worker()
    wait_for_worker(services)
    assert submit(services, digit_pngs[1], wait=20)["model"]["version"] == 1
    services.registry.register("mlp", "mlp", tiny_mlp_file, activate=True)
    wait_until(lambda: "loaded mlp:2 (newly active)" in worker.output(), 30, 0.2, "the worker to load mlp:2")
    document = submit(services, digit_pngs[1], wait=20)
    assert document["status"] == "succeeded"
    assert document["model"] == {"name": "mlp", "version": 2}
    assert worker.popen.poll() is None
    pinned = submit(services, digit_pngs[1], model="mlp:1", wait=20)
    assert pinned["model"]["version"] == 1 and pinned["status"] == "succeeded"


def test_a_job_run_twice_writes_one_result(services, registered_mlp, digit_pngs, run_jobs):
    document = submit(services, digit_pngs[9])
    run_jobs()
    first = predictions.get(services, None, document["id"])
    assert jobs.run_predictions([document["id"]]) == {document["id"]: "succeeded"}  # the job delivered again
    again = predictions.get(services, None, document["id"])
    assert again == first and again["attempts"] == 1


def test_sweep_requeues_lost_jobs_and_fails_exhausted_ones(services, registered_mlp, digit_pngs, run_jobs):
    lost = submit(services, digit_pngs[4])["id"]
    exhausted = submit(services, digit_pngs[5])["id"]
    services.queue.empty()  # both jobs vanish, as after a Redis restart or a killed worker
    long_ago = utcnow() - dt.timedelta(minutes=10)
    with unit_of_work(services.sessions) as session:
        row = session.get(Prediction, lost)
        row.status, row.started_at, row.attempts = "running", long_ago, 1
        row = session.get(Prediction, exhausted)
        row.created_at, row.attempts = long_ago, services.settings.job_retries + 1
    assert predictions.sweep(services) == {"requeued": 1, "failed": 1}
    assert status_of(services, exhausted) == "failed"
    assert "lost" in predictions.get(services, None, exhausted)["error"]
    run_jobs()
    assert status_of(services, lost) == "succeeded"
    assert predictions.sweep(services) == {"requeued": 0, "failed": 0}


def test_sweep_requeues_a_job_its_worker_took_off_the_queue_before_dying(services, registered_mlp, digit_pngs,
                                                                         run_jobs):
    taken, waiting = (submit(services, digit_pngs[d])["id"] for d in (7, 8))
    long_ago = utcnow() - dt.timedelta(minutes=10)
    with unit_of_work(services.sessions) as session:
        for pid in (taken, waiting):
            session.get(Prediction, pid).created_at = long_ago
    # what a worker does first when it takes a job: move its id to RQ's intermediate list
    # (the job still says `queued`); the worker is killed before it marks the job started
    with unit_of_work(services.sessions) as session:
        taken_job, waiting_job = (session.get(Prediction, pid).job_id for pid in (taken, waiting))
    rq_queue = services.queue.rq
    moved = services.redis.lmove(rq_queue.key, rq_queue.intermediate_queue.key)
    assert moved.decode() == taken_job
    assert Job.fetch(taken_job, connection=services.redis, serializer=rq_queue.serializer).get_status() == "queued"
    # the job still waiting in the queue is left alone: re-queueing it would only run it twice
    assert predictions.sweep(services) == {"requeued": 1, "failed": 0}
    assert rq_queue.job_ids == [waiting_job, taken]  # re-queued alone, under its own id
    assert rq_queue.intermediate_queue.get_job_ids() == []
    run_jobs()
    assert all_succeeded(services, [taken, waiting])


def test_a_broken_model_file_fails_the_prediction_with_a_reason(services, digit_pngs, run_jobs, tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a keras file")
    services.registry.register("mlp", "mlp", broken, activate=True)
    document = submit(services, digit_pngs[0])
    run_jobs()
    failed = predictions.get(services, None, document["id"])
    assert failed["status"] == "failed" and failed["error"]


def test_worker_metrics_are_shared_through_redis(services, registered_mlp, digit_pngs, run_jobs):
    from webtest import TestApp

    from server.web.app import create_app

    submit(services, digit_pngs[3])
    run_jobs()
    settings = services.settings.replace(metrics="open")
    app = TestApp(create_app(settings, dataclasses.replace(services, settings=settings)))
    text = app.get("/metrics").text
    assert 'digitserve_jobs_total{outcome="succeeded"} 1.0' in text
    assert "digitserve_inference_seconds_count 1.0" in text
    assert 'digitserve_batch_size_bucket{le="1.0"} 1.0' in text


def test_predictions_arriving_together_share_a_job_and_an_inference_call(services, registered_mlp, digit_pngs,
                                                                       run_jobs):
    """Admission groups concurrent submissions; each prediction still gets its own row and result."""
    import threading

    batching = dataclasses.replace(services, settings=services.settings.replace(batch_max_wait_ms=200))
    batching.admission = type(services.admission)(batching.settings, services.sessions, services.queue)
    documents, barrier = [], threading.Barrier(12)

    def one(digit):
        barrier.wait()
        documents.append(predictions.submit(batching, None, predictions.Submission([digit_pngs[digit]]))[0])

    threads = [threading.Thread(target=one, args=(d % 10,)) for d in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with unit_of_work(services.sessions) as session:
        job_ids = {session.get(Prediction, d["id"]).job_id for d in documents}
    assert len(documents) == 12 and len(job_ids) < 12
    assert services.queue.depth() == len(job_ids)
    run_jobs()
    done = [predictions.get(services, None, d["id"]) for d in documents]
    assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in done)
    raw = services.redis.hgetall(f"{services.settings.redis_prefix}metrics:batch_size")
    assert float(raw[b"count"]) == len(job_ids)  # one inference call per job
    assert float(raw.get(b"le:1", 0)) < len(job_ids)  # some calls carried several images


def test_a_reused_idempotency_key_inside_one_batch(services, registered_mlp, digit_pngs):
    import threading

    from conftest import PASSWORD
    from server.services.accounts import create_user

    user_id = create_user(services, "batch-idempotency@example.com", PASSWORD)["id"]
    batching = dataclasses.replace(services, settings=services.settings.replace(batch_max_wait_ms=200))
    batching.admission = type(services.admission)(batching.settings, services.sessions, services.queue)
    results, barrier = [], threading.Barrier(4)

    def one(key, digit):
        barrier.wait()
        results.append(predictions.submit(batching, user_id, predictions.Submission(
            [digit_pngs[digit]], idempotency_key=key)))

    args = [("same-key", 1), ("same-key", 1), ("other-a", 2), ("other-b", 3)]
    threads = [threading.Thread(target=one, args=a) for a in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 4
    created = [doc for doc, was_created in results if was_created]
    assert len(created) == 3  # the second "same-key" got the first one's prediction back
    assert len({doc["id"] for doc, _ in results}) == 3


def test_get_with_wait_long_polls_on_the_result_notice(account, registered_mlp, digit_pngs, start_worker, services):
    res = account.app.post("/api/v1/predictions", upload_files=[("image", "a.png", digit_pngs[3])],
                           headers=account.headers)
    assert res.status_int == 202 and res.json["status"] == "queued"
    assert account.app.get(f"/api/v1/predictions/{res.json['id']}?wait=0.2").json["status"] == "queued"
    start_worker()
    done = account.app.get(f"/api/v1/predictions/{res.json['id']}?wait=30").json
    assert done["status"] == "succeeded" and done["results"][0]["digit"] == 3
    bad = account.app.get(f"/api/v1/predictions/{res.json['id']}?wait=31", expect_errors=True)
    assert bad.status_int == 400
