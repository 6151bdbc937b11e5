"""Prometheus metrics: web-side series live in the process; worker-side series are read
from Redis (see `server.services.stats`) at scrape time."""
from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from server.services.stats import BATCH_BUCKETS, WorkerStats


class QueueCollector:
    def __init__(self, services):
        self.services = services
        self.stats = WorkerStats(services.redis, services.settings.redis_prefix)

    def collect(self):
        try:
            depth = GaugeMetricFamily("digitserve_queue_depth", "Prediction jobs waiting in the queue")
            depth.add_metric([], self.services.queue.depth())
            yield depth
            jobs = CounterMetricFamily("digitserve_jobs", "Predictions run by outcome", labels=["outcome"])
            for outcome, count in sorted(self.services.redis.hgetall(self.stats.jobs_key).items()):
                jobs.add_metric([outcome.decode()], float(count))
            yield jobs
            yield self.stats.inference.family(
                self.services.redis, "digitserve_inference_seconds", "Network compute time per inference call (a batch)")
            yield self.stats.batch.family(
                self.services.redis, "digitserve_batch_size", "Images per inference call: the batch-size distribution")
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
        self.v2_batch = Histogram(
            "digitserve_v2_batch_size", "Images per v2 inference call (concurrent requests batched together)",
            registry=self.registry, buckets=BATCH_BUCKETS)
        self.registry.register(QueueCollector(services))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
