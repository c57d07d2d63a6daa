"""The data layer's one translator from AWS SDK errors to domain errors."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from shared.dal.vendor_errors import domain_errors, translate
from shared.errors import StateConflict, Throttled


def client_error(code: str, **response: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, **response}, "Op")


def test_a_failed_condition_is_a_state_conflict() -> None:
    mapped = translate(client_error("ConditionalCheckFailedException"), "build b is not in the expected state")
    assert isinstance(mapped, StateConflict)
    assert mapped.message == "build b is not in the expected state" and mapped.details is None


def test_a_cancelled_transaction_names_the_items_whose_condition_failed() -> None:
    reasons = [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}, {"Code": "None"}, {"Code": "ConditionalCheckFailed"}]
    mapped = translate(client_error("TransactionCanceledException", CancellationReasons=reasons), "state changed")
    assert isinstance(mapped, StateConflict) and mapped.details == {"failed": [1, 3]}


def test_a_transaction_cancelled_for_another_reason_stays_what_it_was() -> None:
    exc = client_error("TransactionCanceledException", CancellationReasons=[{"Code": "TransactionConflict"}])
    assert translate(exc, "x") is exc


@pytest.mark.parametrize("code", ["ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded"])
def test_throttling_is_throttled(code: str) -> None:
    mapped = translate(client_error(code), "x")
    assert isinstance(mapped, Throttled) and mapped.http_status == 429 and code in mapped.message


def test_other_errors_pass_through_unchanged() -> None:
    for exc in (client_error("ResourceNotFoundException"), ValueError("boom")):
        with pytest.raises(type(exc)) as raised, domain_errors("x"):
            raise exc
        assert raised.value is exc
    with pytest.raises(StateConflict), domain_errors("x"):
        raise client_error("ConditionalCheckFailedException")
