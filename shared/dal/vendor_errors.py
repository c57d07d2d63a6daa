"""The one translator from AWS SDK errors (botocore's `ClientError` and its codes) to the domain's
errors (`shared.errors`). Only the data layer sees a vendor error; what it raises upward is:

- `StateConflict` for a write whose condition failed: `ConditionalCheckFailedException` on a single
  write, or `TransactionCanceledException` whose cancellation reasons name `ConditionalCheckFailed`
  (then `details={"failed": [indexes]}` lists the transaction items whose condition failed);
- `Throttled` when DynamoDB, SQS or another service still refuses after the SDK's own retries;
- anything else unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from shared.errors import StateConflict, Throttled

CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"
TRANSACTION_CANCELED = "TransactionCanceledException"
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)


def error_code(exc: BaseException) -> str:
    """The service's error code of a `ClientError` ("" for any other exception)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def cancellation_codes(exc: BaseException) -> list[str]:
    """Per-item codes of a cancelled transaction (`ConditionalCheckFailed`, `None`, ...), in the
    order of its items; empty for anything but a cancelled transaction."""
    if error_code(exc) != TRANSACTION_CANCELED:
        return []
    response = getattr(exc, "response", None) or {}
    reasons = response.get("CancellationReasons") or []
    return [str(r.get("Code", "None")) for r in reasons]


def failed_conditions(exc: BaseException) -> list[int]:
    """Indexes of the transaction items whose condition failed (empty when none did)."""
    return [i for i, code in enumerate(cancellation_codes(exc)) if code == "ConditionalCheckFailed"]


def is_conditional_failure(exc: BaseException) -> bool:
    """A single write whose condition failed."""
    return error_code(exc) == CONDITIONAL_CHECK_FAILED


def translate(exc: BaseException, conflict: str) -> BaseException:
    """The domain error `exc` stands for (`exc` itself when it stands for none); `conflict` is the
    message of a StateConflict."""
    if is_conditional_failure(exc):
        return StateConflict(conflict)
    failed = failed_conditions(exc)
    if failed:
        return StateConflict(conflict, details={"failed": failed})
    code = error_code(exc)
    if code in THROTTLING_CODES:
        return Throttled(f"the service is throttling requests ({code}); retry later")
    return exc


@contextlib.contextmanager
def domain_errors(conflict: str) -> Iterator[None]:
    """Run an AWS call, raising the domain error its vendor error stands for."""
    try:
        yield
    except Exception as exc:
        mapped = translate(exc, conflict)
        if mapped is exc:
            raise
        raise mapped from None
