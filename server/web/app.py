"""The web application: routes, the authentication policy and one error mapping around every handler.

`create_app(settings)` returns the CherryPy (WSGI) application; nothing
connects until the first request.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from importlib.metadata import PackageNotFoundError, version

from PIL import Image

from core import logs
from core.settings import Settings
from server.services.bootstrap import Services, build
from server.web import ops, policy, v1, v2
from server.web.cherry import mount
from server.web.http import Request, Response, Router, error_response, json_response
from server.web.metrics import WebMetrics

log = logging.getLogger("digitserve.web")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

try:
    VERSION = version("digitserve")
except PackageNotFoundError:  # running from a checkout that is not installed
    VERSION = "0.0.0"


class App:
    def __init__(self, services: Services):
        self.services = services
        self.metrics = WebMetrics(services)
        self.router = Router()
        v1.register(self.router, services)
        self.v2_models = v2.register(self.router, services, VERSION, self.metrics)
        ops.register(self.router, services, self.metrics, VERSION)

    def handle(self, req: Request) -> Response:
        started = time.perf_counter()
        route_name, style = "unmatched", "v1"
        sent = req.headers.get("X-Request-ID", "")
        rid = sent if REQUEST_ID.match(sent) else uuid.uuid4().hex[:16]
        token = logs.request_id.set(rid)
        try:
            route, params = self.router.match(req.method, req.path)
            route_name, style = route.name, route.errors
            req.principal = policy.admit(self.services, route, req)
            result = route.handler(req, **params)
            response = result if isinstance(result, Response) else json_response(result)
        except Exception as exc:
            response = error_response(exc, style)
        finally:
            logs.request_id.reset(token)
        self.metrics.observe(req.method, route_name, response.status, time.perf_counter() - started)
        response.headers = {**SECURITY_HEADERS, "X-Request-ID": rid, **response.headers}
        return response


def create_app(settings: Settings, services: Services | None = None):
    """Build the WSGI application; nothing connects until the first request."""
    services = services or build(settings)
    # Pillow's own bomb guard at our limit too (its warning is turned into a 413 by preprocess)
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    return mount(App(services))
