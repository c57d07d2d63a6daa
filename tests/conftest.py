"""Fixtures shared by the test tiers.

- `aws`: moto for one test (no resources), with the same DynamoDB concurrency shim the local
  runtime installs, and every cached client/settings/services object forgotten before and after.
- `events_table`: the events table as infra/ and the local runtime create it (buildId S / seq N).

Tests that need the whole system use `local.runtime.LocalRuntime` (see tests/integration).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import REGION

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
}


def _forget_cached_clients() -> None:
    from shared.dal.aws import reset_clients
    from shared.logic.services import reset_services
    from shared.settings import reset_settings

    reset_clients()
    reset_settings()
    reset_services()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    from local import moto_fixes

    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        moto_fixes.install()  # moto's DynamoDB is not thread-safe on its own; AWS is
        _forget_cached_clients()
        yield
    _forget_cached_clients()


@pytest.fixture
def events_table(aws: None) -> str:
    from shared.dal.aws import client

    name = "test-events"
    client("dynamodb").create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "buildId", "KeyType": "HASH"}, {"AttributeName": "seq", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "buildId", "AttributeType": "S"},
            {"AttributeName": "seq", "AttributeType": "N"},
        ],
    )
    return name
