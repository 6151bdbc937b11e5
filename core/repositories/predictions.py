"""Predictions and their images.

A prediction's status only moves through compare-and-set updates
(`UPDATE ... WHERE status = ... AND attempts = ...`): two workers can never
both run one, and a finished prediction never changes again.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.orm import Session

from core.db import Prediction, PredictionImage, utcnow

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
FINISHED = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class Claim:
    """A prediction a worker now runs: this attempt's number and what it needs."""

    prediction_id: str
    attempt: int
    model_version_id: int
    pngs: list[bytes]


def add(session: Session, prediction: Prediction, pngs: Sequence[tuple[str, bytes]]) -> None:
    """A new prediction with its preprocessed images (sha256 of the upload, 28x28 PNG)."""
    session.add(prediction)
    session.flush()
    for idx, (sha, png) in enumerate(pngs):
        session.add(PredictionImage(prediction_id=prediction.id, idx=idx, sha256=sha, preprocessed_png=png))
    session.flush()


def get(session: Session, prediction_id: str) -> Prediction | None:
    return session.get(Prediction, prediction_id) if len(prediction_id) <= 32 else None


def by_idempotency_key(session: Session, user_id: int | None, key: str) -> Prediction | None:
    return session.scalar(select(Prediction).where(Prediction.user_id == user_id, Prediction.idempotency_key == key))


def images_of(session: Session, prediction_ids: list[str]) -> dict[str, list[PredictionImage]]:
    grouped: dict[str, list[PredictionImage]] = {pid: [] for pid in prediction_ids}
    if prediction_ids:
        rows = session.scalars(
            select(PredictionImage)
            .where(PredictionImage.prediction_id.in_(prediction_ids))
            .order_by(PredictionImage.prediction_id, PredictionImage.idx)
        )
        for image in rows:
            grouped[image.prediction_id].append(image)
    return grouped


def image(session: Session, prediction_id: str, index: int) -> PredictionImage | None:
    return session.get(PredictionImage, (prediction_id, index))


def page_of(session: Session, user_id: int | None, limit: int,
            after: tuple[dt.datetime, str] | None = None) -> list[Prediction]:
    """A user's predictions, newest first, from just after the cursor `(created_at, id)`."""
    query = select(Prediction).where(Prediction.user_id == user_id)
    if after is not None:
        created, pid = after
        query = query.where(or_(Prediction.created_at < created,
                                and_(Prediction.created_at == created, Prediction.id < pid)))
    return list(session.scalars(query.order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(limit)))


def labelled_images(session: Session) -> list[tuple[bytes, int]]:
    """Users' corrections: the 28x28 PNG the network saw and the label the user gave, oldest first."""
    rows = session.execute(
        select(PredictionImage.preprocessed_png, PredictionImage.feedback_label)
        .where(PredictionImage.feedback_label.is_not(None))
        .order_by(PredictionImage.feedback_at)
    ).all()
    return [(png, int(label)) for png, label in rows]


# -- state transitions (compare-and-set) -----------------------------------------------------------


def claim(session: Session, prediction_id: str, worker: str) -> Claim | None:
    """queued -> running by `worker`, one more attempt; None when the prediction is not waiting to run."""
    now = utcnow()
    changed = session.execute(
        update(Prediction)
        .where(Prediction.id == prediction_id, Prediction.status == QUEUED)
        .values(status=RUNNING, started_at=now, attempts=Prediction.attempts + 1, worker=worker[:128])
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        return None
    row = session.get(Prediction, prediction_id, populate_existing=True)
    row.queue_ms = round((now - row.created_at).total_seconds() * 1000, 3)
    pngs = list(session.scalars(
        select(PredictionImage.preprocessed_png)
        .where(PredictionImage.prediction_id == prediction_id)
        .order_by(PredictionImage.idx)
    ))
    return Claim(prediction_id, row.attempts, row.model_version_id, pngs)


def succeed(session: Session, claim_: Claim, probabilities, compute_ms: float) -> bool:
    """running (this attempt) -> succeeded with one result per image; False if the attempt was superseded."""
    changed = session.execute(
        update(Prediction)
        .where(Prediction.id == claim_.prediction_id, Prediction.status == RUNNING,
               Prediction.attempts == claim_.attempt)
        .values(status=SUCCEEDED, error=None, finished_at=utcnow(), compute_ms=round(compute_ms, 3))
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        return False
    for idx, probs in enumerate(probabilities):
        digit = max(range(len(probs)), key=lambda d: probs[d])
        session.execute(
            update(PredictionImage)
            .where(PredictionImage.prediction_id == claim_.prediction_id, PredictionImage.idx == idx)
            .values(digit=digit, confidence=float(probs[digit]),
                    probabilities=[round(float(p), 6) for p in probs])
            .execution_options(synchronize_session=False)
        )
    return True


def fail(session: Session, prediction_id: str, message: str, attempt: int | None = None) -> bool:
    """queued or running (this attempt, if given) -> failed; False when it had already finished."""
    conditions = [Prediction.id == prediction_id, Prediction.status.in_((QUEUED, RUNNING))]
    if attempt is not None:
        conditions.append(Prediction.attempts == attempt)
    changed = session.execute(
        update(Prediction).where(*conditions)
        .values(status=FAILED, error=message[:2000], finished_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    return changed == 1


def release(session: Session, prediction_id: str, status: str, attempts: int) -> bool:
    """Back to queued, only if it is still exactly as the caller saw it (status and attempt)."""
    changed = session.execute(
        update(Prediction)
        .where(Prediction.id == prediction_id, Prediction.status == status, Prediction.attempts == attempts)
        .values(status=QUEUED)
        .execution_options(synchronize_session=False)
    ).rowcount
    return changed == 1


def stale(session: Session, running_before: dt.datetime, queued_before: dt.datetime) -> list[tuple[str, str, int]]:
    """(id, status, attempts) of predictions running since before one cutoff or queued since before the other."""
    return [tuple(row) for row in session.execute(
        select(Prediction.id, Prediction.status, Prediction.attempts).where(
            ((Prediction.status == RUNNING) & (Prediction.started_at < running_before))
            | ((Prediction.status == QUEUED) & (Prediction.created_at < queued_before))
        )
    )]


def running(session: Session, started_before: dt.datetime) -> list[tuple[str, int, str | None]]:
    """(id, attempts, worker) of predictions running since before the cutoff."""
    return [tuple(row) for row in session.execute(
        select(Prediction.id, Prediction.attempts, Prediction.worker)
        .where(Prediction.status == RUNNING, Prediction.started_at < started_before)
    )]


def delete_finished_before(session: Session, cutoff: dt.datetime, limit: int = 1000) -> int:
    """Delete up to `limit` finished predictions created before `cutoff`, with their images.

    Predictions with a user's correction are kept: they are training data.
    """
    corrected = exists().where(PredictionImage.prediction_id == Prediction.id,
                               PredictionImage.feedback_label.is_not(None))
    ids = list(session.scalars(
        select(Prediction.id)
        .where(Prediction.status.in_(FINISHED), Prediction.created_at < cutoff, ~corrected)
        .limit(limit)
    ))
    if ids:
        session.execute(delete(PredictionImage).where(PredictionImage.prediction_id.in_(ids)))
        session.execute(delete(Prediction).where(Prediction.id.in_(ids)))
    return len(ids)
