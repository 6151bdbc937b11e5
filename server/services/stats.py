"""Worker statistics, aggregated in Redis so any number of workers on any machines add up.

The workers record; the web app's /metrics reads the same keys at scrape time.
"""
from __future__ import annotations

import redis
from prometheus_client.core import HistogramMetricFamily

INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class RedisHistogram:
    """A histogram whose buckets are Redis hash fields, shared by all workers."""

    def __init__(self, key: str, buckets: tuple[float, ...]):
        self.key = key
        self.buckets = buckets

    def observe(self, pipe, value: float) -> None:
        for bound in self.buckets:
            if value <= bound:
                pipe.hincrby(self.key, f"le:{bound}", 1)
        pipe.hincrby(self.key, "count", 1)
        pipe.hincrbyfloat(self.key, "sum", value)

    def family(self, client: redis.Redis, name: str, documentation: str) -> HistogramMetricFamily:
        raw = {k.decode(): float(v) for k, v in client.hgetall(self.key).items()}
        count = raw.get("count", 0.0)
        buckets = [(str(float(b)), raw.get(f"le:{b}", 0.0)) for b in self.buckets] + [("+Inf", count)]
        family = HistogramMetricFamily(name, documentation)
        family.add_metric([], buckets, raw.get("sum", 0.0))
        return family


class WorkerStats:
    """What workers record per inference call; the web app reads the same keys."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.client = client
        self.jobs_key = f"{prefix}metrics:jobs"
        self.inference = RedisHistogram(f"{prefix}metrics:inference_seconds", INFERENCE_BUCKETS)
        self.batch = RedisHistogram(f"{prefix}metrics:batch_size", BATCH_BUCKETS)

    def record(self, outcome: str, inference_seconds: float | None = None, batch_size: int | None = None,
               predictions: int = 1) -> None:
        """`predictions` ended with `outcome`; one network call of `batch_size` images took `inference_seconds`."""
        pipe = self.client.pipeline()
        pipe.hincrby(self.jobs_key, outcome, predictions)
        if inference_seconds is not None:
            self.inference.observe(pipe, inference_seconds)
        if batch_size is not None:
            self.batch.observe(pipe, batch_size)
        pipe.execute()
