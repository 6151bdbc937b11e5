"""RQ job functions (plain values in, results to the database) and the result notices."""
from __future__ import annotations

import datetime as dt
import logging
import time

import numpy as np
import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError

from server.services.bootstrap import Services
from core.db import Prediction, PredictionImage, unit_of_work, utcnow
from server.web.metrics import WorkerStats
from server.services.predictions import done_key, enqueue
from core.preprocess import from_png, scale

log = logging.getLogger("digitserve.jobs")

TRANSIENT = (OperationalError, redis.ConnectionError, redis.TimeoutError)


class Runtime:
    """What a worker process holds: services and the loaded networks."""

    def __init__(self, services: Services, cache):
        self.services = services
        self.cache = cache
        self.stats = WorkerStats(services.redis, services.settings.redis_prefix)


_runtime: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:  # a job run outside `digitserve worker`: wire up from the environment
        from models.serving import ModelCache
        from server.services.bootstrap import build
        from core.settings import Settings

        services = build(Settings.from_env().with_secret())
        _runtime = Runtime(services, ModelCache(services.registry))
    return _runtime


def notify(services: Services, prediction_id: str, status: str) -> None:
    key = done_key(services, prediction_id)
    pipe = services.redis.pipeline()
    pipe.rpush(key, status)
    pipe.expire(key, 60)
    pipe.execute()


def _ms(delta: dt.timedelta) -> float:
    return round(delta.total_seconds() * 1000, 3)


def run_prediction(prediction_id: str) -> str:
    """Run one prediction; idempotent: a finished prediction is only notified again."""
    rt = runtime()
    services = rt.services
    max_attempts = services.settings.job_retries + 1
    with unit_of_work(services.sessions) as session:
        row = session.get(Prediction, prediction_id)
        if row is None:
            log.warning("prediction %s no longer exists; dropping its job", prediction_id)
            return "missing"
        finished = row.status if row.status in ("succeeded", "failed") else None
        if finished is None:
            row.status = "running"
            row.started_at = utcnow()
            row.attempts += 1
            row.queue_ms = _ms(row.started_at - row.created_at)
            attempts, version_id = row.attempts, row.model_version_id
            pngs = session.scalars(
                select(PredictionImage.preprocessed_png)
                .where(PredictionImage.prediction_id == prediction_id)
                .order_by(PredictionImage.idx)
            ).all()
    if finished is not None:  # delivered again after it finished: the result stands
        notify(services, prediction_id, finished)
        return finished

    try:
        model = rt.cache.get(services.registry.get_by_id(version_id))
        images = scale(np.stack([from_png(png) for png in pngs]))
        started = time.perf_counter()
        probabilities = model.probabilities(images)
        compute = time.perf_counter() - started
        with unit_of_work(services.sessions) as session:
            for idx, probs in enumerate(probabilities):
                image = session.get(PredictionImage, (prediction_id, idx))
                image.digit = int(np.argmax(probs))
                image.confidence = float(probs[image.digit])
                image.probabilities = [round(float(p), 6) for p in probs]
            row = session.get(Prediction, prediction_id)
            row.status = "succeeded"
            row.error = None
            row.finished_at = utcnow()
            row.compute_ms = round(compute * 1000, 3)
        rt.stats.record("succeeded", compute, len(images))
        notify(services, prediction_id, "succeeded")
        return "succeeded"
    except TRANSIENT as exc:
        if attempts < max_attempts:
            log.warning("prediction %s: transient error, will retry: %s", prediction_id, exc)
            raise  # RQ re-queues the job (Retry)
        return fail(services, prediction_id, f"gave up after {attempts} attempts: {exc}", rt.stats)
    except Exception as exc:  # a bad model file, a broken image: retrying cannot help
        log.exception("prediction %s failed", prediction_id)
        return fail(services, prediction_id, f"{type(exc).__name__}: {exc}", rt.stats)


def fail(services: Services, prediction_id: str, message: str, stats: WorkerStats | None = None) -> str:
    with unit_of_work(services.sessions) as session:
        row = session.get(Prediction, prediction_id)
        if row is not None and row.status != "succeeded":
            row.status = "failed"
            row.error = message[:2000]
            row.finished_at = utcnow()
    if stats is not None:
        stats.record("failed")
    notify(services, prediction_id, "failed")
    return "failed"


def _job_pending(services: Services, prediction_id: str) -> bool:
    """Whether the prediction's job is still waiting to be picked up.

    A status of `queued` alone is not enough: a worker moves the job id off the
    queue before it marks the job started, so a worker killed in between leaves a
    `queued` job that is in no queue at all.
    """
    try:
        job = Job.fetch(prediction_id, connection=services.redis, serializer=services.queue.serializer)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status == JobStatus.QUEUED:
        return services.queue.get_job_position(prediction_id) is not None
    return status in (JobStatus.DEFERRED, JobStatus.SCHEDULED)


def sweep(services: Services) -> dict[str, int]:
    """Re-run or fail predictions whose job was lost (a killed worker, a flushed Redis).

    `running` longer than the job timeout means the worker died mid-job; `queued`
    with no job waiting in Redis means the job itself is gone. Either is re-enqueued
    while attempts remain, else marked failed - never left hanging.
    """
    settings = services.settings
    now = utcnow()
    running_cutoff = now - dt.timedelta(seconds=settings.job_timeout + settings.job_stale_after)
    queued_cutoff = now - dt.timedelta(seconds=settings.job_stale_after)
    counts = {"requeued": 0, "failed": 0}
    lock = services.redis.lock(services.key("sweep-lock"), timeout=15, blocking=False)
    if not lock.acquire(blocking=False):
        return counts
    try:
        with unit_of_work(services.sessions) as session:
            stale = session.execute(
                select(Prediction.id, Prediction.status, Prediction.attempts).where(
                    ((Prediction.status == "running") & (Prediction.started_at < running_cutoff))
                    | ((Prediction.status == "queued") & (Prediction.created_at < queued_cutoff))
                )
            ).all()
        for prediction_id, status, attempts in stale:
            if status == "queued" and _job_pending(services, prediction_id):
                continue
            if attempts < settings.job_retries + 1:
                with unit_of_work(services.sessions) as session:
                    row = session.get(Prediction, prediction_id)
                    row.status = "queued"
                # a dead worker may have left the id in RQ's intermediate list; RQ's own
                # cleanup of it, minutes later, would fail the job we are about to queue
                services.redis.lrem(services.queue.intermediate_queue.key, 0, prediction_id)
                enqueue(services, prediction_id)
                counts["requeued"] += 1
            else:
                fail(services, prediction_id, f"the worker was lost {attempts} times while running this")
                counts["failed"] += 1
    except (DBAPIError, redis.RedisError) as exc:
        log.warning("sweep skipped: %s", exc)
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass
    if any(counts.values()):
        log.warning("sweep: %s", counts)
    return counts
