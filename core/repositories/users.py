"""Users and their API keys."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.db import ApiKey, User, utcnow


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
