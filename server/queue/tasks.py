"""The task queue: the one place that knows RQ.

Everything else asks this seam to enqueue a prediction, tell the depth, say
whether a prediction's job still waits, count live workers, send and wait
for result notices, and run a worker loop. Jobs are RQ jobs with the JSON
serializer whose id is the prediction id; their function is
`server.queue.jobs.run_prediction`, which hands the id to the handler the
worker process installed.
"""
from __future__ import annotations

import redis
from rq import Queue, Retry, SimpleWorker, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from core.settings import Settings

JOB_FUNCTION = "server.queue.jobs.run_prediction"


class TaskQueue:
    def __init__(self, settings: Settings, connection: redis.Redis, blocking: redis.Redis):
        """`blocking` serves the result waits only: its reads may take up to MAX_WAIT."""
        self.settings = settings
        self.connection = connection
        self.blocking = blocking
        self.rq = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)

    @property
    def name(self) -> str:
        return self.rq.name

    def depth(self) -> int:
        return self.rq.count

    def enqueue_prediction(self, prediction_id: str) -> None:
        settings = self.settings
        self.rq.enqueue_call(
            JOB_FUNCTION,
            args=(prediction_id,),
            job_id=prediction_id,
            timeout=settings.job_timeout,
            result_ttl=settings.result_ttl,
            failure_ttl=24 * 3600,
            retry=Retry(max=settings.job_retries) if settings.job_retries else None,
        )

    def requeue_lost(self, prediction_id: str) -> None:
        """Enqueue again a job whose worker was lost.

        A dead worker may have left the id in RQ's intermediate list; RQ's own
        cleanup of it, minutes later, would fail the job queued here.
        """
        self.connection.lrem(self.rq.intermediate_queue.key, 0, prediction_id)
        self.enqueue_prediction(prediction_id)

    def is_pending(self, prediction_id: str) -> bool:
        """Whether the prediction's job still waits to be picked up.

        A status of `queued` alone is not enough: a worker moves the job id off the
        queue before it marks the job started, so a worker killed in between leaves a
        `queued` job that is in no queue at all.
        """
        try:
            job = Job.fetch(prediction_id, connection=self.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return False
        status = job.get_status(refresh=False)
        if status == JobStatus.QUEUED:
            return self.rq.get_job_position(prediction_id) is not None
        return status in (JobStatus.DEFERRED, JobStatus.SCHEDULED)

    def live_workers(self) -> int:
        return len(Worker.all(queue=self.rq))

    # -- result notices ------------------------------------------------------------------------

    def _notice_key(self, prediction_id: str) -> str:
        return f"{self.settings.redis_prefix}done:{prediction_id}"

    def notify(self, prediction_id: str, status: str) -> None:
        """Tell whoever waits on this prediction that it finished (the notice expires)."""
        key = self._notice_key(prediction_id)
        pipe = self.connection.pipeline()
        pipe.rpush(key, status)
        pipe.expire(key, self.settings.notice_ttl)
        pipe.execute()

    def wait(self, prediction_id: str, timeout: float) -> str | None:
        """Block on the result notice (BLPOP, no polling); None when the time is up or Redis is away."""
        key = self._notice_key(prediction_id)
        try:
            popped = self.blocking.blpop([key], timeout=max(timeout, 0.01))
            if popped is None:
                return None
            status = popped[1].decode()
            self.notify(prediction_id, status)  # put it back for any other waiter
            return status
        except redis.RedisError:
            return None

    # -- the worker loop -----------------------------------------------------------------------

    def work(self, name: str, burst: bool = False) -> None:
        """Run jobs in this process (TensorFlow must not be forked) until stopped."""
        worker = SimpleWorker([self.rq], connection=self.connection, serializer=JSONSerializer, name=name)
        worker.work(burst=burst, logging_level="WARNING")

    def empty(self) -> None:
        self.rq.empty()
