"""`digitserve worker`: runs prediction jobs in-process with the networks loaded once.

TensorFlow deadlocks in a forked child, so this uses RQ's SimpleWorker (no fork).
A watcher thread loads newly activated versions before the first job needs them
and sweeps up predictions whose job was lost.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from rq import SimpleWorker
from rq.serializers import JSONSerializer

from server.queue import jobs
from server.services.bootstrap import Services, build
from core.db import wait_for_database
from core.settings import Settings

log = logging.getLogger("digitserve.worker")
SWEEP_EVERY = 5.0


class Watcher(threading.Thread):
    def __init__(self, runtime: jobs.Runtime):
        super().__init__(name="model-watcher", daemon=True)
        self.runtime = runtime
        self.stopped = threading.Event()

    def run(self) -> None:
        settings = self.runtime.services.settings
        since_sweep = SWEEP_EVERY
        while not self.stopped.wait(settings.model_poll_seconds):
            try:
                for info in self.runtime.cache.preload_active():
                    log.info("loaded %s:%s (newly active)", info.name, info.version)
            except Exception:  # the database or a model file may be briefly unavailable
                log.exception("could not load the active models; retrying")
            since_sweep += settings.model_poll_seconds
            if since_sweep >= SWEEP_EVERY:
                since_sweep = 0.0
                try:
                    jobs.sweep(self.runtime.services)
                except Exception:
                    log.exception("sweep failed")


def make_runtime(services: Services) -> jobs.Runtime:
    from models.serving import ModelCache, configure_tensorflow

    configure_tensorflow(services.settings.tf_threads)
    cache = ModelCache(services.registry)
    for info in cache.preload_active():
        log.info("loaded %s:%s", info.name, info.version)
    runtime = jobs.Runtime(services, cache)
    jobs.install(runtime)
    return runtime


def run_worker(settings: Settings, burst: bool = False, name: str | None = None) -> int:
    services = build(settings)
    wait_for_database(services.engine)
    runtime = make_runtime(services)
    jobs.sweep(services)  # jobs a previous worker lost while we were away
    watcher = Watcher(runtime)
    watcher.start()
    worker = SimpleWorker(
        [services.queue],
        connection=services.redis,
        serializer=JSONSerializer,
        name=name or f"digitserve-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}",
    )
    log.info("worker %s listening on queue %r", worker.name, services.queue.name)
    try:
        worker.work(burst=burst, logging_level="WARNING")
    finally:
        watcher.stopped.set()
        services.close()
    return 0
