"""`digitserve serve`: the CherryPy HTTP server hosting the web app.

The server itself (cheroot) answers some requests before the app runs: a broken request line, headers
too large, a client too slow. `EdgeServer` makes those answers JSON in the API's error shape, bounds
how long one client may hold a web thread, and bounds the queue of connections waiting for one.
"""
from __future__ import annotations

import logging
import socket
import threading
import time

import cherrypy
from cheroot import server as cheroot_server
from cheroot.makefile import StreamReader
from cherrypy._cpwsgi_server import CPWSGIHTTPRequest, CPWSGIServer

from core.db import wait_for_database
from core.settings import Settings
from server.services.bootstrap import build
from server.web.app import create_app
from server.web.ops import METRICS_CONTENT_TYPE
from server.web.errors import error_body, error_parts, http_error

log = logging.getLogger("digitserve.web")
MAX_UNBOUNDED_LINE = 64 * 1024  # longer than any sane chunk-size or trailer line


class DeadlineReader(StreamReader):
    """A connection's read side with a total deadline per request on top of the per-read timeout.

    The socket timeout alone frees a thread only from a client that goes silent; one that sends a
    byte every few seconds would hold it forever. While a request is being received, every receive
    waits at most until the sooner of the read timeout and the request's deadline.
    """

    def __init__(self, sock, mode, bufsize, read_timeout: float):
        super().__init__(sock, mode, bufsize)
        self._sock = sock
        self._read_timeout = read_timeout
        self.deadline: float | None = None

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            # the message cheroot (and our body reader) recognise as a timeout: the client gets a 408
            raise socket.timeout("timed out")
        self._sock.settimeout(min(self._read_timeout, remaining))

    def read(self, size=-1):
        if self.deadline is None or size is None or size < 0:
            return super().read(size)
        out = bytearray()
        while len(out) < size:
            self._arm()
            # at most one receive per call, so the deadline is checked between receives
            chunk = self.read1(size - len(out))
            if not chunk:
                break
            out += chunk
        self.bytes_read += len(out)
        return bytes(out)

    def readline(self, size=-1):
        if self.deadline is None:
            return super().readline(size)
        if size is None or size < 0:
            # only cheroot's chunked decoder asks for a line without a bound (chunk sizes, trailers): a
            # "size line" that never ends would otherwise grow in memory until the deadline
            size = MAX_UNBOUNDED_LINE
        out = bytearray()
        while len(out) < size:
            self._arm()
            ahead = self.peek(1)[:size - len(out)]  # what is buffered, or one receive when nothing is
            if not ahead:
                break
            end = ahead.find(b"\n")
            out += super().read(end + 1 if end >= 0 else len(ahead))
            if end >= 0:
                break
        return bytes(out)


class _NoRepeats(dict):
    """Header fields that must come once: with two Authorization headers, which one was checked and
    which one the app reads would be up to the parser's order (cheroot keeps the last)."""

    SINGLE = {b"Authorization", b"Host", b"Content-Length", b"Content-Type", b"Transfer-Encoding"}

    def __setitem__(self, key, value):
        if key in self.SINGLE and key in self:
            raise ValueError(f"the {key.decode('latin-1')} header must be sent once")
        super().__setitem__(key, value)


class SingleValuedHeaderReader(cheroot_server.HeaderReader):
    def __call__(self, rfile, hdict=None):
        read = super().__call__(rfile, _NoRepeats())
        hdict = {} if hdict is None else hdict
        hdict.update(read)
        return hdict


class EdgeRequest(CPWSGIHTTPRequest):
    header_reader = SingleValuedHeaderReader()

    def parse_request(self):
        if isinstance(self.conn.rfile, DeadlineReader):
            self.conn.rfile.deadline = time.monotonic() + self.server.request_deadline
        super().parse_request()

    def respond(self):
        try:
            super().respond()
        finally:
            # the response may take long (wait=); only receiving the request is on the clock
            if isinstance(self.conn.rfile, DeadlineReader):
                self.conn.rfile.deadline = None

    def send_headers(self):
        # cheroot keeps the connection open unless the status is 413, and first drains whatever body the
        # app left unread; after a 400/408 about that very body the drain would block or fail and the
        # answer never leave. The app's own "Connection: close" ends the connection instead.
        if any(k.lower() == b"connection" and v.lower() == b"close" for k, v in self.outheaders):
            self.close_connection = True
        super().send_headers()

    def simple_response(self, status, msg=""):
        """cheroot's own error answers (bad request line, headers too large, 408, 503 ...) as API JSON."""
        status = str(status)
        code = int(status[:3])
        message = msg.decode("latin-1") if isinstance(msg, bytes) else str(msg or status[4:] or "error")
        _, error_code, message, headers = error_parts(http_error(code, message))
        body = error_body(error_code, message)
        lines = [f"{self.server.protocol} {status}", "Content-Type: application/json",
                 f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        # every caller of simple_response drops the connection afterwards; say so
        self.close_connection = True
        try:
            self.conn.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        except OSError as exc:
            if exc.args[0] not in cheroot_server.errors.socket_errors_to_ignore:
                raise


class EdgeConnection(cheroot_server.HTTPConnection):
    RequestHandlerClass = EdgeRequest

    def __init__(self, server, sock, makefile=cheroot_server.MakeFile):
        super().__init__(server, sock, makefile)
        if type(self.rfile) is StreamReader:  # plain TCP (a TLS adapter brings its own reader)
            self.rfile = DeadlineReader(sock, "rb", self.rbufsize, server.timeout)


class EdgeServer(CPWSGIServer):
    """CherryPy's cheroot server with JSON errors, a request deadline and a JSON 503 when saturated."""

    ConnectionClass = EdgeConnection

    def __init__(self, adapter, request_deadline: float):
        super().__init__(adapter)
        # CPWSGIServer points the connection class at its own request class: put ours back
        self.ConnectionClass.RequestHandlerClass = EdgeRequest
        self.request_deadline = request_deadline

    def _serve_unservicable(self):
        # cheroot answers connections that find the accept queue full with a plain-text 503 from its
        # base request class; this is the same loop with ours, so the 503 is JSON with Retry-After
        while self.ready:
            conn = self._unservicable_conns.get()
            if conn is cheroot_server._STOPPING_FOR_INTERRUPT:
                return
            try:
                EdgeRequest(self, conn).simple_response("503 Service Unavailable",
                                                        "the server is busy; try again shortly")
            except Exception:  # the 503 is a courtesy; this loop must go on for the next ones
                log.debug("could not send a 503", exc_info=True)
            conn.linger = True
            conn.close()


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
        # silent this long mid-request: 408; also how long an idle keep-alive connection is kept
        "server.socket_timeout": settings.web_read_timeout,
        # connections waiting for a thread: bounded, and a full queue answers 503 at once instead of
        # stalling the accept loop (the put into the queue would otherwise block it)
        "server.accepted_queue_size": settings.web_accept_queue,
        "server.accepted_queue_timeout": 0,
        # the app answers 413 itself from Content-Length; this also bounds chunked bodies
        "server.max_request_body_size": settings.max_body_bytes + 1024 * 1024,
        "engine.autoreload.on": False,
        "log.screen": settings.log_requests,
        "checker.on": False,
    })
    cherrypy.server.httpserver = EdgeServer(cherrypy.server, settings.web_request_deadline)

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
