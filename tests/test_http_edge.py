"""Malformed input the app itself parses never gives a 500 (raw-socket cases: test_http_edge_server.py)."""
from __future__ import annotations

import pytest

DEEP = b"[" * 1000 + b"]" * 1000
DEEP_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000


def assert_json_error(res, status, code=None):
    assert res.status_int == status, res.text
    assert res.content_type == "application/json"
    error = res.json["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code, res.json


# -- in-process (WebTest) ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT, b'{"images": ' + DEEP + b"}"])
def test_deeply_nested_json_is_400_bad_json_everywhere(app, account, body):
    for path in ("/api/v1/users", "/api/v1/sessions"):
        res = account.app.post(path, body, content_type="application/json", expect_errors=True)
        assert_json_error(res, 400, "bad_json")
    for path in ("/api/v1/predictions", "/api/v1/predictions/0123456789abcdef0123456789abcdef/feedback"):
        res = account.app.post(path, body, content_type="application/json", headers=account.headers,
                               expect_errors=True)
        assert_json_error(res, 400, "bad_json")


def test_deeply_nested_json_to_v2_infer_is_400(account, registered_mlp):
    # the inference protocol answers in its own error shape, {"error": "..."}, with the same status
    res = account.app.post("/v2/models/mlp/infer", DEEP, content_type="application/json",
                           headers=account.headers, expect_errors=True)
    assert res.status_int == 400 and isinstance(res.json["error"], str), res.text


def test_json_nested_up_to_the_limit_is_still_parsed(app):
    from server.web.http import MAX_JSON_DEPTH

    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    res = app.post("/api/v1/users", ok, content_type="application/json", expect_errors=True)
    assert res.status_int == 400 and res.json["error"]["code"] != "bad_json"  # judged on its content
    over = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    res = app.post("/api/v1/users", over, content_type="application/json", expect_errors=True)
    assert_json_error(res, 400, "bad_json")


def test_a_cursor_with_a_lone_surrogate_is_bad_cursor(account):
    res = account.app.get("/api/v1/predictions?cursor=WyIyMDI0LTAxLTAxIiwgIlx1ZDgwMCJd", expect_errors=True)
    assert_json_error(res, 400, "bad_cursor")
