"""The one table from errors to HTTP statuses, for v1, v2 and the ops endpoints alike."""
from __future__ import annotations

import json
import logging

import redis
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from core.errors import (Conflict, DomainError, Forbidden, InvalidInput, NotFound, RateLimited, TooLarge,
                         Unauthenticated, Unavailable, Unprocessable, UnsupportedType)

log = logging.getLogger("digitserve.web")

STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (InvalidInput, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (TooLarge, 413),
    (UnsupportedType, 415),
    (Unprocessable, 422),
    (RateLimited, 429),
    (Unavailable, 503),
)

# a dependency that refused, dropped or timed out: the client may try again shortly
DEPENDENCY_DOWN = (redis.ConnectionError, redis.TimeoutError, OperationalError, DisconnectionError, PoolTimeout)


class HttpError(DomainError):
    """What only the HTTP layer can say: no such route, a method not allowed, a broken request line."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message, code, headers=headers)
        self.status = status


def status_of(error: DomainError) -> int:
    if isinstance(error, HttpError):
        return error.status
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return 500


def as_domain_error(exc: BaseException) -> DomainError | None:
    """The error a client should see for `exc`, or None for a bug (a 500)."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, DEPENDENCY_DOWN):
        log.warning("dependency unavailable: %s: %s", type(exc).__name__, exc)
        return Unavailable("a service this request needs is unavailable; try again shortly")
    return None


def error_parts(exc: BaseException) -> tuple[int, str, str, dict[str, str]]:
    """(status, code, message, headers) for any exception."""
    error = as_domain_error(exc)
    if error is None:
        return 500, "internal", "internal server error", {}
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return status_of(error), error.code, error.message, headers


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
