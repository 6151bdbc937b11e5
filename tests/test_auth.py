"""Security rules of the HTTP API: signed requests, sessions, passwords, API keys, authorization, rate limits.

Everything goes through the WSGI app (WebTest) against the real MariaDB and Redis.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
import statistics
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from webtest import TestApp

from conftest import PASSWORD, TEST_SECRET, login
from core import signing
from server.services import accounts

ROOT = Path(__file__).resolve().parent.parent
PREDICTIONS = "/api/v1/predictions"
NOW = lambda: dt.datetime.now(dt.timezone.utc)  # noqa: E731


# -- helpers ---------------------------------------------------------------------------------


def app_with(services, **changes):
    """A TestApp (and its Services) over the same database and Redis namespace with other settings."""
    from server.web.app import create_app
    from server.services.bootstrap import build

    built = build(services.settings.replace(**changes))
    return TestApp(create_app(built.settings, built)), built


def send_signed(testapp, key, method, path, body=b"", content_type=None, query="", headers=None,
                send_query=None, **sign_kwargs):
    """Sign (key_id, secret) over `query`, send `send_query` (default: the same) on a fresh cookie jar."""
    all_headers = signing.signed_headers(key[0], key[1], method, path, query, body, **sign_kwargs)
    if content_type:
        all_headers["Content-Type"] = content_type
    all_headers.update(headers or {})
    sent = query if send_query is None else send_query
    testapp.reset()
    return testapp.request(path + (f"?{sent}" if sent else ""), method=method, body=body,
                           headers=all_headers, expect_errors=True)


def json_body(digit_png: bytes) -> bytes:
    return json.dumps({"images": [base64.b64encode(digit_png).decode()]}).encode()


def multipart_body(*images: bytes, **fields) -> tuple[bytes, str]:
    from server.cli.client import _multipart

    return _multipart({k: str(v) for k, v in fields.items()}, [(f"d{i}.png", d) for i, d in enumerate(images)])


def assert_error(res, status, code=None):
    assert res.status_int == status, res.text
    assert res.content_type == "application/json"
    if code is not None:
        assert res.json["error"]["code"] == code, res.json


# -- signed requests ---------------------------------------------------------------------------


def test_signed_multipart_json_and_get_with_a_canonical_query(account, registered_mlp, digit_pngs, signed):
    key = account.create_key()
    body, content_type = multipart_body(digit_pngs[7])
    res = signed(key, "POST", PREDICTIONS, body, content_type)
    assert res.status_int == 202, res.text
    first = res.json["id"]

    res = signed(key, "POST", PREDICTIONS, json_body(digit_pngs[3]), "application/json", query="model=mlp%3A1")
    assert res.status_int == 202, res.text
    assert res.json["model"] == {"name": "mlp", "version": 1}

    # signed over the canonical query; the URL carries the same pairs in another order and encoding
    res = signed(key, "GET", f"{PREDICTIONS}/{first}", query="include=preprocessed")
    assert res.status_int == 200 and res.json["id"] == first
    res = send_signed(account.app, key, "GET", PREDICTIONS,
                      query="limit=1&note=a%20b~c%3A", send_query="note=a+b%7Ec:&limit=1")
    assert res.status_int == 200, res.text
    assert len(res.json["predictions"]) == 1
    # a query that differs from the signed one is refused
    res = send_signed(account.app, key, "GET", PREDICTIONS, query="limit=1", send_query="limit=2")
    assert_error(res, 401, "bad_signature")


def test_canonical_query_is_sorted_and_rfc3986_encoded():
    assert signing.canonical_query("b=2&a=x+y&a=%7E&c=") == "a=x%20y&a=~&b=2&c="
    assert signing.canonical_query("model=mlp:1&wait=2") == "model=mlp%3A1&wait=2"
    assert signing.canonical_query({"é": "/ &="}) == "%C3%A9=%2F%20%26%3D"
    assert signing.canonical_query("a=1&B=2&flag") == "B=2&a=1&flag="
    assert signing.canonical_query("") == ""


def test_date_must_be_within_300_seconds(account, signed):
    key = account.create_key()
    for offset, status in ((-301, 401), (301, 401), (-290, 200), (290, 200)):
        res = signed(key, "GET", PREDICTIONS, now=NOW() + dt.timedelta(seconds=offset))
        assert res.status_int == status, (offset, res.text)
        if status == 401:
            assert res.json["error"]["code"] == "stale_request"
    for bad_date in ("2024-03-09T14:30:05Z", "yesterday", ""):
        headers = signing.signed_headers(*key, "GET", PREDICTIONS)
        headers["X-DS-Date"] = bad_date
        res = account.app.get(PREDICTIONS, headers=headers, expect_errors=True)
        assert_error(res, 401)


def test_tampered_body_is_rejected(account, registered_mlp, digit_pngs, signed):
    key = account.create_key()
    body = json_body(digit_pngs[2])
    headers = signing.signed_headers(*key, "POST", PREDICTIONS, "", body)
    tampered = bytearray(body)
    tampered[len(tampered) // 2] ^= 0x01
    tampered = bytes(tampered)

    def send(data, hdrs):
        account.app.reset()
        return account.app.post(PREDICTIONS, data, headers={**hdrs, "Content-Type": "application/json"},
                                expect_errors=True)

    assert_error(send(tampered, headers), 401, "body_mismatch")
    # the body hash header fixed up to match the tampered body, the signature still over the original
    fixed = {**headers, "X-DS-Content-SHA256": signing.body_sha256(tampered)}
    fixed["X-DS-Nonce"] = headers["X-DS-Nonce"]
    assert_error(send(tampered, fixed), 401, "bad_signature")
    # the untouched request still goes through (the failures above did not burn its nonce)
    assert send(body, headers).status_int == 202


def test_wrong_secret_and_unknown_key_answer_alike(account, signed):
    key_id, secret = account.create_key()
    wrong = signed((key_id, secret[:-1] + ("A" if secret[-1] != "A" else "B")), "GET", PREDICTIONS)
    assert_error(wrong, 401, "bad_signature")
    unknown = signed(("dsk_" + "0" * 24, secret), "GET", PREDICTIONS)
    assert_error(unknown, 401, "bad_signature")
    assert unknown.json == wrong.json
    assert unknown.body == wrong.body


def test_revoked_key_is_rejected(account, signed):
    key = account.create_key()
    assert signed(key, "GET", PREDICTIONS).status_int == 200
    again = login(account.app, account.email)  # signed() reset the cookie jar
    assert account.app.delete(f"/api/v1/keys/{key[0]}", headers=again.headers).status_int == 204
    assert_error(signed(key, "GET", PREDICTIONS), 401, "bad_signature")


def test_replayed_and_malformed_nonces(account, signed):
    key = account.create_key()
    now = NOW()
    assert signed(key, "GET", PREDICTIONS, now=now, nonce="n0nce-0123456789").status_int == 200
    assert_error(signed(key, "GET", PREDICTIONS, now=now, nonce="n0nce-0123456789"), 401, "replayed")
    # replayed a little later, with a fresh date: still the same nonce
    assert_error(signed(key, "GET", PREDICTIONS, nonce="n0nce-0123456789"), 401, "replayed")
    for nonce in ("0123456789abcde", "x" * 65, "has spaces in it 0123", "nönce-0123456789ab"):
        assert_error(signed(key, "GET", PREDICTIONS, nonce=nonce), 401)
    assert signed(key, "GET", PREDICTIONS, nonce="0123456789abcdef").status_int == 200  # 16 is enough
    assert signed(key, "GET", PREDICTIONS, nonce="y" * 64).status_int == 200


def test_malformed_authorization_is_401(account, signed):
    key_id, secret = account.create_key()
    good = signing.signed_headers(key_id, secret, "GET", PREDICTIONS)
    signature = good["Authorization"].rsplit("=", 1)[1]
    variants = [
        "DS1-HMAC-SHA256",
        f"DS1-HMAC-SHA256 KeyId={key_id}",
        f"DS1-HMAC-SHA256 KeyId={key_id},Signature=",
        f"DS1-HMAC-SHA256 KeyId={key_id},Signature={'z' * 64}",
        f"DS1-HMAC-SHA256 KeyId={key_id},Signature={signature[:-2]}",
        f"DS1-HMAC-SHA256 Signature={signature},KeyId={key_id}",
        f"DS1-HMAC-SHA256 KeyId={key_id}/../x,Signature={signature}",
        f"DS1-HMAC-SHA256X KeyId={key_id},Signature={signature}",
        f"Basic {base64.b64encode(b'a:b').decode()}",
        f"Bearer {key_id}.{secret}",  # bearer keys are off by default
        "garbage",
    ]
    for value in variants:
        account.app.reset()
        res = account.app.get(PREDICTIONS, headers={**good, "Authorization": value}, expect_errors=True)
        assert_error(res, 401)
    # missing signing headers
    for header in ("X-DS-Date", "X-DS-Nonce", "X-DS-Content-SHA256"):
        headers = signing.signed_headers(key_id, secret, "GET", PREDICTIONS)
        del headers[header]
        account.app.reset()
        assert_error(account.app.get(PREDICTIONS, headers=headers, expect_errors=True), 401)


def test_redis_down_is_503_and_never_accepted_unsigned(account, services, registered_mlp, digit_pngs):
    key = account.create_key()
    broken_app, broken = app_with(services, redis_url="redis://127.0.0.1:1/0", allow_bearer_keys=True)
    try:
        res = send_signed(broken_app, key, "GET", PREDICTIONS)
        assert_error(res, 503, "service_unavailable")
        assert int(res.headers["Retry-After"]) >= 1
        res = send_signed(broken_app, key, "POST", PREDICTIONS, json_body(digit_pngs[1]), "application/json")
        assert_error(res, 503)
        assert res.headers["Retry-After"]
        # a bad signature is still a 401 (it never reaches Redis), unsigned is still a 401
        assert_error(send_signed(broken_app, (key[0], "x" * 43), "GET", PREDICTIONS), 401)
        broken_app.reset()
        assert_error(broken_app.get(PREDICTIONS, expect_errors=True), 401)
        # bearer keys and sessions depend on Redis too (rate limits, the session store)
        res = broken_app.get(PREDICTIONS, headers={"Authorization": f"Bearer {key[0]}.{key[1]}"},
                             expect_errors=True)
        assert_error(res, 503)
        assert res.headers["Retry-After"]
        res = broken_app.post_json("/api/v1/sessions", {"email": account.email, "password": PASSWORD},
                                   expect_errors=True)
        assert_error(res, 503)
        assert res.headers["Retry-After"]
        broken_app.set_cookie("ds_session", "whatever")
        res = broken_app.get(PREDICTIONS, expect_errors=True)
        assert_error(res, 503)
        assert res.headers["Retry-After"]
    finally:
        broken.close()
    with services.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM predictions")).scalar() == 0


# -- the README's worked example ---------------------------------------------------------------


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    begin, end = text.index("<!-- BEGIN signing -->"), text.index("<!-- END signing -->")
    return text[begin:end]


def readme_example() -> dict:
    section = readme_section()
    inputs = dict(re.findall(r"^\| *([a-z ]+?) *\| *`([^`]*)` *\|$", section, re.M))
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", section, re.M | re.S)
    text_blocks = [b for lang, b in blocks if lang == "text"]
    (http,) = [b for lang, b in blocks if lang == "http"]
    (shell,) = [b for lang, b in blocks if lang == "sh"]
    return {
        "inputs": inputs,
        "string_to_sign": text_blocks[0].rstrip("\n"),
        "signature": text_blocks[1].strip(),
        "headers": dict(line.split(": ", 1) for line in http.strip().splitlines()),
        "shell": shell,
        "body_length": int(re.search(r"exactly the (\d+) bytes", section).group(1)),
    }


def test_readme_worked_example_matches_the_code():
    example = readme_example()
    i = example["inputs"]
    assert set(i) >= {"key id", "secret", "date", "nonce", "method", "path", "query", "body"}
    body = i["body"].encode()
    assert len(body) == example["body_length"]
    digest = signing.body_sha256(body)
    expected = signing.string_to_sign(i["key id"], i["date"], i["nonce"], i["method"], i["path"], i["query"],
                                      digest)
    assert example["string_to_sign"] == expected
    assert len(expected.split("\n")) == 8
    assert example["signature"] == signing.sign(i["secret"], i["key id"], i["date"], i["nonce"], i["method"],
                                                i["path"], i["query"], digest)
    headers = signing.signed_headers(i["key id"], i["secret"], i["method"], i["path"], i["query"], body,
                                     now=signing.parse_date(i["date"]), nonce=i["nonce"])
    assert example["headers"] == headers
    assert example["signature"] in headers["Authorization"]
    # the empty-body hash quoted in the prose
    assert "`e3b0c442...b855`" in readme_section() and signing.body_sha256(b"").startswith("e3b0c442")


def test_readme_shell_example_computes_the_same_signature(tmp_path):
    example = readme_example()
    script = example["shell"].split("\ncurl ")[0]  # everything up to the request itself
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == example["signature"]


def test_readme_example_is_accepted_by_the_server_when_fresh(account, registered_mlp, signed):
    """The README's inputs, with a fresh date and nonce, are a valid request against the live app."""
    i = readme_example()["inputs"]
    key = account.create_key()
    res = signed(key, i["method"], i["path"], i["body"].encode(), "application/json", query=i["query"])
    # the example body is the 8-byte PNG signature: authenticated, then rejected as an unreadable image
    assert_error(res, 422)


# -- browser sessions --------------------------------------------------------------------------


def session_cookie_header(res) -> str:
    (cookie,) = [v for k, v in res.headerlist if k == "Set-Cookie" and v.startswith("ds_session=")]
    return cookie


def cookie_attributes(header: str) -> tuple[str, set[str]]:
    first, *attrs = [part.strip() for part in header.split(";")]
    return first.split("=", 1)[1], {a.lower() for a in attrs}


def test_session_cookie_flags_over_http_and_https(app, make_user):
    email = make_user()
    res = app.post_json("/api/v1/sessions", {"email": email, "password": PASSWORD})
    sid, attrs = cookie_attributes(session_cookie_header(res))
    assert len(sid) >= 40
    assert {"httponly", "samesite=lax", "path=/"} <= attrs
    assert "secure" not in attrs
    assert "max-age" not in " ".join(attrs) and "expires" not in " ".join(attrs)  # a browser-session cookie
    assert set(res.json) >= {"csrf_token", "user"} and "password_hash" not in res.text

    app.reset()
    res = app.post_json("/api/v1/sessions", {"email": email, "password": PASSWORD},
                        extra_environ={"wsgi.url_scheme": "https"})
    _, attrs = cookie_attributes(session_cookie_header(res))
    assert {"httponly", "samesite=lax", "path=/", "secure"} <= attrs


def test_a_fresh_session_id_at_each_login(app, make_user):
    email = make_user()
    first = login(app, email)
    old_sid = app.cookies["ds_session"]
    second = login(app, email)  # sends the old cookie along
    new_sid = app.cookies["ds_session"]
    assert new_sid != old_sid and second.csrf != first.csrf
    assert app.get("/api/v1/sessions").json["user"]["email"] == email
    app.set_cookie("ds_session", old_sid)
    assert_error(app.get("/api/v1/sessions", expect_errors=True), 401, "session_expired")
    # a planted (attacker-chosen) session id is never adopted
    app.reset()
    app.set_cookie("ds_session", "attacker-chosen-id")
    login(app, email)
    assert app.cookies["ds_session"] != "attacker-chosen-id"


def test_logout_invalidates_the_session(account):
    app = account.app
    sid = app.cookies["ds_session"]
    res = app.delete("/api/v1/sessions", headers=account.headers)
    assert res.status_int == 204
    _, attrs = cookie_attributes(session_cookie_header(res))
    assert "max-age=0" in attrs
    app.reset()
    app.set_cookie("ds_session", sid)
    assert_error(app.get("/api/v1/sessions", expect_errors=True), 401)
    assert_error(app.get(PREDICTIONS, expect_errors=True), 401)


def test_idle_sessions_expire(services, make_user):
    short_app, short = app_with(services, session_idle_seconds=1)
    try:
        login(short_app, make_user())
        assert short_app.get("/api/v1/sessions").status_int == 200
        time.sleep(2.1)
        assert_error(short_app.get("/api/v1/sessions", expect_errors=True), 401, "session_expired")
    finally:
        short.close()


def test_csrf_token_is_required_on_unsafe_requests(account, registered_mlp, digit_pngs):
    app = account.app
    files = [("image", "a.png", digit_pngs[1])]
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": account.csrf[:-1]},
                    {"X-CSRF-Token": "x" * len(account.csrf)}):
        res = app.post(PREDICTIONS, upload_files=files, headers=headers, expect_errors=True)
        assert_error(res, 403, "forbidden")
        assert_error(app.post_json("/api/v1/keys", {"name": "k"}, headers=headers, expect_errors=True), 403)
        assert_error(app.delete("/api/v1/sessions", headers=headers, expect_errors=True), 403)
    assert app.get(PREDICTIONS).status_int == 200  # safe methods need no token
    assert app.post(PREDICTIONS, upload_files=files, headers=account.headers).status_int == 202
    # another user's CSRF token does not work for this session
    other_app = TestApp(app.app)
    other = login(other_app, account.email)
    assert other.csrf != account.csrf
    res = app.post(PREDICTIONS, upload_files=files, headers={"X-CSRF-Token": other.csrf}, expect_errors=True)
    assert_error(res, 403)


def test_cross_site_unsafe_requests_are_refused(account, registered_mlp, digit_pngs, make_user):
    app = account.app
    cross = {**account.headers, "Sec-Fetch-Site": "cross-site"}
    res = app.post(PREDICTIONS, upload_files=[("image", "a.png", digit_pngs[1])], headers=cross,
                   expect_errors=True)
    assert_error(res, 403)
    assert_error(app.post_json("/api/v1/keys", {"name": "k"}, headers=cross, expect_errors=True), 403)
    # login and registration too (login CSRF)
    res = app.post_json("/api/v1/sessions", {"email": account.email, "password": PASSWORD},
                        headers={"Sec-Fetch-Site": "cross-site"}, expect_errors=True)
    assert_error(res, 403)
    res = app.post_json("/api/v1/users", {"email": "new-user@example.com", "password": PASSWORD},
                        headers={"Sec-Fetch-Site": "cross-site"}, expect_errors=True)
    assert_error(res, 403)
    # same-origin and none are fine; a cross-site GET is fine (SameSite=Lax navigation)
    for site in ("same-origin", "none"):
        res = app.post(PREDICTIONS, upload_files=[("image", "a.png", digit_pngs[1])],
                       headers={**account.headers, "Sec-Fetch-Site": site})
        assert res.status_int == 202
    assert app.get(PREDICTIONS, headers={"Sec-Fetch-Site": "cross-site"}).status_int == 200


# -- passwords ---------------------------------------------------------------------------------


def test_passwords_are_stored_as_argon2id(app, services):
    email = "hash-check@example.com"
    assert app.post_json("/api/v1/users", {"email": email, "password": PASSWORD}).status_int == 201
    with services.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT password_hash FROM users WHERE email = :e"), {"e": email}).scalar()
    assert PASSWORD not in stored
    found = re.match(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$", stored)
    assert found, stored
    m, t, p = map(int, found.groups())
    assert m >= 19456 and t >= 2 and p >= 1
    # the response never carries the hash
    res = app.post_json("/api/v1/sessions", {"email": email, "password": PASSWORD})
    assert "argon2" not in res.text


@pytest.mark.parametrize("email, password, code", [
    ("weak1@example.com", "short-1A", "weak_password"),
    ("weak2@example.com", "password123", "weak_password"),
    ("weak3@example.com", "aaaaaaaaaaaaaaaa", "weak_password"),
    ("weak4@example.com", "ababababab1212", "weak_password"),
    ("someone@example.com", "Someone-2024!", "weak_password"),
    ("weak5@example.com", "Ab1!" * 70, "weak_password"),
    ("weak6@example.com", 1234567890123, "weak_password"),
    ("weak7@example.com", None, "weak_password"),
    ("not-an-email", PASSWORD, "bad_email"),
    ("a@b", PASSWORD, "bad_email"),
    ("@example.com", PASSWORD, "bad_email"),
    ("two words@example.com", PASSWORD, "bad_email"),
    ("a@@example.com", PASSWORD, "bad_email"),
    ("", PASSWORD, "bad_email"),
    (None, PASSWORD, "bad_email"),
    (["a@example.com"], PASSWORD, "bad_email"),
])
def test_weak_passwords_and_bad_emails_are_400(app, email, password, code):
    res = app.post_json("/api/v1/users", {"email": email, "password": password}, expect_errors=True)
    assert_error(res, 400, code)


def test_registration_needs_a_json_object(app):
    assert_error(app.post("/api/v1/users", "nope", content_type="application/json", expect_errors=True), 400)
    assert_error(app.post_json("/api/v1/users", ["a"], expect_errors=True), 400)


def test_duplicate_email_is_409(app):
    assert app.post_json("/api/v1/users", {"email": "dup@example.com", "password": PASSWORD}).status_int == 201
    for email in ("dup@example.com", "DUP@Example.com", " dup@example.com "):
        res = app.post_json("/api/v1/users", {"email": email, "password": "other-pass-99!"}, expect_errors=True)
        assert_error(res, 409, "email_taken")


def test_login_is_throttled_after_repeated_failures(app, make_user, services):
    email = make_user()
    limit = services.settings.login_max_failures
    for _ in range(limit):
        res = app.post_json("/api/v1/sessions", {"email": email, "password": "wrong-password-1"},
                            expect_errors=True)
        assert_error(res, 401, "invalid_credentials")
    for password in ("wrong-password-1", PASSWORD):
        res = app.post_json("/api/v1/sessions", {"email": email, "password": password}, expect_errors=True)
        assert_error(res, 429)
        assert 1 <= int(res.headers["Retry-After"]) <= services.settings.login_lockout_seconds
    # the e-mail is normalised: changing its case does not dodge the lock
    res = app.post_json("/api/v1/sessions", {"email": email.upper(), "password": PASSWORD}, expect_errors=True)
    assert_error(res, 429)
    # other accounts are not locked out
    other = make_user()
    assert app.post_json("/api/v1/sessions", {"email": other, "password": PASSWORD}).status_int == 200


def test_login_success_resets_the_failure_count(app, make_user, services):
    email = make_user()
    for _ in range(services.settings.login_max_failures - 1):
        app.post_json("/api/v1/sessions", {"email": email, "password": "wrong-password-1"}, expect_errors=True)
    assert app.post_json("/api/v1/sessions", {"email": email, "password": PASSWORD}).status_int == 200
    res = app.post_json("/api/v1/sessions", {"email": email, "password": "wrong-password-1"}, expect_errors=True)
    assert_error(res, 401)


def test_wrong_password_and_unknown_email_are_indistinguishable(app, make_user):
    email = make_user()

    def attempt(address, password):
        app.reset()
        started = time.perf_counter()
        res = app.post_json("/api/v1/sessions", {"email": address, "password": password}, expect_errors=True)
        return res, time.perf_counter() - started

    attempt("warm-up@example.com", "whatever-123")
    wrong, unknown = [], []
    for i in range(3):
        res_wrong, t_wrong = attempt(email, f"wrong-password-{i}")
        res_unknown, t_unknown = attempt(f"nobody-{i}@example.com", f"wrong-password-{i}")
        wrong.append(t_wrong)
        unknown.append(t_unknown)
        assert res_wrong.status_int == res_unknown.status_int == 401
        assert res_wrong.body == res_unknown.body
        assert "Set-Cookie" not in res_wrong.headers and "Set-Cookie" not in res_unknown.headers
    a, b = statistics.median(wrong), statistics.median(unknown)
    assert max(a, b) / min(a, b) < 3, (wrong, unknown)


# -- API keys ----------------------------------------------------------------------------------


def test_key_secret_is_strong_shown_once_and_encrypted_at_rest(account, services):
    res = account.app.post_json("/api/v1/keys", {"name": "laptop", "scopes": ["predict"]},
                                headers=account.headers)
    assert res.status_int == 201
    key_id, secret = res.json["key_id"], res.json["secret"]
    assert res.json["scopes"] == ["predict"]
    assert len(secret) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", secret)
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) >= 32
    other = account.create_key()[1]
    assert other != secret

    listed = account.app.get("/api/v1/keys")
    assert secret not in listed.text and other not in listed.text
    (doc,) = [k for k in listed.json["keys"] if k["key_id"] == key_id]
    assert doc["name"] == "laptop" and doc["scopes"] == ["predict"] and doc["revoked"] is False
    assert "secret" not in json.dumps(doc)

    with services.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT secret_encrypted FROM api_keys WHERE key_id = :k"),
                              {"k": key_id}).scalar()
        dump = json.dumps([list(map(str, row)) for row in conn.execute(sa.text("SELECT * FROM api_keys"))])
    assert secret not in stored and secret not in dump
    assert base64.urlsafe_b64encode(secret.encode()).decode()[:20] not in stored

    from cryptography.fernet import InvalidToken

    from server.services.accounts import _fernet

    assert _fernet(TEST_SECRET).decrypt(stored.encode()).decode() == secret
    with pytest.raises(InvalidToken):
        _fernet("another-secret-key-0123456789abcdef0123").decrypt(stored.encode())


def test_keys_are_rejected_under_another_secret_key(account, services):
    key = account.create_key()
    other_app, other = app_with(services, secret_key="another-secret-key-0123456789abcdef0123")
    try:
        assert_error(send_signed(other_app, key, "GET", PREDICTIONS), 401, "bad_signature")
    finally:
        other.close()


def test_list_and_revoke_keys(account, app, make_user, signed):
    first, second = account.create_key(), account.create_key()
    keys = app.get("/api/v1/keys").json["keys"]
    assert [k["key_id"] for k in keys] == [first[0], second[0]]
    assert all(k["revoked"] is False and k["last_used_at"] is None for k in keys)

    assert app.delete(f"/api/v1/keys/{first[0]}", headers=account.headers).status_int == 204
    keys = {k["key_id"]: k for k in app.get("/api/v1/keys").json["keys"]}
    assert keys[first[0]]["revoked"] is True and keys[second[0]]["revoked"] is False
    assert_error(app.delete("/api/v1/keys/dsk_nope", headers=account.headers, expect_errors=True), 404)

    # another user can neither see nor revoke them
    other_app = TestApp(app.app)
    other = login(other_app, make_user())
    assert other_app.get("/api/v1/keys").json["keys"] == []
    res = other_app.delete(f"/api/v1/keys/{second[0]}", headers=other.headers, expect_errors=True)
    assert_error(res, 404)
    assert signed(second, "GET", PREDICTIONS).status_int == 200
    assert_error(signed(first, "GET", PREDICTIONS), 401)


def test_last_used_at_is_set_by_a_signed_request_only(account, signed, services):
    key = account.create_key()

    def last_used():
        with services.engine.connect() as conn:
            return conn.execute(sa.text("SELECT last_used_at FROM api_keys WHERE key_id = :k"),
                                {"k": key[0]}).scalar()

    assert last_used() is None
    # a request with the right key id but a wrong signature is not a use of the key
    assert_error(signed((key[0], "x" * 43), "GET", PREDICTIONS), 401)
    assert last_used() is None
    assert signed(key, "GET", PREDICTIONS).status_int == 200
    used = last_used()
    assert used is not None
    assert abs((dt.datetime.utcnow() - used).total_seconds()) < 60
    login(account.app, account.email)
    (doc,) = account.app.get("/api/v1/keys").json["keys"]
    assert doc["last_used_at"] is not None


def test_key_management_needs_a_session(account, signed):
    key = account.create_key()
    body = json.dumps({"name": "from a key", "scopes": ["predict"]}).encode()
    assert_error(signed(key, "POST", "/api/v1/keys", body, "application/json"), 403, "forbidden")
    assert_error(signed(key, "GET", "/api/v1/keys"), 403)
    assert_error(signed(key, "DELETE", f"/api/v1/keys/{key[0]}"), 403)
    assert_error(signed(key, "GET", "/api/v1/sessions"), 403)
    assert_error(signed(key, "DELETE", "/api/v1/sessions"), 403)
    assert signed(key, "GET", PREDICTIONS).status_int == 200  # the key was not revoked by itself


@pytest.mark.parametrize("payload", [
    {"scopes": []}, {"scopes": ["root"]}, {"scopes": "predict"}, {"name": 5}, {"name": "x" * 101}, ["predict"],
])
def test_bad_key_requests_are_400(account, payload):
    res = account.app.post_json("/api/v1/keys", payload, headers=account.headers, expect_errors=True)
    assert_error(res, 400)


# -- authorization -----------------------------------------------------------------------------

PUBLIC = {
    ("GET", "/"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/api/openapi.json"),
    ("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
    ("POST", "/api/v1/users"), ("POST", "/api/v1/sessions"),
}


def test_every_endpoint_but_the_public_ones_needs_authentication(app, services):
    from server.web.app import create_app

    routes = create_app(services.settings, services).digitserve.router.routes
    assert {(r.method, r.name) for r in routes if r.auth is None} == PUBLIC
    checked = 0
    for route in routes:
        if (route.method, route.name) in PUBLIC:
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1) == "version" else "x" + m.group(1), route.name)
        app.reset()
        res = app.request(path, method=route.method, body=b"{}" if route.method == "POST" else b"",
                          headers={"Content-Type": "application/json"}, expect_errors=True)
        assert_error(res, 401)
        checked += 1
    assert checked >= 17
    for method, path in PUBLIC - {("POST", "/api/v1/users"), ("POST", "/api/v1/sessions"), ("GET", "/metrics")}:
        app.reset()
        assert app.request(path, method=method, expect_errors=True).status_int in (200, 503), path
    assert_error(app.get("/metrics", expect_errors=True), 404)  # its own token, or off (the default)


def test_other_users_predictions_are_invisible(app, make_user, registered_mlp, digit_pngs, run_jobs, signed):
    owner = login(app, make_user())
    pid = app.post(PREDICTIONS, upload_files=[("image", "a.png", digit_pngs[6])], headers=owner.headers).json["id"]
    run_jobs()
    assert app.get(f"{PREDICTIONS}/{pid}").json["status"] == "succeeded"

    intruder_app = TestApp(app.app)
    intruder = login(intruder_app, make_user())
    missing = intruder_app.get(f"{PREDICTIONS}/0123456789abcdef0123456789abcdef", expect_errors=True)
    res = intruder_app.get(f"{PREDICTIONS}/{pid}", expect_errors=True)
    assert_error(res, 404, "not_found")
    assert res.json["error"]["code"] == missing.json["error"]["code"]
    res = intruder_app.get(f"{PREDICTIONS}/{pid}?include=preprocessed", expect_errors=True)
    assert_error(res, 404)
    res = intruder_app.post_json(f"{PREDICTIONS}/{pid}/feedback", {"index": 0, "label": 1},
                                 headers=intruder.headers, expect_errors=True)
    assert_error(res, 404)
    assert intruder_app.get(PREDICTIONS).json["predictions"] == []
    # and through the intruder's API key
    key = intruder.create_key()
    assert_error(signed(key, "GET", f"{PREDICTIONS}/{pid}"), 404)
    assert signed(key, "GET", PREDICTIONS).json["predictions"] == []
    # the owner's feedback was not changed
    login(app, owner.email)
    assert "feedback_label" not in app.get(f"{PREDICTIONS}/{pid}").json["results"][0]


def test_scopes_are_enforced(app, make_user, services, tiny_mlp_file, registered_mlp, signed):
    services.registry.register("mlp", "mlp", tiny_mlp_file)
    activate = "/api/v1/models/mlp/versions/2/activate"
    user = login(app, make_user())
    res = app.post_json("/api/v1/keys", {"name": "x", "scopes": ["admin"]}, headers=user.headers,
                        expect_errors=True)
    assert_error(res, 403)
    res = app.post_json("/api/v1/keys", {"name": "x", "scopes": ["predict", "admin"]}, headers=user.headers,
                        expect_errors=True)
    assert_error(res, 403)
    predict_key = user.create_key(["predict"])
    assert_error(signed(predict_key, "POST", activate), 403, "forbidden")

    admin = login(app, make_user(role="admin"))
    admin_predict_key = admin.create_key(["predict"])
    admin_key = admin.create_key(["admin"])
    assert_error(signed(admin_predict_key, "POST", activate), 403)  # the key's scope, not the user's role
    assert_error(signed(admin_key, "GET", PREDICTIONS), 403)  # an admin-only key cannot predict
    res = signed(admin_key, "POST", activate)
    assert res.status_int == 200, res.text
    assert res.json["version"] == 2 and services.registry.get("mlp").version == 2

    # an admin key whose owner lost the admin role no longer works for admin calls
    with services.engine.begin() as conn:
        conn.execute(sa.text("UPDATE users SET role = 'user' WHERE email = :e"), {"e": admin.email})
    # every process caches keys and their owners: a change made outside the platform is announced
    accounts.user_changed(services, admin.user_id)
    assert_error(signed(admin_key, "POST", "/api/v1/models/mlp/versions/1/activate"), 403)


def test_bearer_keys_are_off_by_default(account, services):
    key_id, secret = account.create_key()
    bearer = {"Authorization": f"Bearer {key_id}.{secret}"}
    account.app.reset()
    assert_error(account.app.get(PREDICTIONS, headers=bearer, expect_errors=True), 401)

    on_app, on = app_with(services, allow_bearer_keys=True)
    try:
        assert on_app.get(PREDICTIONS, headers=bearer).status_int == 200
        for token in (f"{key_id}.{secret[:-1]}", f"{key_id}.", f"{key_id}", f".{secret}", "dsk_nope." + secret,
                      f"{key_id}.{secret}x"):
            res = on_app.get(PREDICTIONS, headers={"Authorization": f"Bearer {token}"}, expect_errors=True)
            assert_error(res, 401)
        # bearer keys cannot manage keys either
        res = on_app.post_json("/api/v1/keys", {"name": "x"}, headers=bearer, expect_errors=True)
        assert_error(res, 403)
        again = login(account.app, account.email)
        account.app.delete(f"/api/v1/keys/{key_id}", headers=again.headers)
        # the other process (its own key cache) hears of the revocation over Redis within milliseconds
        deadline = time.monotonic() + 2
        while on.credentials.get(key_id) is not None and time.monotonic() < deadline:
            time.sleep(0.001)
        assert_error(on_app.get(PREDICTIONS, headers=bearer, expect_errors=True), 401)
    finally:
        on.close()


# -- rate limits -------------------------------------------------------------------------------


def test_rate_limit_per_key_and_per_user(services, make_user):
    limited_app, limited = app_with(services, rate_limit_per_minute=60, rate_limit_burst=3)
    try:
        email = make_user()
        user = login(limited_app, email)  # login itself is not rate limited
        key_a, key_b = user.create_key(), user.create_key()  # 2 session requests of the user's 3
        assert [send_signed(limited_app, key_a, "GET", PREDICTIONS).status_int for _ in range(3)] == [200] * 3
        # the 4th quick request is refused (a couple more allowed for a token refilled on a slow machine)
        for _ in range(3):
            res = send_signed(limited_app, key_a, "GET", PREDICTIONS)
            if res.status_int != 200:
                break
        assert_error(res, 429, "rate_limited")
        retry_after = int(res.headers["Retry-After"])
        assert retry_after >= 1
        # per key: another key of the same user has its own bucket
        assert send_signed(limited_app, key_b, "GET", PREDICTIONS).status_int == 200
        # per user for sessions: the user's browser session has its own bucket, separate from the keys
        login(limited_app, email)
        assert limited_app.get(PREDICTIONS).status_int == 200
        answers = [limited_app.get(PREDICTIONS, expect_errors=True) for _ in range(5)]
        refused = [r for r in answers if r.status_int == 429]
        assert refused and int(refused[0].headers["Retry-After"]) >= 1
        # recovers after Retry-After
        time.sleep(retry_after + 0.1)
        assert send_signed(limited_app, key_a, "GET", PREDICTIONS).status_int == 200
    finally:
        limited.close()


def test_concurrent_password_guesses_cannot_exceed_the_limit(app, make_user, services):
    """Guesses sent in parallel must not all slip under the failure limit before any is counted."""
    import threading

    email = make_user()
    limit = services.settings.login_max_failures
    n = limit * 3
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def guess(i):
        client = TestApp(app.app)
        barrier.wait()
        res = client.post_json("/api/v1/sessions", {"email": email, "password": f"wrong-guess-{i}"},
                               expect_errors=True)
        statuses.append(res.status_int)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(set(statuses)) == [401, 429] and len(statuses) == n
    assert statuses.count(401) <= limit, statuses
    res = app.post_json("/api/v1/sessions", {"email": email, "password": PASSWORD}, expect_errors=True)
    assert_error(res, 429)


def test_a_signed_request_may_not_repeat_a_query_parameter(account, signed, registered_mlp):
    key = account.create_key()
    res = signed(key, "GET", "/api/v1/predictions", query="limit=1&limit=2")
    assert res.status_int == 401 and "repeat" in res.json["error"]["message"]


def test_a_hung_redis_fails_fast_with_503(account, services):
    """A Redis that accepts connections but never answers: 503 in seconds, not a stuck request."""
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    stop = threading.Event()

    def accept_and_stay_silent():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    key = account.create_key()
    hung_app, hung = app_with(services, redis_url=f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
    try:
        started = time.perf_counter()
        res = send_signed(hung_app, key, "GET", PREDICTIONS)
        assert_error(res, 503, "service_unavailable")
        assert time.perf_counter() - started < 15
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
        hung.close()


def test_redis_stopping_after_login_is_503_on_every_session_path(services, make_user, private_redis):
    """Sessions live in Redis: when it goes away, logged-in calls answer 503, never 500."""
    app, built = app_with(services, redis_url=private_redis.url)
    try:
        user = login(app, make_user())
        private_redis.stop()
        for res in (
            app.delete("/api/v1/sessions", headers=user.headers, expect_errors=True),
            app.post_json("/api/v1/keys", {"name": "k"}, headers=user.headers, expect_errors=True),
            app.get(PREDICTIONS, expect_errors=True),
            app.post_json("/api/v1/sessions", {"email": user.email, "password": PASSWORD}, expect_errors=True),
        ):
            assert_error(res, 503, "service_unavailable")
            assert res.headers["Retry-After"]
    finally:
        built.close()


def test_a_captured_request_cannot_be_replayed_under_another_spelling_of_the_key_id(
        account, registered_mlp, digit_pngs, app, services):
    """The database compares key ids without case; the signature and the nonce must not."""
    key_id, secret = account.create_key()
    body = json_body(digit_pngs[2])
    headers = signing.signed_headers(key_id, secret, "POST", PREDICTIONS, "", body)
    headers["Content-Type"] = "application/json"
    app.reset()
    assert app.post(PREDICTIONS, body, headers=headers).status_int == 202
    for spelling in (key_id.upper(), "DsK_" + key_id[4:], key_id[:4] + key_id[4:].upper()):
        replay = {**headers, "Authorization": headers["Authorization"].replace(key_id, spelling)}
        app.reset()
        res = app.post(PREDICTIONS, body, headers=replay, expect_errors=True)
        assert_error(res, 401)
    with services.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM predictions")).scalar() == 1


def test_an_unknown_key_costs_what_a_wrong_signature_does(account, services):
    """Paired, interleaved timings of the two failures: neither is reliably the faster one."""
    from core.errors import Unauthenticated
    from server.services.accounts import verify_signature

    known, _ = account.create_key()
    unknown = "dsk_" + "0" * 24

    def failing(key_id: str) -> float:
        headers = signing.signed_headers(key_id, "not-the-secret-" + "x" * 28, "GET", PREDICTIONS)
        started = time.perf_counter()
        with pytest.raises(Unauthenticated):
            verify_signature(services, "GET", PREDICTIONS, "", headers, b"")
        return time.perf_counter() - started

    failing(known), failing(unknown)  # warm caches and the pool
    trials = 120
    faster = sum(failing(unknown) < failing(known) for _ in range(trials))
    assert 0.2 * trials < faster < 0.8 * trials, f"the unknown key was faster in {faster} of {trials} pairs"
