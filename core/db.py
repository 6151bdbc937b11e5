"""SQLAlchemy tables and session handling (MySQL/MariaDB and SQLite)."""
from __future__ import annotations

import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

# MEDIUMBLOB on MySQL (16 MiB): model blobs are stored in 1 MiB chunks, PNGs are tiny.
Blob = LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")


# Microsecond precision on MySQL too (queue and compute timings come from these).
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ModelBlob(Base):
    __tablename__ = "model_blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class ModelBlobChunk(Base):
    __tablename__ = "model_blob_chunks"
    sha256: Mapped[str] = mapped_column(
        String(64), ForeignKey("model_blobs.sha256", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(Blob)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_versions_name_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    family: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="ready")
    blob_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("model_blobs.sha256"))
    hyperparameters: Mapped[dict] = mapped_column(JSON, default=dict)
    dataset_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    test_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    confusion_matrix: Mapped[list] = mapped_column(JSON, default=list)
    curves: Mapped[dict] = mapped_column(JSON, default=dict)
    train_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    # a gated retrain's decision with both versions' figures; a hyper-parameter search's generations
    gate: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    search: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class ActiveModel(Base):
    """Exactly one active version per name: the name is the primary key."""

    __tablename__ = "active_models"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, ForeignKey("model_versions.id"))
    activated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    # a disabled account cannot sign in, and its sessions and keys stop working at once
    disabled_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    # sessions carry the generation they were made in; bumping it ends every session of the user
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AuditEntry(Base):
    """Who changed whose account, and how. E-mails are copied: the rows outlive deleted accounts."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    actor_email: Mapped[str] = mapped_column(String(254))
    target_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    target_email: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(32))


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_predictions_idempotency"),
        Index("ix_predictions_user_created", "user_id", "created_at"),
        Index("ix_predictions_status_created", "status", "created_at"),  # the workers' sweep
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    model_version_id: Mapped[int] = mapped_column(Integer, ForeignKey("model_versions.id"))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    source: Mapped[str] = mapped_column(String(16), default="api")
    n_images: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    request_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    queue_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    compute_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the queue job carrying it (a batch)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)  # who runs or ran it


class PredictionImage(Base):
    __tablename__ = "prediction_images"
    prediction_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sha256: Mapped[str] = mapped_column(String(64))
    preprocessed_png: Mapped[bytes] = mapped_column(Blob)
    quality: Mapped[float | None] = mapped_column(Float, nullable=True)  # ink/paper separation, 0..1
    digit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    probabilities: Mapped[list | None] = mapped_column(JSON, nullable=True)
    feedback_label: Mapped[int | None] = mapped_column(Integer, nullable=True)
    feedback_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    # an administrator's review of the correction: pending (new or changed), accepted, excluded
    review_state: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    reviewed_by: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)


class TrainingJob(Base):
    """A training, retraining or search run on the training queue (or in the foreground)."""

    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_created", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # train, retrain, tune
    spec: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[list] = mapped_column(JSON, default=list)  # one entry per epoch (and per generation)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_by: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)


def make_engine(url: str, timeout: float | None = None, **kwargs: Any) -> Engine:
    """`timeout` bounds connecting, each read and write, and the wait for a pooled connection,
    so a database that hangs fails a request in seconds instead of holding it."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": timeout or 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_recycle", 3600)
    if timeout:
        seconds = max(1, int(round(timeout)))
        kwargs.setdefault("pool_timeout", timeout)
        kwargs["connect_args"] = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds,
                                  **kwargs.get("connect_args", {})}
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextlib.contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that commits on success and rolls back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def wait_for_database(engine: Engine, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
