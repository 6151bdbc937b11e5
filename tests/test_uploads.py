"""Upload hardening through the HTTP API: body limits, image bombs, disguised files, image counts, job format."""
from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib

import pytest
import webob

from core import signing
from core.db import Prediction, unit_of_work

PREDICTIONS = "/api/v1/predictions"


def submit(account, images, content_type=None, **kwargs):
    files = [("image", f"d{i}.png", data) + ((content_type,) if content_type else ())
             for i, data in enumerate(images)]
    return account.app.post(PREDICTIONS, upload_files=files, headers=account.headers, expect_errors=True,
                            **kwargs)


def assert_error(res, status, code=None):
    assert res.status_int == status, res.text
    assert res.content_type == "application/json"
    if code is not None:
        assert res.json["error"]["code"] == code, res.json


# -- the body size limit -----------------------------------------------------------------------


class CountingInput(io.RawIOBase):
    """A wsgi.input that serves `size` bytes and counts how many were read."""

    def __init__(self, size: int):
        self.size, self.read_bytes = size, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.size - self.read_bytes)
        buffer[:n] = b"x" * n
        self.read_bytes += n
        return n


def raw_request(app, headers: dict, stream, environ: dict | None = None):
    """Call the WSGI app directly, so the test controls wsgi.input and Content-Length."""
    req = webob.Request.blank(PREDICTIONS, method="POST", headers=headers)
    req.environ.pop("CONTENT_LENGTH", None)
    req.environ.update(environ or {})
    req.environ["wsgi.input"] = stream
    return req.get_response(app.app)


def test_body_over_the_limit_is_413(account, services):
    limit = services.settings.max_body_bytes
    assert limit == 4 * 1024 * 1024
    big = b"x" * (limit + 1)
    res = account.app.post(PREDICTIONS, big, content_type="application/json", headers=account.headers,
                           expect_errors=True)
    assert_error(res, 413, "payload_too_large")
    # a multipart upload of one big file: same answer
    res = submit(account, [b"\x89PNG\r\n\x1a\n" + b"\x00" * limit])
    assert_error(res, 413, "payload_too_large")
    # exactly at the limit is read and judged on its content
    res = account.app.post(PREDICTIONS, b"x" * limit, content_type="application/json",
                           headers=account.headers, expect_errors=True)
    assert_error(res, 400, "bad_json")


def test_body_limit_applies_before_reading_and_before_authentication(account, services, app):
    limit = services.settings.max_body_bytes
    # a Content-Length claiming more than the limit: refused without reading a byte
    stream = CountingInput(10)
    res = raw_request(app, {"Content-Type": "application/json", **account.headers}, stream,
                      {"CONTENT_LENGTH": str(limit + 1)})
    assert res.status_int == 413 and json.loads(res.body)["error"]["code"] == "payload_too_large"
    assert stream.read_bytes == 0
    stream = CountingInput(10)
    res = raw_request(app, {"Content-Type": "application/json"}, stream, {"CONTENT_LENGTH": str(10 ** 12)})
    assert res.status_int == 413 and stream.read_bytes == 0
    assert res.headers.get("Connection", "").lower() == "close"
    # an unauthenticated huge body is also refused before reading (no 401 after buffering 1 TB)
    # a chunked body (no Content-Length) is read up to the limit + 1 byte, then refused
    stream = CountingInput(limit * 3)
    res = raw_request(app, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, stream)
    assert res.status_int == 413
    assert stream.read_bytes <= limit + 1
    # a Content-Length that is not a number
    res = raw_request(app, {"Content-Type": "application/json"}, CountingInput(10), {"CONTENT_LENGTH": "1e9"})
    assert res.status_int == 400
    # a signed request with a body over the limit
    key = account.create_key()
    body = b"x" * (limit + 1)
    headers = signing.signed_headers(*key, "POST", PREDICTIONS, "", body)
    res = app.post(PREDICTIONS, body, headers={**headers, "Content-Type": "application/json"},
                   expect_errors=True)
    assert_error(res, 413, "payload_too_large")


# -- images ------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A valid 1-bit PNG of width x height black pixels: 100 megapixels in a few tens of KB."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale ("1")
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb()


def test_png_bomb_is_413_fast_and_the_server_keeps_working(account, registered_mlp, digit_pngs, bomb):
    assert len(bomb) < 100_000
    width, height, depth, color = struct.unpack(">IIBB", bomb[16:26])  # IHDR
    assert (width, height, depth, color) == (10_000, 10_000, 1, 0)  # what Pillow opens as mode "1"
    started = time.perf_counter()
    res = submit(account, [bomb])
    assert time.perf_counter() - started < 1.0
    assert_error(res, 413, "image_too_large")
    # as JSON base64 as well, and hidden behind a valid first image
    started = time.perf_counter()
    res = account.app.post_json(PREDICTIONS, {"images": [base64.b64encode(digit_pngs[1]).decode(),
                                                         base64.b64encode(bomb).decode()]},
                                headers=account.headers, expect_errors=True)
    assert time.perf_counter() - started < 1.0
    assert_error(res, 413, "image_too_large")
    assert "image 1" in res.json["error"]["message"]
    res = submit(account, [digit_pngs[5]])
    assert res.status_int == 202, res.text


def test_image_pixel_limit_follows_the_settings(services, make_user, registered_mlp, digit_pngs):
    from webtest import TestApp

    from conftest import login
    from server.web.app import create_app
    from server.services.bootstrap import build

    small = build(services.settings.replace(max_image_pixels=200 * 200))
    try:
        account = login(TestApp(create_app(small.settings, small)), make_user())
        assert_error(submit(account, [png_bomb(201, 200)]), 413, "image_too_large")
        assert submit(account, [digit_pngs[2]]).status_int == 202  # 112 x 112 pixels
    finally:
        small.close()


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 4 4 moveto 24 24 lineto stroke\n"
       b"showpage\n%%EOF\n")
BINARY_EPS = b"\xc5\xd0\xd3\xc6" + struct.pack("<IIIIII", 30, len(EPS), 0, 0, 0, 0) + b"\xff\xff" + EPS
PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] "
       b"/Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
       b'<script>alert(1)</script><line x1="4" y1="4" x2="24" y2="24" stroke="white"/></svg>')
BARE_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><circle r="9"/></svg>'


@pytest.mark.parametrize("data", [EPS, BINARY_EPS, PDF, SVG, BARE_SVG], ids=["eps", "binary-eps", "pdf", "svg",
                                                                             "bare-svg"])
def test_disguised_documents_are_415(account, registered_mlp, data):
    res = submit(account, [data], content_type="image/png")
    assert_error(res, 415, "unsupported_media_type")
    res = account.app.post_json(PREDICTIONS, {"images": ["data:image/png;base64," + base64.b64encode(data).decode()]},
                                headers=account.headers, expect_errors=True)
    assert_error(res, 415, "unsupported_media_type")


def test_more_images_than_allowed_is_413(account, registered_mlp, digit_pngs, services):
    limit = services.settings.max_images
    res = submit(account, [digit_pngs[1]] * (limit + 1))
    assert_error(res, 413, "too_many_images")
    res = account.app.post_json(PREDICTIONS, {"images": [base64.b64encode(digit_pngs[1]).decode()] * (limit + 1)},
                                headers=account.headers, expect_errors=True)
    assert_error(res, 413, "too_many_images")
    res = submit(account, [digit_pngs[1]] * limit)
    assert res.status_int == 202 and res.json["n_images"] == limit


# -- jobs ----------------------------------------------------------------------------------------


def test_jobs_are_serialized_as_json_not_pickle(account, registered_mlp, digit_pngs, services, signed):
    key = account.create_key()
    body = json.dumps({"images": [base64.b64encode(digit_pngs[8]).decode()]}).encode()
    res = signed(key, "POST", PREDICTIONS, body, "application/json")
    assert res.status_int == 202, res.text
    pid = res.json["id"]
    with unit_of_work(services.sessions) as session:
        job_id = session.get(Prediction, pid).job_id
    raw = services.redis.hgetall(f"rq:job:{job_id}")
    assert raw, "the job hash is missing"
    data = raw[b"data"]
    try:
        data = zlib.decompress(data)  # RQ compresses the serialized payload
    except zlib.error:
        pass
    assert not data.startswith(b"\x80"), "pickled job payload"
    decoded = json.loads(data)
    assert decoded[0] == "server.queue.jobs.run_predictions"
    assert pid in json.dumps(decoded)
    # no other field is pickled either
    for field, value in raw.items():
        assert not value.startswith(b"\x80\x04") and not value.startswith(b"\x80\x05"), field
    assert services.queue.rq.serializer.__name__ == "JSONSerializer"


def test_declared_oversized_body_is_413_on_safe_methods_too(app, services):
    """A GET/HEAD carrying a huge declared body must not make the server swallow it afterwards."""
    limit = services.settings.max_body_bytes
    for method, path in (("GET", "/healthz"), ("GET", PREDICTIONS)):
        stream = CountingInput(10)
        req = webob.Request.blank(path, method=method)
        req.environ.update({"CONTENT_LENGTH": str(limit + 1), "wsgi.input": stream})
        res = req.get_response(app.app)
        assert res.status_int == 413, (method, path, res.status)
        assert stream.read_bytes == 0


@pytest.fixture
def live_url(app):
    """The app behind a real cheroot HTTP server on a free port (what `digitserve serve` runs)."""
    import threading

    from cheroot import wsgi

    server = wsgi.Server(("127.0.0.1", 0), app.app, numthreads=4)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    host, port = server.bind_addr[:2]
    yield host, port
    server.stop()
    thread.join(5)


def test_413_is_sent_before_the_body_over_a_real_socket(live_url, services):
    """Only the headers are sent: the server must answer 413 and close, not wait for 100 MB."""
    import socket

    limit = services.settings.max_body_bytes
    for method in ("POST", "GET"):
        with socket.create_connection(live_url, timeout=3) as sock:
            sock.sendall(f"{method} {PREDICTIONS} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {limit * 25}\r\n\r\n".encode() + b"x" * 1000)
            started = time.perf_counter()
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
            assert time.perf_counter() - started < 2
            status_line = reply.split(b"\r\n", 1)[0]
            assert b" 413 " in status_line, reply[:300]
            assert b"connection: close" in reply.lower()
