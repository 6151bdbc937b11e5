"""Model versions as requests look them up: the registry behind a per-process cache.

Writes go to the registry; its `on_change` hook publishes an invalidation, so
every process (this one at once) reads the active versions afresh after an
activation, a new version or a deletion.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable

from models.registry import ModelRegistry, VersionInfo, WrongKind
from server.services.invalidation import Invalidations

TOPIC = "models"


class Catalog:
    def __init__(self, registry: ModelRegistry, invalidations: Invalidations, ttl: float):
        self.registry = registry
        self.invalidations = invalidations
        self._cache = invalidations.cache("models", ttl)
        invalidations.handlers[TOPIC] = lambda _value: self._cache.drop()
        registry.on_change = lambda: invalidations.publish(TOPIC)

    def _cached(self, key: Hashable, load: Callable[[], Any]) -> Any:
        return self.invalidations.through(self._cache, key, load)

    def active_versions(self) -> dict[str, VersionInfo]:
        """name -> active version, most recently activated first (do not modify the result)."""
        return self._cached("active", self.registry.active_versions)

    def get(self, name: str, version: int | str | None = "active", kind: str | None = None) -> VersionInfo:
        """As `ModelRegistry.get`: with `kind`, `WrongKind` unless the version is of that kind
        (the prediction paths ask for "classifier", so a generator never answers them)."""
        version = "active" if version is None else version
        info = self._cached(("get", name, version), lambda: self.registry.get(name, version))
        if kind is not None and info.kind != kind:
            raise WrongKind(f"{info.name}:{info.version} is a {info.kind} ({info.family}), not a {kind}")
        return info

    def by_id(self, version_id: int) -> VersionInfo:
        return self._cached(("id", version_id), lambda: self.registry.get_by_id(version_id))
