"""The small request/response layer the handlers see, independent of CherryPy."""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs

import multipart

from core.errors import InvalidInput
from server.web.errors import HttpError, error_body, error_parts

log = logging.getLogger("digitserve.web")

# multipart/form-data bounds; the whole body is already capped (max_body_bytes) before parsing.
FIELD_PARTS = 48  # parts allowed besides the images (fields, and room to spare)
MAX_PART_HEADERS = 8  # a browser sends 1-2 per part (RFC 7578 allows 3)
MAX_PART_HEADER_BYTES = 4096  # one header line, e.g. a Content-Disposition with a long filename
MULTIPART_UNPARSEABLE = "the multipart body could not be parsed (missing boundary?)"

# No request of the API nests deeper than a few levels; anything near Python's recursion limit would
# otherwise surface as a RecursionError (a 500) in the decoder or in whatever walks the value later.
MAX_JSON_DEPTH = 32


@dataclass
class Request:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes
    scheme: str = "http"
    cookies: dict[str, str] = field(default_factory=dict)
    principal: Any = None

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.query_string, keep_blank_values=True).items()}

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        if not self.body:
            raise InvalidInput("the request body must be JSON")
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidInput("the request body is not valid JSON", "bad_json") from None
        if _too_deep(self.body, MAX_JSON_DEPTH):
            raise InvalidInput(f"the request body nests JSON deeper than {MAX_JSON_DEPTH} levels", "bad_json")
        return value

    def form(self, max_images: int = 16) -> tuple[dict[str, str], list[bytes]]:
        """Fields and the `image` files of a multipart/form-data body.

        Every part named `image` is an image; other named parts are text fields
        (UTF-8, undecodable bytes replaced); unnamed parts are ignored. A part is
        never parsed further, whatever its own Content-Type. At most `max_images`
        plus FIELD_PARTS parts: the parser stops at the next one.
        """
        max_parts = max_images + FIELD_PARTS
        boundary = multipart.parse_options_header(self.headers.get("Content-Type", ""))[1].get("boundary")
        if not boundary:
            raise InvalidInput(MULTIPART_UNPARSEABLE, "bad_multipart")
        if not self.body:
            return {}, []
        fields: dict[str, str] = {}
        images: list[bytes] = []
        parts = 0
        try:
            with multipart.PushMultipartParser(
                    boundary, len(self.body), max_header_size=MAX_PART_HEADER_BYTES,
                    max_header_count=MAX_PART_HEADERS, max_segment_count=max_parts) as parser:
                for event in parser.parse(self.body):
                    if isinstance(event, multipart.MultipartSegment):
                        parts += 1
                        segment, chunks = event, []
                    elif event is not None:
                        chunks.append(event)
                    elif segment.name == "image":
                        images.append(_decoded(segment, b"".join(chunks)))
                    elif segment.name:
                        fields[segment.name] = _decoded(segment, b"".join(chunks)).decode("utf-8", "replace")
        except multipart.ParserLimitReached:
            if parts >= max_parts:
                raise InvalidInput(f"the multipart body has more than {max_parts} parts", "bad_multipart") from None
            raise InvalidInput(f"a multipart part has a header line over {MAX_PART_HEADER_BYTES} bytes "
                               f"or more than {MAX_PART_HEADERS} headers", "bad_multipart") from None
        except (multipart.MultipartError, binascii.Error):
            raise InvalidInput(MULTIPART_UNPARSEABLE, "bad_multipart") from None
        return fields, images


def _decoded(segment: multipart.MultipartSegment, payload: bytes) -> bytes:
    """A part's bytes, undoing a base64 or quoted-printable Content-Transfer-Encoding (RFC 7578 forbids
    it, browsers never send it, but the e-mail parser this replaced honoured it)."""
    encoding = (segment.header("Content-Transfer-Encoding") or "").strip().lower()
    if encoding == "base64":
        return binascii.a2b_base64(payload)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(payload)
    return payload

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(body: bytes, limit: int) -> bool:
    """Whether a (valid) JSON body nests lists/objects more than `limit` deep.

    Read from the bytes: strings dropped and everything but brackets deleted in C, so a
    large flat tensor costs next to nothing; only the brackets are walked here.
    """
    depth = 0
    for byte in _JSON_STRING.sub(b"", body).translate(None, _NOT_A_BRACKET):
        depth += 1 if byte in (0x5B, 0x7B) else -1
        if depth > limit:
            return True
    return False


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":")).encode(), "application/json", headers or {})


def error_response(exc: BaseException, style: str = "v1") -> Response:
    """Any exception as the API's JSON error; `style` "v2" is the inference protocol's {"error": "..."}."""
    status, code, message, headers = error_parts(exc)
    if status == 500:
        log.error("unhandled error", exc_info=exc)
    body = json.dumps({"error": message}).encode() if style == "v2" else error_body(code, message)
    return Response(status, body, "application/json", headers)


def decode_base64_image(value: Any, index: int) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"images[{index}] must be a base64 string", "bad_base64")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"images[{index}] is not valid base64", "bad_base64") from None


Handler = Callable[..., Any]
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: what a method may be


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern
    handler: Handler
    name: str
    auth: str | None = None  # None: public; "predict" or "admin": a scope; "session": browser only
    errors: str = "v1"  # the error body's shape: "v1" {"error": {"code", "message"}}, "v2" {"error": "..."}


class Router:
    def __init__(self):
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, auth: str | None = None, errors: str = "v1") -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self.routes.append(Route(method, re.compile(f"^{regex}$"), handler, template, auth, errors))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        if not _TOKEN.fullmatch(method):  # cheroot passes any bytes up to the first space as the method
            raise HttpError(400, "bad_request", "the request method is not a valid HTTP token")
        allowed = []
        for route in self.routes:
            found = route.pattern.match(path)
            if found:
                if route.method == method or (method == "HEAD" and route.method == "GET"):
                    return route, found.groupdict()
                allowed.append(route.method)
        if allowed:
            raise HttpError(405, "method_not_allowed", f"{method} is not allowed here",
                            {"Allow": ", ".join(sorted(set(allowed)))})
        raise HttpError(404, "not_found", f"no such endpoint: {path}")
