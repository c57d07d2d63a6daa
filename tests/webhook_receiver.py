"""Verify a Stepwise webhook and parse its envelope: the reference receiver the tests check every
delivery with, and an example for receivers written in Python (it is not shipped in any Lambda).

It checks the Standard Webhooks headers (any ``v1`` signature made with any of the receiver's
secrets, so a receiver keeps working while a secret rotates) and the timestamp tolerance that
stops replays of captured requests. Use ``webhook-id`` (== ``event.id``) as your dedup key:
delivery is at-least-once and may be out of order (docs/webhooks.md).

Example::

    event = verify_and_parse(request.body, request.headers, os.environ["WEBHOOK_SECRET"])
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Mapping

from pydantic import ValidationError

from shared.models.events import Event
from shared.signing import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    parse_secret,
    parse_secret_list,
    standard_signature,
)

DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh Stepwise webhook; ``reason`` says why (never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # HTTP header names are case-insensitive; frameworks differ in how they present them.
    value = headers.get(name)
    if value is None:
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get(name.lower())
    return value


def _signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` signatures; malformed or other-version items are skipped, not fatal."""
    out: list[bytes] = []
    for item in header.split():
        version, sep, encoded = item.partition(",")
        if not sep or version != "v1":
            continue
        try:
            out.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return out


def verify_and_parse(
    body: bytes,
    headers: Mapping[str, str],
    secrets: str | list[str],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> Event:
    """Verify the signature and freshness of one delivery and return its envelope.

    ``body`` must be the raw request bytes exactly as received (re-serialised JSON will not match).
    Raises ``WebhookVerificationError`` for missing/malformed headers, a stale or future timestamp,
    no matching signature, or a body that is not a valid event envelope. A misconfigured secret on
    the receiver's side raises ``ValueError``.
    """
    keys = [parse_secret(s) for s in parse_secret_list(secrets)]
    if not keys:
        raise ValueError("at least one webhook secret is required to verify a delivery")

    msg_id = _header(headers, HEADER_ID)
    ts_raw = _header(headers, HEADER_TIMESTAMP)
    sig_raw = _header(headers, HEADER_SIGNATURE)
    if not (msg_id and ts_raw and sig_raw):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")

    try:
        timestamp = int(ts_raw.strip())
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too far in the future")

    offered = _signatures(sig_raw)
    if not offered:
        raise WebhookVerificationError("webhook-signature has no v1 signature")
    matched = False
    for key in keys:
        expected = base64.b64decode(standard_signature(key, msg_id, timestamp, body).split(",", 1)[1])
        for candidate in offered:
            # compare_digest: timing must not reveal how many leading bytes of a forgery were right.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError("no matching signature")

    try:
        event = Event.model_validate_json(body)
    except ValidationError:
        raise WebhookVerificationError("body is not a valid Stepwise event envelope") from None
    if event.id != msg_id:
        # The signature covers both, but a sender bug here would break receivers' dedup by id.
        raise WebhookVerificationError("webhook-id does not match the event id")
    return event
