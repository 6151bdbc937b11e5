"""Users' corrections as labelled samples: provenance, review state and the accepted set.

A correction lives on its prediction image (`feedback_label`, `feedback_at`); the review state says
whether an administrator accepted it for training, excluded it, or has not looked yet (`pending`, also
after the user changes the label).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import Prediction, PredictionImage, utcnow

PENDING, ACCEPTED, EXCLUDED = "pending", "accepted", "excluded"
STATES = (PENDING, ACCEPTED, EXCLUDED)


@dataclass(frozen=True)
class Sample:
    prediction_id: str
    index: int
    label: int
    predicted: int | None
    confidence: float | None
    state: str
    png: bytes
    user_id: int | None
    model_name: str
    model_version: int
    feedback_at: dt.datetime | None
    reviewed_by: int | None
    reviewed_at: dt.datetime | None


def _query():
    return (select(PredictionImage, Prediction.user_id, Prediction.model_name, Prediction.model_version)
            .join(Prediction, Prediction.id == PredictionImage.prediction_id)
            .where(PredictionImage.feedback_label.is_not(None)))


def _sample(image: PredictionImage, user_id, model_name, model_version) -> Sample:
    return Sample(prediction_id=image.prediction_id, index=image.idx, label=int(image.feedback_label),
                  predicted=image.digit, confidence=image.confidence, state=image.review_state or PENDING,
                  png=image.preprocessed_png, user_id=user_id, model_name=model_name,
                  model_version=model_version, feedback_at=image.feedback_at, reviewed_by=image.reviewed_by,
                  reviewed_at=image.reviewed_at)


def samples(session: Session, state: str | None = None, limit: int | None = None, offset: int = 0) -> list[Sample]:
    """Corrections oldest first (by correction time, then prediction and image), optionally of one state."""
    query = _query()
    if state is not None:
        query = query.where(PredictionImage.review_state == state)
    query = query.order_by(PredictionImage.feedback_at, PredictionImage.prediction_id, PredictionImage.idx)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    return [_sample(*row) for row in session.execute(query).all()]


def one(session: Session, prediction_id: str, index: int) -> Sample | None:
    row = session.execute(_query().where(PredictionImage.prediction_id == prediction_id,
                                         PredictionImage.idx == index)).first()
    return _sample(*row) if row is not None else None


def counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(PredictionImage.review_state, func.count())
        .where(PredictionImage.feedback_label.is_not(None))
        .group_by(PredictionImage.review_state)).all()
    found = {state or PENDING: int(n) for state, n in rows}
    return {state: found.get(state, 0) for state in STATES}


def review(session: Session, prediction_id: str, index: int, state: str, reviewer: int | None) -> bool:
    """Set the review state of one correction; False when there is no such correction."""
    image = session.get(PredictionImage, (prediction_id, index))
    if image is None or image.feedback_label is None:
        return False
    image.review_state = state
    image.reviewed_by = reviewer
    image.reviewed_at = utcnow()
    session.flush()
    return True
