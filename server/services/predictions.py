"""Prediction use cases: submit, look up, list, correct; run one (the job) and recover lost ones."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass

import numpy as np
import redis
from sqlalchemy.exc import IntegrityError, OperationalError

from core.db import Prediction, PredictionImage, unit_of_work, utcnow
from core.errors import Conflict, InvalidInput, NotFound, TooLarge, Unavailable
from core.preprocess import ImageError, from_png, preprocess_with_quality, scale, to_png
from core.repositories import predictions as repo
from core.repositories.predictions import FINISHED
from models.registry import VersionInfo, parse_model_spec
from server.services.bootstrap import Services
from server.services.stats import WorkerStats

log = logging.getLogger("digitserve.predictions")

# errors a later attempt may not meet: the database or Redis briefly away
TRANSIENT = (OperationalError, redis.ConnectionError, redis.TimeoutError)


@dataclass(frozen=True)
class Submission:
    images: list[bytes]
    model: str | None = None
    wait: float = 0.0
    idempotency_key: str | None = None
    source: str = "api"

    def digest(self) -> str:
        """The request as the client sent it: model spec as given and the image bytes."""
        digest = hashlib.sha256((self.model or "").encode() + b"\0")
        for image in self.images:
            digest.update(hashlib.sha256(image).digest())
        return digest.hexdigest()


def isoformat(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


def parse_wait(raw, maximum: float) -> float:
    if raw in (None, ""):
        return 0.0
    try:
        wait = float(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"wait must be a number of seconds between 0 and {maximum:g}") from None
    if not 0 <= wait <= maximum:
        raise InvalidInput(f"wait must be between 0 and {maximum:g} seconds")
    return wait


def resolve_model(services: Services, spec: str | None) -> VersionInfo:
    """`name` or `name:version`; with no spec, DEFAULT_MODEL or the most recently activated model.
    Only classifiers answer predictions: a generator (family cgan) is refused or passed over."""
    if spec:
        name, version = parse_model_spec(spec)
        return services.catalog.get(name, version, kind="classifier")
    active = services.catalog.active_versions()
    default = services.settings.default_model
    if default and default in active:
        return active[default]
    if not active:
        raise Unavailable("no model is active yet; train one with `digitserve train mlp --activate`", retry_after=30)
    return next(iter(active.values()))


def _preprocess(images: list[bytes], max_pixels: int) -> list[tuple[str, bytes, float]]:
    """(sha256 of the upload, the 28x28 PNG the network will see, how cleanly ink and paper separated)."""
    processed = []
    for index, data in enumerate(images):
        try:
            image, quality = preprocess_with_quality(data, max_pixels)
            processed.append((hashlib.sha256(data).hexdigest(), to_png(image), round(float(quality), 3)))
        except ImageError as exc:
            if len(images) > 1:
                exc.message = f"image {index}: {exc.message}"
            raise
    return processed


def submit(services: Services, user_id: int | None, submission: Submission) -> tuple[dict, bool]:
    """Validate and preprocess, write the row and enqueue (with whatever arrived at the same
    time: see `admission`); returns (prediction document, created?).

    If enqueuing fails the row stays `queued` and the sweeper enqueues it later.
    """
    settings = services.settings
    if not submission.images:
        raise InvalidInput("send at least one image (multipart part `image` or JSON `images`)", "no_images")
    if len(submission.images) > settings.max_images:
        raise TooLarge(f"at most {settings.max_images} images per request", "too_many_images")
    request_sha = submission.digest()
    if submission.idempotency_key:
        earlier = _idempotent_replay(services, user_id, submission.idempotency_key, request_sha)
        if earlier is not None:
            return earlier, False

    with services.admission.arriving() as ticket:
        model = resolve_model(services, submission.model)
        processed = _preprocess(submission.images, settings.max_image_pixels)
        try:
            depth = services.queue.depth()
        except redis.RedisError:
            raise Unavailable("the task queue is unreachable; try again shortly") from None
        if depth >= settings.queue_max_length:
            raise Unavailable(f"the queue is full ({depth} jobs waiting); try again shortly")

        prediction = Prediction(
            id=uuid.uuid4().hex, user_id=user_id, model_version_id=model.id, model_name=model.name,
            model_version=model.version, status=repo.QUEUED, source=submission.source,
            n_images=len(processed), idempotency_key=submission.idempotency_key,
            request_sha256=request_sha, attempts=0, created_at=utcnow(),
        )
        try:
            services.admission.admit(prediction, processed, ticket)
        except IntegrityError:
            # a concurrent request with the same Idempotency-Key won the race
            earlier = _idempotent_replay(services, user_id, submission.idempotency_key, request_sha)
            if earlier is None:
                raise
            return earlier, False
    prediction_id = prediction.id
    if submission.wait <= 0:
        return serialize(prediction, []), True  # just stored as it is: no need to read it back
    notice = services.queue.wait(prediction_id, submission.wait)
    if notice and notice.get("document"):  # the result came with the notice: no need to read it back
        return notice["document"], True
    return get(services, user_id, prediction_id), True


def _idempotent_replay(services: Services, user_id, key: str | None, request_sha: str) -> dict | None:
    with unit_of_work(services.sessions) as session:
        earlier = repo.by_idempotency_key(session, user_id, key)
        if earlier is None:
            return None
        if earlier.request_sha256 != request_sha:
            raise Conflict("this Idempotency-Key was used for a different request", "idempotency_conflict")
        return serialize(earlier, repo.images_of(session, [earlier.id])[earlier.id])


def _owned(session, user_id: int | None, prediction_id: str) -> Prediction:
    row = repo.get(session, prediction_id)
    # another user's prediction is indistinguishable from a missing one
    if row is None or row.user_id != user_id:
        raise NotFound(f"no prediction {prediction_id}")
    return row


def serialize(row: Prediction, images: list[PredictionImage], include_preprocessed: bool = False) -> dict:
    results = []
    if row.status == repo.SUCCEEDED or include_preprocessed:
        for image in images:
            result = {"index": image.idx}
            if row.status == repo.SUCCEEDED:
                result.update(digit=image.digit, confidence=image.confidence, probabilities=image.probabilities,
                              image_quality=image.quality)
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


def _documents(session, prediction_ids: list[str]) -> dict[str, dict]:
    if not prediction_ids:
        return {}
    rows = repo.many(session, prediction_ids)
    images = repo.images_of(session, prediction_ids)
    return {row.id: serialize(row, images[row.id]) for row in rows}


def get(services: Services, user_id: int | None, prediction_id: str, include_preprocessed: bool = False,
        wait: float = 0.0) -> dict:
    """The caller's prediction; with `wait`, held until it finishes or the time is up (a long poll
    on the result notice, no polling of the database)."""
    with unit_of_work(services.sessions) as session:
        row = _owned(session, user_id, prediction_id)
        document = serialize(row, repo.images_of(session, [row.id])[row.id], include_preprocessed)
    if wait <= 0 or document["status"] in FINISHED:
        return document
    notice = services.queue.wait(prediction_id, wait)
    if notice is None:
        return document
    if notice.get("document") and not include_preprocessed:
        return notice["document"]
    return get(services, user_id, prediction_id, include_preprocessed)


def _encode_cursor(row: Prediction) -> str:
    return base64.urlsafe_b64encode(json.dumps([row.created_at.isoformat(), row.id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        created, pid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        pid = str(pid)
        pid.encode("ascii")  # ids are hex: anything else (a lone surrogate too) is not ours
        return dt.datetime.fromisoformat(created), pid
    except (ValueError, TypeError, UnicodeError):
        raise InvalidInput("cursor is not one this server handed out", "bad_cursor") from None


def history(services: Services, user_id: int | None, limit_raw=None, cursor: str | None = None) -> dict:
    try:
        limit = int(limit_raw) if limit_raw not in (None, "") else 20
    except ValueError:
        raise InvalidInput("limit must be an integer from 1 to 100") from None
    if not 1 <= limit <= 100:
        raise InvalidInput("limit must be an integer from 1 to 100")
    after = _decode_cursor(cursor) if cursor else None
    with unit_of_work(services.sessions) as session:
        rows = repo.page_of(session, user_id, limit + 1, after)
        page, more = rows[:limit], len(rows) > limit
        images = repo.images_of(session, [row.id for row in page])
        return {
            "predictions": [serialize(row, images[row.id]) for row in page],
            "next_cursor": _encode_cursor(page[-1]) if more else None,
        }


def feedback(services: Services, user_id: int | None, prediction_id: str, payload) -> dict:
    if not isinstance(payload, dict):
        raise InvalidInput('send JSON {"index": 0, "label": 0-9}')
    index, label = payload.get("index", 0), payload.get("label")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= 9:
        raise InvalidInput("label must be an integer from 0 to 9")
    if not isinstance(index, int) or isinstance(index, bool):
        raise InvalidInput("index must be an integer")
    with unit_of_work(services.sessions) as session:
        row = _owned(session, user_id, prediction_id)
        image = repo.image(session, row.id, index)
        if image is None:
            raise InvalidInput(f"index must be between 0 and {row.n_images - 1}")
        if image.feedback_label != label or image.review_state is None:
            image.review_state = "pending"  # a new or changed correction waits for a review
            image.reviewed_by = image.reviewed_at = None
        image.feedback_label = label
        image.feedback_at = utcnow()
        session.flush()
        return serialize(row, repo.images_of(session, [row.id])[row.id])


# -- running predictions (the worker's side) ---------------------------------------------------------


class Runner:
    """What a worker process holds to run predictions: the services and the loaded networks."""

    def __init__(self, services: Services, models, name: str):
        self.services = services
        self.models = models  # models.serving.ModelCache
        self.name = name  # the worker's, as its heartbeats carry it
        self.stats = WorkerStats(services.redis, services.settings.redis_prefix)

    def _tell(self, notices: dict[str, dict]) -> None:
        """Notices and statistics are best effort: the results are already in the database."""
        try:
            self.services.queue.notify(notices)
        except redis.RedisError as exc:
            log.warning("%d predictions: could not send the result notices: %s", len(notices), exc)

    def _record(self, outcome: str, seconds: float | None = None, images: int | None = None,
                count: int = 1) -> None:
        try:
            self.stats.record(outcome, seconds, images, count)
        except redis.RedisError:
            pass

    def run(self, prediction_ids: list[str]) -> dict[str, str]:
        """Run the predictions of one job that wait to run; finished ones are only notified again.

        One transaction claims them, one network call per model version computes them and
        one transaction stores the results; each prediction still succeeds or fails alone.
        """
        services = self.services
        with unit_of_work(services.sessions) as session:
            claims = repo.claim(session, prediction_ids, self.name)
            claimed = {c.prediction_id for c in claims}
            others = {pid: row.status for pid in prediction_ids if pid not in claimed
                      for row in [repo.get(session, pid)] if row is not None}
        outcome = dict(others)
        finished = {pid: {"status": status} for pid, status in others.items() if status in FINISHED}
        if finished:  # delivered again after they finished: the results stand
            self._tell(finished)
        by_version: dict[int, list[repo.Claim]] = {}
        for claim in claims:
            by_version.setdefault(claim.model_version_id, []).append(claim)
        for version_id, group in by_version.items():
            outcome.update(self._run_group(version_id, group))
        return outcome

    def _run_group(self, version_id: int, claims: list[repo.Claim]) -> dict[str, str]:
        services = self.services
        try:
            model = self.models.get(services.catalog.by_id(version_id))
            images = [scale(np.stack([from_png(png) for png in c.pngs])) for c in claims]
            started = time.perf_counter()
            probabilities = model.probabilities(np.concatenate(images))
            compute = time.perf_counter() - started
            bounds = np.cumsum([0] + [len(batch) for batch in images])
            per_claim = [probabilities[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
            with unit_of_work(services.sessions) as session:
                succeeded = repo.succeed(session, claims, per_claim, compute * 1000)
            self._record("succeeded", compute, len(probabilities), len(succeeded))
            # the results travel with the notices, so a waiting request need not read them back
            self._tell({c.prediction_id: {"status": repo.SUCCEEDED, "document": serialize(c.row, c.images)}
                        for c in succeeded})
            done = {c.prediction_id: "superseded" for c in claims}
            done.update({c.prediction_id: repo.SUCCEEDED for c in succeeded})
            return done
        except TRANSIENT as exc:
            if min(c.attempt for c in claims) < services.settings.job_retries + 1:
                log.warning("%d predictions: transient error, will retry: %s", len(claims), exc)
                try:
                    with unit_of_work(services.sessions) as session:
                        for claim in claims:
                            repo.release(session, claim.prediction_id, repo.RUNNING, claim.attempt)
                except TRANSIENT:
                    pass  # the sweeper re-queues them once their attempt is stale
                raise  # the queue runs the job again
            return {c.prediction_id: self.fail(c.prediction_id, f"gave up after {c.attempt} attempts: {exc}",
                                               c.attempt) for c in claims}
        except Exception as exc:  # a bad model file, a broken image: retrying cannot help
            log.exception("%d predictions failed", len(claims))
            return {c.prediction_id: self.fail(c.prediction_id, f"{type(exc).__name__}: {exc}", c.attempt)
                    for c in claims}

    def fail(self, prediction_id: str, message: str, attempt: int | None = None) -> str:
        with unit_of_work(self.services.sessions) as session:
            failed = repo.fail(session, prediction_id, message, attempt)
        if failed:
            self._record("failed")
            self._tell({prediction_id: {"status": repo.FAILED}})
        return repo.FAILED


def sweep(services: Services) -> dict[str, int]:
    """Re-run or fail predictions whose job was lost (a killed worker, a flushed Redis).

    `running` on a worker whose heartbeat stopped, or longer than the job timeout,
    means the worker died mid-job; `queued` with no job waiting in Redis means the
    job itself is gone. Either is queued
    again while attempts remain, else marked failed - never left hanging. Every
    change is compare-and-set against what the sweep saw, so a prediction that
    started or finished meanwhile is left alone.
    """
    settings = services.settings
    now = utcnow()
    running_cutoff = now - dt.timedelta(seconds=settings.job_timeout + settings.job_stale_after)
    beat_cutoff = now - dt.timedelta(seconds=settings.worker_heartbeat_ttl)
    queued_cutoff = now - dt.timedelta(seconds=settings.job_stale_after)
    counts = {"requeued": 0, "failed": 0}
    lock = services.redis.lock(services.key("sweep-lock"), timeout=15, blocking=False)
    try:
        if not lock.acquire(blocking=False):
            return counts
    except redis.RedisError as exc:
        log.warning("sweep skipped: %s", exc)
        return counts
    try:
        with unit_of_work(services.sessions) as session:
            stale = {pid: (status, attempts, job_id) for pid, status, attempts, job_id in
                     repo.stale(session, running_cutoff, queued_cutoff)}
            running = repo.running(session, beat_cutoff)
        for prediction_id, attempts, worker, job_id in running:
            if not (worker and services.queue.worker_alive(worker)):
                stale[prediction_id] = (repo.RUNNING, attempts, job_id)
        pending: dict[str, bool] = {}
        for prediction_id, (status, attempts, job_id) in stale.items():
            if status == repo.QUEUED:
                if job_id not in pending:
                    pending[job_id] = services.queue.is_pending(job_id)
                if pending[job_id]:
                    continue
            if attempts < settings.job_retries + 1:
                with unit_of_work(services.sessions) as session:
                    released = repo.release(session, prediction_id, status, attempts, job_id=prediction_id)
                if released:
                    services.queue.requeue_lost(prediction_id, job_id)
                    counts["requeued"] += 1
            else:
                with unit_of_work(services.sessions) as session:
                    failed = repo.fail(session, prediction_id,
                                       f"the worker was lost {attempts} times while running this", attempts)
                if failed:
                    services.queue.notify({prediction_id: {"status": repo.FAILED}})
                    counts["failed"] += 1
    except (OperationalError, redis.RedisError) as exc:
        log.warning("sweep interrupted: %s", exc)
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass
    if any(counts.values()):
        log.warning("sweep: %s", counts)
    return counts


def purge_old(services: Services, days: float | None = None) -> int:
    """Delete finished predictions (and their images) older than `days` (default RETENTION_DAYS; 0 keeps all)."""
    days = services.settings.retention_days if days is None else days
    if days <= 0:
        return 0
    cutoff = utcnow() - dt.timedelta(days=days)
    removed = 0
    while True:
        with unit_of_work(services.sessions) as session:
            batch = repo.delete_finished_before(session, cutoff)
        removed += batch
        if batch == 0:
            return removed
