"""REST API v1 handlers: parse, call a use case, serialise."""
from __future__ import annotations

from core.errors import InvalidInput, UnsupportedType
from models.registry import ModelNotFound
from server.services import accounts as auth
from server.services import feedback, predictions, training, versions
from server.services.samples import Samples
from server.services.bootstrap import Services
from server.web.http import Request, Response, Router, decode_base64_image, json_response


def _submission(req: Request, max_wait: float, max_images: int) -> predictions.Submission:
    query = req.query
    if req.content_type == "multipart/form-data":
        fields, images = req.form(max_images)
    elif req.content_type == "application/json":
        payload = req.json()
        if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
            raise InvalidInput('send JSON {"images": ["<base64>", ...]}', "no_images")
        images = [decode_base64_image(value, i) for i, value in enumerate(payload["images"])]
        fields = {k: str(payload[k]) for k in ("model", "wait") if payload.get(k) is not None}
    else:
        raise UnsupportedType("send multipart/form-data with `image` parts, or JSON with base64 `images`")
    key = req.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 128:
        raise InvalidInput("Idempotency-Key must be 1-128 characters")
    return predictions.Submission(
        images=images,
        model=fields.get("model") or query.get("model") or None,
        wait=predictions.parse_wait(fields.get("wait", query.get("wait")), max_wait),
        idempotency_key=key,
        source="browser" if req.principal is not None and req.principal.via == "session" else "api",
    )


def _session_cookie(sid: str, req: Request, max_age: int | None = None) -> str:
    cookie = f"{auth.SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax"
    if max_age is not None:
        cookie += f"; Max-Age={max_age}"
    if req.scheme == "https":
        cookie += "; Secure"
    return cookie


def register(router: Router, services: Services) -> None:
    settings = services.settings

    def create_prediction(req: Request):
        document, created = predictions.submit(services, req.principal.user_id,
                                                _submission(req, settings.max_wait, settings.max_images))
        if document["status"] in predictions.FINISHED:
            return json_response(document, 200)
        location = f"/api/v1/predictions/{document['id']}"
        return json_response(document, 202 if created else 200, {"Location": location})

    def get_prediction(req: Request, prediction_id: str):
        include = "preprocessed" in req.query.get("include", "").split(",")
        wait = predictions.parse_wait(req.query.get("wait"), settings.max_wait)
        return predictions.get(services, req.principal.user_id, prediction_id, include, wait=wait)

    def list_predictions(req: Request):
        return predictions.history(services, req.principal.user_id, req.query.get("limit"), req.query.get("cursor"))

    def post_feedback(req: Request, prediction_id: str):
        return predictions.feedback(services, req.principal.user_id, prediction_id, req.json())

    def list_models(req: Request):
        return versions.list_models(services)

    def get_model(req: Request, name: str):
        return versions.model_detail(services, name)

    def activate(req: Request, name: str, version: str):
        if not version.isdigit():
            raise ModelNotFound(f"model {name!r} has no version {version}")
        return services.registry.activate(name, int(version)).summary()

    samples = Samples(services)

    def generated_samples(req: Request, name: str, version: str):
        png = samples.grid_png(name, version, req.query.get("per_class"), req.query.get("seed"))
        # a version's file never changes, so neither does its grid for given parameters
        return Response(200, png, "image/png", {"Cache-Control": "private, max-age=86400"})

    def create_user(req: Request):
        payload = req.json()
        if not isinstance(payload, dict):
            raise InvalidInput('send JSON {"email": "...", "password": "..."}')
        return json_response(auth.create_user(services, payload.get("email"), payload.get("password")), 201)

    def login(req: Request):
        payload = req.json()
        if not isinstance(payload, dict):
            raise InvalidInput('send JSON {"email": "...", "password": "..."}')
        user = auth.authenticate_password(services, payload.get("email"), payload.get("password"))
        sid, csrf = auth.create_session(services, user, replacing=req.cookies.get(auth.SESSION_COOKIE))
        response = json_response({"user": auth.user_document(user), "csrf_token": csrf})
        response.headers["Set-Cookie"] = _session_cookie(sid, req)
        return response

    def current_session(req: Request):
        p = req.principal
        return {"user": {"id": p.user_id, "email": p.email, "role": p.role}, "csrf_token": p.csrf_token}

    def logout(req: Request):
        sid = req.cookies[auth.SESSION_COOKIE]
        scope = req.query.get("all", "")
        if scope not in ("", "0", "1"):
            raise InvalidInput("all must be 1 (every session of the account) or 0 (this one)")
        if scope == "1":
            auth.end_all_sessions(services, req.principal, sid)
        else:
            auth.destroy_session(services, sid)
        response = Response(204)
        response.headers["Set-Cookie"] = _session_cookie("", req, max_age=0)
        return response

    def change_password(req: Request):
        sid, csrf = auth.change_password(services, req.principal, req.json(), req.cookies.get(auth.SESSION_COOKIE))
        p = req.principal
        response = json_response({"user": {"id": p.user_id, "email": p.email, "role": p.role}, "csrf_token": csrf})
        response.headers["Set-Cookie"] = _session_cookie(sid, req)
        return response

    def delete_account(req: Request):
        result = auth.delete_account(services, req.principal, req.json(), req.cookies.get(auth.SESSION_COOKIE))
        response = json_response(result)
        response.headers["Set-Cookie"] = _session_cookie("", req, max_age=0)
        return response

    def list_users(req: Request):
        return auth.list_users(services)

    def update_user(req: Request, user_id: str):
        return auth.update_user(services, req.principal, user_id, req.json())

    def audit_log(req: Request):
        return auth.audit_log(services, req.query.get("limit"))

    def create_key(req: Request):
        return json_response(auth.create_key(services, req.principal, req.json()), 201)

    def list_keys(req: Request):
        return auth.list_keys(services, req.principal)

    def revoke_key(req: Request, key_id: str):
        auth.revoke_key(services, req.principal, key_id)
        return Response(204)

    def list_feedback(req: Request):
        q = req.query
        return feedback.listing(services, q.get("state"), q.get("limit"), q.get("offset"))

    def review_feedback(req: Request, prediction_id: str):
        return feedback.review(services, req.principal.user_id, prediction_id, req.json())

    def create_training_job(req: Request):
        job = training.submit(services, req.principal.user_id, req.json())
        return json_response(job, 202, {"Location": f"/api/v1/training-jobs/{job['id']}"})

    def list_training_jobs(req: Request):
        q = req.query
        return training.listing(services, q.get("status"), q.get("limit"), q.get("cursor"))

    def get_training_job(req: Request, job_id: str):
        return training.get(services, job_id)

    def cancel_training_job(req: Request, job_id: str):
        return training.cancel(services, job_id)

    router.add("POST", "/api/v1/predictions", create_prediction, auth="predict")
    router.add("GET", "/api/v1/predictions", list_predictions, auth="predict")
    router.add("GET", "/api/v1/predictions/{prediction_id}", get_prediction, auth="predict")
    router.add("POST", "/api/v1/predictions/{prediction_id}/feedback", post_feedback, auth="predict")
    router.add("GET", "/api/v1/models", list_models, auth="predict")
    router.add("GET", "/api/v1/models/{name}", get_model, auth="predict")
    router.add("POST", "/api/v1/models/{name}/versions/{version}/activate", activate, auth="admin")
    router.add("GET", "/api/v1/models/{name}/versions/{version}/samples.png", generated_samples, auth="predict")
    router.add("GET", "/api/v1/feedback", list_feedback, auth="admin")
    router.add("PATCH", "/api/v1/feedback/{prediction_id}", review_feedback, auth="admin")
    router.add("POST", "/api/v1/training-jobs", create_training_job, auth="admin")
    router.add("GET", "/api/v1/training-jobs", list_training_jobs, auth="admin")
    router.add("GET", "/api/v1/training-jobs/{job_id}", get_training_job, auth="admin")
    router.add("POST", "/api/v1/training-jobs/{job_id}/cancel", cancel_training_job, auth="admin")
    router.add("POST", "/api/v1/users", create_user)
    router.add("POST", "/api/v1/sessions", login)
    router.add("GET", "/api/v1/sessions", current_session, auth="session")
    router.add("DELETE", "/api/v1/sessions", logout, auth="session")
    router.add("PUT", "/api/v1/account/password", change_password, auth="session")
    router.add("DELETE", "/api/v1/account", delete_account, auth="session")
    router.add("GET", "/api/v1/users", list_users, auth="admin")
    router.add("PATCH", "/api/v1/users/{user_id}", update_user, auth="admin")
    router.add("GET", "/api/v1/audit", audit_log, auth="admin")
    router.add("POST", "/api/v1/keys", create_key, auth="session")
    router.add("GET", "/api/v1/keys", list_keys, auth="session")
    router.add("DELETE", "/api/v1/keys/{key_id}", revoke_key, auth="session")
