"""Webhook secrets and signatures (docs/webhooks.md). Pure logic: no I/O, nothing logged.

Two schemes are sent side by side on every delivery:

* Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` (epoch seconds) and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256 of "{id}.{ts}.{body}">``). While a secret rotates, one ``v1,`` item per
  active secret is sent, space-separated, so receivers holding either the old or the new secret
  verify the same message during the overlap.
* The original design's ``X-Webhook-Signature`` (hex HMAC-SHA256 of the body alone) and
  ``X-Webhook-Timestamp`` (epoch ms), signed with the primary (first) secret only: that scheme has
  no room for several signatures.

Secret values never appear in exception messages: a bad entry is named by its position only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _secrets
import time

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
HEADER_LEGACY_SIGNATURE = "X-Webhook-Signature"
HEADER_LEGACY_TIMESTAMP = "X-Webhook-Timestamp"

_SIGNATURE_VERSION = "v1"
_SPLIT = re.compile(r"[\s,]+")


def generate_secret() -> str:
    """A fresh ``whsec_<base64 of 32 random bytes>`` secret (CSPRNG)."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def parse_secret(secret: str) -> bytes:
    """Decode one secret into its HMAC key bytes.

    Accepts ``whsec_<base64>`` (the prefix is optional, as in the Standard Webhooks libraries) and
    tolerates missing ``=`` padding. The base64 is decoded strictly: the public libraries silently
    drop characters outside the alphabet, so a typo'd secret would sign with a different key than
    the receiver's and fail in a confusing way; refusing it here surfaces the mistake at start.
    """
    if not isinstance(secret, str):
        raise ValueError("webhook secret must be a string")
    body = secret.strip()
    if body.startswith(SECRET_PREFIX):
        body = body[len(SECRET_PREFIX) :]
    if not body:
        raise ValueError("webhook secret is empty (expected whsec_<base64>)")
    padded = body + "=" * (-len(body) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not valid base64 (expected whsec_<base64>)") from None
    if not key:
        raise ValueError("webhook secret decodes to zero bytes (expected whsec_<base64>)")
    return key


def parse_secret_list(value: str | list[str] | tuple[str, ...]) -> list[str]:
    """Split ``"whsec_a whsec_b"`` / ``"whsec_a,whsec_b"`` (or a list of such) into validated secrets.

    The first secret is the primary one (used for ``X-Webhook-Signature``); order is kept and
    duplicates are dropped so a rotation overlap never sends the same signature twice.
    """
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError("webhook secrets must be strings")
        for token in _SPLIT.split(item.strip()):
            if not token:
                continue
            try:
                parse_secret(token)
            except ValueError as exc:
                raise ValueError(f"webhook secret #{len(out) + 1}: {exc}") from None
            if token not in out:
                out.append(token)
    return out


def _keys(secrets: list[str]) -> list[bytes]:
    keys = [parse_secret(s) for s in parse_secret_list(secrets)]
    if not keys:
        raise ValueError("at least one webhook secret is required to sign a delivery")
    return keys


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` item of the Standard Webhooks ``webhook-signature`` header."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, to_sign, hashlib.sha256).digest()
    return f"{_SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def legacy_signature(key: bytes, body: bytes) -> str:
    """Hex HMAC-SHA256 of the body alone (``X-Webhook-Signature``)."""
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def sign_headers(body: bytes, event_id: str, secrets: list[str], now: float | None = None) -> dict[str, str]:
    """All headers of one delivery attempt.

    ``now`` (epoch seconds) is injectable for tests; each attempt must be re-signed with a fresh
    timestamp because receivers reject timestamps older than their tolerance (5 min by default).
    """
    if not event_id or any(c in event_id for c in "\r\n"):
        raise ValueError("event id must be a non-empty single-line string")
    keys = _keys(secrets)
    moment = time.time() if now is None else now
    ts_seconds = int(moment)
    ts_millis = int(moment * 1000)
    return {
        "Content-Type": "application/json",
        HEADER_ID: event_id,
        HEADER_TIMESTAMP: str(ts_seconds),
        HEADER_SIGNATURE: " ".join(standard_signature(k, event_id, ts_seconds, body) for k in keys),
        HEADER_LEGACY_SIGNATURE: legacy_signature(keys[0], body),
        HEADER_LEGACY_TIMESTAMP: str(ts_millis),
    }
