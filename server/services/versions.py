"""What the models dashboard and API clients see of the registry: versions with their training
record, and how each version fared on the digits users labelled (reads uncached: see catalog.py for
the lookups requests make)."""
from __future__ import annotations

from core.db import unit_of_work
from core.repositories import predictions as repo
from models.registry import ModelNotFound, VersionInfo
from server.services.bootstrap import Services


def _feedback(services: Services, versions: list[VersionInfo]) -> dict[int, dict]:
    with unit_of_work(services.sessions) as session:
        counts = repo.feedback_agreement(session, [v.id for v in versions])
    out = {}
    for v in versions:
        labelled, agreed = counts.get(v.id, (0, 0))
        out[v.id] = {"labelled": labelled, "agreed": agreed,
                     "accuracy": round(agreed / labelled, 6) if labelled else None}
    return out


def list_models(services: Services) -> dict:
    versions = services.registry.list()
    feedback = _feedback(services, versions)
    grouped: dict[str, dict] = {}
    for info in versions:
        entry = grouped.setdefault(info.name, {"name": info.name, "active_version": None, "versions": []})
        entry["versions"].append({**info.summary(), "feedback": feedback[info.id]})
        if info.active:
            entry["active_version"] = info.version
    return {"models": list(grouped.values())}


def model_detail(services: Services, name: str) -> dict:
    versions = services.registry.list(name)
    if not versions:
        raise ModelNotFound(f"no model named {name!r}")
    feedback = _feedback(services, versions)
    details = [{**v.detail(), "feedback": feedback[v.id]} for v in versions]
    active = next((d for d, v in zip(details, versions) if v.active), None)
    return {
        "name": name,
        "active_version": active["version"] if active else None,
        "active": active,
        "versions": details,
    }
