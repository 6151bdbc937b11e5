"""What can go wrong, said without HTTP.

Every layer below the web raises these; `server.web.errors` holds the one
table that turns each kind into a status code. `code` is the short machine
code clients see in `{"error": {"code": ..., "message": ...}}`.
"""
from __future__ import annotations


class DomainError(Exception):
    """A request the platform refuses or cannot serve right now."""

    default_code = "error"

    def __init__(self, message: str, code: str | None = None, *, retry_after: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.retry_after = retry_after
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class InvalidInput(DomainError):
    """The request itself is malformed or breaks a rule."""

    default_code = "bad_request"


class Unauthenticated(DomainError):
    """Who is calling is unknown: no, bad, expired or replayed credentials."""

    default_code = "unauthorized"


class Forbidden(DomainError):
    """The caller is known but may not do this."""

    default_code = "forbidden"


class NotFound(DomainError):
    default_code = "not_found"


class Conflict(DomainError):
    """The request contradicts the current state (a taken email, a reused idempotency key)."""

    default_code = "conflict"


class TooLarge(DomainError):
    """Over a size limit: body, number of images, pixels."""

    default_code = "payload_too_large"


class UnsupportedType(DomainError):
    """Content of a kind the platform does not take."""

    default_code = "unsupported_media_type"


class Unprocessable(DomainError):
    """Well-formed but unusable content: an unreadable or blank image."""

    default_code = "unprocessable"


class RateLimited(DomainError):
    default_code = "rate_limited"


class Unavailable(DomainError):
    """A dependency is down or saturated: try again after `retry_after` seconds."""

    default_code = "service_unavailable"

    def __init__(self, message: str, code: str | None = None, *, retry_after: int = 5,
                 headers: dict[str, str] | None = None):
        super().__init__(message, code, retry_after=retry_after, headers=headers)
