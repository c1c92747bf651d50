"""The signature header of a webhook request.

    X-Smtpeter-Signature: t=1764633600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e7...

``t`` is when the request was sent (unix seconds; a retry is signed anew), ``v1`` the
hex HMAC-SHA256, under the endpoint's secret (its UTF-8 bytes, ``whsec_`` prefix
included), of ``<t>.`` followed by the exact body bytes. During a secret rotation
there are two ``v1`` values, one per secret: a receiver accepts the request if any
matches its secret. The receiver should also refuse a ``t`` far from its own clock
(five minutes, say), so a recorded request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER = "X-Smtpeter-Signature"
EVENT_ID_HEADER = "X-Smtpeter-Event-Id"


def new_secret() -> str:
    """A fresh endpoint secret: 256 random bits, URL-safe text."""
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secrets_: list[str], body: bytes, timestamp: int | None = None) -> str:
    """The header's value for ``body``, one v1 per secret."""
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"v1={signature(s, t, body)}" for s in secrets_)])


def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """What a receiver does (the README shows the same lines): the header names a
    time within ``tolerance`` seconds of now, and one v1 is the body's signature."""
    fields = [part.strip().partition("=")[::2] for part in header.split(",")]
    t = next((v for k, v in fields if k == "t"), "")
    if not t.isdigit() or abs(time.time() - int(t)) > tolerance:
        return False
    want = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v.encode(), want.encode()) for k, v in fields)
