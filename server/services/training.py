"""Training jobs: submit (API and `--queue`), look up, list, cancel; run one (the training worker's side).

A job's spec is validated here, once, for the API, the CLI's `--queue` and the CLI's foreground run
alike; `execute` runs a validated spec through the trainers' functions.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re

import redis

from core.db import TrainingJob, unit_of_work, utcnow
from core.errors import InvalidInput, NotFound, Unavailable
from core.repositories import training as repo
from models import families
from models.registry import VersionInfo
from server.services.bootstrap import Services
from server.services.predictions import isoformat
from trainers.progress import OnEpoch, TrainingCancelled

log = logging.getLogger("digitserve.training")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class JobNotFound(NotFound):
    default_code = "training_job_not_found"


# -- the spec --------------------------------------------------------------------------------------


def _int(spec: dict, key: str, low: int, high: int, default=None):
    value = spec.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInput(f"{key} must be an integer from {low} to {high}")
    return value


def _fraction(spec: dict, key: str, low: float, high: float):
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInput(f"{key} must be a number from {low:g} to {high:g}")
    return float(value)


def _bool(spec: dict, key: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} must be true or false")
    return value


def _name(spec: dict, key: str, default: str | None = None) -> str | None:
    value = spec.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidInput(f"{key} must be 1-64 letters, digits, '_', '.' or '-'")
    return value


def _family(spec: dict) -> str:
    value = spec.get("family")
    if value not in families.names():
        raise InvalidInput(f"family must be one of {', '.join(families.names())}", "unknown_family")
    return value


def validate(services: Services, payload) -> tuple[str, dict]:
    """(kind, spec) with defaults filled in, or InvalidInput / ModelNotFound saying what is wrong."""
    if not isinstance(payload, dict):
        raise InvalidInput('send JSON {"kind": "train" | "retrain" | "tune", ...}')
    kind = payload.get("kind")
    if kind not in repo.KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(repo.KINDS)}", "bad_kind")
    known = {"train": {"family", "name", "epochs", "batch_size", "limit", "seed", "activate", "with_feedback"},
             "retrain": {"name", "epochs", "limit", "seed", "tolerance", "holdout_share"},
             "tune": {"family", "name", "population", "generations", "seed", "epochs", "limit", "elitism"}}[kind]
    unknown = sorted(set(payload) - known - {"kind"})
    if unknown:
        raise InvalidInput(f"unknown fields for {kind}: {', '.join(unknown)}")
    common = {"epochs": _int(payload, "epochs", 1, 1000), "limit": _int(payload, "limit", 100, 60000),
              "seed": _int(payload, "seed", 0, 2**31 - 1, 0)}
    if kind == "train":
        family = _family(payload)
        spec = {"family": family, "name": _name(payload, "name", family), **common,
                "batch_size": _int(payload, "batch_size", 1, 8192), "activate": _bool(payload, "activate"),
                "with_feedback": _bool(payload, "with_feedback")}
    elif kind == "retrain":
        name = _name(payload, "name")
        if name is None:
            raise InvalidInput("name (the model to retrain) is required")
        services.registry.get(name)  # 404 now, not in the worker: it needs an active version
        spec = {"name": name, **common, "tolerance": _fraction(payload, "tolerance", 0.0, 1.0),
                "holdout_share": _fraction(payload, "holdout_share", 0.01, 0.99)}
    else:
        family = _family(payload)
        population = _int(payload, "population", 2, 64, 8)
        spec = {"family": family, "name": _name(payload, "name", family), **common, "population": population,
                "generations": _int(payload, "generations", 1, 50, 5),
                "elitism": _int(payload, "elitism", 0, population - 1, 1)}
    return kind, spec


def execute(services: Services, kind: str, spec: dict, *, progress: bool = False,
            on_epoch: OnEpoch | None = None, on_generation=None) -> VersionInfo:
    """Run a validated spec in this process (a training worker, or the CLI in the foreground)."""
    settings, registry = services.settings, services.registry
    if kind == "train":
        from trainers.register import train_and_register

        return train_and_register(settings, registry, spec["family"], name=spec["name"], epochs=spec["epochs"],
                                  batch_size=spec["batch_size"], limit=spec["limit"], seed=spec["seed"],
                                  activate=spec["activate"], progress=progress, use_feedback=spec["with_feedback"],
                                  on_epoch=on_epoch)
    if kind == "retrain":
        from trainers.retrain import retrain

        return retrain(settings, registry, spec["name"], epochs=spec["epochs"], limit=spec["limit"],
                       seed=spec["seed"], tolerance=spec["tolerance"], holdout_share=spec["holdout_share"],
                       progress=progress, on_epoch=on_epoch)
    from trainers.tune import tune

    return tune(settings, registry, spec["name"], family=spec["family"], population=spec["population"],
                generations=spec["generations"], seed=spec["seed"], epochs=spec["epochs"], limit=spec["limit"],
                elitism=spec["elitism"], progress=progress, on_epoch=on_epoch, on_generation=on_generation)


def outcome(info: VersionInfo) -> dict:
    """What a finished job reports: the version it registered, its figures, the gate or the search."""
    return {"model": {"name": info.name, "version": info.version, "family": info.family, "active": info.active},
            "test_accuracy": info.test_accuracy, "gate": info.gate, "search": info.search}


# -- the API's use cases ---------------------------------------------------------------------------


def document(job: TrainingJob) -> dict:
    return {
        "id": job.id, "kind": job.kind, "spec": job.spec, "status": job.status,
        "progress": job.progress or [], "result": job.result, "error": job.error,
        "cancel_requested": bool(job.cancel_requested), "created_by": job.created_by, "worker": job.worker,
        "created_at": isoformat(job.created_at), "started_at": isoformat(job.started_at),
        "finished_at": isoformat(job.finished_at),
    }


def submit(services: Services, user_id: int | None, payload) -> dict:
    """Store a queued job, then put it on the training queue (a worker never meets an uncommitted job)."""
    kind, spec = validate(services, payload)
    with unit_of_work(services.sessions) as session:
        job = repo.create(session, kind, spec, user_id)
    try:
        services.training_queue.enqueue_training(job.id)
    except redis.RedisError as exc:
        with unit_of_work(services.sessions) as session:
            repo.request_cancel(session, job.id)
        raise Unavailable(f"the training queue is unavailable; the job was not queued ({exc})") from None
    return get(services, job.id)


def get(services: Services, job_id: str) -> dict:
    with unit_of_work(services.sessions) as session:
        job = repo.get(session, job_id)
        if job is None:
            raise JobNotFound(f"no training job {job_id}")
        return document(job)


def _cursor(job: TrainingJob) -> str:
    return base64.urlsafe_b64encode(json.dumps([job.created_at.isoformat(), job.id]).encode()).decode()


def listing(services: Services, status=None, limit_raw=None, cursor=None) -> dict:
    """Jobs newest first; progress is left out (GET one job for it)."""
    if status not in (None, "") and status not in repo.STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(repo.STATUSES)}")
    try:
        limit = int(limit_raw) if limit_raw not in (None, "") else 20
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise InvalidInput("limit must be an integer from 1 to 100")
    after = None
    if cursor:
        try:
            created, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            after = (dt.datetime.fromisoformat(created), str(job_id))
        except (ValueError, TypeError, UnicodeError):
            raise InvalidInput("cursor is not one this server handed out", "bad_cursor") from None
    with unit_of_work(services.sessions) as session:
        rows = repo.page(session, limit + 1, status or None, after)
        page = rows[:limit]
        jobs = []
        for job in page:
            doc = document(job)
            doc["epochs_done"] = sum(1 for p in doc.pop("progress") if p.get("type") == "epoch")
            jobs.append(doc)
        return {"jobs": jobs, "next_cursor": _cursor(page[-1]) if len(rows) > limit else None}


def cancel(services: Services, job_id: str) -> dict:
    """A queued job is cancelled at once (it will never start); a running one stops after its epoch."""
    with unit_of_work(services.sessions) as session:
        status = repo.request_cancel(session, job_id)
    if status is None:
        raise JobNotFound(f"no training job {job_id}")
    if status == repo.CANCELLED:
        try:
            services.training_queue.discard(job_id)
        except redis.RedisError:
            pass  # the worker meets a cancelled job and skips it
    return get(services, job_id)


# -- the training worker's side --------------------------------------------------------------------


def run(services: Services, job_id: str, worker: str) -> str:
    """Run one queued job in this process; the status it ends with."""
    with unit_of_work(services.sessions) as session:
        if not repo.start(session, job_id, worker):
            job = repo.get(session, job_id)
            return job.status if job is not None else "missing"
        job = repo.get(session, job_id)
        kind, spec = job.kind, dict(job.spec)

    def record(entry: dict) -> bool:
        with unit_of_work(services.sessions) as session:
            return repo.add_progress(session, job_id, {**entry, "at": isoformat(utcnow())})

    stopping = services.training_queue.stopping  # the worker was asked to stop (SIGTERM)

    def on_epoch(entry: dict) -> bool:
        return record({"type": "epoch", **entry}) or stopping.is_set()

    def on_generation(entry: dict) -> None:
        if record({"type": "generation", **entry}) or stopping.is_set():
            raise TrainingCancelled("cancelled between generations")

    try:
        info = execute(services, kind, spec, on_epoch=on_epoch, on_generation=on_generation)
    except TrainingCancelled as exc:
        with unit_of_work(services.sessions) as session:
            cancelled = repo.cancel_requested(session, job_id)
        if stopping.is_set() and not cancelled and _hand_back(services, job_id, worker):
            return repo.QUEUED
        status, result, error = repo.CANCELLED, None, str(exc)
    except Exception as exc:  # bad data, a model file that will not load, the database away: reported
        log.exception("training job %s failed", job_id)
        status, result, error = repo.FAILED, None, f"{type(exc).__name__}: {exc}"
    else:
        status, result, error = repo.SUCCEEDED, outcome(info), None
    with unit_of_work(services.sessions) as session:
        repo.finish(session, job_id, status, result, error)
    return status


def _hand_back(services: Services, job_id: str, worker: str) -> bool:
    """A stopping worker puts its unfinished job back on the queue, to run again from the start."""
    with unit_of_work(services.sessions) as session:
        restart = repo.requeue(session, job_id, f"the worker {worker} stopped before the job finished")
    if restart is None:
        return False
    try:
        services.training_queue.enqueue_training(job_id, restart)
    except redis.RedisError as exc:
        with unit_of_work(services.sessions) as session:
            repo.request_cancel(session, job_id)
        log.warning("training job %s: could not queue it again (%s); cancelled", job_id, exc)
    return True


def fail_lost(services: Services) -> int:
    """Jobs left running by a training worker that is gone (no heartbeat) are failed, not silently lost."""
    lost = 0
    with unit_of_work(services.sessions) as session:
        for job_id, worker in repo.running(session):
            if not worker or not services.training_queue.worker_alive(worker):
                lost += repo.finish(session, job_id, repo.FAILED, None, f"the worker {worker} running it was lost")
    return lost
