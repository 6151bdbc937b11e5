"""HTTP API v1 under WebTest: happy paths and every promised error status."""
import base64
import dataclasses
import json
import re
import time

import numpy as np
import pytest

from conftest import login, png_bytes


def submit(account, images, **fields):
    files = [("image", f"d{i}.png", data) for i, data in enumerate(images)]
    return account.app.post("/api/v1/predictions", params=fields, upload_files=files,
                            content_type="multipart/form-data", headers=account.headers, expect_errors=True)


METRICS_TOKEN = "metrics-token-0123456789"


def test_health_is_public_and_metrics_only_when_configured(app, services):
    from webtest import TestApp

    from server.web.app import create_app

    assert app.get("/healthz").json == {"status": "ok"}
    assert app.get("/metrics", expect_errors=True).status_int == 404  # METRICS=off by default
    guarded = TestApp(create_app(services.settings.replace(metrics="token", metrics_token=METRICS_TOKEN),
                                 dataclasses.replace(services, settings=services.settings.replace(
                                     metrics="token", metrics_token=METRICS_TOKEN))))
    assert guarded.get("/metrics", expect_errors=True).status_int == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong-token-000000000"},
                       expect_errors=True).status_int == 401
    res = guarded.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert res.content_type == "text/plain"
    assert "digitserve_http_requests_total" in res.text and "digitserve_queue_depth" in res.text


def test_readyz_names_what_is_missing(app, registered_mlp):
    res = app.get("/readyz", expect_errors=True)
    assert res.status_int == 503 and res.headers["Retry-After"]
    assert res.json["checks"] == {"database": "ok", "redis": "ok", "model": "ok",
                                  "worker": "error: no live worker on the queue"}


def test_api_needs_authentication(app):
    res = app.get("/api/v1/predictions", expect_errors=True)
    assert res.status_int == 401
    assert res.json["error"]["code"] == "unauthorized"


def test_multipart_submit_then_poll_until_succeeded(account, registered_mlp, digit_pngs, run_jobs):
    res = submit(account, [digit_pngs[7]])
    assert res.status_int == 202
    assert res.json["status"] == "queued"
    assert res.json["model"] == {"name": "mlp", "version": 1}
    assert res.headers["Location"] == f"/api/v1/predictions/{res.json['id']}"
    run_jobs()
    done = account.app.get(res.headers["Location"]).json
    assert done["status"] == "succeeded"
    (result,) = done["results"]
    assert result["digit"] == 7
    assert len(result["probabilities"]) == 10 and abs(sum(result["probabilities"]) - 1) < 1e-3
    assert result["confidence"] == max(result["probabilities"])
    assert done["timings"]["queue_ms"] >= 0 and done["timings"]["compute_ms"] > 0
    assert done["finished_at"] >= done["created_at"]


def test_json_base64_several_images_and_preprocessed(account, registered_mlp, digit_pngs, run_jobs):
    images = [base64.b64encode(digit_pngs[d]).decode() for d in (0, 1, 2)]
    res = account.app.post_json("/api/v1/predictions", {"images": images, "model": "mlp:1"},
                                headers=account.headers)
    assert res.status_int == 202 and res.json["n_images"] == 3
    run_jobs()
    done = account.app.get(f"/api/v1/predictions/{res.json['id']}?include=preprocessed").json
    assert [r["digit"] for r in done["results"]] == [0, 1, 2]
    from core.preprocess import from_png

    seen = from_png(base64.b64decode(done["results"][1]["preprocessed"]))
    assert seen.shape == (28, 28) and seen.max() == 255


def test_model_as_query_parameter_and_unknown_models(account, registered_mlp, digit_pngs):
    res = account.app.post("/api/v1/predictions?model=mlp:1", upload_files=[("image", "a.png", digit_pngs[3])],
                           headers=account.headers)
    assert res.json["model"]["version"] == 1
    for spec in ("nope", "mlp:9"):
        res = submit(account, [digit_pngs[3]], model=spec)
        assert res.status_int == 404 and res.json["error"]["code"] == "model_not_found"
    res = submit(account, [digit_pngs[3]], model="mlp:x")
    assert res.status_int == 400


@pytest.mark.parametrize("images, status, code", [
    ([b"just some text, not an image"], 415, "unsupported_media_type"),
    ([b"%PDF-1.4 fake"], 415, "unsupported_media_type"),
    ([b"\x89PNG\r\n\x1a\n" + b"\x00" * 40], 422, "unreadable_image"),
    ([png_bytes(np.zeros((28, 28)))], 422, "blank_image"),
    ([], 400, "no_images"),
])
def test_bad_images(account, registered_mlp, images, status, code):
    res = submit(account, images)
    assert res.status_int == status, res.text
    assert res.json["error"]["code"] == code


def test_bad_base64_and_bad_json(account, registered_mlp):
    res = account.app.post_json("/api/v1/predictions", {"images": ["***"]}, headers=account.headers,
                                expect_errors=True)
    assert res.status_int == 400 and res.json["error"]["code"] == "bad_base64"
    res = account.app.post("/api/v1/predictions", "{not json", content_type="application/json",
                           headers=account.headers, expect_errors=True)
    assert res.status_int == 400 and res.json["error"]["code"] == "bad_json"
    res = account.app.post("/api/v1/predictions", "x", content_type="text/plain",
                           headers=account.headers, expect_errors=True)
    assert res.status_int == 415


def test_too_many_images(account, registered_mlp, digit_pngs, services):
    res = submit(account, [digit_pngs[1]] * (services.settings.max_images + 1))
    assert res.status_int == 413 and res.json["error"]["code"] == "too_many_images"


@pytest.mark.parametrize("wait", ["-1", "31", "soon"])
def test_wait_out_of_range(account, registered_mlp, digit_pngs, wait):
    res = submit(account, [digit_pngs[1]], wait=wait)
    assert res.status_int == 400 and "wait" in res.json["error"]["message"]


def test_no_active_model_is_503(account, services, digit_pngs, tiny_mlp_file):
    res = submit(account, [digit_pngs[1]])
    assert res.status_int == 503 and res.headers["Retry-After"]


def test_full_queue_is_503_with_retry_after(make_user, registered_mlp, digit_pngs, services):
    from webtest import TestApp

    from server.web.app import create_app
    from server.services.bootstrap import build

    small = build(services.settings.replace(queue_max_length=2))
    account = login(TestApp(create_app(small.settings, small)), make_user())
    assert [submit(account, [digit_pngs[1]]).status_int for _ in range(2)] == [202, 202]
    res = submit(account, [digit_pngs[1]])
    assert res.status_int == 503 and res.headers["Retry-After"] == "5"
    assert "queue is full" in res.json["error"]["message"]
    small.close()


def test_unknown_prediction_is_404(account):
    res = account.app.get("/api/v1/predictions/0123456789abcdef0123456789abcdef", expect_errors=True)
    assert res.status_int == 404 and res.json["error"]["code"] == "not_found"


def test_history_newest_first_with_cursor(account, registered_mlp, digit_pngs):
    ids = [submit(account, [digit_pngs[d]]).json["id"] for d in range(5)]
    page = account.app.get("/api/v1/predictions?limit=2").json
    assert [p["id"] for p in page["predictions"]] == ids[::-1][:2]
    rest = account.app.get(f"/api/v1/predictions?limit=10&cursor={page['next_cursor']}").json
    assert [p["id"] for p in rest["predictions"]] == ids[::-1][2:]
    assert rest["next_cursor"] is None
    assert account.app.get("/api/v1/predictions?limit=0", expect_errors=True).status_int == 400
    assert account.app.get("/api/v1/predictions?cursor=zzz", expect_errors=True).status_int == 400


def test_feedback(account, registered_mlp, digit_pngs, run_jobs):
    pid = submit(account, [digit_pngs[4], digit_pngs[5]]).json["id"]
    run_jobs()
    res = account.app.post_json(f"/api/v1/predictions/{pid}/feedback", {"index": 1, "label": 5},
                                headers=account.headers)
    assert res.json["results"][1]["feedback_label"] == 5
    for body in ({"index": 0, "label": 10}, {"index": 2, "label": 3}, {"label": "7"}):
        bad = account.app.post_json(f"/api/v1/predictions/{pid}/feedback", body, headers=account.headers,
                                    expect_errors=True)
        assert bad.status_int == 400


def test_idempotency_key_returns_the_same_prediction(account, registered_mlp, digit_pngs):
    headers = {**account.headers, "Idempotency-Key": "abc-123"}
    files = [("image", "a.png", digit_pngs[2])]
    first = account.app.post("/api/v1/predictions", upload_files=files, headers=headers)
    again = account.app.post("/api/v1/predictions", upload_files=files, headers=headers)
    assert first.status_int == 202 and again.status_int == 200
    assert again.json["id"] == first.json["id"]
    other = account.app.post("/api/v1/predictions", upload_files=[("image", "b.png", digit_pngs[3])],
                             headers=headers, expect_errors=True)
    assert other.status_int == 409


def test_idempotent_retry_after_an_activation_returns_the_original(account, registered_mlp, services, tiny_mlp_file,
                                                                   digit_pngs):
    """A client retrying with the same Idempotency-Key after an admin activated a new version."""
    headers = {**account.headers, "Idempotency-Key": "retry-after-activation"}
    files = [("image", "a.png", digit_pngs[4])]
    first = account.app.post("/api/v1/predictions", upload_files=files, headers=headers)
    services.registry.register("mlp", "mlp", tiny_mlp_file, activate=True)
    again = account.app.post("/api/v1/predictions", upload_files=files, headers=headers)
    assert again.status_int == 200, again.text
    assert again.json["id"] == first.json["id"]
    assert again.json["model"] == {"name": "mlp", "version": 1}
    # the model spec as the client sent it is part of the request
    pinned = account.app.post("/api/v1/predictions?model=mlp:1", upload_files=files, headers=headers,
                              expect_errors=True)
    assert pinned.status_int == 409


def test_an_enqueue_failure_leaves_the_prediction_queued_for_the_sweeper(account, registered_mlp, services,
                                                                         digit_pngs, run_jobs, monkeypatch):
    import redis

    from server.services import predictions

    def refuse(job_id, prediction_ids):
        raise redis.ConnectionError("Redis went away after the queue depth was read")

    monkeypatch.setattr(services.queue, "enqueue", refuse)
    res = account.app.post("/api/v1/predictions", upload_files=[("image", "a.png", digit_pngs[8])],
                           headers=account.headers)
    assert res.status_int == 202 and res.json["status"] == "queued"
    monkeypatch.undo()
    time.sleep(1.1)
    impatient = dataclasses.replace(services, settings=services.settings.replace(job_stale_after=1))
    assert predictions.sweep(impatient)["requeued"] == 1
    run_jobs()
    done = account.app.get(f"/api/v1/predictions/{res.json['id']}").json
    assert done["status"] == "succeeded" and done["results"][0]["digit"] == 8


def test_models_list_and_detail(account, registered_mlp):
    models = account.app.get("/api/v1/models").json["models"]
    assert models[0]["name"] == "mlp" and models[0]["active_version"] == 1
    detail = account.app.get("/api/v1/models/mlp").json
    assert detail["active"]["version"] == 1 and detail["versions"][0]["hyperparameters"] == {"tiny": True}
    assert account.app.get("/api/v1/models/nope", expect_errors=True).status_int == 404


def test_activation_needs_admin(app, make_user, services, tiny_mlp_file, registered_mlp):
    services.registry.register("mlp", "mlp", tiny_mlp_file)
    user = login(app, make_user())
    res = app.post("/api/v1/models/mlp/versions/2/activate", headers=user.headers, expect_errors=True)
    assert res.status_int == 403
    app.reset()
    admin = login(app, make_user(role="admin"))
    res = app.post("/api/v1/models/mlp/versions/2/activate", headers=admin.headers)
    assert res.json["version"] == 2 and res.json["active"] is True
    assert services.registry.get("mlp").version == 2
    assert app.post("/api/v1/models/mlp/versions/7/activate", headers=admin.headers,
                    expect_errors=True).status_int == 404


def test_unknown_route_and_wrong_method_are_json(app):
    res = app.get("/api/v1/nothing", expect_errors=True)
    assert res.status_int == 404 and res.json["error"]["code"] == "not_found"
    res = app.put("/api/v1/predictions", expect_errors=True)
    assert res.status_int == 405 and "POST" in res.headers["Allow"]


def test_oversized_body_is_413_before_reading(account, services):
    big = b"x" * (services.settings.max_body_bytes + 1)
    res = account.app.post("/api/v1/predictions", big, content_type="application/json",
                           headers=account.headers, expect_errors=True)
    assert res.status_int == 413 and res.json["error"]["code"] == "payload_too_large"


def test_openapi_lists_every_route(app):
    doc = app.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    for path in ("/api/v1/predictions", "/api/v1/predictions/{prediction_id}", "/v2/models/{name}/infer",
                 "/api/v1/keys/{key_id}", "/healthz", "/readyz", "/metrics"):
        assert path in doc["paths"]
    post = doc["paths"]["/api/v1/predictions"]["post"]
    assert {"202", "400", "413", "415", "422", "503"} <= set(post["responses"])
    json.dumps(doc)


def test_page_is_served_with_a_content_security_policy(app):
    res = app.get("/")
    assert res.content_type == "text/html"
    assert "script-src 'self'" in res.headers["Content-Security-Policy"]
    assert app.get("/static/app.js").status_int == 200


def test_retention_deletes_old_finished_predictions_but_keeps_corrections(account, registered_mlp, services,
                                                                        digit_pngs, run_jobs):
    import datetime as dt

    import sqlalchemy as sa

    from core.db import Prediction, PredictionImage, unit_of_work
    from server.services import predictions

    ids = [account.app.post("/api/v1/predictions", upload_files=[("image", "a.png", digit_pngs[d])],
                            headers=account.headers).json["id"] for d in (1, 2, 3)]
    run_jobs()
    old, corrected, recent = ids
    account.app.post_json(f"/api/v1/predictions/{corrected}/feedback", {"label": 7}, headers=account.headers)
    with unit_of_work(services.sessions) as session:
        for pid in (old, corrected):
            session.get(Prediction, pid).created_at -= dt.timedelta(days=40)
    assert predictions.purge_old(services, 0) == 0  # 0 keeps everything
    assert predictions.purge_old(services, 30) == 1
    with unit_of_work(services.sessions) as session:
        assert session.get(Prediction, old) is None
        assert session.scalar(sa.select(sa.func.count()).where(PredictionImage.prediction_id == old)) == 0
        assert session.get(Prediction, corrected) is not None and session.get(Prediction, recent) is not None
    assert account.app.get(f"/api/v1/predictions/{old}", expect_errors=True).status_int == 404


def test_concurrent_v2_requests_share_one_network_call(services, registered_mlp, make_user, digit_pngs, mnist):
    """Each caller gets its own rows back from a batched call."""
    import threading

    from webtest import TestApp

    from server.web.app import create_app

    settings = services.settings.replace(batch_max_wait_ms=300, allow_bearer_keys=True, metrics="open")
    app = TestApp(create_app(settings, dataclasses.replace(services, settings=settings)))
    key_id, secret = login(app, make_user()).create_key()
    auth = {"Authorization": f"Bearer {key_id}.{secret}"}
    images = {int(label): image for image, label in zip(mnist.x_test[:200], mnist.y_test[:200])}
    def body(digit):
        return {"inputs": [{"name": "images", "shape": [2, 28, 28], "datatype": "UINT8",
                            "data": np.stack([images[digit]] * 2).reshape(-1).tolist()}]}

    def calls():
        text = app.get("/metrics").text
        return float(re.search(r"^digitserve_v2_batch_size_count (\S+)$", text, re.M).group(1))

    alone = {d: np.array(app.post_json("/v2/models/mlp/infer", body(d), headers=auth).json["outputs"][0]["data"])
             for d in range(6)}  # one by one: the reference answers
    before = calls()
    answers, barrier = {}, threading.Barrier(6)

    def ask(digit):
        caller = TestApp(app.app)
        barrier.wait()
        answers[digit] = caller.post_json("/v2/models/mlp/infer", body(digit), headers=auth).json

    threads = [threading.Thread(target=ask, args=(d,)) for d in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 6
    for digit, answer in answers.items():  # each caller got its own two rows back
        assert answer["outputs"][0]["shape"] == [2, 10]
        np.testing.assert_allclose(np.array(answer["outputs"][0]["data"]), alone[digit], atol=1e-5)
    assert calls() - before < 6  # fewer network calls than requests


def test_every_answer_carries_a_request_id(app):
    assert app.get("/healthz", headers={"X-Request-ID": "trace-123"}).headers["X-Request-ID"] == "trace-123"
    made_up = app.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["X-Request-ID"]
    assert made_up != "bad id with spaces" and len(made_up) == 16
    assert app.get("/nope", expect_errors=True).headers["X-Request-ID"]


def test_the_preprocessing_quality_is_reported_next_to_the_answer(account, registered_mlp, digit_pngs, run_jobs):
    """A clean upload separates perfectly; a grey photo-like one less so, and the API says how much."""
    import io

    from PIL import Image

    clean = account.app.post("/api/v1/predictions", upload_files=[("image", "a.png", digit_pngs[7])],
                             headers=account.headers).json["id"]
    rng = np.random.default_rng(3)
    digit = np.array(Image.open(io.BytesIO(digit_pngs[7])).convert("L"), np.float64)
    page = np.clip(200 - digit * 0.25 + np.linspace(0, 40, digit.shape[1]) + rng.normal(0, 12, digit.shape), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(page.astype(np.uint8)).save(buffer, format="JPEG", quality=50)
    murky = account.app.post("/api/v1/predictions", upload_files=[("image", "b.jpg", buffer.getvalue())],
                             headers=account.headers).json["id"]
    run_jobs()
    clean_q = account.app.get(f"/api/v1/predictions/{clean}").json["results"][0]["image_quality"]
    murky_q = account.app.get(f"/api/v1/predictions/{murky}").json["results"][0]["image_quality"]
    assert clean_q == 1.0 and 0 <= murky_q < clean_q


def test_models_report_accuracy_on_users_labels(account, registered_mlp, digit_pngs, run_jobs):
    app = account.app
    before = app.get("/api/v1/models").json["models"][0]["versions"][0]
    assert before["feedback"] == {"labelled": 0, "agreed": 0, "accuracy": None}
    ids = [app.post("/api/v1/predictions", upload_files=[("image", "d.png", digit_pngs[d])],
                    headers=account.headers).json["id"] for d in (0, 1, 2)]
    run_jobs()
    digits = [app.get(f"/api/v1/predictions/{pid}").json["results"][0]["digit"] for pid in ids]
    # two confirmations of the answer and one correction to another digit
    labels = [digits[0], digits[1], (digits[2] + 1) % 10]
    for pid, label in zip(ids, labels):
        app.post_json(f"/api/v1/predictions/{pid}/feedback", {"label": label}, headers=account.headers)
    expected = {"labelled": 3, "agreed": 2, "accuracy": round(2 / 3, 6)}
    listed = app.get("/api/v1/models").json["models"][0]["versions"][0]
    assert listed["feedback"] == expected
    detail = app.get("/api/v1/models/mlp").json
    assert detail["active"]["feedback"] == expected and detail["versions"][0]["feedback"] == expected
