"""The feedback dataset: users' corrections as labelled samples, reviewed by administrators, exported
as IDX files (the MNIST format) for training elsewhere."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from core.db import unit_of_work
from core.errors import InvalidInput, NotFound
from core.preprocess import from_png
from core.repositories import feedback as repo
from server.services.bootstrap import Services
from server.services.predictions import isoformat
from trainers.mnist import write_idx

IMAGES_FILE = "feedback-images-idx3-ubyte"
LABELS_FILE = "feedback-labels-idx1-ubyte"
PROVENANCE_FILE = "feedback-provenance.json"


class CorrectionNotFound(NotFound):
    default_code = "feedback_not_found"


def document(sample: repo.Sample) -> dict:
    return {
        "prediction_id": sample.prediction_id,
        "index": sample.index,
        "label": sample.label,
        "predicted": sample.predicted,
        "confidence": sample.confidence,
        "state": sample.state,
        "user_id": sample.user_id,
        "model": {"name": sample.model_name, "version": sample.model_version},
        "feedback_at": isoformat(sample.feedback_at),
        "reviewed_by": sample.reviewed_by,
        "reviewed_at": isoformat(sample.reviewed_at),
        "image": base64.b64encode(sample.png).decode("ascii"),  # the 28x28 PNG the network saw
    }


def _int(raw, name: str, low: int, high: int, default: int) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}")
    return value


def _state(raw, allow_none: bool) -> str | None:
    if raw in (None, "") and allow_none:
        return None
    if raw not in repo.STATES:
        raise InvalidInput(f"state must be one of {', '.join(repo.STATES)}", "bad_state")
    return raw


def listing(services: Services, state=None, limit=None, offset=None) -> dict:
    """Corrections oldest first, optionally of one review state, with the counts per state."""
    state = _state(state, allow_none=True)
    limit = _int(limit, "limit", 1, 500, 100)
    offset = _int(offset, "offset", 0, 10**9, 0)
    with unit_of_work(services.sessions) as session:
        rows = repo.samples(session, state, limit + 1, offset)
        counts = repo.counts(session)
    more = len(rows) > limit
    return {"samples": [document(row) for row in rows[:limit]], "counts": counts,
            "next_offset": offset + limit if more else None}


def review(services: Services, reviewer_id: int | None, prediction_id: str, payload) -> dict:
    """Accept, exclude or return to pending one correction (`{"state": ..., "index": 0}`)."""
    if not isinstance(payload, dict):
        raise InvalidInput('send JSON {"state": "accepted" | "excluded" | "pending", "index": 0}')
    state = _state(payload.get("state"), allow_none=False)
    index = payload.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 10_000:
        raise InvalidInput("index must be the image's position in its prediction (0, 1, ...)")
    with unit_of_work(services.sessions) as session:
        if len(prediction_id) > 32 or not repo.review(session, prediction_id, index, state, reviewer_id):
            raise CorrectionNotFound(f"no correction for image {index} of prediction {prediction_id}")
        return document(repo.one(session, prediction_id, index))


def export(services: Services, directory: str | Path) -> dict:
    """Write the accepted corrections as IDX files (images N x 28 x 28, labels N) plus their provenance."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with unit_of_work(services.sessions) as session:
        rows = repo.samples(session, repo.ACCEPTED)
    images = np.stack([from_png(row.png) for row in rows]) if rows else np.zeros((0, 28, 28), np.uint8)
    labels = np.array([row.label for row in rows], np.uint8)
    write_idx(directory / IMAGES_FILE, images)
    write_idx(directory / LABELS_FILE, labels)
    provenance = [{"prediction_id": row.prediction_id, "index": row.index, "label": row.label,
                   "user_id": row.user_id, "model": f"{row.model_name}:{row.model_version}",
                   "feedback_at": isoformat(row.feedback_at), "reviewed_by": row.reviewed_by,
                   "reviewed_at": isoformat(row.reviewed_at)} for row in rows]
    (directory / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1))
    return {"count": len(rows), "files": [str(directory / name) for name in (IMAGES_FILE, LABELS_FILE, PROVENANCE_FILE)]}
