"""DS1-HMAC-SHA256 request signing: the one function the server, the client and the tests use."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Iterable, Mapping
from urllib.parse import parse_qsl, quote

ALGORITHM = "DS1-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def format_date(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime(DATE_FORMAT)


def parse_date(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, DATE_FORMAT).replace(tzinfo=dt.timezone.utc)


def canonical_query(query: str | Mapping[str, str] | Iterable[tuple[str, str]] | None) -> str:
    """Pairs sorted by key (then value), RFC 3986 percent-encoded, `k=v` joined by `&`."""
    if not query:
        return ""
    if isinstance(query, str):
        pairs = parse_qsl(query, keep_blank_values=True)
    elif isinstance(query, Mapping):
        pairs = list(query.items())
    else:
        pairs = list(query)
    encoded = sorted((quote(str(k), safe="-_.~"), quote(str(v), safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def string_to_sign(key_id: str, date: str, nonce: str, method: str, path: str, query: str,
                   content_sha256: str) -> str:
    """Eight lines; the key id is among them, so a signature is valid for exactly one spelling of it."""
    return "\n".join([ALGORITHM, key_id, date, nonce, method.upper(), path, canonical_query(query), content_sha256])


def sign(secret: str, key_id: str, date: str, nonce: str, method: str, path: str, query: str,
         content_sha256: str) -> str:
    message = string_to_sign(key_id, date, nonce, method, path, query, content_sha256)
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed_headers(
    key_id: str,
    secret: str,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    *,
    now: dt.datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four headers that sign one request."""
    date = format_date(now or dt.datetime.now(dt.timezone.utc))
    nonce = nonce or secrets.token_hex(16)
    digest = body_sha256(body)
    signature = sign(secret, key_id, date, nonce, method, path, query, digest)
    return {
        "Authorization": f"{ALGORITHM} KeyId={key_id},Signature={signature}",
        "X-DS-Date": date,
        "X-DS-Nonce": nonce,
        "X-DS-Content-SHA256": digest,
    }
