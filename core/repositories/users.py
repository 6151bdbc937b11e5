"""Users, their API keys, and the audit log of changes to accounts."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from core.db import ApiKey, AuditEntry, Prediction, PredictionImage, User, utcnow


def add_user(session: Session, email: str, password_hash: str, role: str) -> User:
    user = User(email=email, password_hash=password_hash, role=role)
    session.add(user)
    session.flush()
    return user


def user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email))


def user_by_id(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def any_admin(session: Session) -> bool:
    return session.scalar(select(User.id).where(User.role == "admin").limit(1)) is not None


def count_admins(session: Session, enabled_only: bool = True) -> int:
    query = select(func.count()).select_from(User).where(User.role == "admin")
    if enabled_only:
        query = query.where(User.disabled_at.is_(None))
    return session.scalar(query) or 0


def all_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def prediction_counts(session: Session) -> dict[int, int]:
    """user id -> how many predictions the user has."""
    return dict(session.execute(
        select(Prediction.user_id, func.count()).where(Prediction.user_id.is_not(None)).group_by(Prediction.user_id)
    ).all())


def end_sessions(session: Session, user_id: int) -> int:
    """Every session made before now stops working; returns the new generation."""
    session.execute(update(User).where(User.id == user_id)
                    .values(session_generation=User.session_generation + 1)
                    .execution_options(synchronize_session=False))
    return session.scalar(select(User.session_generation).where(User.id == user_id))


def delete_user(session: Session, user_id: int) -> int:
    """The user, their keys (cascade), predictions and images; returns how many predictions went."""
    ids = select(Prediction.id).where(Prediction.user_id == user_id).scalar_subquery()
    session.execute(delete(PredictionImage).where(PredictionImage.prediction_id.in_(ids))
                    .execution_options(synchronize_session=False))
    gone = session.execute(delete(Prediction).where(Prediction.user_id == user_id)
                           .execution_options(synchronize_session=False)).rowcount
    session.execute(delete(ApiKey).where(ApiKey.user_id == user_id).execution_options(synchronize_session=False))
    session.execute(delete(User).where(User.id == user_id).execution_options(synchronize_session=False))
    return gone


def add_audit(session: Session, actor: User, target: User, action: str) -> AuditEntry:
    entry = AuditEntry(actor_id=actor.id, actor_email=actor.email, target_id=target.id,
                       target_email=target.email, action=action, created_at=utcnow())
    session.add(entry)
    session.flush()
    return entry


def audit_entries(session: Session, limit: int = 50) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)))


def add_key(session: Session, key_id: str, user_id: int, name: str, scopes: list[str], secret_encrypted: str) -> None:
    session.add(ApiKey(key_id=key_id, user_id=user_id, name=name, scopes=scopes, secret_encrypted=secret_encrypted))


def keys_of(session: Session, user_id: int) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)))


def key_by_key_id(session: Session, key_id: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))


def key_with_owner(session: Session, key_id: str) -> tuple[ApiKey, User] | None:
    found = session.execute(
        select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.key_id == key_id)
    ).first()
    return None if found is None else (found[0], found[1])


def mark_key_used(session: Session, key_id: str) -> None:
    """Record a use at most once a second per key (a write per request would be wasted)."""
    now = utcnow()
    session.execute(update(ApiKey).where(
        ApiKey.key_id == key_id,
        or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - dt.timedelta(seconds=1)),
    ).values(last_used_at=now))
