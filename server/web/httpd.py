"""`digitserve serve`: the CherryPy HTTP server hosting the web app."""
from __future__ import annotations

import logging
import threading

import cherrypy

from core.db import wait_for_database
from core.settings import Settings
from server.services.bootstrap import build
from server.web.app import create_app
from server.web.ops import METRICS_CONTENT_TYPE

log = logging.getLogger("digitserve.web")


def serve(settings: Settings) -> int:
    services = build(settings)
    wait_for_database(services.engine)
    application = create_app(settings, services)
    cherrypy.tree.mount(application, "")
    cherrypy.config.update({
        "server.socket_host": settings.host,
        "server.socket_port": settings.port,
        "server.thread_pool": settings.web_threads,
        "server.socket_queue_size": 128,
        # the app answers 413 itself from Content-Length; this also bounds chunked bodies
        "server.max_request_body_size": settings.max_body_bytes + 1024 * 1024,
        "engine.autoreload.on": False,
        "log.screen": settings.log_requests,
        "checker.on": False,
    })

    def warm_up():  # v2 inference runs in this process: load the networks before the first call
        try:
            application.digitserve.v2_models.cache.preload_active()
        except Exception:
            log.exception("could not preload models for /v2")

    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    if settings.metrics_port:
        _serve_metrics(settings, application.digitserve.metrics)
    cherrypy.engine.signals.subscribe()
    cherrypy.engine.start()
    log.info("serving on http://%s:%s/", settings.host, settings.port)
    cherrypy.engine.block()
    services.close()
    return 0


def _serve_metrics(settings: Settings, metrics) -> None:
    """/metrics alone, open, on METRICS_PORT: a port only the monitoring network should reach."""
    from cheroot import wsgi

    def application(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only /metrics here\n"]
        start_response("200 OK", [("Content-Type", METRICS_CONTENT_TYPE)])
        return [metrics.render()]

    server = wsgi.Server((settings.host, settings.metrics_port), application, numthreads=2)
    cherrypy.engine.subscribe("stop", server.stop)
    threading.Thread(target=server.safe_start, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%s/metrics", settings.host, settings.metrics_port)
