"""Webhook signing (docs/webhooks.md) checked against the public Standard Webhooks library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as LibVerificationError

from shared.signing import (
    generate_secret,
    parse_secret,
    parse_secret_list,
    sign_headers,
)
from tests.webhook_receiver import WebhookVerificationError, verify_and_parse

EVENT_ID = "evt_01JABCDEFGHJKMNPQRSTVWXYZ0"
Mutation = Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]


def _body(event_id: str = EVENT_ID) -> bytes:
    envelope = {
        "id": event_id,
        "type": "task_started",
        "buildId": "bld_1",
        "seq": 3,
        "timestamp": 1_700_000_000_000,
        "data": {"taskId": "t1", "taskName": "Header", "description": "ü — unicode", "attempt": 1},
    }
    return json.dumps(envelope, ensure_ascii=False).encode()


# --- secrets -------------------------------------------------------------------------------------


def test_generated_secret_has_prefix_and_32_bytes() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(parse_secret(secret)) == 32
    assert generate_secret() != secret


def test_parse_secret_accepts_prefix_bare_and_unpadded() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    encoded = base64.b64encode(key).decode()
    assert parse_secret("whsec_" + encoded) == key
    assert parse_secret(encoded) == key
    assert parse_secret("whsec_" + encoded.rstrip("=")) == key


@pytest.mark.parametrize("bad", ["", "whsec_", "whsec_not base64!!", "whsec_@@@@", "   "])
def test_parse_secret_rejects_garbage_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_secret(bad)
    assert "whsec_<base64>" in str(info.value)
    if bad.strip() and bad != "whsec_":
        assert bad not in str(info.value)


def test_parse_secret_list_space_or_comma_separated() -> None:
    a, b = generate_secret(), generate_secret()
    assert parse_secret_list(f"{a} {b}") == [a, b]
    assert parse_secret_list(f"{a},{b}") == [a, b]
    assert parse_secret_list(f" {a} ,  {b} , {a}") == [a, b]
    assert parse_secret_list([a, f"{b}"]) == [a, b]
    assert parse_secret_list("") == []


def test_parse_secret_list_names_bad_entry_by_position_only() -> None:
    good = generate_secret()
    with pytest.raises(ValueError, match="#2") as info:
        parse_secret_list(f"{good} whsec_%%%%secretish")
    assert "secretish" not in str(info.value)
    assert good not in str(info.value)


# --- headers -------------------------------------------------------------------------------------


def test_headers_verify_with_standardwebhooks_library() -> None:
    secret = generate_secret()
    body = _body()
    headers = sign_headers(body, EVENT_ID, [secret])
    assert headers["webhook-id"] == EVENT_ID
    assert headers["Content-Type"] == "application/json"
    assert Webhook(secret).verify(body, headers) == json.loads(body)


def test_timestamps_are_seconds_and_milliseconds_of_the_same_moment() -> None:
    headers = sign_headers(_body(), EVENT_ID, [generate_secret()], now=1_700_000_123.456)
    assert headers["webhook-timestamp"] == "1700000123"
    assert headers["X-Webhook-Timestamp"] == "1700000123456"


def test_rotation_each_active_secret_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    body = _body()
    headers = sign_headers(body, EVENT_ID, [new, old])
    items = headers["webhook-signature"].split(" ")
    assert len(items) == 2 and all(i.startswith("v1,") for i in items)
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    with pytest.raises(LibVerificationError):
        Webhook(generate_secret()).verify(body, headers)


def test_secrets_given_as_one_string_are_split() -> None:
    old, new = generate_secret(), generate_secret()
    headers = sign_headers(_body(), EVENT_ID, [f"{new} {old}"])
    assert len(headers["webhook-signature"].split(" ")) == 2


def test_tampered_body_fails() -> None:
    secret = generate_secret()
    body = _body()
    headers = sign_headers(body, EVENT_ID, [secret])
    with pytest.raises(LibVerificationError):
        Webhook(secret).verify(body.replace(b'"seq": 3', b'"seq": 4'), headers)


def test_tampered_id_fails() -> None:
    secret = generate_secret()
    body = _body()
    headers = sign_headers(body, EVENT_ID, [secret])
    headers["webhook-id"] = "evt_other"
    with pytest.raises(LibVerificationError):
        Webhook(secret).verify(body, headers)


def test_stale_timestamp_fails() -> None:
    secret = generate_secret()
    body = _body()
    headers = sign_headers(body, EVENT_ID, [secret], now=time.time() - 3600)
    with pytest.raises(LibVerificationError, match="too old"):
        Webhook(secret).verify(body, headers)


def test_legacy_signature_is_hex_hmac_of_body_with_primary_key() -> None:
    primary, secondary = generate_secret(), generate_secret()
    body = _body()
    headers = sign_headers(body, EVENT_ID, [primary, secondary])
    expected = hmac.new(parse_secret(primary), body, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == expected


def test_signing_needs_a_secret_and_a_sane_id() -> None:
    with pytest.raises(ValueError, match="at least one"):
        sign_headers(b"{}", EVENT_ID, [])
    with pytest.raises(ValueError):
        sign_headers(b"{}", "evt\r\nX-Injected: 1", [generate_secret()])


def test_no_secret_material_in_headers() -> None:
    secret = generate_secret()
    headers = sign_headers(_body(), EVENT_ID, [secret])
    joined = " ".join(headers.values())
    assert secret.removeprefix("whsec_") not in joined


# --- receiver helper -----------------------------------------------------------------------------


def test_receiver_round_trip() -> None:
    secret = generate_secret()
    body = _body()
    headers = sign_headers(body, EVENT_ID, [secret])
    event = verify_and_parse(body, headers, secret)
    assert event.id == EVENT_ID
    assert event.seq == 3
    assert event.data["description"] == "ü — unicode"


def test_receiver_headers_case_insensitive_and_rotation() -> None:
    old, new = generate_secret(), generate_secret()
    body = _body()
    headers = {k.upper(): v for k, v in sign_headers(body, EVENT_ID, [old]).items()}
    # The receiver already rotated to `new` but still accepts `old` during the overlap.
    assert verify_and_parse(body, headers, [new, old]).id == EVENT_ID
    assert verify_and_parse(body, headers, f"{new},{old}").id == EVENT_ID


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "not an integer"),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(time.time()) - 3600)}, b), "too old"),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(time.time()) + 3600)}, b), "future"),
        (lambda h, b: ({**h, "webhook-signature": "v1,bm9wZQ== v2,xyz garbage"}, b), "no matching"),
        (lambda h, b: ({**h, "webhook-signature": "garbage"}, b), "no v1"),
        (lambda h, b: (h, b + b" "), "no matching"),
    ],
)
def test_receiver_rejects(mutate: Mutation, reason: str) -> None:
    secret = generate_secret()
    body = _body()
    headers, body = mutate(sign_headers(body, EVENT_ID, [secret]), body)
    with pytest.raises(WebhookVerificationError, match=reason):
        verify_and_parse(body, headers, secret)


def test_receiver_rejects_wrong_secret_and_non_event_body() -> None:
    secret = generate_secret()
    body = _body()
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify_and_parse(body, sign_headers(body, EVENT_ID, [secret]), generate_secret())
    junk = b'{"hello": "world"}'
    with pytest.raises(WebhookVerificationError, match="envelope"):
        verify_and_parse(junk, sign_headers(junk, EVENT_ID, [secret]), secret)
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify_and_parse(body, sign_headers(body, "evt_other", [secret]), secret)


def test_receiver_tolerance_is_configurable() -> None:
    secret = generate_secret()
    body = _body()
    headers = sign_headers(body, EVENT_ID, [secret], now=1_000_000.0)
    assert verify_and_parse(body, headers, secret, tolerance_s=30, now=1_000_020.0).id == EVENT_ID
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_and_parse(body, headers, secret, tolerance_s=10, now=1_000_020.0)
