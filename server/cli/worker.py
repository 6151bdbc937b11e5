"""`digitserve worker`: runs prediction jobs in-process with the networks loaded once;
`digitserve worker --queue training` runs training jobs (train, retrain, tune) the same way.

TensorFlow deadlocks in a forked child, so jobs run in this process. A
watcher thread loads newly activated versions before the first job needs
them and sweeps up predictions whose job was lost.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from core.db import wait_for_database
from core.settings import Settings
from models.runtime import configure_tensorflow
from models.serving import ModelCache
from server.queue import jobs
from server.services import predictions, training
from server.services.bootstrap import Services, build

log = logging.getLogger("digitserve.worker")
SWEEP_EVERY = 5.0
PURGE_EVERY = 3600.0


class Watcher(threading.Thread):
    def __init__(self, services: Services, models: ModelCache):
        super().__init__(name="model-watcher", daemon=True)
        self.services = services
        self.models = models
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = self.services.settings.model_poll_seconds
        since_sweep, since_purge = SWEEP_EVERY, PURGE_EVERY
        while not self.stopped.wait(interval):
            try:
                for info in self.models.preload_active():
                    log.info("loaded %s:%s (newly active)", info.name, info.version)
            except Exception:  # the database or a model file may be briefly unavailable
                log.exception("could not load the active models; retrying")
            since_sweep += interval
            if since_sweep >= SWEEP_EVERY:
                since_sweep = 0.0
                try:
                    predictions.sweep(self.services)
                except Exception:
                    log.exception("sweep failed")
            since_purge += interval
            if since_purge >= PURGE_EVERY:
                since_purge = 0.0
                try:
                    removed = predictions.purge_old(self.services)
                    if removed:
                        log.info("retention: deleted %d old predictions", removed)
                except Exception:
                    log.exception("retention clean-up failed")


def start_runner(services: Services, name: str) -> ModelCache:
    """Load the active networks and install the job handler of worker `name` in this process."""
    configure_tensorflow(services.settings.serving_threads())
    models = ModelCache(services.registry)
    for info in models.preload_active():
        log.info("loaded %s:%s", info.name, info.version)
    jobs.install(predictions.Runner(services, models, name).run)
    return models


def start_training_runner(services: Services, name: str) -> None:
    """Install the training job handler of worker `name` in this process (TensorFlow uses every core)."""
    configure_tensorflow(services.settings.training_threads())
    jobs.install_training(lambda job_id: training.run(services, job_id, name))


def run_training_worker(settings: Settings, burst: bool = False, name: str | None = None) -> int:
    services = build(settings)
    wait_for_database(services.engine)
    name = name or f"digitserve-training-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    start_training_runner(services, name)
    lost = training.fail_lost(services)
    if lost:
        log.warning("%d training jobs were left running by a lost worker: marked failed", lost)
    log.info("worker %s listening on queue %r", name, services.training_queue.name)
    try:
        services.training_queue.work(name, burst=burst)
    finally:
        jobs.install_training(None)
        services.close()
    return 0


def run_worker(settings: Settings, burst: bool = False, name: str | None = None, queue: str = "predictions") -> int:
    if queue == "training":
        return run_training_worker(settings, burst, name)
    services = build(settings)
    wait_for_database(services.engine)
    name = name or f"digitserve-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    models = start_runner(services, name)
    predictions.sweep(services)  # jobs a previous worker lost while we were away
    watcher = Watcher(services, models)
    watcher.start()
    log.info("worker %s listening on queue %r", name, services.queue.name)
    try:
        services.queue.work(name, burst=burst)
    finally:
        watcher.stopped.set()
        jobs.install(None)
        services.close()
    return 0
