"""The local runtime reaches into moto internals (pinned 5.2.5). If an upgrade moves them, these fail
loudly here instead of the runtime misbehaving quietly."""

from __future__ import annotations

import inspect
import threading

import boto3
import pytest
from moto import mock_aws

from local import moto_fixes


def test_the_hooked_signatures_are_still_there() -> None:
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.dynamodb.models import DynamoDBBackend
    from moto.sqs.models import SQSBackend

    assert list(inspect.signature(LambdaSimpleBackend.invoke).parameters)[:6] == [
        "self", "function_name", "qualifier", "body", "headers", "response_headers"]
    assert list(inspect.signature(SQSBackend.receive_message).parameters)[:5] == [
        "self", "queue_name", "count", "wait_seconds_timeout", "visibility_timeout"]
    for name in ("put_item", "get_item", "query", "update_item", "delete_item", "transact_write_items"):
        assert callable(getattr(DynamoDBBackend, name))


@pytest.fixture
def table():  # type: ignore[no-untyped-def]
    with mock_aws():
        moto_fixes.install()
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}])
        yield ddb


def test_a_cancelled_transaction_writes_nothing_and_erases_nothing(table) -> None:  # type: ignore[no-untyped-def]
    table.put_item(TableName="t", Item={"k": {"S": "exists"}})
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            key = f"w{i}"
            table.put_item(TableName="t", Item={"k": {"S": key}})
            written.append(key)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for n in range(50):  # each fails on its second item's condition
            with pytest.raises(table.exceptions.TransactionCanceledException):
                table.transact_write_items(TransactItems=[
                    {"Put": {"TableName": "t", "Item": {"k": {"S": f"tx{n}"}}}},
                    {"Put": {"TableName": "t", "Item": {"k": {"S": "exists"}},
                             "ConditionExpression": "attribute_not_exists(k)"}},
                ])
    finally:
        stop.set()
        t.join()
    keys = {i["k"]["S"] for i in table.scan(TableName="t")["Items"]}
    assert not any(k.startswith("tx") for k in keys)  # all or nothing
    assert set(written) <= keys  # other writers' items survive (moto alone restores a stale copy)
