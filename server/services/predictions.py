"""Prediction use cases: submit, look up, list, feedback. Handlers call these; these raise ApiError."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass

import redis
from rq import Retry
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.registry import ModelNotFound, RegistryError, VersionInfo, parse_model_spec
from server.services.bootstrap import Services
from core.db import Prediction, PredictionImage, unit_of_work, utcnow
from core.errors import ApiError, bad_request, not_found, unavailable
from core.preprocess import ImageError, preprocess_image, to_png

JOB_FUNCTION = "server.queue.jobs.run_prediction"
FINISHED = ("succeeded", "failed")


@dataclass(frozen=True)
class Submission:
    images: list[bytes]
    model: str | None = None
    wait: float = 0.0
    idempotency_key: str | None = None
    source: str = "api"


def isoformat(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


def parse_wait(raw, maximum: float) -> float:
    if raw in (None, ""):
        return 0.0
    try:
        wait = float(raw)
    except (TypeError, ValueError):
        raise bad_request(f"wait must be a number of seconds between 0 and {maximum:g}") from None
    if not 0 <= wait <= maximum:
        raise bad_request(f"wait must be between 0 and {maximum:g} seconds")
    return wait


def resolve_model(services: Services, spec: str | None) -> VersionInfo:
    """`name` or `name:version`; with no spec, DEFAULT_MODEL or the most recently activated model."""
    try:
        if spec:
            name, version = parse_model_spec(spec)
            return services.registry.get(name, version if version is not None else "active")
        active = services.registry.active_versions()
    except ModelNotFound as exc:
        raise ApiError(404, "model_not_found", str(exc)) from None
    except RegistryError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    default = services.settings.default_model
    if default and default in active:
        return active[default]
    if not active:
        raise unavailable("no model is active yet; train one with `digitserve train mlp --activate`", 30)
    return next(iter(active.values()))


def _request_digest(submission: Submission, model: VersionInfo) -> str:
    digest = hashlib.sha256(f"{model.name}:{model.version}".encode())
    for image in submission.images:
        digest.update(hashlib.sha256(image).digest())
    return digest.hexdigest()


def submit(services: Services, user_id: int | None, submission: Submission) -> tuple[dict, bool]:
    """Validate, store and enqueue; returns (prediction document, created?)."""
    settings = services.settings
    if not submission.images:
        raise bad_request("send at least one image (multipart part `image` or JSON `images`)", "no_images")
    if len(submission.images) > settings.max_images:
        raise ApiError(413, "too_many_images", f"at most {settings.max_images} images per request")
    model = resolve_model(services, submission.model)
    request_sha = _request_digest(submission, model)

    if submission.idempotency_key:
        existing = _find_idempotent(services, user_id, submission.idempotency_key)
        if existing is not None:
            if existing.request_sha256 != request_sha:
                raise ApiError(409, "idempotency_conflict",
                               "this Idempotency-Key was used for a different request")
            return get(services, user_id, existing.id), False

    processed = []
    for index, data in enumerate(submission.images):
        try:
            processed.append((hashlib.sha256(data).hexdigest(), to_png(preprocess_image(data, settings.max_image_pixels))))
        except ImageError as exc:
            prefix = f"image {index}: " if len(submission.images) > 1 else ""
            raise ApiError(exc.status, exc.code, prefix + exc.message) from None

    try:
        depth = services.queue.count
    except redis.RedisError:
        raise unavailable("the task queue is unreachable; try again shortly") from None
    if depth >= settings.queue_max_length:
        raise unavailable(f"the queue is full ({depth} jobs waiting); try again shortly", 5)

    prediction_id = uuid.uuid4().hex
    try:
        with unit_of_work(services.sessions) as session:
            session.add(Prediction(
                id=prediction_id, user_id=user_id, model_version_id=model.id, model_name=model.name,
                model_version=model.version, status="queued", source=submission.source,
                n_images=len(processed), idempotency_key=submission.idempotency_key,
                request_sha256=request_sha, attempts=0, created_at=utcnow(),
            ))
            session.flush()
            for idx, (sha, png) in enumerate(processed):
                session.add(PredictionImage(prediction_id=prediction_id, idx=idx, sha256=sha, preprocessed_png=png))
    except IntegrityError:
        # a concurrent request with the same Idempotency-Key won the race
        existing = _find_idempotent(services, user_id, submission.idempotency_key)
        if existing is None:
            raise
        return get(services, user_id, existing.id), False

    try:
        enqueue(services, prediction_id)
    except redis.RedisError:
        with unit_of_work(services.sessions) as session:
            session.query(PredictionImage).filter_by(prediction_id=prediction_id).delete()
            session.query(Prediction).filter_by(id=prediction_id).delete()
        raise unavailable("the task queue is unreachable; try again shortly") from None

    if submission.wait > 0:
        wait_for(services, prediction_id, submission.wait)
    return get(services, user_id, prediction_id), True


def enqueue(services: Services, prediction_id: str) -> None:
    settings = services.settings
    services.queue.enqueue_call(
        JOB_FUNCTION,
        args=(prediction_id,),
        job_id=prediction_id,
        timeout=settings.job_timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=24 * 3600,
        retry=Retry(max=settings.job_retries) if settings.job_retries else None,
    )


def done_key(services: Services, prediction_id: str) -> str:
    return services.key("done", prediction_id)


def wait_for(services: Services, prediction_id: str, timeout: float) -> str | None:
    """Block on the result notice (BLPOP, no polling); None when the time is up."""
    key = done_key(services, prediction_id)
    try:
        popped = services.blocking_redis.blpop([key], timeout=max(timeout, 0.01))
    except redis.RedisError:
        return None
    if popped is None:
        return None
    status = popped[1].decode()
    # put the notice back for any other request waiting on the same prediction
    pipe = services.redis.pipeline()
    pipe.rpush(key, status)
    pipe.expire(key, 60)
    pipe.execute()
    return status


def _find_idempotent(services: Services, user_id: int | None, key: str | None) -> Prediction | None:
    with unit_of_work(services.sessions) as session:
        return session.scalar(select(Prediction).where(Prediction.user_id == user_id, Prediction.idempotency_key == key))


def _owned(session: Session, user_id: int | None, prediction_id: str) -> Prediction:
    row = session.get(Prediction, prediction_id) if len(prediction_id) <= 32 else None
    # another user's prediction is indistinguishable from a missing one
    if row is None or row.user_id != user_id:
        raise not_found(f"no prediction {prediction_id}")
    return row


def serialize(row: Prediction, images: list[PredictionImage], include_preprocessed: bool = False) -> dict:
    results = []
    if row.status == "succeeded" or include_preprocessed:
        for image in images:
            result = {"index": image.idx}
            if row.status == "succeeded":
                result.update(digit=image.digit, confidence=image.confidence, probabilities=image.probabilities)
            if image.feedback_label is not None:
                result["feedback_label"] = image.feedback_label
            if include_preprocessed:
                result["preprocessed"] = base64.b64encode(image.preprocessed_png).decode()
            results.append(result)
    total_ms = None
    if row.finished_at is not None:
        total_ms = round((row.finished_at - row.created_at).total_seconds() * 1000, 2)
    return {
        "id": row.id,
        "status": row.status,
        "model": {"name": row.model_name, "version": row.model_version},
        "n_images": row.n_images,
        "created_at": isoformat(row.created_at),
        "started_at": isoformat(row.started_at),
        "finished_at": isoformat(row.finished_at),
        "timings": {"queue_ms": row.queue_ms, "compute_ms": row.compute_ms, "total_ms": total_ms},
        "attempts": row.attempts,
        "error": row.error,
        "results": results,
    }


def _images(session: Session, prediction_ids: list[str]) -> dict[str, list[PredictionImage]]:
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


def get(services: Services, user_id: int | None, prediction_id: str, include_preprocessed: bool = False) -> dict:
    with unit_of_work(services.sessions) as session:
        row = _owned(session, user_id, prediction_id)
        return serialize(row, _images(session, [row.id])[row.id], include_preprocessed)


def _encode_cursor(row: Prediction) -> str:
    return base64.urlsafe_b64encode(json.dumps([row.created_at.isoformat(), row.id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        created, pid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return dt.datetime.fromisoformat(created), str(pid)
    except (ValueError, TypeError):
        raise bad_request("cursor is not one this server handed out", "bad_cursor") from None


def history(services: Services, user_id: int | None, limit_raw=None, cursor: str | None = None) -> dict:
    try:
        limit = int(limit_raw) if limit_raw not in (None, "") else 20
    except ValueError:
        raise bad_request("limit must be an integer from 1 to 100") from None
    if not 1 <= limit <= 100:
        raise bad_request("limit must be an integer from 1 to 100")
    with unit_of_work(services.sessions) as session:
        query = select(Prediction).where(Prediction.user_id == user_id)
        if cursor:
            created, pid = _decode_cursor(cursor)
            query = query.where(or_(Prediction.created_at < created,
                                    and_(Prediction.created_at == created, Prediction.id < pid)))
        rows = session.scalars(query.order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(limit + 1)).all()
        page, more = rows[:limit], len(rows) > limit
        images = _images(session, [row.id for row in page])
        return {
            "predictions": [serialize(row, images[row.id]) for row in page],
            "next_cursor": _encode_cursor(page[-1]) if more else None,
        }


def feedback(services: Services, user_id: int | None, prediction_id: str, payload) -> dict:
    if not isinstance(payload, dict):
        raise bad_request('send JSON {"index": 0, "label": 0-9}')
    index, label = payload.get("index", 0), payload.get("label")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= 9:
        raise bad_request("label must be an integer from 0 to 9")
    if not isinstance(index, int) or isinstance(index, bool):
        raise bad_request("index must be an integer")
    with unit_of_work(services.sessions) as session:
        row = _owned(session, user_id, prediction_id)
        image = session.get(PredictionImage, (row.id, index))
        if image is None:
            raise bad_request(f"index must be between 0 and {row.n_images - 1}")
        image.feedback_label = label
        image.feedback_at = utcnow()
        session.flush()
        return serialize(row, _images(session, [row.id])[row.id])
