"""Who may call a route: the authentication policy of the web app.

Signed requests and (when allowed) bearer keys for API clients; the session
cookie plus a CSRF token for the browser. Unsafe requests from another site
are refused before anything else.
"""
from __future__ import annotations

import hmac

from core import signing
from core.errors import Forbidden, Unauthenticated
from server.services import accounts
from server.services.accounts import Principal
from server.services.bootstrap import Services
from server.web.http import Request, Route

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def refuse_cross_site(req: Request) -> None:
    if req.method not in SAFE_METHODS and req.headers.get("Sec-Fetch-Site", "") == "cross-site":
        raise Forbidden("cross-site requests are not allowed")


def _session(services: Services, req: Request) -> Principal:
    principal = accounts.session_principal(services, req.cookies[accounts.SESSION_COOKIE])
    if principal is None:
        raise Unauthenticated("the session has expired; log in again", "session_expired")
    if req.method not in SAFE_METHODS:
        token = req.headers.get("X-CSRF-Token", "")
        if not token or not hmac.compare_digest(token.encode(), (principal.csrf_token or "").encode()):
            raise Forbidden("missing or wrong X-CSRF-Token header")
    return principal


def _credentials(services: Services, req: Request) -> Principal:
    header = req.headers.get("Authorization", "")
    if header.startswith(signing.ALGORITHM):
        return accounts.verify_signature(services, req.method, req.path, req.query_string, req.headers, req.body)
    if header.startswith("Bearer ") and services.settings.allow_bearer_keys:
        return accounts.verify_bearer(services, header[len("Bearer "):])
    if header:
        raise Unauthenticated("unsupported Authorization scheme")
    if req.cookies.get(accounts.SESSION_COOKIE):
        return _session(services, req)
    raise Unauthenticated("log in, or sign the request with an API key",
                          headers={"WWW-Authenticate": signing.ALGORITHM})


def admit(services: Services, route: Route, req: Request) -> Principal | None:
    """The caller of `route`, checked against what the route needs; None for a public route."""
    refuse_cross_site(req)
    if route.auth is None:
        return None
    principal = _credentials(services, req)
    if route.auth == "session" and principal.via != "session":
        raise Forbidden("this endpoint needs a browser session")
    if route.auth in accounts.SCOPES and not principal.can(route.auth):
        raise Forbidden(f"this needs the {route.auth!r} permission")
    accounts.rate_limit(services, principal)
    return principal
