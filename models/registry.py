"""Versioned models: `model_versions` rows, one active version per name, files in the store."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.db import ActiveModel, ModelVersion, unit_of_work, utcnow
from core.errors import Conflict, InvalidInput, NotFound, Unprocessable
from models.store import ModelStore

CGAN = "cgan"
# Families whose versions generate digits instead of classifying them (``models.gan``). Their
# versions are listed, shown and activated like the others, but `active_versions()` leaves
# them out and `get(..., kind="classifier")` refuses them, so no prediction path loads one.
GENERATOR_FAMILIES = frozenset({CGAN})
KINDS = ("classifier", "generator")


def kind_of(family: str) -> str:
    return "generator" if family in GENERATOR_FAMILIES else "classifier"


class RegistryError(Conflict):
    """A change the registry refuses (deleting the active version, a version number race)."""


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class WrongKind(Unprocessable):
    """A classifier asked of a generator (or the reverse)."""
    default_code = "wrong_model_kind"


@dataclass(frozen=True)
class VersionInfo:
    id: int
    name: str
    version: int
    family: str
    status: str
    active: bool
    blob_sha256: str
    hyperparameters: dict = field(hash=False)
    dataset_sha256: str | None
    test_accuracy: float | None
    metrics: dict = field(hash=False)
    confusion_matrix: list = field(hash=False)
    curves: dict = field(hash=False)
    train_seconds: float | None
    created_at: dt.datetime
    gate: dict | None = field(default=None, hash=False)    # a gated retrain's decision and figures
    search: dict | None = field(default=None, hash=False)  # a hyper-parameter search's generations

    @property
    def kind(self) -> str:
        """"classifier" (serves predictions) or "generator" (makes digits, never classifies)."""
        return kind_of(self.family)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "family": self.family,
            "kind": self.kind,
            "architecture": self.hyperparameters.get("architecture"),
            "active": self.active,
            "status": self.status,
            "test_accuracy": self.test_accuracy,
            "train_seconds": self.train_seconds,
            "created_at": self.created_at.isoformat() + "Z",
            "sha256": self.blob_sha256,
        }

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "hyperparameters": self.hyperparameters,
            "dataset_sha256": self.dataset_sha256,
            "metrics": self.metrics,
            "confusion_matrix": self.confusion_matrix,
            "curves": self.curves,
            "gate": self.gate,
            "search": self.search,
        }


def parse_model_spec(spec: str) -> tuple[str, int | None]:
    """'cnn' -> ('cnn', None); 'cnn:3' -> ('cnn', 3)."""
    name, _, version = spec.strip().partition(":")
    if not name or (version and not version.isdigit()):
        raise InvalidInput(f"model must be 'name' or 'name:version', got {spec!r}")
    return name, int(version) if version else None


class ModelRegistry:
    def __init__(self, sessions: sessionmaker[Session], store: ModelStore):
        self.sessions = sessions
        self.store = store
        # called after a change is committed (a version registered, activated or deleted):
        # the services layer tells every process's cache
        self.on_change: Callable[[], None] = lambda: None

    @staticmethod
    def _info(row: ModelVersion, active_id: int | None) -> VersionInfo:
        return VersionInfo(
            id=row.id,
            name=row.name,
            version=row.version,
            family=row.family,
            status=row.status,
            active=row.id == active_id,
            blob_sha256=row.blob_sha256,
            hyperparameters=row.hyperparameters or {},
            dataset_sha256=row.dataset_sha256,
            test_accuracy=row.test_accuracy,
            metrics=row.metrics or {},
            confusion_matrix=row.confusion_matrix or [],
            curves=row.curves or {},
            train_seconds=row.train_seconds,
            created_at=row.created_at,
            gate=row.gate,
            search=row.search,
        )

    @staticmethod
    def _active_ids(session: Session) -> dict[str, int]:
        return dict(session.execute(select(ActiveModel.name, ActiveModel.version_id)).all())

    def register(
        self,
        name: str,
        family: str,
        model_file: Path,
        *,
        hyperparameters: dict | None = None,
        dataset_sha256: str | None = None,
        test_accuracy: float | None = None,
        metrics: dict | None = None,
        confusion_matrix: list | None = None,
        curves: dict | None = None,
        train_seconds: float | None = None,
        activate: bool = False,
        gate: dict | None = None,
        search: dict | None = None,
    ) -> VersionInfo:
        for _attempt in range(5):
            try:
                with unit_of_work(self.sessions) as session:
                    sha = self.store.put(model_file, session=session)
                    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
                    row = ModelVersion(
                        name=name,
                        version=(latest or 0) + 1,
                        family=family,
                        status="ready",
                        blob_sha256=sha,
                        hyperparameters=hyperparameters or {},
                        dataset_sha256=dataset_sha256,
                        test_accuracy=test_accuracy,
                        metrics=metrics or {},
                        confusion_matrix=confusion_matrix or [],
                        curves=curves or {},
                        train_seconds=train_seconds,
                        gate=gate,
                        search=search,
                    )
                    session.add(row)
                    session.flush()
                    if activate:
                        self._set_active(session, name, row.id)
                    info = self._info(row, row.id if activate else self._active_ids(session).get(name))
                self.on_change()
                return info
            except IntegrityError:
                continue  # another trainer took the same version number: take the next one
        raise RegistryError(f"could not allocate a version number for {name!r}")

    def list(self, name: str | None = None) -> list[VersionInfo]:
        with unit_of_work(self.sessions) as session:
            query = select(ModelVersion).where(ModelVersion.status != "deleted")
            if name is not None:
                query = query.where(ModelVersion.name == name)
            rows = session.scalars(query.order_by(ModelVersion.name, ModelVersion.version)).all()
            active = self._active_ids(session)
            return [self._info(row, active.get(row.name)) for row in rows]

    def get(self, name: str, version: int | str | None = "active", kind: str | None = None) -> VersionInfo:
        """The active version of `name`, or a given version number; with `kind`, `WrongKind`
        unless the version is of that kind (the prediction paths ask for "classifier")."""
        info = self._get(name, version)
        if kind is not None and info.kind != kind:
            raise WrongKind(f"{info.name}:{info.version} is a {info.kind} ({info.family}), not a {kind}")
        return info

    def _get(self, name: str, version: int | str | None) -> VersionInfo:
        with unit_of_work(self.sessions) as session:
            active = self._active_ids(session)
            if version in (None, "active"):
                version_id = active.get(name)
                if version_id is None:
                    if session.scalar(select(ModelVersion.id).where(ModelVersion.name == name).limit(1)) is None:
                        raise ModelNotFound(f"no model named {name!r}")
                    raise ModelNotFound(f"model {name!r} has no active version")
                row = session.get(ModelVersion, version_id)
            else:
                row = self._version_row(session, name, int(version))
            return self._info(row, active.get(name))

    def get_by_id(self, version_id: int) -> VersionInfo:
        with unit_of_work(self.sessions) as session:
            row = session.get(ModelVersion, version_id)
            if row is None:
                raise ModelNotFound(f"no model version with id {version_id}")
            return self._info(row, self._active_ids(session).get(row.name))

    def active_versions(self, kind: str | None = "classifier") -> dict[str, VersionInfo]:
        """name -> active version of that kind (classifiers unless asked; None: every kind),
        most recently activated first."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
        with unit_of_work(self.sessions) as session:
            pairs = session.execute(
                select(ModelVersion, ActiveModel.version_id)
                .join(ActiveModel, ActiveModel.version_id == ModelVersion.id)
                .order_by(ActiveModel.activated_at.desc(), ModelVersion.name)
            ).all()
            return {row.name: self._info(row, active_id) for row, active_id in pairs
                    if kind is None or kind_of(row.family) == kind}

    @staticmethod
    def _set_active(session: Session, name: str, version_id: int) -> None:
        current = session.get(ActiveModel, name)
        if current is None:
            session.add(ActiveModel(name=name, version_id=version_id, activated_at=utcnow()))
        else:
            current.version_id = version_id
            current.activated_at = utcnow()
        session.flush()

    @staticmethod
    def _version_row(session: Session, name: str, version: int) -> ModelVersion:
        row = session.scalar(
            select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == int(version))
        )
        if row is None or row.status == "deleted":
            raise ModelNotFound(f"model {name!r} has no version {version}")
        return row

    def activate(self, name: str, version: int) -> VersionInfo:
        """Promote a version, or roll back to an earlier one."""
        with unit_of_work(self.sessions) as session:
            row = self._version_row(session, name, version)
            self._set_active(session, name, row.id)
            info = self._info(row, row.id)
        self.on_change()
        return info

    def delete(self, name: str, version: int) -> None:
        """Soft-delete a version (predictions keep pointing at it); its file goes when unused."""
        with unit_of_work(self.sessions) as session:
            row = self._version_row(session, name, version)
            if self._active_ids(session).get(name) == row.id:
                raise RegistryError(
                    f"{name}:{version} is the active version; activate another version first"
                )
            row.status = "deleted"
            session.flush()
            still_used = session.scalar(
                select(func.count())
                .select_from(ModelVersion)
                .where(ModelVersion.blob_sha256 == row.blob_sha256, ModelVersion.status != "deleted")
            )
            if not still_used:
                self.store.drop_bytes(row.blob_sha256, session)
        self.on_change()

    def fetch_file(self, info: VersionInfo) -> Path:
        return self.store.fetch(info.blob_sha256)
