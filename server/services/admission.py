"""Admission: predictions arriving together are written in one transaction and sent as one job.

Request threads hand their preprocessed prediction over (`batching.Batcher`):
what arrives together, up to BATCH_MAX_SIZE predictions, waiting at most
BATCH_MAX_WAIT_MS for requests still being read and preprocessed or while
the workers are busy, is stored
in one transaction and queued as one job, so under load one commit, one
enqueue and later one network call serve many predictions, while a lone
request never waits. Every prediction keeps its own row, status, attempts
and result.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Sequence

import redis
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.db import Prediction, unit_of_work
from core.errors import Unavailable
from core.repositories import predictions as repo
from core.settings import Settings
from server.queue import TaskQueue
from server.services.batching import Batcher, Slot, Ticket

log = logging.getLogger("digitserve.admission")


@dataclass
class _Pending:
    prediction: Prediction
    pngs: Sequence[tuple[str, bytes, float]]  # (upload sha256, 28x28 PNG, preprocessing quality)


class Admission:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], tasks: TaskQueue):
        self.settings = settings
        self.sessions = sessions
        self.tasks = tasks
        # held open while the workers are busy: they could not start this batch any sooner
        self.batcher: Batcher[_Pending] = Batcher("admission", self._store_and_enqueue, settings.batch_max_size,
                                                  settings.batch_max_wait_ms / 1000, busy=tasks.busy)

    def arriving(self):
        """Around a request's work up to `admit(..., ticket)`: a batch being formed waits for it."""
        return self.batcher.arriving()

    def admit(self, prediction: Prediction, pngs: Sequence[tuple[str, bytes, float]],
              ticket: Ticket | None = None) -> None:
        """Store the prediction and queue its job; raises what storing raised (IntegrityError for a
        reused idempotency key). A failed enqueue is not raised: the sweeper queues the row later."""
        try:
            self.batcher.submit(_Pending(prediction, pngs), ticket, timeout=self.settings.db_timeout * 4 + 5)
        except TimeoutError:
            raise Unavailable("the database is too slow to take predictions right now") from None

    def _store_and_enqueue(self, batch: list[Slot[_Pending]]) -> None:
        job_id = uuid.uuid4().hex
        for slot in batch:
            slot.item.prediction.job_id = job_id
        stored = self._store(batch)
        if stored:
            try:
                self.tasks.enqueue(job_id, [slot.item.prediction.id for slot in stored])
            except redis.RedisError as exc:
                log.warning("%d predictions stay queued for the sweeper: enqueue failed: %s", len(stored), exc)
        for slot in stored:
            slot.result = True

    def _store(self, batch: list[Slot[_Pending]]) -> list[Slot[_Pending]]:
        """All in one transaction; if one of them breaks a constraint, each on its own."""
        try:
            with unit_of_work(self.sessions) as session:
                repo.add(session, [(slot.item.prediction, slot.item.pngs) for slot in batch])
            return batch
        except IntegrityError as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return []
        except Exception as exc:
            for slot in batch:
                slot.error = exc
            return []
        stored = []
        for slot in batch:
            try:
                with unit_of_work(self.sessions) as session:
                    repo.add(session, [(slot.item.prediction, slot.item.pngs)])
                stored.append(slot)
            except Exception as exc:
                slot.error = exc
        return stored
