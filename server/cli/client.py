"""Python client for the DigitServe API: signs every request (DS1-HMAC-SHA256)."""
from __future__ import annotations

import json
import os
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlencode, urlsplit

from core import signing


class ClientError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "dsboundary" + secrets.token_hex(12)
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for filename, data in files:
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{safe}"\r\n'
                      f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(self, base_url: str, key_id: str, secret: str, timeout: float = 40.0):
        self.base_url = base_url.rstrip("/")
        self.key_id = key_id
        self.secret = secret
        self.timeout = timeout

    @classmethod
    def from_env(cls, **overrides) -> "Client":
        values = {
            "base_url": os.environ.get("DIGITSERVE_URL", "http://127.0.0.1:8080"),
            "key_id": os.environ.get("DIGITSERVE_KEY_ID", ""),
            "secret": os.environ.get("DIGITSERVE_SECRET", ""),
        }
        values.update({k: v for k, v in overrides.items() if v})
        if not values["key_id"] or not values["secret"]:
            raise ValueError("an API key is needed: --key-id/--secret or DIGITSERVE_KEY_ID/DIGITSERVE_SECRET")
        return cls(**values)

    def request(self, method: str, path: str, query: dict[str, Any] | None = None, body: bytes = b"",
                content_type: str | None = None, headers: dict[str, str] | None = None) -> Any:
        query_string = urlencode({k: v for k, v in (query or {}).items() if v is not None})
        full_path = urlsplit(self.base_url).path.rstrip("/") + path
        all_headers = signing.signed_headers(self.key_id, self.secret, method, full_path, query_string, body)
        if content_type:
            all_headers["Content-Type"] = content_type
        all_headers.update(headers or {})
        url = self.base_url + path + (f"?{query_string}" if query_string else "")
        request = urllib.request.Request(url, data=body if method not in ("GET", "HEAD") else None,
                                         method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                error = json.loads(raw)["error"]
                code, message = error.get("code", "error"), error.get("message", str(error))
            except (ValueError, KeyError, TypeError, AttributeError):
                code, message = "http_error", raw.decode("utf-8", "replace")[:200]
            raise ClientError(exc.code, code, message, exc.headers.get("Retry-After")) from None
        return json.loads(raw) if raw else None

    def submit(self, images: Iterable[bytes | str | Path], model: str | None = None, wait: float = 0,
               idempotency_key: str | None = None) -> dict:
        files = []
        for image in images:
            if isinstance(image, (str, Path)):
                files.append((Path(image).name, Path(image).read_bytes()))
            else:
                files.append((f"image{len(files)}", bytes(image)))
        fields = {"wait": str(wait)}
        if model:
            fields["model"] = model
        body, content_type = _multipart(fields, files)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", "/api/v1/predictions", body=body, content_type=content_type, headers=headers)

    def prediction(self, prediction_id: str, include_preprocessed: bool = False, wait: float = 0) -> dict:
        """One prediction; with `wait` the server holds the request until it finishes (at most `wait` s)."""
        query = {"include": "preprocessed" if include_preprocessed else None, "wait": wait or None}
        return self.request("GET", f"/api/v1/predictions/{prediction_id}", query)

    def predict(self, images: Iterable[bytes | str | Path], model: str | None = None, wait: float = 5,
                timeout: float = 60.0) -> dict:
        """Submit and return the finished prediction (waiting server-side, then long-polling)."""
        document = self.submit(images, model=model, wait=wait)
        deadline = time.monotonic() + timeout
        while document["status"] not in ("succeeded", "failed"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"prediction {document['id']} not finished after {timeout:g} s")
            document = self.prediction(document["id"], wait=min(left, 10))
        return document

    def history(self, limit: int = 20, cursor: str | None = None) -> dict:
        return self.request("GET", "/api/v1/predictions", {"limit": limit, "cursor": cursor})

    def feedback(self, prediction_id: str, label: int, index: int = 0) -> dict:
        body = json.dumps({"index": index, "label": label}).encode()
        return self.request("POST", f"/api/v1/predictions/{prediction_id}/feedback", body=body,
                            content_type="application/json")

    def models(self) -> dict:
        return self.request("GET", "/api/v1/models")
