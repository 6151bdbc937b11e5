"""OpenAPI 3.1 document, built from the router so it lists exactly what the server serves."""
from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _errors(*statuses: int) -> dict:
    return {str(s): {"description": DESCRIPTIONS[s], "content": _json(ERROR)} for s in statuses}


DESCRIPTIONS = {
    400: "bad input", 401: "unauthenticated (bad, expired or replayed signature; no session)",
    403: "forbidden (scope, role, CSRF)", 404: "not found", 405: "method not allowed",
    409: "conflict", 413: "too large", 415: "unsupported image type",
    422: "unreadable or blank image; a model of the wrong kind (a generator asked to classify, or the reverse)",
    429: "rate limited (Retry-After)",
    503: "a dependency is down or the queue is full (Retry-After)",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}}}},
    },
    "Result": {
        "type": "object",
        "properties": {
            "index": {"type": "integer"},
            "digit": {"type": "integer", "minimum": 0, "maximum": 9},
            "confidence": {"type": "number"},
            "image_quality": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                              "description": "how cleanly the digit's ink separated from the paper (1: a clean "
                                             "scan or drawing; low: try a closer, evenly lit photo)"},
            "probabilities": {"type": "array", "items": {"type": "number"}, "minItems": 10, "maxItems": 10},
            "feedback_label": {"type": "integer"},
            "preprocessed": {"type": "string", "contentEncoding": "base64", "description": "28x28 PNG"},
        },
    },
    "Prediction": {
        "type": "object", "required": ["id", "status", "model", "results"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["queued", "running", "succeeded", "failed"]},
            "model": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "integer"}}},
            "n_images": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "timings": {"type": "object", "properties": {
                "queue_ms": {"type": ["number", "null"]}, "compute_ms": {"type": ["number", "null"]},
                "total_ms": {"type": ["number", "null"]}}},
            "attempts": {"type": "integer"},
            "error": {"type": ["string", "null"]},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
        },
    },
    "ModelVersion": {
        "type": "object",
        "properties": {**{k: {"type": t} for k, t in [
            ("name", "string"), ("version", "integer"), ("family", "string"), ("kind", "string"),
            ("active", "boolean"),
            ("status", "string"), ("test_accuracy", ["number", "null"]), ("train_seconds", ["number", "null"]),
            ("created_at", "string"), ("sha256", "string"), ("hyperparameters", "object"),
            ("architecture", ["string", "null"]),
            ("metrics", "object"), ("confusion_matrix", "array"), ("curves", "object")]},
            "feedback": {"$ref": "#/components/schemas/Feedback"},
            "gate": {"type": ["object", "null"], "description": "a gated retrain: the decision and both versions' figures",
                     "properties": {
                         "activated": {"type": "boolean"}, "reason": {"type": "string"}, "rule": {"type": "string"},
                         "tolerance": {"type": "number"}, "mnist_not_worse": {"type": "boolean"},
                         "feedback_better": {"type": "boolean"}, "mnist_test_size": {"type": "integer"},
                         "candidate": {"$ref": "#/components/schemas/GateFigures"},
                         "active": {"$ref": "#/components/schemas/GateFigures"},
                         "feedback": {"type": "object", "properties": {
                             "accepted": {"type": "integer"}, "trained_on": {"type": "integer"},
                             "held_out": {"type": "integer"}, "holdout_share": {"type": "number"},
                             "seed": {"type": "integer"}, "held_out_refs": {"type": "array", "items": {"type": "string"}}}}}},
            "search": {"type": ["object", "null"], "description": "a genetic search: fitness per generation",
                       "properties": {
                           "family": {"type": "string"}, "population": {"type": "integer"},
                           "generations": {"type": "integer"}, "seed": {"type": "integer"},
                           "evaluations": {"type": "integer"}, "best": {"type": "object"},
                           "best_fitness": {"type": "number"}, "fitness": {"type": "string"},
                           "space": {"type": "array"},
                           "history": {"type": "array", "items": {"$ref": "#/components/schemas/Generation"}}}},
        },
    },
    "Feedback": {
        "type": "object", "required": ["labelled", "agreed", "accuracy"],
        "description": "how the version fared on the digits users labelled (a correction or a confirmation)",
        "properties": {"labelled": {"type": "integer", "minimum": 0},
                       "agreed": {"type": "integer", "minimum": 0, "description": "answers equal to the label"},
                       "accuracy": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                                    "description": "agreed / labelled; null before any label"}},
    },
    "GateFigures": {"type": "object", "properties": {
        "name": {"type": "string"}, "version": {"type": "integer"}, "mnist_accuracy": {"type": "number"},
        "feedback_accuracy": {"type": ["number", "null"]}}},
    "Generation": {"type": "object", "required": ["generation", "best", "mean", "individuals"], "properties": {
        "generation": {"type": "integer"}, "best": {"type": "number"}, "mean": {"type": "number"},
        "individuals": {"type": "array", "items": {"type": "object", "properties": {
            "hyperparameters": {"type": "object"}, "fitness": {"type": "number"}}}}}},
    "FeedbackSample": {"type": "object", "required": ["prediction_id", "index", "label", "state"], "properties": {
        "prediction_id": {"type": "string"}, "index": {"type": "integer"},
        "label": {"type": "integer", "minimum": 0, "maximum": 9},
        "predicted": {"type": ["integer", "null"]}, "confidence": {"type": ["number", "null"]},
        "state": {"enum": ["pending", "accepted", "excluded"]}, "user_id": {"type": ["integer", "null"]},
        "model": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "integer"}}},
        "feedback_at": {"type": ["string", "null"]}, "reviewed_by": {"type": ["integer", "null"]},
        "reviewed_at": {"type": ["string", "null"]},
        "image": {"type": "string", "contentEncoding": "base64", "description": "the 28x28 PNG the network saw"}}},
    "TrainingJob": {"type": "object", "required": ["id", "kind", "status"], "properties": {
        "id": {"type": "string"}, "kind": {"enum": ["train", "retrain", "tune"]}, "spec": {"type": "object"},
        "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
        "progress": {"type": "array", "description": "one entry per epoch (type epoch: epoch, epochs, loss, accuracy, "
                                                     "val_loss, val_accuracy) and per generation of a search "
                                                     "(type generation: generation, best, mean, individuals)",
                     "items": {"type": "object", "properties": {"type": {"enum": ["epoch", "generation"]}}}},
        "epochs_done": {"type": "integer"},
        "result": {"type": ["object", "null"], "properties": {
            "model": {"type": "object"}, "test_accuracy": {"type": ["number", "null"]},
            "gate": {"type": ["object", "null"]}, "search": {"type": ["object", "null"]}}},
        "error": {"type": ["string", "null"]}, "cancel_requested": {"type": "boolean"},
        "created_by": {"type": ["integer", "null"]}, "worker": {"type": ["string", "null"]},
        "created_at": {"type": "string"}, "started_at": {"type": ["string", "null"]},
        "finished_at": {"type": ["string", "null"]}}},
    "Credentials": {"type": "object", "required": ["email", "password"], "properties": {
        "email": {"type": "string", "format": "email"}, "password": {"type": "string", "minLength": 10}}},
    "User": {"type": "object", "properties": {
        "id": {"type": "integer"}, "email": {"type": "string"}, "role": {"enum": ["user", "admin"]}}},
    "AdminUser": {"type": "object", "required": ["id", "email", "role", "disabled"], "properties": {
        "id": {"type": "integer"}, "email": {"type": "string"}, "role": {"enum": ["user", "admin"]},
        "disabled": {"type": "boolean"}, "created_at": {"type": "string"},
        "disabled_at": {"type": ["string", "null"]}, "predictions": {"type": "integer"}}},
    "AuditEntry": {"type": "object", "required": ["id", "created_at", "action", "actor", "target"], "properties": {
        "id": {"type": "integer"}, "created_at": {"type": "string"},
        "action": {"enum": ["disable", "enable", "grant_admin", "revoke_admin", "delete_account"]},
        "actor": {"type": "object", "properties": {"id": {"type": ["integer", "null"]}, "email": {"type": "string"}}},
        "target": {"type": "object", "properties": {"id": {"type": ["integer", "null"]}, "email": {"type": "string"}}}}},
    "Session": {"type": "object", "properties": {
        "user": {"$ref": "#/components/schemas/User"}, "csrf_token": {"type": "string"}}},
    "Key": {"type": "object", "properties": {
        "key_id": {"type": "string"}, "name": {"type": "string"}, "secret": {"type": "string"},
        "scopes": {"type": "array", "items": {"enum": ["predict", "admin"]}},
        "created_at": {"type": "string"}, "last_used_at": {"type": ["string", "null"]}, "revoked": {"type": "boolean"}}},
    "V2Tensor": {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
        "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"enum": ["FP32", "UINT8"]}, "data": {"type": "array"}}},
    "V2Error": {"type": "object", "properties": {"error": {"type": "string"}}},
}

PREDICTION = {"$ref": "#/components/schemas/Prediction"}
UPLOAD = {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "model": {"type": "string", "examples": ["cnn", "cnn:3"]},
        "wait": {"type": "number", "minimum": 0, "maximum": 30}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "contentEncoding": "base64"}},
        "model": {"type": "string"}, "wait": {"type": "number", "minimum": 0, "maximum": 30}}}},
}
V2_INFER = {
    "requestBody": {"required": True, "content": _json({"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"},
                                             "minItems": 1, "maxItems": 1}}})},
    "responses": {
        "200": {"description": "probabilities, FP32 [N,10]", "content": _json({"type": "object", "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}}}})},
        "400": {"description": "bad tensor", "content": _json({"$ref": "#/components/schemas/V2Error"})},
        "404": {"description": "unknown model or version", "content": _json({"$ref": "#/components/schemas/V2Error"})},
        "422": {"description": "the model is a generator (family cgan), not a classifier",
                "content": _json({"$ref": "#/components/schemas/V2Error"})},
    },
}

OPERATIONS: dict[tuple[str, str], dict] = {
    ("POST", "/api/v1/predictions"): {
        "summary": "Submit one or more digit images",
        "parameters": [
            {"name": "model", "in": "query", "schema": {"type": "string"}},
            {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 30}},
            {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 128}}],
        "requestBody": {"required": True, "content": UPLOAD},
        "responses": {"200": {"description": "finished within `wait`", "content": _json(PREDICTION)},
                      "202": {"description": "queued; poll the Location", "content": _json(PREDICTION)},
                      **_errors(400, 401, 403, 404, 409, 413, 415, 422, 429, 503)},
    },
    ("GET", "/api/v1/predictions"): {
        "summary": "The caller's predictions, newest first",
        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                       {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": {"description": "a page", "content": _json({"type": "object", "properties": {
            "predictions": {"type": "array", "items": PREDICTION}, "next_cursor": {"type": ["string", "null"]}}})},
            **_errors(400, 401)},
    },
    ("GET", "/api/v1/predictions/{prediction_id}"): {
        "summary": "One prediction (owner only); with `wait`, held until it finishes (a long poll)",
        "parameters": [{"name": "include", "in": "query", "schema": {"enum": ["preprocessed"]}},
                       {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 30}}],
        "responses": {"200": {"description": "the prediction", "content": _json(PREDICTION)}, **_errors(401, 404)},
    },
    ("POST", "/api/v1/predictions/{prediction_id}/feedback"): {
        "summary": "Correct the label of one image",
        "requestBody": {"required": True, "content": _json({"type": "object", "required": ["label"], "properties": {
            "index": {"type": "integer", "default": 0}, "label": {"type": "integer", "minimum": 0, "maximum": 9}}})},
        "responses": {"200": {"description": "the prediction", "content": _json(PREDICTION)}, **_errors(400, 401, 404)},
    },
    ("GET", "/api/v1/models"): {
        "summary": "Models, their versions and the active one",
        "responses": {"200": {"description": "models", "content": _json({"type": "object", "properties": {
            "models": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "active_version": {"type": ["integer", "null"]},
                "versions": {"type": "array", "items": {"$ref": "#/components/schemas/ModelVersion"}}}}}}})},
            **_errors(401)},
    },
    ("GET", "/api/v1/models/{name}"): {
        "summary": "One model: every version with hyper-parameters, metrics (per-class precision and recall), "
                   "confusion matrix, training curves, accuracy on users' labels, a retrain's gate, a search's generations",
        "responses": {"200": {"description": "the model", "content": _json({
            "type": "object", "required": ["name", "active_version", "versions"], "properties": {
                "name": {"type": "string"}, "active_version": {"type": ["integer", "null"]},
                "active": {"oneOf": [{"$ref": "#/components/schemas/ModelVersion"}, {"type": "null"}]},
                "versions": {"type": "array", "items": {"$ref": "#/components/schemas/ModelVersion"}}}})},
            **_errors(401, 404)},
    },
    ("POST", "/api/v1/models/{name}/versions/{version}/activate"): {
        "summary": "Promote or roll back (admin)",
        "responses": {"200": {"description": "now active", "content": _json({"$ref": "#/components/schemas/ModelVersion"})},
                      **_errors(401, 403, 404)},
    },
    ("GET", "/api/v1/models/{name}/versions/{version}/samples.png"): {
        "summary": "Digits drawn by a conditional-GAN version (family cgan): one row per digit 0-9; "
                   "`version` is a number or `active`",
        "parameters": [{"name": "per_class", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 16,
                                                                       "default": 8}},
                       {"name": "seed", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}],
        "responses": {"200": {"description": "a grayscale PNG, white digits on black",
                              "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
                      **_errors(400, 401, 404, 422)},
    },
    ("GET", "/api/v1/feedback"): {
        "summary": "Users' corrections as labelled samples, oldest first, with counts per review state (admin)",
        "parameters": [{"name": "state", "in": "query", "schema": {"enum": ["pending", "accepted", "excluded"]}},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                       {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
        "responses": {"200": {"description": "a page", "content": _json({"type": "object", "properties": {
            "samples": {"type": "array", "items": {"$ref": "#/components/schemas/FeedbackSample"}},
            "counts": {"type": "object", "properties": {s: {"type": "integer"} for s in ("pending", "accepted", "excluded")}},
            "next_offset": {"type": ["integer", "null"]}}})}, **_errors(400, 401, 403, 429)},
    },
    ("PATCH", "/api/v1/feedback/{prediction_id}"): {
        "summary": "Review one correction: accept it for training, exclude it, or set it back to pending (admin)",
        "requestBody": {"required": True, "content": _json({"type": "object", "required": ["state"], "properties": {
            "state": {"enum": ["pending", "accepted", "excluded"]}, "index": {"type": "integer", "default": 0}}})},
        "responses": {"200": {"description": "the reviewed sample",
                              "content": _json({"$ref": "#/components/schemas/FeedbackSample"})},
                      **_errors(400, 401, 403, 404, 429)},
    },
    ("POST", "/api/v1/training-jobs"): {
        "summary": "Queue a training job on the training queue (admin)",
        "requestBody": {"required": True, "content": _json({"type": "object", "required": ["kind"], "properties": {
            "kind": {"enum": ["train", "retrain", "tune"]}, "family": {"type": "string"}, "name": {"type": "string"},
            "epochs": {"type": "integer"}, "batch_size": {"type": "integer"}, "limit": {"type": "integer"},
            "seed": {"type": "integer"}, "activate": {"type": "boolean"}, "with_feedback": {"type": "boolean"},
            "tolerance": {"type": "number"}, "holdout_share": {"type": "number"}, "population": {"type": "integer"},
            "generations": {"type": "integer"}, "elitism": {"type": "integer"}}})},
        "responses": {"202": {"description": "queued; follow the Location",
                              "content": _json({"$ref": "#/components/schemas/TrainingJob"})},
                      **_errors(400, 401, 403, 404, 429, 503)},
    },
    ("GET", "/api/v1/training-jobs"): {
        "summary": "Training jobs, newest first, without their progress (admin)",
        "parameters": [{"name": "status", "in": "query",
                        "schema": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]}},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                       {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": {"description": "a page", "content": _json({"type": "object", "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/TrainingJob"}},
            "next_cursor": {"type": ["string", "null"]}}})}, **_errors(400, 401, 403, 429)},
    },
    ("GET", "/api/v1/training-jobs/{job_id}"): {
        "summary": "One training job with its progress per epoch (and per generation) and its result (admin)",
        "responses": {"200": {"description": "the job", "content": _json({"$ref": "#/components/schemas/TrainingJob"})},
                      **_errors(401, 403, 404, 429)},
    },
    ("POST", "/api/v1/training-jobs/{job_id}/cancel"): {
        "summary": "Cancel a job: a queued one never starts, a running one stops after its current epoch (admin)",
        "responses": {"200": {"description": "the job", "content": _json({"$ref": "#/components/schemas/TrainingJob"})},
                      **_errors(401, 403, 404, 429)},
    },
    ("POST", "/api/v1/users"): {
        "summary": "Register", "security": [],
        "requestBody": {"required": True, "content": _json({"$ref": "#/components/schemas/Credentials"})},
        "responses": {"201": {"description": "created", "content": _json({"$ref": "#/components/schemas/User"})},
                      **_errors(400, 409)},
    },
    ("POST", "/api/v1/sessions"): {
        "summary": "Log in: session cookie + CSRF token", "security": [],
        "requestBody": {"required": True, "content": _json({"$ref": "#/components/schemas/Credentials"})},
        "responses": {"200": {"description": "logged in", "content": _json({"$ref": "#/components/schemas/Session"})},
                      **_errors(400, 401, 429)},
    },
    ("GET", "/api/v1/sessions"): {
        "summary": "The current session", "security": [{"session": []}],
        "responses": {"200": {"description": "logged in", "content": _json({"$ref": "#/components/schemas/Session"})},
                      **_errors(401)},
    },
    ("DELETE", "/api/v1/sessions"): {
        "summary": "Log out; with all=1, end every session of the account (sign out everywhere)",
        "security": [{"session": []}],
        "parameters": [{"name": "all", "in": "query", "schema": {"enum": ["0", "1"]}}],
        "responses": {"204": {"description": "logged out"}, **_errors(400, 401, 403)},
    },
    ("PUT", "/api/v1/account/password"): {
        "summary": "Change the password (the current one required); every other session ends and this browser "
                   "gets a new session", "security": [{"session": []}],
        "requestBody": {"required": True, "content": _json({
            "type": "object", "required": ["current_password", "new_password"], "properties": {
                "current_password": {"type": "string"}, "new_password": {"type": "string", "minLength": 10}}})},
        "responses": {"200": {"description": "changed", "content": _json({"$ref": "#/components/schemas/Session"})},
                      **_errors(400, 401, 403, 429)},
    },
    ("DELETE", "/api/v1/account"): {
        "summary": "Delete the account with its API keys, predictions and images (the password confirms)",
        "security": [{"session": []}],
        "requestBody": {"required": True, "content": _json({"type": "object", "required": ["password"],
                                                            "properties": {"password": {"type": "string"}}})},
        "responses": {"200": {"description": "deleted", "content": _json({"type": "object", "properties": {
            "deleted_predictions": {"type": "integer"}}})},
            **_errors(400, 401, 403, 409, 429)},
    },
    ("GET", "/api/v1/users"): {
        "summary": "Every account (admin)",
        "responses": {"200": {"description": "users", "content": _json({"type": "object", "properties": {
            "users": {"type": "array", "items": {"$ref": "#/components/schemas/AdminUser"}}}})},
            **_errors(401, 403)},
    },
    ("PATCH", "/api/v1/users/{user_id}"): {
        "summary": "Disable or re-enable an account, grant or revoke admin (admin; audited). "
                   "Administrators cannot disable themselves or drop their own role (409).",
        "requestBody": {"required": True, "content": _json({"type": "object", "minProperties": 1, "properties": {
            "disabled": {"type": "boolean"}, "role": {"enum": ["user", "admin"]}}})},
        "responses": {"200": {"description": "the account now", "content": _json({"$ref": "#/components/schemas/AdminUser"})},
                      **_errors(400, 401, 403, 404, 409)},
    },
    ("GET", "/api/v1/audit"): {
        "summary": "Recent changes to accounts: who did what to whom, newest first (admin)",
        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}}],
        "responses": {"200": {"description": "entries", "content": _json({"type": "object", "properties": {
            "entries": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}}}})},
            **_errors(400, 401, 403)},
    },
    ("POST", "/api/v1/keys"): {
        "summary": "Create an API key (the secret is shown once)", "security": [{"session": []}],
        "requestBody": {"required": True, "content": _json({"type": "object", "properties": {
            "name": {"type": "string"}, "scopes": {"type": "array", "items": {"enum": ["predict", "admin"]}}}})},
        "responses": {"201": {"description": "created", "content": _json({"$ref": "#/components/schemas/Key"})},
                      **_errors(400, 401, 403)},
    },
    ("GET", "/api/v1/keys"): {
        "summary": "The caller's API keys (no secrets)", "security": [{"session": []}],
        "responses": {"200": {"description": "keys", "content": _json({"type": "object", "properties": {
            "keys": {"type": "array", "items": {"$ref": "#/components/schemas/Key"}}}})}, **_errors(401)},
    },
    ("DELETE", "/api/v1/keys/{key_id}"): {
        "summary": "Revoke an API key", "security": [{"session": []}],
        "responses": {"204": {"description": "revoked"}, **_errors(401, 403, 404)},
    },
    ("GET", "/healthz"): {"summary": "Liveness", "security": [], "responses": {"200": {"description": "alive"}}},
    ("GET", "/readyz"): {"summary": "Readiness: database, Redis, a live worker, an active model", "security": [],
                         "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}},
    ("GET", "/metrics"): {"summary": "Prometheus metrics (METRICS=token: Authorization: Bearer <METRICS_TOKEN>)",
                          "security": [],
                          "responses": {"200": {"description": "text exposition format",
                                                "content": {"text/plain": {"schema": {"type": "string"}}}},
                                        **_errors(401, 404)}},
    ("GET", "/api/openapi.json"): {"summary": "This document", "security": [],
                                   "responses": {"200": {"description": "OpenAPI 3.1"}}},
    ("GET", "/"): {"summary": "The upload page (HTML)", "security": [],
                   "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}},
    ("GET", "/v2"): {"summary": "OIP server metadata", "security": [], "responses": {"200": {"description": "metadata"}}},
    ("GET", "/v2/health/live"): {"summary": "OIP liveness", "security": [], "responses": {"200": {"description": "live"}}},
    ("GET", "/v2/health/ready"): {"summary": "OIP readiness", "security": [],
                                  "responses": {"200": {"description": "ready"}, "503": {"description": "no active model"}}},
}
for _base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
    OPERATIONS[("GET", _base)] = {"summary": "OIP model metadata", "responses": {
        "200": {"description": "metadata"}, "404": {"description": "unknown model"},
        "422": {"description": "a generator, not a classifier"}}}
    OPERATIONS[("GET", _base + "/ready")] = {"summary": "OIP model readiness", "responses": {
        "200": {"description": "ready"}, "404": {"description": "unknown model"},
        "422": {"description": "a generator, not a classifier"}}}
    OPERATIONS[("POST", _base + "/infer")] = {"summary": "OIP synchronous inference", **V2_INFER}


def openapi_document(router, version: str) -> dict:
    paths: dict[str, dict] = {}
    for route in router.routes:
        operation = dict(OPERATIONS.get((route.method, route.name), {"responses": {"200": {"description": "ok"}}}))
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in route.pattern.groupindex]
        if params:
            operation["parameters"] = params + operation.get("parameters", [])
        operation["operationId"] = f"{route.method.lower()}_{route.name.strip('/').replace('/', '_').replace('{', '').replace('}', '') or 'page'}"
        paths.setdefault(route.name, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "DigitServe", "version": version,
                 "description": "Handwritten-digit inference: REST v1 (asynchronous via queues) and the Open Inference Protocol v2."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "signature": {"type": "apiKey", "in": "header", "name": "Authorization",
                              "description": "DS1-HMAC-SHA256 KeyId=<key_id>,Signature=<hex> with X-DS-Date, "
                                             "X-DS-Nonce and X-DS-Content-SHA256 headers (see the README)"},
                "session": {"type": "apiKey", "in": "cookie", "name": "ds_session",
                            "description": "browser session; unsafe requests also need X-CSRF-Token"},
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "<key_id>.<secret>, only when ALLOW_BEARER_KEYS=1"},
            },
        },
        "security": [{"signature": []}, {"session": []}, {"bearer": []}],
    }
