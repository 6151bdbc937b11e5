"""Admission: predictions arriving together are written in one transaction and sent as one job.

Request threads hand their preprocessed prediction to the admission thread
and wait until it is stored and queued. The thread takes whatever is waiting
(up to BATCH_MAX_SIZE, waiting at most BATCH_MAX_WAIT_MS for more), so under
load one commit, one enqueue and later one network call serve many
predictions, while a lone request pays for no wait at all with the default
wait of 0. Every prediction keeps its own row, status, attempts and result.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Sequence

import redis
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.db import Prediction, unit_of_work
from core.errors import Unavailable
from core.repositories import predictions as repo
from core.settings import Settings
from server.queue import TaskQueue

log = logging.getLogger("digitserve.admission")


@dataclass
class _Pending:
    prediction: Prediction
    pngs: Sequence[tuple[str, bytes, float]]  # (upload sha256, 28x28 PNG, preprocessing quality)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Admission:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], tasks: TaskQueue):
        self.settings = settings
        self.sessions = sessions
        self.tasks = tasks
        self._inbox: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def admit(self, prediction: Prediction, pngs: Sequence[tuple[str, bytes, float]]) -> None:
        """Store the prediction and queue its job; raises what storing raised (IntegrityError for a
        reused idempotency key). A failed enqueue is not raised: the sweeper queues the row later."""
        pending = _Pending(prediction, pngs)
        if self.settings.batch_max_size <= 1:
            self._store_and_enqueue([pending])
        else:
            self._ensure_thread()
            self._inbox.put(pending)
            if not pending.done.wait(self.settings.db_timeout * 4 + 5):
                raise Unavailable("the database is too slow to take predictions right now")
        if pending.error is not None:
            raise pending.error

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="admission", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        max_size, max_wait = self.settings.batch_max_size, self.settings.batch_max_wait_ms / 1000
        while True:
            batch = [self._inbox.get()]
            deadline = time.monotonic() + max_wait
            while len(batch) < max_size:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait())
                except queue.Empty:
                    break
            try:
                self._store_and_enqueue(batch)
            except BaseException as exc:  # never leave a request thread waiting
                for pending in batch:
                    pending.error = pending.error or exc
                    pending.done.set()

    def _store_and_enqueue(self, batch: list[_Pending]) -> None:
        job_id = uuid.uuid4().hex
        for pending in batch:
            pending.prediction.job_id = job_id
        stored = self._store(batch)
        if stored:
            try:
                self.tasks.enqueue(job_id, [p.prediction.id for p in stored])
            except redis.RedisError as exc:
                log.warning("%d predictions stay queued for the sweeper: enqueue failed: %s", len(stored), exc)
        for pending in batch:
            pending.done.set()

    def _store(self, batch: list[_Pending]) -> list[_Pending]:
        """All in one transaction; if one of them breaks a constraint, each on its own."""
        try:
            with unit_of_work(self.sessions) as session:
                repo.add(session, [(p.prediction, p.pngs) for p in batch])
            return batch
        except IntegrityError as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return []
        except Exception as exc:
            for pending in batch:
                pending.error = exc
            return []
        stored = []
        for pending in batch:
            try:
                with unit_of_work(self.sessions) as session:
                    repo.add(session, [(pending.prediction, pending.pngs)])
                stored.append(pending)
            except Exception as exc:
                pending.error = exc
        return stored
