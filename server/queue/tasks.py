"""The task queue: the one place that knows RQ.

Everything else asks this seam to enqueue a prediction, tell the depth, say
whether a prediction's job still waits, count live workers, send and wait
for result notices, and run a worker loop. A job is an RQ job (JSON
serializer) carrying the ids of one or more predictions admitted together;
its function, `server.queue.jobs.run_predictions`, hands them to the
handler the worker process installed.
"""
from __future__ import annotations

import _thread
import json
import logging
import threading
import time

import redis
from rq import Queue, Retry, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.worker import WorkerStatus
from rq.serializers import JSONSerializer

from core.settings import Settings

JOB_FUNCTION = "server.queue.jobs.run_predictions"
TRAINING_FUNCTION = "server.queue.jobs.run_training"
# RQ's worker registration TTL; it blocks on the queue for this less 15 s, so a hung Redis is
# noticed within about half a minute
WORKER_TTL = 45
log = logging.getLogger("digitserve.queue")


class TaskQueue:
    def __init__(self, settings: Settings, connection: redis.Redis, blocking: redis.Redis, name: str | None = None):
        """`blocking` serves the result waits only: its reads may take up to MAX_WAIT. `name` is the
        queue's (default QUEUE_NAME, the predictions'; TRAINING_QUEUE_NAME for training jobs)."""
        self.settings = settings
        self.connection = connection
        self.blocking = blocking
        self.rq = Queue(name or settings.queue_name, connection=connection, serializer=JSONSerializer)
        # set when this process's worker is asked to stop (SIGTERM): a long job may end early and go back
        self.stopping = threading.Event()

    @property
    def name(self) -> str:
        return self.rq.name

    def depth(self) -> int:
        return self.rq.count

    def busy(self) -> bool:
        """Whether a job sent now would have to wait: one is already waiting, or every live
        worker is running one (one round trip)."""
        pipe = self.connection.pipeline(transaction=False)
        pipe.llen(self.rq.key)
        pipe.zcard(self.rq.started_job_registry.key)
        pipe.zcount(self._workers_key, time.time() - self.settings.worker_heartbeat_ttl, "+inf")
        waiting, running, workers = pipe.execute()
        return waiting > 0 or running >= max(1, workers)

    def enqueue(self, job_id: str, prediction_ids: list[str]) -> None:
        """One job for predictions admitted together (a batch of one is fine)."""
        settings = self.settings
        self.rq.enqueue_call(
            JOB_FUNCTION,
            args=(list(prediction_ids),),
            job_id=job_id,
            timeout=settings.job_timeout,
            result_ttl=settings.result_ttl,
            failure_ttl=24 * 3600,
            retry=Retry(max=settings.job_retries) if settings.job_retries else None,
        )

    def enqueue_training(self, job_id: str, restart: int = 0) -> None:
        """One training job (its spec is in the database), with the long training timeout and no retry:
        a failed run is reported, not repeated. A job handed back by a stopping worker goes on again
        under a queue job id of its own (`restart` > 0)."""
        settings = self.settings
        self.rq.enqueue_call(
            TRAINING_FUNCTION,
            args=(job_id,),
            job_id=job_id if not restart else f"{job_id}-r{restart}",
            timeout=settings.training_job_timeout,
            result_ttl=settings.result_ttl,
            failure_ttl=24 * 3600,
        )

    def discard(self, job_id: str) -> None:
        """Take a job that has not started off the queue (a cancelled one); gone already is fine."""
        try:
            Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer).cancel()
        except NoSuchJobError:
            pass

    def requeue_lost(self, prediction_id: str, lost_job_id: str | None) -> None:
        """Enqueue a lost prediction again, alone, under its own id.

        A dead worker may have left the lost job in RQ's intermediate list; RQ's own
        cleanup of it, minutes later, would fail that job while we re-run its work.
        """
        if lost_job_id:
            self.connection.lrem(self.rq.intermediate_queue.key, 0, lost_job_id)
        self.enqueue(prediction_id, [prediction_id])

    def is_pending(self, job_id: str | None) -> bool:
        """Whether a job still waits to be picked up.

        A status of `queued` alone is not enough: a worker moves the job id off the
        queue before it marks the job started, so a worker killed in between leaves a
        `queued` job that is in no queue at all.
        """
        if not job_id:
            return False
        try:
            job = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return False
        status = job.get_status(refresh=False)
        if status == JobStatus.QUEUED:
            return self.rq.get_job_position(job_id) is not None
        return status in (JobStatus.DEFERRED, JobStatus.SCHEDULED)

    # -- worker heartbeats ----------------------------------------------------------------------
    # The platform's own registry, a sorted set of worker name -> last beat: it outlives a
    # Redis restart (the next beat writes it again), unlike RQ's, which is written once at start.

    @property
    def _workers_key(self) -> str:
        return f"{self.settings.redis_prefix}workers:{self.name}"

    def heartbeat(self, worker: str) -> None:
        now = time.time()
        pipe = self.connection.pipeline()
        pipe.zadd(self._workers_key, {worker: now})
        pipe.zremrangebyscore(self._workers_key, 0, now - 3600)
        pipe.execute()

    def forget_worker(self, worker: str) -> None:
        self.connection.zrem(self._workers_key, worker)

    def live_workers(self) -> int:
        return self.connection.zcount(self._workers_key, time.time() - self.settings.worker_heartbeat_ttl, "+inf")

    def worker_alive(self, worker: str) -> bool:
        beat = self.connection.zscore(self._workers_key, worker)
        return beat is not None and beat >= time.time() - self.settings.worker_heartbeat_ttl

    # -- result notices ------------------------------------------------------------------------

    def _notice_key(self, prediction_id: str) -> str:
        return f"{self.settings.redis_prefix}done:{prediction_id}"

    def notify(self, notices: dict[str, dict]) -> None:
        """Tell whoever waits on these predictions that they finished: prediction id -> notice
        (`{"status": ..., "document": ...}`, the result itself when the sender has it). Notices expire."""
        pipe = self.connection.pipeline()
        for prediction_id, notice in notices.items():
            key = self._notice_key(prediction_id)
            pipe.rpush(key, json.dumps(notice, separators=(",", ":")))
            pipe.expire(key, self.settings.notice_ttl)
        pipe.execute()

    def wait(self, prediction_id: str, timeout: float) -> dict | None:
        """Block on the result notice (BLPOP, no polling); None when the time is up or Redis is away."""
        key = self._notice_key(prediction_id)
        try:
            popped = self.blocking.blpop([key], timeout=max(timeout, 0.01))
            if popped is None:
                return None
            notice = json.loads(popped[1])
            self.notify({prediction_id: notice})  # put it back for any other waiter
            return notice
        except (redis.RedisError, ValueError):
            return None

    # -- the worker loop -----------------------------------------------------------------------

    def work(self, name: str, burst: bool = False) -> None:
        """Run jobs in this process (TensorFlow must not be forked) until asked to stop.

        RQ's loop ends on any Redis error; this one waits for Redis to come back and
        starts it again, so an outage pauses a worker instead of ending it.
        """
        beats = _Heartbeat(self, name)
        beats.start()
        # RQ's blocking dequeue needs a connection of its own: RQ raises the socket timeout of the
        # pool it is given above its dequeue wait, which must not slow every other Redis call here,
        # and a pooled connection made earlier with the short timeout would cut that wait short
        listening = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2,
                                         health_check_interval=30)
        queue = Queue(self.rq.name, connection=listening, serializer=JSONSerializer)
        try:
            for generation in range(1_000_000):
                # a new RQ name each round: a registration left behind by an outage must not block it
                worker = _Worker([queue], connection=listening, serializer=JSONSerializer,
                                 name=f"{name}.{generation}", worker_ttl=WORKER_TTL)
                worker.stopping = self.stopping
                try:
                    worker.work(burst=burst, logging_level="WARNING")
                except redis.RedisError as exc:  # its own clean-up needed Redis too
                    log.warning("worker %s: %s", name, exc)
                except KeyboardInterrupt:  # the watchdog's interruption of a stopping worker
                    return
                if burst or _stopping(worker):
                    return
                log.warning("worker %s: lost Redis; waiting for it to come back", name)
                self._wait_for_redis()
        finally:
            beats.stop()
            listening.close()

    def _wait_for_redis(self) -> None:
        delay = 0.2
        while True:
            try:
                self.connection.ping()
                return
            except redis.RedisError:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def empty(self) -> None:
        self.rq.empty()


class _Worker(SimpleWorker):
    """RQ's in-process worker, with a stop request that cannot get lost.

    RQ stops an idle worker by raising from its signal handler; when the signal lands
    while a log line is being written (Redis away: it logs every retry), the logging
    module swallows that exception and the worker never stops. A watchdog notices an
    idle worker that was asked to stop and interrupts it again.
    """

    stop_asked_at: float | None = None
    stopping: threading.Event | None = None

    def request_stop(self, signum, frame):
        self.stop_asked_at = time.monotonic()
        if self.stopping is not None:
            self.stopping.set()
        super().request_stop(signum, frame)

    def work(self, *args, **kwargs):
        watchdog = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        watchdog.start()
        return super().work(*args, **kwargs)

    def _watch(self) -> None:
        while True:
            time.sleep(0.5)
            asked = self.stop_asked_at
            if asked is not None and time.monotonic() - asked > 2 and self.get_state() != WorkerStatus.BUSY:
                log.warning("worker %s: stop request not taken up; interrupting the idle loop", self.name)
                self.stop_asked_at = time.monotonic()
                _thread.interrupt_main()


def _stopping(worker: SimpleWorker) -> bool:
    """Whether RQ's loop ended because it was asked to (SIGINT/SIGTERM), not because Redis dropped."""
    return worker._stop_requested or getattr(worker, "_shutdown_requested_date", None) is not None


class _Heartbeat(threading.Thread):
    """Beats for a worker every third of the heartbeat TTL, whatever its job is doing."""

    def __init__(self, queue: TaskQueue, worker: str):
        super().__init__(name="heartbeat", daemon=True)
        self.queue, self.worker = queue, worker
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = max(0.2, self.queue.settings.worker_heartbeat_ttl / 3)
        while True:
            try:
                self.queue.heartbeat(self.worker)
            except redis.RedisError:
                pass  # Redis away: beat again when it is back
            if self.stopped.wait(interval):
                return

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        try:
            self.queue.forget_worker(self.worker)
        except redis.RedisError:
            pass
