"""The one log formatter every function uses: secrets and personal data never reach a log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.observability import MAX_LOGGED_TEXT, MaskingFilter, fingerprint, logger, redact

# Each planted value, and a part of it that must never appear in a line.
PLANTED = {
    "anthropic key": ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "AbCdEfGhIjKlMnOp"),
    "openai key": ("sk-proj-ZYXWVUTSRQPONMLKJIHG9876543210", "ZYXWVUTSRQPONMLK"),
    "webhook secret": ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjU"),
    "bearer token": ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "eyJhbGciOiJIUzI1NiJ9"),
    "password": ("password=hunter2-Secret!", "hunter2"),
    "api_key": ("api_key=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    "json password": ('{"password": "tr0ub4dor&3"}', "tr0ub4dor"),
    "e-mail": ("write to jane.doe+shop@example.co.uk today", "jane.doe"),
    "card": ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    "card digits": ("pan=5500005555555559", "5500005555555559"),
}


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the functions' logger writes, at DEBUG."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    old_stream, old_level = handler.setStream(buffer), logger.log_level
    logger.setLevel("DEBUG")
    try:
        yield buffer
    finally:
        handler.setStream(old_stream)
        logger.setLevel(old_level)


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_each_kind_is_masked_in_the_message_and_in_extra_keys(lines: io.StringIO, kind: str) -> None:
    value, part = PLANTED[kind]
    logger.debug(f"about to call with {value}", extra={"detail": value, "nested": {"list": [value]}})
    written = lines.getvalue()
    assert written.strip(), "nothing was logged"
    json.loads(written)  # still one JSON line
    assert part not in written


def test_values_of_keys_named_like_secrets_are_masked_whatever_they_look_like(lines: io.StringIO) -> None:
    logger.info("connect", extra={"apiKey": "plainword", "webhookSecret": "abc", "taskToken": "AAAA", "user": "ok"})
    line = json.loads(lines.getvalue())
    assert (line["apiKey"], line["webhookSecret"], line["taskToken"]) == ("[redacted]",) * 3
    assert line["user"] == "ok"


def test_long_texts_are_logged_as_their_length_and_hash(lines: io.StringIO) -> None:
    prompt = "Build me a page. " * 100
    logger.info("prompt", extra={"prompt": prompt})
    line = json.loads(lines.getvalue())
    print_ = fingerprint(prompt)
    assert line["prompt"] == f"[text of {print_['chars']} chars, sha256 {print_['sha256']}]"
    assert "Build me a page" not in lines.getvalue()


def test_exceptions_are_masked_too(lines: io.StringIO) -> None:
    try:
        raise RuntimeError("upstream said: invalid key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789")
    except RuntimeError:
        logger.exception("call failed")
    assert "AbCdEfGhIjKlMnOp" not in lines.getvalue()
    assert "[redacted-key]" in lines.getvalue()


def test_ordinary_values_pass_unchanged() -> None:
    for text in ("task t3 attempt 2 took 1234 ms", "bld_01M8NKZK6J2KB0QP4FZB438HQH", "src/components/Hero.tsx",
                 "1764484000000", "cost 0.0123 USD", "tokens: 1200"):
        assert redact(text) == text


def test_a_plain_logging_handler_is_masked_by_the_filter() -> None:
    record = logging.LogRecord("lib", logging.INFO, __file__, 1, "GET /ws?token=%s from %s", ("dev-token", "a@b.io"), None)
    MaskingFilter().filter(record)
    assert record.getMessage() == "GET /ws?token=[redacted] from [email]"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    prefix=st.text(alphabet=st.characters(codec="ascii", exclude_characters="\\\"'"), max_size=40),
    kind=st.sampled_from(sorted(PLANTED)),
    suffix=st.text(alphabet=st.characters(codec="ascii", exclude_characters="\\\"'"), max_size=40),
)
def test_a_planted_value_is_masked_whatever_surrounds_it(prefix: str, kind: str, suffix: str) -> None:
    value, part = PLANTED[kind]
    text = f"{prefix} {value} {suffix}"
    assert len(text) <= MAX_LOGGED_TEXT
    assert part not in redact(text)
