"""The HTTP edge over raw sockets to a real `digitserve serve`: malformed requests get a JSON 4xx, never a
500 or a text page, and slow clients do not take the service down."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import pytest

from conftest import make_settings, process_env, scratch_database, wait_until
from server.cli.processes import Subcommand, free_port

DEEP = b"[" * 1000 + b"]" * 1000

# -- a real server over raw sockets -------------------------------------------------------------------

THREADS = 4
READ_TIMEOUT = 1.5
DEADLINE = 4.0


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory):
    """`digitserve serve` alone (no worker) with few threads and short timeouts."""
    import urllib.request

    with scratch_database("ds_edge") as url:
        base = tmp_path_factory.mktemp("edge")
        settings = make_settings(url, f"dsedge:{uuid.uuid4().hex[:8]}:", base, port=free_port())
        web = Subcommand(["serve"], process_env(settings, WEB_THREADS=THREADS, WEB_READ_TIMEOUT=READ_TIMEOUT,
                                                WEB_REQUEST_DEADLINE=DEADLINE), base / "web.log")

        def up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{settings.port}/healthz", timeout=2).status == 200
            except Exception:
                return False

        try:
            wait_until(up, 90, 0.3, "the web server")
            yield settings.port
        finally:
            web.stop()
            print(f"--- web.log ---\n{web.output()[-20000:]}")


class Raw:
    """One HTTP response read off a raw socket."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, elapsed: float):
        self.status, self.headers, self.body, self.elapsed = status, headers, body, elapsed

    def __repr__(self):
        return f"Raw({self.status}, {self.headers}, {self.body[:300]!r}, {self.elapsed:.2f}s)"


def read_response(sock: socket.socket, started: float) -> Raw | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None if not data else _parse(data, b"", started)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = _headers(head)
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return _parse(head, body[:length] if length >= 0 else body, started)


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _parse(head: bytes, body: bytes, started: float) -> Raw:
    status = int(head.split(b" ", 2)[1])
    return Raw(status, _headers(head), body, time.monotonic() - started)


def exchange(port: int, payload: bytes, *, half_close: bool = False, timeout: float = 15.0) -> Raw | None:
    """Send `payload` (then optionally shut down writing) and read one response; None if closed silently."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before taking everything
        try:
            return read_response(sock, started)
        except ConnectionResetError:
            return None


def assert_raw_json_error(res: Raw | None, status: int, code: str | None = None) -> None:
    assert res is not None, "the connection closed without an answer"
    assert res.status == status, res
    assert res.headers.get("content-type", "").startswith("application/json"), res
    error = json.loads(res.body)["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str), res
    if code is not None:
        assert error["code"] == code, res


H = b"Host: test\r\n"
JSON_POST = b"POST /api/v1/users HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
CHUNKED_POST = JSON_POST + b"Transfer-Encoding: chunked\r\n\r\n"

# (name, request bytes, half-close after sending, expected status, expected code or None)
CORPUS = [
    ("missing Host", b"GET /healthz HTTP/1.1\r\n\r\n", False, 400, "bad_request"),
    ("garbage request line", b"GARBAGE\r\n\r\n", False, 400, "bad_request"),
    ("bad method", b"G\x01T /healthz HTTP/1.1\r\n" + H + b"\r\n", False, 400, "bad_request"),
    ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\n" + H + b"\r\n", False, None, None),
    ("relative URI", b"GET healthz HTTP/1.1\r\n" + H + b"\r\n", False, 400, "bad_request"),
    ("bad percent escape", b"GET /%zz%u HTTP/1.1\r\n" + H + b"\r\n", False, None, None),
    ("URI too long", b"GET /" + b"a" * 600_000 + b" HTTP/1.1\r\n" + H + b"\r\n", False, 414, None),
    ("header line without a colon", b"GET /healthz HTTP/1.1\r\n" + H + b"oops\r\n\r\n", False, 400, None),
    ("headers too large", b"GET /healthz HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 600_000 + b"\r\n\r\n",
     False, 413, "payload_too_large"),
    ("Content-Length not a number", JSON_POST + b"Content-Length: 12abc\r\n\r\n{}", False, 400, None),
    ("Content-Length far over the limit", JSON_POST + b"Content-Length: 99999999999\r\n\r\n{}", False, 413,
     "payload_too_large"),
    ("Content-Length over the body, client done", JSON_POST + b"Content-Length: 100\r\n\r\n{}", True, 400, None),
    ("Content-Length over the body, client stalls", JSON_POST + b"Content-Length: 100\r\n\r\n{}", False, 408,
     None),
    ("deep JSON", JSON_POST + b"Content-Length: %d\r\n\r\n" % len(DEEP) + DEEP, False, 400, "bad_json"),
    ("bad chunk size", CHUNKED_POST + b"zz\r\n{}\r\n0\r\n\r\n", False, 400, None),
    ("negative chunk size", CHUNKED_POST + b"-5\r\n{}\r\n0\r\n\r\n", False, 400, None),
    ("huge chunk size", CHUNKED_POST + b"ffffffffffffffff\r\n{}", False, 413, "payload_too_large"),
    ("a single 5 MiB chunk", CHUNKED_POST + b"500000\r\n" + b"x" * 65536, False, 413, "payload_too_large"),
    ("chunks over the limit in total", CHUNKED_POST + (b"100000\r\n" + b"x" * 0x100000 + b"\r\n") * 5
     + b"0\r\n\r\n", False, 413, "payload_too_large"),
    ("truncated chunk", CHUNKED_POST + b"10\r\nabc", True, 400, None),
    ("chunk without its CRLF", CHUNKED_POST + b"2\r\n{}XY0\r\n\r\n", False, 400, None),
    ("chunked, no last chunk", CHUNKED_POST + b"2\r\n{}\r\n", True, 400, None),
    ("chunk size line without end", CHUNKED_POST + b"1" * 200_000, False, None, None),
    ("two Authorization headers", b"GET /api/v1/predictions HTTP/1.1\r\n" + H
     + b"Authorization: Bearer a.b\r\nAuthorization: Bearer c.d\r\n\r\n", False, 400, "bad_request"),
    ("two Content-Length headers", JSON_POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", False, 400,
     "bad_request"),
    ("static file not found", b"GET /static/nope.js HTTP/1.1\r\n" + H + b"\r\n", False, 404, None),
]


@pytest.mark.parametrize("name, payload, half_close, status, code", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_requests_get_a_json_4xx(edge_server, name, payload, half_close, status, code):
    res = exchange(edge_server, payload, half_close=half_close)
    assert res is not None, "the connection closed without an answer"
    assert res.status < 500, res
    assert_raw_json_error(res, status or res.status, code)
    assert res.elapsed < DEADLINE + 3, res


@pytest.mark.parametrize("payload, status", [
    (b"GET /healthz HTTP/9.9\r\n" + H + b"\r\n", 505),
    (JSON_POST + b"Transfer-Encoding: gzip\r\n\r\n", 501),
])
def test_unsupported_protocol_features_answer_json_too(edge_server, payload, status):
    assert_raw_json_error(exchange(edge_server, payload), status)


def test_a_trickled_body_is_cut_off_at_the_request_deadline(edge_server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", edge_server), timeout=DEADLINE + 5) as sock:
        sock.sendall(JSON_POST + b"Content-Length: 1000\r\n\r\n")
        answer = None
        for _ in range(int((DEADLINE + 4) / 0.5)):  # one byte twice per read timeout: never idle long enough
            try:
                sock.sendall(b" ")
            except OSError:
                break
            time.sleep(0.5)
            sock.setblocking(False)
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            finally:
                sock.settimeout(DEADLINE + 5)
            if answer:
                break
    assert answer, "the trickle was never cut off"
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < DEADLINE + 2.5


def _slow_client(port: int, results: list, trickle: bool) -> None:
    """Headers, part of a body, then nothing (or a byte now and then): hold a web thread as long as allowed."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(JSON_POST + b"Content-Length: 1000\r\n\r\n{")
            if trickle:
                sock.settimeout(0.5)
                while time.monotonic() - started < 30:
                    try:
                        data = sock.recv(65536)
                        results.append(("answered", data.split(b"\r\n", 1)[0], time.monotonic() - started))
                        return
                    except socket.timeout:
                        sock.sendall(b" ")
            data = sock.recv(65536)
            results.append(("answered" if data else "closed", data.split(b"\r\n", 1)[0],
                            time.monotonic() - started))
    except OSError as exc:
        results.append(("closed", repr(exc).encode(), time.monotonic() - started))


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickling"])
def test_slow_sockets_do_not_take_the_service_down(edge_server, trickle):
    """3 x WEB_THREADS slow-body sockets at once: /healthz still answers, each slow socket gets a JSON 408."""
    import urllib.request

    results: list = []
    clients = [threading.Thread(target=_slow_client, args=(edge_server, results, trickle), daemon=True)
               for _ in range(3 * THREADS)]
    for client in clients:
        client.start()
    time.sleep(0.5)  # every slow socket is connected and holding a thread
    started = time.monotonic()
    res = urllib.request.urlopen(f"http://127.0.0.1:{edge_server}/healthz", timeout=30)
    waited = time.monotonic() - started
    print(f"/healthz answered in {waited:.2f} s behind {len(clients)} slow sockets ({THREADS} threads)")
    assert res.status == 200
    # every slow socket holds a thread at most DEADLINE (trickling) or READ_TIMEOUT (stalled); healthz
    # waits for the batches ahead of it
    per_socket = DEADLINE if trickle else READ_TIMEOUT
    assert waited < 3 * per_socket + 2
    for client in clients:
        client.join(60)
    assert len(results) == len(clients)
    for outcome, line, _ in results:
        assert outcome == "closed" or line.startswith((b"HTTP/1.1 408", b"HTTP/1.1 400")), results
