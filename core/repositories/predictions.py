"""Predictions and their images.

A prediction's status only moves through compare-and-set updates
(`UPDATE ... WHERE status = ... AND attempts = ...`): two workers can never
both run one, and a finished prediction never changes again.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Sequence

from sqlalchemy import and_, bindparam, case, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from core.db import Prediction, PredictionImage, utcnow

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
FINISHED = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class Claim:
    """A prediction a worker now runs: this attempt's number and what it needs.

    `row` and `images` are the claimed rows as read (detached); `succeed` records the
    results on them too, so the finished prediction can be described without reading it back.
    """

    prediction_id: str
    attempt: int
    model_version_id: int
    row: Prediction = field(compare=False, repr=False)
    images: list[PredictionImage] = field(compare=False, repr=False)

    @property
    def pngs(self) -> list[bytes]:
        return [image.preprocessed_png for image in self.images]


def add(session: Session, items: Sequence[tuple[Prediction, Sequence[tuple[str, bytes, float]]]]) -> None:
    """New predictions with their preprocessed images (sha256 of the upload, 28x28 PNG, preprocessing
    quality), in two flushes."""
    session.add_all([prediction for prediction, _ in items])
    session.flush()
    session.add_all([PredictionImage(prediction_id=prediction.id, idx=idx, sha256=sha, preprocessed_png=png,
                                     quality=quality)
                     for prediction, images in items for idx, (sha, png, quality) in enumerate(images)])
    session.flush()


def get(session: Session, prediction_id: str) -> Prediction | None:
    return session.get(Prediction, prediction_id) if len(prediction_id) <= 32 else None


def many(session: Session, prediction_ids: Sequence[str]) -> list[Prediction]:
    return list(session.scalars(
        select(Prediction).where(Prediction.id.in_(list(prediction_ids))).execution_options(populate_existing=True)))


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


def feedback_agreement(session: Session, model_version_ids: Sequence[int] | None = None) -> dict[int, tuple[int, int]]:
    """model version id -> (images users labelled, of which the version's answer matched the label)."""
    agreed = func.sum(case((PredictionImage.digit == PredictionImage.feedback_label, 1), else_=0))
    query = (select(Prediction.model_version_id, func.count(), agreed)
             .join(Prediction, Prediction.id == PredictionImage.prediction_id)
             .where(PredictionImage.feedback_label.is_not(None), PredictionImage.digit.is_not(None))
             .group_by(Prediction.model_version_id))
    if model_version_ids is not None:
        query = query.where(Prediction.model_version_id.in_(list(model_version_ids)))
    return {int(vid): (int(n), int(ok or 0)) for vid, n, ok in session.execute(query)}


# -- state transitions (compare-and-set) -----------------------------------------------------------


def claim(session: Session, prediction_ids: Sequence[str], worker: str) -> list[Claim]:
    """queued -> running by `worker`, one more attempt each; the ones not waiting to run are skipped.

    One UPDATE takes them all; the claim's own (worker, started_at) tells which rows it got,
    since a worker runs one job at a time.
    """
    ids = list(prediction_ids)
    if not ids:
        return []
    now, worker = utcnow(), worker[:128]
    session.execute(
        update(Prediction)
        .where(Prediction.id.in_(ids), Prediction.status == QUEUED)
        .values(status=RUNNING, started_at=now, attempts=Prediction.attempts + 1, worker=worker)
        .execution_options(synchronize_session=False)
    )
    rows = {row.id: row for row in session.scalars(
        select(Prediction)
        .where(Prediction.id.in_(ids), Prediction.status == RUNNING, Prediction.worker == worker,
               Prediction.started_at == now)
        .execution_options(populate_existing=True))}
    if not rows:
        return []
    images = images_of(session, list(rows))
    claims = []
    for pid in ids:
        if pid in rows:
            row = rows[pid]
            row.queue_ms = round((now - row.created_at).total_seconds() * 1000, 3)  # stored by `succeed`
            claims.append(Claim(pid, row.attempts, row.model_version_id, row, images[pid]))
    session.expunge_all()  # queue_ms is written with the result, not now
    return claims


_PREDICTION = Prediction.__table__
_IMAGE = PredictionImage.__table__


def succeed(session: Session, claims: Sequence[Claim], probabilities: Sequence[Sequence[Sequence[float]]],
            compute_ms: float) -> list[Claim]:
    """running (each claim's attempt) -> succeeded with one result per image, for many predictions
    in three statements; returns the claims that succeeded (an attempt superseded meanwhile does not)."""
    if not claims:
        return []
    finished, compute_ms = utcnow(), round(compute_ms, 3)
    session.connection().execute(
        update(_PREDICTION)
        .where(_PREDICTION.c.id == bindparam("b_id"), _PREDICTION.c.status == RUNNING,
               _PREDICTION.c.attempts == bindparam("b_attempt"))
        .values(status=SUCCEEDED, error=None, finished_at=finished, compute_ms=compute_ms,
                queue_ms=bindparam("b_queue_ms")),
        [{"b_id": c.prediction_id, "b_attempt": c.attempt, "b_queue_ms": c.row.queue_ms} for c in claims],
    )
    # which ones this call finished: their finish time is this call's
    mine = set(session.scalars(select(Prediction.id).where(
        Prediction.id.in_([c.prediction_id for c in claims]), Prediction.status == SUCCEEDED,
        Prediction.finished_at == finished)))
    done = [(c, probs) for c, probs in zip(claims, probabilities) if c.prediction_id in mine]
    results = []
    for claim_, probs in done:
        row = claim_.row
        row.status, row.error, row.finished_at, row.compute_ms = SUCCEEDED, None, finished, compute_ms
        for image, p in zip(claim_.images, probs):
            digit = max(range(len(p)), key=lambda d: p[d])
            image.digit, image.confidence = digit, round(float(p[digit]), 6)  # as MySQL's FLOAT gives it back
            image.probabilities = [round(float(x), 6) for x in p]
            results.append({"b_id": claim_.prediction_id, "b_idx": image.idx, "b_digit": image.digit,
                            "b_confidence": image.confidence, "b_probabilities": image.probabilities})
    if results:
        session.connection().execute(
            update(_IMAGE)
            .where(_IMAGE.c.prediction_id == bindparam("b_id"), _IMAGE.c.idx == bindparam("b_idx"))
            .values(digit=bindparam("b_digit"), confidence=bindparam("b_confidence"),
                    probabilities=bindparam("b_probabilities")),
            results,
        )
    return [c for c, _ in done]


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


def release(session: Session, prediction_id: str, status: str, attempts: int, job_id: str | None = None) -> bool:
    """Back to queued (carried by `job_id`, if given), only if it is still exactly as the caller saw it."""
    values = {"status": QUEUED} if job_id is None else {"status": QUEUED, "job_id": job_id}
    changed = session.execute(
        update(Prediction)
        .where(Prediction.id == prediction_id, Prediction.status == status, Prediction.attempts == attempts)
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    return changed == 1


def stale(session: Session, running_before: dt.datetime,
          queued_before: dt.datetime) -> list[tuple[str, str, int, str | None]]:
    """(id, status, attempts, job id) of predictions running since before one cutoff or queued since before the other."""
    return [tuple(row) for row in session.execute(
        select(Prediction.id, Prediction.status, Prediction.attempts, Prediction.job_id).where(
            ((Prediction.status == RUNNING) & (Prediction.started_at < running_before))
            | ((Prediction.status == QUEUED) & (Prediction.created_at < queued_before))
        )
    )]


def running(session: Session, started_before: dt.datetime) -> list[tuple[str, int, str | None, str | None]]:
    """(id, attempts, worker, job id) of predictions running since before the cutoff."""
    return [tuple(row) for row in session.execute(
        select(Prediction.id, Prediction.attempts, Prediction.worker, Prediction.job_id)
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
