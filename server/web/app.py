"""The CherryPy application: `create_app(settings)` returns a WSGI callable."""
from __future__ import annotations

import hmac
import json
import logging
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import cherrypy
import jinja2
import redis
from PIL import Image
from sqlalchemy import text

from server.services import accounts as auth
from server.web import v1 as api, v2
from server.services.bootstrap import Services, build
from core.errors import ApiError
from server.web.metrics import WebMetrics
from server.web.openapi import openapi_document
from core.settings import Settings
from server.web.http import Request, Response, Router, json_response

log = logging.getLogger("digitserve.web")
ROOT = Path(__file__).resolve().parents[2]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

try:
    VERSION = version("digitserve")
except PackageNotFoundError:  # running from a checkout that is not installed
    VERSION = "0.0.0"


class App:
    def __init__(self, services: Services):
        self.services = services
        self.settings = services.settings
        self.metrics = WebMetrics(services)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(ROOT / "templates"), autoescape=True)
        self.router = Router()
        api.register(self.router, services)
        self.v2_models = v2.register(self.router, services, VERSION)
        self.router.add("GET", "/", self.page)
        self.router.add("GET", "/healthz", self.healthz)
        self.router.add("GET", "/readyz", self.readyz)
        self.router.add("GET", "/metrics", self.metrics_endpoint)
        self.router.add("GET", "/api/openapi.json", self.openapi)

    # -- plain endpoints ---------------------------------------------------------------------

    def page(self, req: Request) -> Response:
        html = self.templates.get_template("index.html").render(static_url="/static", app_version=VERSION)
        return Response(200, html.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_CSP})

    def healthz(self, req: Request):
        return {"status": "ok"}

    def readyz(self, req: Request):
        checks: dict[str, str] = {}
        try:
            with self.services.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            self.services.redis.ping()
            checks["redis"] = "ok"
            from rq import Worker

            workers = Worker.all(queue=self.services.queue)
            checks["worker"] = "ok" if workers else "error: no live worker on the queue"
        except redis.RedisError as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
            checks["worker"] = "unknown"
        if checks["database"] == "ok":
            try:
                active = self.services.registry.active_versions()
                checks["model"] = "ok" if active else "error: no active model"
            except Exception as exc:
                checks["model"] = f"error: {type(exc).__name__}"
        else:
            checks["model"] = "unknown"
        ready = all(value == "ok" for value in checks.values())
        return json_response({"status": "ready" if ready else "not ready", "checks": checks},
                             200 if ready else 503, {} if ready else {"Retry-After": "5"})

    def metrics_endpoint(self, req: Request) -> Response:
        return Response(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    def openapi(self, req: Request):
        return openapi_document(self.router, VERSION)

    # -- authentication ----------------------------------------------------------------------

    def authenticate(self, req: Request, need: str) -> auth.Principal:
        services = self.services
        header = req.headers.get("Authorization", "")
        if header.startswith(auth.signing.ALGORITHM):
            principal = auth.verify_signature(services, req.method, req.path, req.query_string, req.headers, req.body)
        elif header.startswith("Bearer ") and self.settings.allow_bearer_keys:
            principal = auth.verify_bearer(services, header[len("Bearer "):])
        elif header:
            raise auth.unauthorized("unsupported Authorization scheme")
        elif req.cookies.get(auth.SESSION_COOKIE):
            try:
                principal = auth.session_principal(services, req.cookies[auth.SESSION_COOKIE])
            except redis.RedisError:
                raise ApiError(503, "service_unavailable", "the session store is unreachable",
                               {"Retry-After": "5"}) from None
            if principal is None:
                raise auth.unauthorized("the session has expired; log in again", "session_expired")
            if req.method not in SAFE_METHODS:
                if req.headers.get("Sec-Fetch-Site", "") == "cross-site":
                    raise auth.forbidden("cross-site requests are not allowed")
                token = req.headers.get("X-CSRF-Token", "")
                if not token or not hmac.compare_digest(token.encode(), (principal.csrf_token or "").encode()):
                    raise auth.forbidden("missing or wrong X-CSRF-Token header")
        else:
            raise ApiError(401, "unauthorized", "log in, or sign the request with an API key",
                           {"WWW-Authenticate": auth.signing.ALGORITHM})
        if need == "session" and principal.via != "session":
            raise auth.forbidden("this endpoint needs a browser session")
        if need in auth.SCOPES and not principal.can(need):
            raise auth.forbidden(f"this needs the {need!r} permission")
        auth.rate_limit(services, principal)
        return principal

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        started = time.perf_counter()
        route_name = "unmatched"
        try:
            route, params = self.router.match(req.method, req.path)
            route_name = route.name
            if route.auth is None and req.method not in SAFE_METHODS:
                if req.headers.get("Sec-Fetch-Site", "") == "cross-site":
                    raise auth.forbidden("cross-site requests are not allowed")
            if route.auth is not None:
                req.principal = self.authenticate(req, route.auth)
            result = route.handler(req, **params)
            response = result if isinstance(result, Response) else json_response(result)
        except ApiError as exc:
            response = json_response(exc.body(), exc.status, exc.headers)
        except Exception:
            log.exception("unhandled error in %s %s", req.method, req.path)
            response = json_response({"error": {"code": "internal", "message": "internal server error"}}, 500)
        self.metrics.observe(req.method, route_name, response.status, time.perf_counter() - started)
        response.headers = {**SECURITY_HEADERS, **response.headers}
        return response

    # -- CherryPy glue -----------------------------------------------------------------------

    def _read_body(self) -> bytes:
        request = cherrypy.request
        limit = self.settings.max_body_bytes
        length = request.headers.get("Content-Length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "bad_request", "Content-Length must be a number")
            # checked for every method: the HTTP server drains an unread body after the response,
            # so a GET declaring gigabytes would otherwise be swallowed before the answer goes out
            if int(length) > limit:
                raise ApiError(413, "payload_too_large", f"the request body is over {limit} bytes")
        if request.method in SAFE_METHODS:
            return b""
        if length is not None:
            return request.rfile.read(int(length)) if int(length) else b""
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            body = request.rfile.read(limit + 1)
            if len(body) > limit:
                raise ApiError(413, "payload_too_large", f"the request body is over {limit} bytes")
            return body
        return b""

    def serve_cherrypy(self) -> bytes:
        request = cherrypy.request
        try:
            body = self._read_body()
        except ApiError as exc:
            cherrypy.response.headers["Connection"] = "close"
            return self._emit(json_response(exc.body(), exc.status, exc.headers))
        req = Request(
            method=request.method,
            path=(request.script_name or "") + (request.path_info or "/"),
            query_string=request.query_string or "",
            headers=request.headers,
            body=body,
            scheme=request.scheme,
            cookies={name: morsel.value for name, morsel in request.cookie.items()},
        )
        return self._emit(self.handle(req))

    @staticmethod
    def _emit(response: Response) -> bytes:
        out = cherrypy.response
        out.status = response.status
        if response.status == 204:
            out.headers.pop("Content-Type", None)
        else:
            out.headers["Content-Type"] = response.content_type
        for name, value in response.headers.items():
            out.headers[name] = value
        return response.body


class _Root:
    def __init__(self, app: App):
        self._app = app

    @cherrypy.expose
    def default(self, *args, **kwargs):
        return self._app.serve_cherrypy()


def _json_error_page(status, message, traceback, version):
    """CherryPy's own errors (before our dispatcher runs) in the API's JSON shape."""
    cherrypy.response.headers["Content-Type"] = "application/json"
    code = str(status).split()[0]
    return json.dumps({"error": {"code": f"http_{code}", "message": str(message)}})


def create_app(settings: Settings, services: Services | None = None) -> cherrypy.Application:
    """Build the WSGI application; nothing connects until the first request."""
    services = services or build(settings)
    # Pillow's own bomb guard at our limit too (its warning is turned into a 413 by preprocess)
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    app = App(services)
    config = {
        "/": {
            "request.process_request_body": False,
            "request.show_tracebacks": False,
            "request.show_mismatched_params": False,
            "tools.encode.on": False,
            "error_page.default": _json_error_page,
        },
        "/static": {
            "tools.staticdir.on": True,
            "tools.staticdir.dir": str(ROOT / "static"),
            "tools.expires.on": True,
            "tools.expires.secs": 300,
        },
    }
    application = cherrypy.Application(_Root(app), script_name="", config=config)
    application.log.screen = settings.log_requests
    application.log.access_file = ""
    application.digitserve = app  # tests and the CLI reach the services through this
    return application
