"""Schemathesis hooks for tests/e2e/test_openapi_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

Each one narrows what the fuzzer generates where a rule cannot be written in JSON Schema, and says
why; every check still runs on every request."""

from __future__ import annotations

from typing import Any

import schemathesis

LONG_POLL_CAP_S = 0.2


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Runs before every request of every phase (examples, coverage, fuzzing, stateful)."""
    operation = (case.operation.method.upper(), case.operation.path)
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if operation == ("POST", "/builds") and positive and isinstance(case.body, dict):
        # webhookUrl's SSRF rule depends on where its host resolves (private, loopback, metadata
        # addresses are refused; plain http only for WEBHOOK_ALLOWED_HOSTS): no schema can say that,
        # so a schema-valid URL may rightly get a 422. Those 422s are tested in test_serve/test_ssrf.
        case.body.pop("webhookUrl", None)
    if operation == ("POST", "/builds/{buildId}/approval") and positive and isinstance(case.body, dict):
        # An edited plan must also be a graph over its own tasks (unique ids, dependencies that name
        # one of them, no cycle): JSON Schema cannot relate one item to another, so a schema-valid
        # edit may rightly get a 422. Edited approvals are tested in test_engine.
        case.body.pop("tasks", None)
    if operation == ("GET", "/builds/{buildId}/events") and isinstance(case.query, dict):
        # A valid `wait` holds the answer up to 20 s by design when nothing happens; the long-poll
        # has its own test. Cap it so the fuzzer spends its time budget on requests, not waiting.
        wait = case.query.get("wait")
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and 0 <= wait <= 20:
            case.query["wait"] = min(wait, LONG_POLL_CAP_S)
