"""The one table from errors to HTTP statuses, for v1, v2 and the ops endpoints alike."""
from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus

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


def http_error(status: int, message: str) -> DomainError:
    """The error for a status the HTTP server (cheroot, CherryPy) chose before the app ran.

    A status in the table becomes its domain error (its code, and 503's Retry-After); one only the
    HTTP layer says (405, 408, 411, 414, 501, 505, ...) is an HttpError whose code is its reason phrase.
    """
    for kind, known in STATUS:
        if known == status:
            return kind(message)
    if status == 500:  # the server's own failure says what the app's bugs say
        return HttpError(500, "internal", "internal server error")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return HttpError(status, re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_"), message)


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
