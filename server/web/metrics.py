"""Prometheus metrics. Web-side series live in the process; worker-side series are
aggregated in Redis (any number of workers on any machines) and read at scrape time."""
from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

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
    """What workers record per job; the web app reads the same keys."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.client = client
        self.jobs_key = f"{prefix}metrics:jobs"
        self.inference = RedisHistogram(f"{prefix}metrics:inference_seconds", INFERENCE_BUCKETS)
        self.batch = RedisHistogram(f"{prefix}metrics:batch_size", BATCH_BUCKETS)

    def record(self, outcome: str, inference_seconds: float | None = None, batch_size: int | None = None) -> None:
        pipe = self.client.pipeline()
        pipe.hincrby(self.jobs_key, outcome, 1)
        if inference_seconds is not None:
            self.inference.observe(pipe, inference_seconds)
        if batch_size is not None:
            self.batch.observe(pipe, batch_size)
        pipe.execute()


class QueueCollector:
    def __init__(self, services):
        self.services = services
        self.stats = WorkerStats(services.redis, services.settings.redis_prefix)

    def collect(self):
        try:
            depth = GaugeMetricFamily("digitserve_queue_depth", "Prediction jobs waiting in the queue")
            depth.add_metric([], self.services.queue.count)
            yield depth
            jobs = CounterMetricFamily("digitserve_jobs", "Prediction jobs by outcome", labels=["outcome"])
            for outcome, count in sorted(self.services.redis.hgetall(self.stats.jobs_key).items()):
                jobs.add_metric([outcome.decode()], float(count))
            yield jobs
            yield self.stats.inference.family(
                self.services.redis, "digitserve_inference_seconds", "Network compute time per job")
            yield self.stats.batch.family(
                self.services.redis, "digitserve_batch_size", "Images per inference call")
        except redis.RedisError:
            return


class WebMetrics:
    def __init__(self, services):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "digitserve_http_requests", "HTTP requests by route and status",
            ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "digitserve_http_request_duration_seconds", "HTTP request latency by route",
            ["route"], registry=self.registry)
        self.registry.register(QueueCollector(services))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
