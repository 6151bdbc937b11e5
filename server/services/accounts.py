"""Who is calling: users and passwords, browser sessions, API keys, signed requests, rate limits."""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.exc import IntegrityError

from core import signing
from core.db import User, unit_of_work, utcnow
from core.errors import (Conflict, Forbidden, InvalidInput, NotFound, RateLimited, Unauthenticated,
                         Unavailable)
from core.repositories import users as repo
from server.services.bootstrap import Services

log = logging.getLogger("digitserve.accounts")

# OWASP's argon2id baseline: m=19 MiB, t=2, p=1.
PASSWORDS = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16)
# Verified when the email is unknown, so both failures take the same time.
_DUMMY_HASH = PASSWORDS.hash(secrets.token_hex(16))
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
COMMON_PASSWORDS = {"password", "password1", "password123", "123456789", "1234567890", "qwertyuiop",
                    "iloveyou", "letmein123", "welcome123", "admin12345", "passw0rd", "abc123456"}
SCOPES = ("predict", "admin")
NONCE_RE = re.compile(r"^[A-Za-z0-9._~-]{16,64}$")
AUTH_RE = re.compile(r"^DS1-HMAC-SHA256 KeyId=([A-Za-z0-9_-]{1,64}),\s*Signature=([0-9a-fA-F]{64})$")
SESSION_COOKIE = "ds_session"
# A failed signature check answers after this long at least, whether the key exists or not:
# the lookup's own cost must not tell an attacker which key ids are real.
FAILED_SIGNATURE_SECONDS = 0.01
MARK_USED_EVERY = 60.0  # seconds between two writes of a key's last-used time by one process
_decoy_plain = secrets.token_urlsafe(32)  # signs for an unknown key: the comparison then fails as for a wrong one


@dataclass(frozen=True)
class Principal:
    user_id: int
    email: str
    role: str
    via: str  # "session", "signature" or "bearer"
    key_id: str | None = None
    scopes: tuple[str, ...] = ()
    csrf_token: str | None = None
    key_pk: int | None = None  # the key's database id: nonces and rate limits hang on it
    disabled: bool = False  # the owner's account is disabled (a key's principal, refused once verified)

    def can(self, scope: str) -> bool:
        if self.via == "session":
            return scope == "predict" or self.role == "admin"
        return scope in self.scopes and (scope != "admin" or self.role == "admin")

    @property
    def rate_key(self) -> str:
        return f"key:{self.key_pk}" if self.key_pk is not None else f"user:{self.user_id}"


def user_document(user: User) -> dict:
    return {"id": user.id, "email": user.email, "role": user.role}


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


ACCOUNT_DISABLED = "this account is disabled; ask an administrator to re-enable it"


def _refuse_disabled(user: User) -> None:
    if user.disabled_at is not None:
        raise Forbidden(ACCOUNT_DISABLED, "account_disabled")


# -- users and passwords -------------------------------------------------------------------


def check_password_strength(email: str, password: str) -> None:
    if not isinstance(password, str) or len(password) < 10:
        raise InvalidInput("password must be at least 10 characters", "weak_password")
    if len(password) > 256:
        raise InvalidInput("password must be at most 256 characters", "weak_password")
    lowered = password.lower()
    local = email.split("@")[0].lower()
    if lowered in COMMON_PASSWORDS or len(set(password)) < 5 or (len(local) >= 3 and local in lowered):
        raise InvalidInput("password is too easy to guess: use more varied characters", "weak_password")


def has_admin(services: Services) -> bool:
    with unit_of_work(services.sessions) as session:
        return repo.any_admin(session)


def create_user(services: Services, email, password, role: str = "user") -> dict:
    if not isinstance(email, str) or not EMAIL_RE.match(email.strip()):
        raise InvalidInput("email must be a valid address", "bad_email")
    email = email.strip().lower()
    check_password_strength(email, password)
    try:
        with unit_of_work(services.sessions) as session:
            return user_document(repo.add_user(session, email, PASSWORDS.hash(password), role))
    except IntegrityError:
        raise Conflict("an account with this email already exists", "email_taken") from None


def _login_fail_key(services: Services, email: str) -> str:
    return services.key("login-fail", hashlib.sha256(email.encode()).hexdigest()[:32])


def authenticate_password(services: Services, email, password) -> User:
    """Same status, body and timing for a wrong password and an unknown email; throttled per account."""
    if not isinstance(email, str) or not isinstance(password, str):
        raise InvalidInput('send JSON {"email": "...", "password": "..."}')
    email = email.strip().lower()
    settings = services.settings
    fail_key = _login_fail_key(services, email)
    try:
        # count the attempt before checking the password (atomic INCR), so guesses sent in
        # parallel cannot all pass the check before any failure is recorded
        pipe = services.redis.pipeline()
        pipe.incr(fail_key)
        pipe.ttl(fail_key)
        attempts, ttl = pipe.execute()
        if attempts > settings.login_max_failures:
            if ttl < 0:
                services.redis.expire(fail_key, settings.login_lockout_seconds)
                ttl = settings.login_lockout_seconds
            raise RateLimited("too many failed logins; try again later", "too_many_attempts",
                              retry_after=max(1, ttl))
        services.redis.expire(fail_key, settings.login_lockout_seconds)
    except redis.RedisError:
        raise Unavailable("the session store is unreachable") from None
    with unit_of_work(services.sessions) as session:
        user = repo.user_by_email(session, email)
    try:
        PASSWORDS.verify(user.password_hash if user else _DUMMY_HASH, password)
        ok = user is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:  # the failure was counted above
        raise Unauthenticated("email or password is wrong", "invalid_credentials")
    try:
        services.redis.delete(fail_key)
    except redis.RedisError:
        pass  # the counter expires by itself
    _refuse_disabled(user)  # only said to someone who knows the password
    return user


# -- browser sessions ----------------------------------------------------------------------


def _session_key(services: Services, sid: str) -> str:
    return services.key("session", hashlib.sha256(sid.encode()).hexdigest())


SESSION_STORE_DOWN = "the session store is unreachable"


def create_session(services: Services, user: User, replacing: str | None = None) -> tuple[str, str]:
    """A fresh session id (never reused across logins) and its CSRF token; `replacing` ends the old one."""
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    try:
        pipe = services.redis.pipeline()
        if replacing:
            pipe.delete(_session_key(services, replacing))
        pipe.set(_session_key(services, sid),
                 json.dumps({"user_id": user.id, "csrf": csrf, "generation": user.session_generation}),
                 ex=services.settings.session_idle_seconds)
        pipe.execute()
    except redis.RedisError:
        raise Unavailable(SESSION_STORE_DOWN) from None
    return sid, csrf


def destroy_session(services: Services, sid: str) -> None:
    try:
        services.redis.delete(_session_key(services, sid))
    except redis.RedisError:
        raise Unavailable(SESSION_STORE_DOWN) from None


def session_principal(services: Services, sid: str) -> Principal | None:
    key = _session_key(services, sid)
    try:
        pipe = services.redis.pipeline()
        pipe.get(key)
        pipe.expire(key, services.settings.session_idle_seconds)  # idle timeout slides
        raw, _ = pipe.execute()
    except redis.RedisError:
        raise Unavailable(SESSION_STORE_DOWN) from None
    if raw is None:
        return None
    data = json.loads(raw)
    found = services.invalidations.through(services.users, data["user_id"],
                                           lambda: _user_fields(services, data["user_id"]))
    if found is None:
        return None  # the account is gone
    user_id, email, role, disabled, generation = found
    if disabled:  # said before the generation check: disabling also ends the sessions
        raise Forbidden(ACCOUNT_DISABLED, "account_disabled")
    if data.get("generation", 0) != generation:
        return None  # every session of the account was ended
    return Principal(user_id, email, role, "session", csrf_token=data["csrf"])


def _user_fields(services: Services, user_id: int) -> tuple[int, str, str, bool, int] | None:
    with unit_of_work(services.sessions) as session:
        user = repo.user_by_id(session, user_id)
        if user is None:
            return None
        return user.id, user.email, user.role, user.disabled_at is not None, user.session_generation


def user_changed(services: Services, user_id: int) -> None:
    """Every process forgets what it cached of this user and their keys (role, disabling, removal,
    sessions ended); called after the change is committed."""
    services.invalidations.publish("user", user_id)


# -- API keys ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    # The server must know a key's secret to check an HMAC, so it cannot keep only a hash:
    # secrets are encrypted at rest with a key derived from SECRET_KEY.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"digitserve api key secrets")
    return Fernet(base64.urlsafe_b64encode(derived.derive(secret_key.encode())))


@functools.lru_cache(maxsize=4)
def _decoy_secret(secret_key: str) -> str:
    """An encrypted secret of the real length, decrypted for unknown keys so they cost what known ones do."""
    return _fernet(secret_key).encrypt(secrets.token_urlsafe(32).encode()).decode()


def create_key(services: Services, principal: Principal, payload) -> dict:
    if not isinstance(payload, dict):
        raise InvalidInput('send JSON {"name": "...", "scopes": ["predict"]}')
    name = payload.get("name") or "api key"
    scopes = payload.get("scopes", ["predict"])
    if not isinstance(name, str) or len(name) > 100:
        raise InvalidInput("name must be a string of at most 100 characters")
    if not isinstance(scopes, list) or not scopes or any(s not in SCOPES for s in scopes):
        raise InvalidInput(f"scopes must be a non-empty list of {', '.join(SCOPES)}")
    if "admin" in scopes and principal.role != "admin":
        raise Forbidden("only administrators can create admin-scoped keys")
    key_id = "dsk_" + secrets.token_hex(12)
    secret = secrets.token_urlsafe(32)
    with unit_of_work(services.sessions) as session:
        repo.add_key(session, key_id, principal.user_id, name, sorted(set(scopes)),
                     _fernet(services.settings.secret_key).encrypt(secret.encode()).decode())
    return {"key_id": key_id, "secret": secret, "name": name, "scopes": sorted(set(scopes))}


def _key_document(key) -> dict:
    return {"key_id": key.key_id, "name": key.name, "scopes": key.scopes, "created_at": _iso(key.created_at),
            "last_used_at": _iso(key.last_used_at), "revoked": key.revoked_at is not None}


def list_keys(services: Services, principal: Principal) -> dict:
    with unit_of_work(services.sessions) as session:
        return {"keys": [_key_document(k) for k in repo.keys_of(session, principal.user_id)]}


def revoke_key(services: Services, principal: Principal, key_id: str) -> None:
    with unit_of_work(services.sessions) as session:
        key = repo.key_by_key_id(session, key_id)
        if key is None or key.user_id != principal.user_id:
            raise NotFound(f"no key {key_id}")
        key.revoked_at = key.revoked_at or utcnow()
    services.invalidations.publish("key", key_id)  # after the commit: no process accepts it from now on


def _key_principal(services: Services, key_id: str) -> tuple[Principal, str, list[float]] | None:
    """The key's owner and its decrypted secret, or None when unknown or revoked.

    Key ids compare exactly (the database's collation would not), and an unknown
    key costs the same work as a known one, so timing does not tell them apart.
    """
    fernet = _fernet(services.settings.secret_key)
    with unit_of_work(services.sessions) as session:
        found = repo.key_with_owner(session, key_id)
    usable = (found is not None and found[0].revoked_at is None
              and hmac.compare_digest(found[0].key_id.encode(), key_id.encode()))
    token = found[0].secret_encrypted if usable else _decoy_secret(services.settings.secret_key)
    try:
        secret = fernet.decrypt(token.encode()).decode()
    except InvalidToken:
        return None  # encrypted under another SECRET_KEY
    if not usable:
        return None
    key, user = found
    return Principal(user.id, user.email, user.role, "signature", key.key_id, tuple(key.scopes),
                     key_pk=key.id, disabled=user.disabled_at is not None), secret, [0.0]


def _usable_key(services: Services, key_id: str) -> tuple[Principal, str, list[float]] | None:
    """(owner, secret, when this process last recorded a use): cached, since keys rarely change
    and a revocation reaches every process's cache at once."""
    return services.invalidations.through(services.credentials, key_id, lambda: _key_principal(services, key_id))


def _mark_used(services: Services, found: tuple[Principal, str, list[float]]) -> None:
    """Record a successful use of a key (not a failed attempt with its id): once per process a
    minute is enough for a "last used" time, and saves a write per request."""
    now = time.monotonic()
    if now - found[2][0] < MARK_USED_EVERY:
        return
    found[2][0] = now
    with unit_of_work(services.sessions) as session:
        repo.mark_key_used(session, found[0].key_id)


def verify_signature(services: Services, method: str, path: str, query: str, headers, body: bytes) -> Principal:
    match = AUTH_RE.match(headers.get("Authorization", "").strip())
    if not match:
        raise Unauthenticated("Authorization must be: DS1-HMAC-SHA256 KeyId=<key_id>,Signature=<hex>")
    key_id, signature = match.group(1), match.group(2).lower()
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    if len(names) != len(set(names)):
        # the canonical query sorts pairs, so the order of repeated names would not be signed
        raise Unauthenticated("a signed request must not repeat a query parameter")
    date, nonce = headers.get("X-DS-Date", ""), headers.get("X-DS-Nonce", "")
    content_sha = headers.get("X-DS-Content-SHA256", "").lower()
    try:
        moment = signing.parse_date(date)
    except ValueError:
        raise Unauthenticated("X-DS-Date must be UTC in the form YYYYMMDDTHHMMSSZ") from None
    skew = abs((dt.datetime.now(dt.timezone.utc) - moment).total_seconds())
    if skew > services.settings.signature_window:
        raise Unauthenticated(f"X-DS-Date is {skew:.0f} s away from the server's clock (at most "
                           f"{services.settings.signature_window} s allowed)", "stale_request")
    if not NONCE_RE.match(nonce):
        raise Unauthenticated("X-DS-Nonce must be 16-64 characters of [A-Za-z0-9._~-]")
    if not hmac.compare_digest(content_sha, signing.body_sha256(body)):
        raise Unauthenticated("X-DS-Content-SHA256 does not match the body", "body_mismatch")
    started = time.perf_counter()
    found = _usable_key(services, key_id)
    # an unknown key and a wrong signature answer alike, and take the same time
    secret = found[1] if found else _decoy_plain
    expected = signing.sign(secret, key_id, date, nonce, method, path, query, content_sha)
    if found is None or not hmac.compare_digest(expected, signature):
        time.sleep(max(0.0, FAILED_SIGNATURE_SECONDS - (time.perf_counter() - started)))
        raise Unauthenticated("the signature does not match", "bad_signature")
    try:
        fresh = services.redis.set(services.key("nonce", found[0].key_pk, nonce), 1, nx=True,
                                   ex=services.settings.nonce_ttl)
    except redis.RedisError:
        raise Unavailable("the replay store is unreachable; refusing signed requests") from None
    if not fresh:
        raise Unauthenticated("this nonce was already used (replayed request)", "replayed")
    if found[0].disabled:  # said only to a caller holding the secret
        raise Forbidden(ACCOUNT_DISABLED, "account_disabled")
    _mark_used(services, found)
    return found[0]


def verify_bearer(services: Services, token: str) -> Principal:
    key_id, _, secret = token.strip().partition(".")
    found = _usable_key(services, key_id) if key_id else None
    if found is None or not hmac.compare_digest(found[1].encode(), secret.encode()):
        raise Unauthenticated("the bearer key is not valid", "bad_key")
    if found[0].disabled:
        raise Forbidden(ACCOUNT_DISABLED, "account_disabled")
    _mark_used(services, found)
    return dataclasses.replace(found[0], via="bearer")


# -- one's own account ----------------------------------------------------------------------


def _confirm_password(services: Services, principal: Principal, password) -> None:
    """The signed-in user's own password again, throttled like a sign-in; a wrong one is a 403, not a 401
    (the session itself is fine)."""
    if not isinstance(password, str) or not password:
        raise InvalidInput("enter your current password", "password_required")
    try:
        authenticate_password(services, principal.email, password)
    except Unauthenticated:
        raise Forbidden("the current password is wrong", "wrong_password") from None


def change_password(services: Services, principal: Principal, payload, current_sid: str | None) -> tuple[str, str]:
    """A new password (the current one required); every other session ends. Returns this browser's new
    session id and CSRF token."""
    if not isinstance(payload, dict):
        raise InvalidInput('send JSON {"current_password": "...", "new_password": "..."}')
    _confirm_password(services, principal, payload.get("current_password"))
    new = payload.get("new_password")
    check_password_strength(principal.email, new)
    with unit_of_work(services.sessions) as session:
        user = repo.user_by_id(session, principal.user_id)
        if user is None:
            raise Unauthenticated("the account no longer exists", "session_expired")
        user.password_hash = PASSWORDS.hash(new)
        session.flush()
        repo.end_sessions(session, user.id)
        session.refresh(user)
    user_changed(services, user.id)
    log.info("password changed by user %s", user.id, extra={"audit": {
        "actor": user.id, "target": user.id, "action": "change_password"}})
    return create_session(services, user, replacing=current_sid)


def end_all_sessions(services: Services, principal: Principal, current_sid: str | None) -> None:
    """Sign out everywhere: every session of the user, this one included, stops working."""
    with unit_of_work(services.sessions) as session:
        repo.end_sessions(session, principal.user_id)
    user_changed(services, principal.user_id)
    if current_sid:
        destroy_session(services, current_sid)


def delete_account(services: Services, principal: Principal, payload, current_sid: str | None) -> dict:
    """The account with its keys, predictions and their images; the password confirms it."""
    if not isinstance(payload, dict):
        raise InvalidInput('send JSON {"password": "..."} to confirm')
    _confirm_password(services, principal, payload.get("password"))
    with unit_of_work(services.sessions) as session:
        user = repo.user_by_id(session, principal.user_id)
        if user is None:
            raise NotFound("the account no longer exists")
        if user.role == "admin" and repo.count_admins(session) <= 1:
            raise Conflict("you are the only administrator: make someone else an administrator first",
                           "last_admin")
        repo.add_audit(session, user, user, "delete_account")
        predictions = repo.delete_user(session, user.id)
    user_changed(services, principal.user_id)
    log.info("account %s deleted by its owner (%d predictions)", principal.user_id, predictions,
             extra={"audit": {"actor": principal.user_id, "target": principal.user_id, "action": "delete_account"}})
    if current_sid:
        try:
            destroy_session(services, current_sid)
        except Unavailable:
            pass  # the account is gone: the session finds no user and ends by itself
    return {"deleted_predictions": predictions}


# -- administering accounts -----------------------------------------------------------------

ROLES = ("user", "admin")


def _admin_user_document(user: User, predictions: int = 0) -> dict:
    return {**user_document(user), "disabled": user.disabled_at is not None, "created_at": _iso(user.created_at),
            "disabled_at": _iso(user.disabled_at), "predictions": predictions}


def list_users(services: Services) -> dict:
    with unit_of_work(services.sessions) as session:
        counts = repo.prediction_counts(session)
        return {"users": [_admin_user_document(u, counts.get(u.id, 0)) for u in repo.all_users(session)]}


def update_user(services: Services, principal: Principal, user_id: str, payload) -> dict:
    """Disable or re-enable an account, grant or revoke admin; each change is audited."""
    if not isinstance(payload, dict) or not payload or set(payload) - {"disabled", "role"}:
        raise InvalidInput('send JSON with "disabled": true/false and/or "role": "user"/"admin"')
    disabled, role = payload.get("disabled"), payload.get("role")
    if "disabled" in payload and not isinstance(disabled, bool):
        raise InvalidInput("disabled must be true or false")
    if "role" in payload and role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    if not str(user_id).isdigit():
        raise NotFound(f"no user {user_id}")
    with unit_of_work(services.sessions) as session:
        target = repo.user_by_id(session, int(user_id))
        actor = repo.user_by_id(session, principal.user_id)
        if target is None:
            raise NotFound(f"no user {user_id}")
        if target.id == principal.user_id:
            if disabled is True:
                raise Conflict("you cannot disable your own account", "own_account")
            if role == "user" and target.role == "admin":
                raise Conflict("you cannot remove your own administrator role", "own_account")
        actions = []
        if disabled is True and target.disabled_at is None:
            target.disabled_at = utcnow()
            actions.append("disable")
        elif disabled is False and target.disabled_at is not None:
            target.disabled_at = None
            actions.append("enable")
        if role is not None and role != target.role:
            target.role = role
            actions.append("grant_admin" if role == "admin" else "revoke_admin")
        session.flush()
        if "disable" in actions:
            repo.end_sessions(session, target.id)
        for action in actions:
            repo.add_audit(session, actor, target, action)
        counts = repo.prediction_counts(session)
        document = _admin_user_document(target, counts.get(target.id, 0))
    if actions:
        user_changed(services, document["id"])
    for action in actions:
        log.info("%s: %s by %s", action, document["email"], principal.email, extra={"audit": {
            "actor": principal.user_id, "actor_email": principal.email, "target": document["id"],
            "target_email": document["email"], "action": action}})
    return document


def audit_log(services: Services, limit_raw=None) -> dict:
    try:
        limit = 50 if limit_raw in (None, "") else int(limit_raw)
    except (TypeError, ValueError):
        raise InvalidInput("limit must be a whole number from 1 to 200") from None
    if not 1 <= limit <= 200:
        raise InvalidInput("limit must be a whole number from 1 to 200")
    with unit_of_work(services.sessions) as session:
        return {"entries": [{"id": e.id, "created_at": _iso(e.created_at), "action": e.action,
                             "actor": {"id": e.actor_id, "email": e.actor_email},
                             "target": {"id": e.target_id, "email": e.target_email}}
                            for e in repo.audit_entries(session, limit)]}


# -- rate limits ---------------------------------------------------------------------------

# Token bucket: KEYS[1] hash {tokens, at}; ARGV rate/s, burst, now. Returns {allowed, retry_after_ms}.
_BUCKET = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed, retry = 0, 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 else retry = math.ceil((1 - tokens) / rate * 1000) end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, retry}
"""


def rate_limit(services: Services, principal: Principal) -> None:
    settings = services.settings
    rate = settings.rate_limit_per_minute / 60.0
    if rate <= 0:
        return
    try:
        allowed, retry_ms = services.redis.eval(
            _BUCKET, 1, services.key("rate", principal.rate_key), rate, settings.rate_limit_burst, time.time())
    except redis.RedisError:
        raise Unavailable("the rate limiter is unreachable") from None
    if not allowed:
        raise RateLimited("too many requests; slow down", retry_after=max(1, -(-int(retry_ms) // 1000)))
