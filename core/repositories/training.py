"""Training jobs: training, retraining and hyper-parameter searches, whichever process runs them.

Status moves by compare-and-set: queued -> running -> succeeded / failed / cancelled, or
queued -> cancelled directly (a cancelled queued job never starts). Cancelling a running job only
raises its flag; the job sees it at the next epoch and ends as cancelled.
"""
from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from core.db import TrainingJob, utcnow

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
KINDS = ("train", "retrain", "tune")


def create(session: Session, kind: str, spec: dict, created_by: int | None, status: str = QUEUED) -> TrainingJob:
    job = TrainingJob(id=uuid.uuid4().hex, kind=kind, spec=spec, status=status, progress=[], result=None,
                      cancel_requested=False, created_by=created_by, created_at=utcnow(),
                      started_at=utcnow() if status == RUNNING else None)
    session.add(job)
    session.flush()
    return job


def get(session: Session, job_id: str) -> TrainingJob | None:
    if len(job_id) > 32:
        return None
    return session.execute(select(TrainingJob).where(TrainingJob.id == job_id)
                           .execution_options(populate_existing=True)).scalar_one_or_none()


def page(session: Session, limit: int, status: str | None = None,
         after: tuple[dt.datetime, str] | None = None) -> list[TrainingJob]:
    """Newest first, from just after the cursor `(created_at, id)`."""
    query = select(TrainingJob)
    if status is not None:
        query = query.where(TrainingJob.status == status)
    if after is not None:
        created, job_id = after
        query = query.where(or_(TrainingJob.created_at < created,
                                and_(TrainingJob.created_at == created, TrainingJob.id < job_id)))
    return list(session.scalars(query.order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc()).limit(limit)))


def start(session: Session, job_id: str, worker: str) -> bool:
    """queued -> running by `worker`; False when it is not waiting (cancelled, already run)."""
    return session.execute(
        update(TrainingJob).where(TrainingJob.id == job_id, TrainingJob.status == QUEUED,
                                  TrainingJob.cancel_requested.is_(False))
        .values(status=RUNNING, started_at=utcnow(), worker=worker[:128])
        .execution_options(synchronize_session=False)).rowcount == 1


def add_progress(session: Session, job_id: str, entry: dict) -> bool:
    """Append one progress entry; returns whether cancelling was asked for."""
    job = get(session, job_id)
    if job is None:
        return False
    job.progress = [*(job.progress or []), entry]
    session.flush()
    return bool(job.cancel_requested)


def requeue(session: Session, job_id: str, reason: str) -> int | None:
    """running -> queued again (its worker stopped before it finished); the number of this restart, or
    None when the job was no longer running. The progress so far stays, after a `requeued` marker."""
    job = get(session, job_id)
    if job is None or job.status != RUNNING:
        return None
    restarts = 1 + sum(1 for entry in job.progress or [] if entry.get("type") == "requeued")
    job.progress = [*(job.progress or []), {"type": "requeued", "reason": reason, "at": utcnow().isoformat() + "Z"}]
    job.status, job.worker, job.started_at = QUEUED, None, None
    session.flush()
    return restarts


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(TrainingJob.cancel_requested).where(TrainingJob.id == job_id)))


def finish(session: Session, job_id: str, status: str, result: dict | None = None, error: str | None = None) -> bool:
    """running -> succeeded, failed or cancelled."""
    return session.execute(
        update(TrainingJob).where(TrainingJob.id == job_id, TrainingJob.status == RUNNING)
        .values(status=status, result=result, error=None if error is None else error[:4000], finished_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount == 1


def request_cancel(session: Session, job_id: str) -> str | None:
    """A queued job is cancelled at once, a running one is flagged; the status afterwards (None: no job)."""
    if session.execute(
            update(TrainingJob).where(TrainingJob.id == job_id, TrainingJob.status == QUEUED)
            .values(status=CANCELLED, cancel_requested=True, finished_at=utcnow())
            .execution_options(synchronize_session=False)).rowcount:
        return CANCELLED
    session.execute(
        update(TrainingJob).where(TrainingJob.id == job_id, TrainingJob.status == RUNNING)
        .values(cancel_requested=True).execution_options(synchronize_session=False))
    job = get(session, job_id)
    return None if job is None else job.status


def running(session: Session) -> list[tuple[str, str | None]]:
    """(id, worker) of the running jobs."""
    return [tuple(row) for row in session.execute(
        select(TrainingJob.id, TrainingJob.worker).where(TrainingJob.status == RUNNING))]
