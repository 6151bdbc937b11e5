"""Fault injection: the database refused or black-holed, Redis stopped and restarted, workers killed.

Each test puts a real fault between the platform and a real dependency (a TCP
proxy in front of MariaDB, a private redis-server, real worker processes) and
checks that requests fail fast with 503, that every accepted prediction ends
exactly once, and that the service recovers by itself.
"""
from __future__ import annotations

import dataclasses
import time

import pytest
from webtest import TestApp

from conftest import PASSWORD, login, wait_for_worker, wait_until
from core.db import Prediction, unit_of_work
from core.repositories import predictions as repo
from faults import TcpProxy
from server.queue import TaskQueue
from server.services import predictions
from server.services.bootstrap import build
from server.web.app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture
def db_proxy(settings):
    proxy = TcpProxy("127.0.0.1", 3306)
    yield proxy
    proxy.close()


def app_via(settings, **changes):
    built = build(settings.replace(**changes))
    return TestApp(create_app(built.settings, built)), built


def via_proxy(url: str, proxy: TcpProxy) -> str:
    return url.replace("127.0.0.1:3306", f"127.0.0.1:{proxy.port}")


def assert_503(res):
    assert res.status_int == 503, res.text
    assert res.json["error"]["code"] == "service_unavailable" and int(res.headers["Retry-After"]) >= 1


def test_database_refused_is_503_then_recovers(settings, make_user, registered_mlp, digit_pngs, db_proxy):
    app, built = app_via(settings, database_url=via_proxy(settings.database_url, db_proxy), db_timeout=2)
    try:
        user = login(app, make_user())
        db_proxy.set_mode("refuse")
        for res in (
            app.post_json("/api/v1/users", {"email": "new@example.com", "password": PASSWORD}, expect_errors=True),
            app.get("/api/v1/predictions", expect_errors=True),
            app.post("/api/v1/predictions", upload_files=[("image", "a.png", digit_pngs[1])],
                     headers=user.headers, expect_errors=True),
        ):
            assert_503(res)
        db_proxy.set_mode("forward")
        assert app.get("/api/v1/predictions").status_int == 200
    finally:
        built.close()


def test_database_black_hole_answers_503_within_seconds(settings, make_user, registered_mlp, db_proxy):
    app, built = app_via(settings, database_url=via_proxy(settings.database_url, db_proxy), db_timeout=2)
    try:
        login(app, make_user())
        db_proxy.set_mode("blackhole")
        started = time.monotonic()
        assert_503(app.get("/api/v1/predictions", expect_errors=True))
        assert time.monotonic() - started < 20  # bounded by DB_TIMEOUT, not by the partition
        assert app.get("/healthz").status_int == 200
        db_proxy.set_mode("forward")
        assert app.get("/api/v1/predictions").status_int == 200
    finally:
        built.close()


def test_a_finished_prediction_never_reopens_when_the_sweep_saw_it_stale(services, registered_mlp, digit_pngs,
                                                                        run_jobs, monkeypatch):
    """The sweep snapshots stale rows; one that finishes before the sweep acts on it must stay finished."""
    document, _ = predictions.submit(services, None, predictions.Submission([digit_pngs[3]]))
    with unit_of_work(services.sessions) as session:
        job_id = session.get(Prediction, document["id"]).job_id
    snapshot = [(document["id"], "queued", 0, job_id)]  # what the sweep read while the job still waited
    run_jobs()  # ... and then a worker finished it
    finished = predictions.get(services, None, document["id"])
    assert finished["status"] == "succeeded"
    monkeypatch.setattr(repo, "stale", lambda *args: snapshot)
    assert predictions.sweep(services) == {"requeued": 0, "failed": 0}
    assert predictions.get(services, None, document["id"]) == finished
    assert services.queue.depth() == 0


def test_two_claims_of_one_prediction_run_it_once(services, registered_mlp, digit_pngs):
    document, _ = predictions.submit(services, None, predictions.Submission([digit_pngs[5]]))
    with unit_of_work(services.sessions) as session:
        (first,) = repo.claim(session, [document["id"]], "worker-a")
    with unit_of_work(services.sessions) as session:
        second = repo.claim(session, [document["id"]], "worker-b")
    assert first.attempt == 1 and second == []
    with unit_of_work(services.sessions) as session:
        assert repo.succeed(session, [first], [[[0.0] * 5 + [1.0] + [0.0] * 4]], 1.0) == [first]
    with unit_of_work(services.sessions) as session:  # a stale attempt can neither finish nor fail it again
        assert not repo.succeed(session, [first], [[[1.0] + [0.0] * 9]], 1.0)
        assert not repo.fail(session, document["id"], "late")
        assert not repo.release(session, document["id"], "running", 1)
    assert predictions.get(services, None, document["id"])["results"][0]["digit"] == 5


def test_a_batch_finishes_only_the_attempts_still_running(services, registered_mlp, digit_pngs):
    ids = [predictions.submit(services, None, predictions.Submission([digit_pngs[d]]))[0]["id"] for d in (1, 2, 3)]
    with unit_of_work(services.sessions) as session:
        claims = repo.claim(session, ids, "worker-a")
    assert [c.prediction_id for c in claims] == ids
    with unit_of_work(services.sessions) as session:  # the middle one is failed meanwhile (a sweep, say)
        assert repo.fail(session, ids[1], "lost", claims[1].attempt)
    one_hot = [[[1.0 if d == digit else 0.0 for d in range(10)]] for digit in (1, 2, 3)]
    with unit_of_work(services.sessions) as session:
        done = repo.succeed(session, claims, one_hot, 2.0)
    assert [c.prediction_id for c in done] == [ids[0], ids[2]]
    documents = [predictions.get(services, None, pid) for pid in ids]
    assert [d["status"] for d in documents] == ["succeeded", "failed", "succeeded"]
    assert documents[0]["results"][0]["digit"] == 1 and documents[2]["results"][0]["digit"] == 3
    assert documents[1]["results"] == [] and documents[1]["error"] == "lost"


def test_the_answer_to_a_submission_is_the_stored_prediction(services, registered_mlp, digit_pngs):
    """Built from what was just stored, not read back: it must be what a GET reads."""
    document, created = predictions.submit(services, None, predictions.Submission([digit_pngs[3], digit_pngs[8]]))
    assert created and document["status"] == "queued"
    assert document == predictions.get(services, None, document["id"])


def test_the_result_notice_is_the_stored_prediction(services, registered_mlp, digit_pngs, run_jobs):
    """Waiting requests get the document the worker built in memory: it must be what a GET reads."""
    ids = [predictions.submit(services, None, predictions.Submission([digit_pngs[d], digit_pngs[9]]))[0]["id"]
           for d in (4, 7)]
    run_jobs()
    for pid in ids:
        notice = services.queue.wait(pid, 1)
        assert notice["document"] == predictions.get(services, None, pid)
        assert notice["document"]["timings"]["queue_ms"] is not None


@pytest.mark.parametrize("persistent", [False, True], ids=["empty-after-restart", "append-only-file"])
def test_worker_survives_a_redis_outage_and_registers_again(settings, registered_mlp, digit_pngs, start_worker,
                                                          private_redis, persistent):
    """Redis stops mid-burst and comes back (empty, or from its append-only file): the worker keeps
    going, /readyz sees it again, and every prediction succeeds."""
    if persistent:
        private_redis.stop()
        private_redis.start(persistent=True)
    local = settings.replace(redis_url=private_redis.url)
    services = build(local)
    try:
        worker = start_worker(REDIS_URL=private_redis.url)
        wait_for_worker(services)
        ids = [predictions.submit(services, None, predictions.Submission([digit_pngs[d % 10]]))[0]["id"]
               for d in range(20)]
        private_redis.stop()
        time.sleep(2)
        private_redis.start(persistent=persistent)
        assert worker.alive(), worker.tail()
        wait_for_worker(services, 30)  # registered again: readiness sees a live worker
        impatient = dataclasses.replace(services, settings=local.replace(job_stale_after=1))
        time.sleep(1.1)
        predictions.sweep(impatient)  # lost jobs queued again

        def statuses():
            with unit_of_work(services.sessions) as session:
                return [session.get(Prediction, pid).status for pid in ids]

        wait_until(lambda: all(s == "succeeded" for s in statuses()), 120, 0.5, "every prediction to succeed")
        assert worker.alive()
    finally:
        services.close()


def test_a_killed_workers_job_runs_again_within_seconds_not_the_job_timeout(services, registered_mlp, digit_pngs,
                                                                           start_worker):
    """Heartbeats tell the sweeper a worker died: its job is re-run long before JOB_TIMEOUT (60 s here)."""
    import signal

    ids = [predictions.submit(services, None, predictions.Submission([digit_pngs[d % 10]]))[0]["id"]
           for d in range(30)]

    def statuses():
        with unit_of_work(services.sessions) as session:
            return {pid: session.get(Prediction, pid).status for pid in ids}

    first = start_worker(JOB_TIMEOUT="60", JOB_STALE_AFTER="30", WORKER_HEARTBEAT_TTL="3")
    wait_until(lambda: "succeeded" in statuses().values(), 90, 0.02, "a first result")
    first.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    assert "succeeded" in statuses().values() and set(statuses().values()) != {"succeeded"}
    start_worker(JOB_TIMEOUT="60", JOB_STALE_AFTER="30", WORKER_HEARTBEAT_TTL="3")
    wait_until(lambda: set(statuses().values()) == {"succeeded"}, 60, 0.2, "every prediction to succeed")
    assert time.monotonic() - killed_at < 60  # recovery did not wait for the job timeout
    documents = [predictions.get(services, None, pid) for pid in ids]
    assert all(1 <= d["attempts"] <= 2 for d in documents)
    assert sum(d["results"][0]["digit"] == i % 10 for i, d in enumerate(documents)) >= 27


def test_metrics_on_a_port_of_their_own(settings, registered_mlp, tmp_path):
    """METRICS_PORT serves /metrics alone while the web port keeps it off."""
    import urllib.error
    import urllib.request

    from conftest import process_env
    from server.cli.processes import Subcommand, free_port

    web_port, metrics_port = free_port(), free_port()
    web = Subcommand(["serve"], process_env(settings.replace(port=web_port), METRICS_PORT=metrics_port),
                     tmp_path / "web.log")
    try:
        def up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).status == 200
            except OSError:
                return False

        wait_until(up, 60, 0.3, "the metrics port")
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "digitserve_http_requests_total" in text
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5)
        assert refused.value.code == 404
    finally:
        web.stop()
        print(web.tail())


def test_sigterm_to_a_busy_worker_finishes_its_job_and_loses_nothing(services, registered_mlp, digit_pngs,
                                                                    start_worker):
    import signal

    ids = [predictions.submit(services, None, predictions.Submission([digit_pngs[d % 10]]))[0]["id"]
           for d in range(30)]

    def statuses():
        with unit_of_work(services.sessions) as session:
            return [session.get(Prediction, pid).status for pid in ids]

    first = start_worker()
    wait_until(lambda: "succeeded" in statuses(), 90, 0.02, "a first result")
    assert first.stop(signal.SIGTERM) == 0  # a warm shutdown: the job in hand finishes
    assert "running" not in statuses()
    start_worker()
    wait_until(lambda: set(statuses()) == {"succeeded"}, 90, 0.2, "every prediction to succeed")


def test_sigterm_to_the_web_server_under_load(settings, registered_mlp, digit_pngs, start_worker, tmp_path,
                                              make_user):
    """Every prediction the server accepted before it stopped is answered in the end."""
    import signal
    import threading

    from conftest import process_env
    from server.cli.client import Client, ClientError
    from server.cli.processes import Subcommand, free_port

    port = free_port()
    live = settings.replace(port=port)
    web = Subcommand(["serve"], process_env(live), tmp_path / "web.log")
    start_worker()
    services = build(live)
    try:
        wait_until(lambda: _ready(f"http://127.0.0.1:{port}/healthz"), 60, 0.3, "the web server")
        email = make_user()
        app, _ = app_via(live)
        key = login(app, email).create_key()
        client = Client(f"http://127.0.0.1:{port}", key_id=key[0], secret=key[1])
        accepted, stop = [], threading.Event()

        def load():
            while not stop.is_set():
                try:
                    accepted.append(client.submit([digit_pngs[7]])["id"])
                except (ClientError, OSError):
                    pass  # refused or cut while stopping: never accepted

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(accepted) >= 10, 60, 0.1, "some accepted predictions")
        assert web.stop(signal.SIGTERM) == 0
        stop.set()
        for thread in threads:
            thread.join(30)

        def all_done():
            with unit_of_work(services.sessions) as session:
                return all(session.get(Prediction, pid).status == "succeeded" for pid in accepted)

        wait_until(all_done, 90, 0.3, "every accepted prediction to succeed")
    finally:
        web.stop()
        services.close()


def _ready(url: str) -> bool:
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def test_sigterm_stops_a_worker_waiting_for_redis(settings, registered_mlp, start_worker, private_redis):
    """Compose stops Redis and the workers together: a worker retrying Redis must still stop on SIGTERM."""
    import signal

    services = build(settings.replace(redis_url=private_redis.url))
    try:
        worker = start_worker(REDIS_URL=private_redis.url)
        wait_for_worker(services)
        private_redis.stop()
        wait_until(lambda: worker.output().count("could not connect to Redis") >= 2, 60, 0.5, "Redis retries")
        started = time.monotonic()
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
        assert time.monotonic() - started < 15
    finally:
        services.close()


def test_a_job_over_its_timeout_fails_once_and_the_worker_carries_on(services, registered_mlp, digit_pngs,
                                                                     start_worker, tmp_path):
    """A network too slow for JOB_TIMEOUT: the prediction fails once, with the reason; the worker lives on."""
    import keras

    slow = keras.Sequential([
        keras.Input((28, 28)), keras.layers.Reshape((28, 28, 1)), keras.layers.UpSampling2D(40),
        keras.layers.Conv2D(32, 9), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    path = tmp_path / "slow.keras"
    slow.save(path)
    services.registry.register("slow", "cnn", path, activate=True)
    worker = start_worker(JOB_RETRIES="0")
    wait_for_worker(services, 120)
    # a job's time limit is set where it is queued
    strict = services.settings.replace(job_timeout=1, job_retries=0)
    hurried = dataclasses.replace(services, settings=strict,
                                  queue=TaskQueue(strict, services.redis, services.queue.blocking))
    hurried.admission = type(services.admission)(strict, services.sessions, hurried.queue)
    late = predictions.submit(hurried, None, predictions.Submission([digit_pngs[1]] * 16, model="slow"))[0]["id"]
    wait_until(lambda: predictions.get(services, None, late)["status"] == "failed", 90, 0.5,
               "the slow job to fail")
    failed = predictions.get(services, None, late)
    assert "timeout" in failed["error"].lower() and failed["attempts"] == 1
    assert worker.alive()
    quick = predictions.submit(services, None, predictions.Submission([digit_pngs[2]], model="mlp", wait=30))[0]
    assert quick["status"] == "succeeded"
    assert predictions.get(services, None, late) == failed  # and it stays failed
