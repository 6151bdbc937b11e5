"""Operations endpoints and the page: liveness, readiness, metrics, the OpenAPI document."""
from __future__ import annotations

import hmac
from pathlib import Path

import jinja2
from sqlalchemy import text

from core.errors import NotFound, Unauthenticated
from server.services.bootstrap import Services
from server.web.http import Request, Response, Router, json_response
from server.web.metrics import WebMetrics
from server.web.openapi import openapi_document

ROOT = Path(__file__).resolve().parents[2]
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _check(probe) -> str:
    try:
        return probe()
    except Exception as exc:  # a readiness probe reports, it does not fail
        return f"error: {type(exc).__name__}"


def readiness(services: Services) -> dict[str, str]:
    def database():
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"

    def redis_():
        services.redis.ping()
        return "ok"

    def worker():
        return "ok" if services.queue.live_workers() else "error: no live worker on the queue"

    def model():
        return "ok" if services.registry.active_versions() else "error: no active model"

    checks = {"database": _check(database), "redis": _check(redis_)}
    checks["worker"] = _check(worker) if checks["redis"] == "ok" else "unknown"
    checks["model"] = _check(model) if checks["database"] == "ok" else "unknown"
    return checks


def register(router: Router, services: Services, metrics: WebMetrics, version: str) -> None:
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(ROOT / "templates"), autoescape=True)

    def page(req: Request) -> Response:
        html = templates.get_template("index.html").render(static_url="/static", app_version=version)
        return Response(200, html.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_CSP})

    def healthz(req: Request):
        return {"status": "ok"}

    def readyz(req: Request):
        checks = readiness(services)
        ready = all(value == "ok" for value in checks.values())
        return json_response({"status": "ready" if ready else "not ready", "checks": checks},
                             200 if ready else 503, {} if ready else {"Retry-After": "5"})

    def metrics_endpoint(req: Request) -> Response:
        settings = services.settings
        if settings.metrics == "off":
            raise NotFound("metrics are not served here (METRICS=off; see METRICS_PORT)")
        if settings.metrics == "token":
            sent = req.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(sent.encode(), settings.metrics_token.encode()):
                raise Unauthenticated("send Authorization: Bearer <METRICS_TOKEN>")
        return Response(200, metrics.render(), METRICS_CONTENT_TYPE)

    def openapi(req: Request):
        return openapi_document(router, version)

    router.add("GET", "/", page)
    router.add("GET", "/healthz", healthz)
    router.add("GET", "/readyz", readyz)
    router.add("GET", "/metrics", metrics_endpoint)
    router.add("GET", "/api/openapi.json", openapi)
