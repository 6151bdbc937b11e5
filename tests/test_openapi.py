"""The OpenAPI document describes what the server really answers: every response below is
checked against the documented status and JSON schema of its route."""
import base64

import jsonschema
import pytest

from conftest import login


@pytest.fixture
def documented(app):
    doc = app.get("/api/openapi.json").json
    router = app.app.digitserve.router
    seen = []

    def check(res):
        request = res.request
        route, _ = router.match(request.method, request.path)
        operation = doc["paths"][route.name][request.method.lower()]
        status = str(res.status_int)
        assert status in operation["responses"], f"{request.method} {route.name} answered {status}, undocumented"
        content = operation["responses"][status].get("content", {})
        if res.content_type == "application/json" and "application/json" in content:
            schema = {**content["application/json"]["schema"], "components": doc["components"]}
            jsonschema.validate(res.json, schema, cls=jsonschema.Draft202012Validator)
        seen.append((request.method, route.name, status))
        return res

    check.seen = seen
    return check


def test_responses_match_the_document(app, make_user, registered_mlp, digit_pngs, run_jobs, documented):
    check = documented
    email = "doc@example.com"
    check(app.post_json("/api/v1/users", {"email": email, "password": "digits-are-fun-42"}))
    check(app.post_json("/api/v1/users", {"email": email, "password": "digits-are-fun-42"}, expect_errors=True))
    check(app.post_json("/api/v1/users", {"email": "x", "password": "short"}, expect_errors=True))
    check(app.post_json("/api/v1/sessions", {"email": email, "password": "wrong-password-1"}, expect_errors=True))
    account = login(app, email)
    check(app.get("/api/v1/sessions"))
    key = check(app.post_json("/api/v1/keys", {"name": "k", "scopes": ["predict"]}, headers=account.headers)).json
    check(app.get("/api/v1/keys"))

    upload = [("image", "a.png", digit_pngs[5])]
    queued = check(app.post("/api/v1/predictions", upload_files=upload, headers=account.headers))
    check(app.post("/api/v1/predictions", upload_files=[("image", "t.png", b"text")], headers=account.headers,
                   expect_errors=True))
    check(app.post("/api/v1/predictions", upload_files=upload, params={"model": "nope"}, headers=account.headers,
                   expect_errors=True))
    check(app.post("/api/v1/predictions", params={"wait": "99"}, upload_files=upload, headers=account.headers,
                   expect_errors=True))
    check(app.post_json("/api/v1/predictions", {"images": [base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()]},
                        headers=account.headers, expect_errors=True))
    check(app.post("/api/v1/predictions", upload_files=upload * 17, headers=account.headers, expect_errors=True))
    run_jobs()
    pid = queued.json["id"]
    check(app.get(f"/api/v1/predictions/{pid}?include=preprocessed"))
    check(app.get("/api/v1/predictions/0123456789abcdef0123456789abcdef", expect_errors=True))
    check(app.get("/api/v1/predictions?limit=5"))
    check(app.post_json(f"/api/v1/predictions/{pid}/feedback", {"label": 5}, headers=account.headers))
    check(app.post_json(f"/api/v1/predictions/{pid}/feedback", {"label": 11}, headers=account.headers,
                        expect_errors=True))
    check(app.get("/api/v1/models"))
    check(app.get("/api/v1/models/mlp"))
    check(app.get("/api/v1/models/nope", expect_errors=True))
    check(app.post("/api/v1/models/mlp/versions/1/activate", headers=account.headers, expect_errors=True))
    check(app.delete(f"/api/v1/keys/{key['key_id']}", headers=account.headers))
    check(app.delete("/api/v1/sessions", headers=account.headers))
    check(app.get("/api/v1/models", expect_errors=True))

    admin = login(app, make_user(role="admin"))
    check(app.post("/api/v1/models/mlp/versions/1/activate", headers=admin.headers))
    v2_input = {"inputs": [{"name": "images", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}]}
    check(app.get("/v2/models/mlp"))
    check(app.get("/v2/models/mlp/versions/1/ready"))
    check(app.post_json("/v2/models/mlp/infer", v2_input, headers=admin.headers))
    check(app.post_json("/v2/models/mlp/infer", {"inputs": []}, headers=admin.headers, expect_errors=True))
    check(app.post_json("/v2/models/nope/infer", v2_input, headers=admin.headers, expect_errors=True))
    for path in ("/healthz", "/readyz", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready", "/"):
        check(app.get(path, expect_errors=True))

    statuses = {status for _, _, status in check.seen}
    assert {"200", "201", "202", "204", "400", "401", "403", "404", "409", "413", "415", "422"} <= statuses


def test_account_and_admin_responses_match_the_document(app, make_user, documented):
    from webtest import TestApp

    check = documented
    admin = login(app, make_user(role="admin"))
    other = login(TestApp(app.app), make_user())
    check(app.get("/api/v1/users"))
    check(other.app.get("/api/v1/users", expect_errors=True))
    check(app.patch_json(f"/api/v1/users/{other.user_id}", {"disabled": True}, headers=admin.headers))
    check(app.patch_json(f"/api/v1/users/{other.user_id}", {"role": "user", "disabled": False},
                         headers=admin.headers))
    other = login(other.app, other.email)   # disabling ended its session
    check(app.patch_json(f"/api/v1/users/{admin.user_id}", {"disabled": True}, headers=admin.headers,
                         expect_errors=True))
    check(app.patch_json("/api/v1/users/99999", {"disabled": True}, headers=admin.headers, expect_errors=True))
    check(app.patch_json(f"/api/v1/users/{other.user_id}", {"role": "root"}, headers=admin.headers,
                         expect_errors=True))
    check(app.get("/api/v1/audit?limit=5"))
    check(app.get("/api/v1/audit?limit=500", expect_errors=True))
    check(other.app.put_json("/api/v1/account/password", {"current_password": "wrong-password-1",
                                                          "new_password": "digits-are-fun-43"},
                             headers=other.headers, expect_errors=True))
    check(other.app.put_json("/api/v1/account/password", {"current_password": "digits-are-fun-42",
                                                          "new_password": "short"},
                             headers=other.headers, expect_errors=True))
    res = check(other.app.put_json("/api/v1/account/password", {"current_password": "digits-are-fun-42",
                                                                "new_password": "digits-are-fun-43"},
                                   headers=other.headers))
    other.csrf = res.json["csrf_token"]
    check(app.delete_json("/api/v1/account", {"password": "digits-are-fun-42"}, headers=admin.headers,
                          expect_errors=True))   # the last administrator: 409
    check(other.app.delete_json("/api/v1/account", {"password": "digits-are-fun-43"}, headers=other.headers))
    check(app.delete("/api/v1/sessions?all=2", headers=admin.headers, expect_errors=True))
    check(app.delete("/api/v1/sessions?all=1", headers=admin.headers))
    statuses = {(method, status) for method, _, status in check.seen}
    assert {("PATCH", "200"), ("PATCH", "409"), ("PATCH", "404"), ("PUT", "403"), ("PUT", "200"),
            ("DELETE", "409"), ("DELETE", "200"), ("DELETE", "204"), ("GET", "403")} <= statuses


def test_improvement_endpoints_match_the_document(app, make_user, registered_mlp, digit_pngs, documented):
    check = documented
    user = login(app, make_user())
    pid = app.post("/api/v1/predictions", upload_files=[("image", "a.png", digit_pngs[4])],
                   headers=user.headers).json["id"]
    app.post_json(f"/api/v1/predictions/{pid}/feedback", {"label": 9}, headers=user.headers)
    check(app.get("/api/v1/feedback", expect_errors=True))  # 403: not an administrator
    admin = login(app, make_user(role="admin"))
    check(app.get("/api/v1/feedback?state=pending"))
    check(app.get("/api/v1/feedback?limit=0", expect_errors=True))
    check(app.patch_json(f"/api/v1/feedback/{pid}", {"state": "accepted"}, headers=admin.headers))
    check(app.patch_json(f"/api/v1/feedback/{pid}", {"state": "accepted", "index": 3}, headers=admin.headers,
                         expect_errors=True))
    check(app.patch_json(f"/api/v1/feedback/{pid}", {"state": "yes"}, headers=admin.headers, expect_errors=True))
    queued = check(app.post_json("/api/v1/training-jobs", {"kind": "retrain", "name": "mlp", "limit": 1000},
                                 headers=admin.headers)).json
    check(app.post_json("/api/v1/training-jobs", {"kind": "tune", "family": "mlp", "population": 1},
                        headers=admin.headers, expect_errors=True))
    check(app.post_json("/api/v1/training-jobs", {"kind": "retrain", "name": "nope"}, headers=admin.headers,
                        expect_errors=True))
    check(app.get("/api/v1/training-jobs?limit=5"))
    check(app.get("/api/v1/training-jobs?status=bogus", expect_errors=True))
    check(app.get(f"/api/v1/training-jobs/{queued['id']}"))
    check(app.get("/api/v1/training-jobs/nope", expect_errors=True))
    check(app.post(f"/api/v1/training-jobs/{queued['id']}/cancel", headers=admin.headers))
    assert app.get(f"/api/v1/training-jobs/{queued['id']}").json["status"] == "cancelled"
    check(app.get("/api/v1/models/mlp"))
    # malformed input is a documented 4xx, never a 500 (a second administrator: each has a rate limit)
    admin = login(app, make_user(role="admin"))
    for body in ([], "x", {"state": "accepted", "index": 10**30}, {"state": "accepted", "index": True},
                 {"state": None}):
        check(app.patch_json(f"/api/v1/feedback/{pid}", body, headers=admin.headers, expect_errors=True))
    check(app.patch(f"/api/v1/feedback/{pid}", "{not json", headers={**admin.headers, "Content-Type": "application/json"},
                    expect_errors=True))
    check(app.patch_json("/api/v1/feedback/" + "f" * 40, {"state": "accepted"}, headers=admin.headers,
                         expect_errors=True))
    for body in ([], {"kind": "train", "family": "mlp", "limit": 2.5}, {"kind": "train", "family": "mlp", "seed": -1},
                 {"kind": "tune", "family": "mlp", "population": 4, "elitism": 4},
                 {"kind": "retrain"}, {"kind": "train", "family": "mlp", "name": "../x"},
                 {"kind": "train", "family": "mlp", "surprise": 1}, {"kind": "retrain", "name": "mlp", "tolerance": "0.1"}):
        check(app.post_json("/api/v1/training-jobs", body, headers=admin.headers, expect_errors=True))
    for query in ("limit=abc", "cursor=!!", "cursor=WzEsMl0=", "status=running&limit=101"):
        check(app.get(f"/api/v1/training-jobs?{query}", expect_errors=True))
    check(app.get("/api/v1/feedback?offset=-1", expect_errors=True))
    check(app.post("/api/v1/training-jobs/" + "a" * 64 + "/cancel", headers=admin.headers, expect_errors=True))
    statuses = {status for _, _, status in check.seen}
    assert {"200", "202", "400", "403", "404"} <= statuses
    assert not any(status.startswith("5") for _, _, status in check.seen)
