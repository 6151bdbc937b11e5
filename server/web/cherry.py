"""CherryPy glue: one catch-all handler hands every request to `App.handle`.

CherryPy serves the static files; the app's own router does the rest, so a
handler is a plain function of a `Request` (see CONTRIBUTING.md for why).
"""
from __future__ import annotations

from pathlib import Path

import cherrypy
from cheroot.errors import MaxSizeExceeded
from cherrypy import _cprequest

from core.errors import InvalidInput, TooLarge
from server.web.errors import HttpError, http_error
from server.web.http import Request, Response, error_response
from server.web.policy import SAFE_METHODS

ROOT = Path(__file__).resolve().parents[2]


def _read_body(limit: int) -> bytes:
    """The request body, refused (before reading when possible) over `limit` bytes.

    Reading can fail on the client's side: a stall or a trickle past the deadline (408), a body shorter
    than its Content-Length or broken chunked framing (400), a chunk size over the server's bound (413).
    """
    try:
        return _read_body_unchecked(limit)
    except TimeoutError:
        raise HttpError(408, "request_timeout", "the request body did not arrive in time") from None
    except MaxSizeExceeded:
        raise TooLarge(f"the request body is over {limit} bytes") from None
    except ValueError as exc:  # cheroot's chunked decoder: a bad chunk size or a chunk without its CRLF
        raise InvalidInput(f"the chunked body is malformed: {exc}", "bad_chunked") from None
    except OSError as exc:
        # cheroot's chunked decoder refuses a chunk over its bound with a bare IOError
        if "Too Large" in str(exc):
            raise TooLarge(f"the request body is over {limit} bytes") from None
        raise InvalidInput("the connection failed while the request body was read", "bad_body") from None


def _read_body_unchecked(limit: int) -> bytes:
    request = cherrypy.request
    length = request.headers.get("Content-Length")
    if length is not None:
        if not length.isdigit():
            raise InvalidInput("Content-Length must be a number")
        # checked for every method: the HTTP server drains an unread body after the response,
        # so a GET declaring gigabytes would otherwise be swallowed before the answer goes out
        if int(length) > limit:
            raise TooLarge(f"the request body is over {limit} bytes")
    if request.method in SAFE_METHODS:
        return b""
    if length is not None:
        body = request.rfile.read(int(length)) if int(length) else b""
        if len(body) < int(length):  # the client closed its side early
            raise InvalidInput("the request body is shorter than its Content-Length", "bad_body")
        return body
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        body = request.rfile.read(limit + 1)
        if len(body) > limit:
            raise TooLarge(f"the request body is over {limit} bytes")
        return body
    return b""


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
    def __init__(self, app):
        self._app = app

    @cherrypy.expose
    def default(self, *args, **kwargs):
        request = cherrypy.request
        try:
            body = _read_body(self._app.services.settings.max_body_bytes)
        except (InvalidInput, TooLarge, HttpError) as exc:
            cherrypy.response.headers["Connection"] = "close"
            return _emit(error_response(exc))
        req = Request(
            method=request.method,
            path=(request.script_name or "") + (request.path_info or "/"),
            query_string=request.query_string or "",
            headers=request.headers,
            body=body,
            scheme=request.scheme,
            cookies={name: morsel.value for name, morsel in request.cookie.items()},
        )
        return _emit(self._app.handle(req))


def _json_error_page(status, message, traceback, version):
    """CherryPy's own errors (before our dispatcher runs: missing Host, a static file not found) as API JSON."""
    response = error_response(http_error(int(str(status).split()[0]), str(message)))
    cherrypy.response.headers["Content-Type"] = "application/json"
    cherrypy.response.headers.update(response.headers)
    return response.body.decode()


class _JsonErrorsRequest(_cprequest.Request):
    # CherryPy checks the Host header before it applies the application's config, so the error page
    # and the no-tracebacks rule must be the request's own defaults, not "/" config
    error_page = {"default": _json_error_page}
    show_tracebacks = False


def mount(app) -> cherrypy.Application:
    """The CherryPy application around `app` (anything with `handle(Request) -> Response` and `services`)."""
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
    application.request_class = _JsonErrorsRequest
    application.log.screen = app.services.settings.log_requests
    application.log.access_file = ""
    application.digitserve = app  # tests and the CLI reach the services through this
    return application
