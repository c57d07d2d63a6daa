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
    assert list(inspect.signature(SQSBackend.is_message_valid_based_on_retention_period).parameters) == [
        "self", "queue_name", "message"]
    for name in ("put_item", "get_item", "query", "update_item", "delete_item", "transact_write_items"):
        assert callable(getattr(DynamoDBBackend, name))
    from moto.dynamodb.models.table import StreamShard
    from moto.dynamodb.responses import DynamoResult

    assert list(inspect.signature(StreamShard.add).parameters) == ["self", "old", "new"]
    assert list(inspect.signature(DynamoResult.execute_result).parameters) == ["self", "context"]


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


def test_plain_dynamodb_results_are_the_responses_moto_would_write(table) -> None:  # type: ignore[no-untyped-def]
    """The fast path writes DynamoDB results with json.dumps; moto's own serializer must agree."""
    import json

    from moto.dynamodb.responses import DynamoResult

    compared: dict[str, int] = {}
    fast = DynamoResult.execute_result

    def both(self, context):  # type: ignore[no-untyped-def]
        ours = fast(self, context)
        theirs = DynamoResult._moto_execute_result(self, context)  # type: ignore[attr-defined]
        assert ours[0] == theirs[0] and ours[1]["Content-Type"] == theirs[1]["Content-Type"]
        assert json.loads(ours[2]) == json.loads(theirs[2])
        compared[context.operation_model.name] = compared.get(context.operation_model.name, 0) + 1
        return ours

    DynamoResult.execute_result = both  # type: ignore[method-assign]
    try:
        item = {"k": {"S": "a"}, "n": {"N": "1.5"}, "b": {"BOOL": True}, "z": {"NULL": True},
                "l": {"L": [{"S": "x"}, {"M": {"y": {"N": "2"}}}]}, "ss": {"SS": ["p", "q"]}}
        table.put_item(TableName="t", Item=item, ReturnValues="ALL_OLD")
        table.put_item(TableName="t", Item={**item, "n": {"N": "2"}}, ReturnValues="ALL_OLD")
        assert table.get_item(TableName="t", Key={"k": {"S": "a"}}, ConsistentRead=True)["Item"]["n"] == {"N": "2"}
        table.get_item(TableName="t", Key={"k": {"S": "missing"}})
        table.get_item(TableName="t", Key={"k": {"S": "a"}}, ProjectionExpression="#l", ExpressionAttributeNames={"#l": "l"})
        table.update_item(TableName="t", Key={"k": {"S": "a"}}, UpdateExpression="SET n = :v REMOVE z",
                          ExpressionAttributeValues={":v": {"N": "3"}}, ReturnValues="ALL_NEW")
        table.query(TableName="t", KeyConditionExpression="k = :k", ExpressionAttributeValues={":k": {"S": "a"}})
        table.scan(TableName="t")
        table.delete_item(TableName="t", Key={"k": {"S": "a"}}, ReturnValues="ALL_OLD")
    finally:
        DynamoResult.execute_result = fast  # type: ignore[method-assign]
    assert set(compared) >= {"PutItem", "GetItem", "UpdateItem", "Query", "Scan", "DeleteItem"}


def test_a_projection_picks_what_moto_itself_picks(table) -> None:  # type: ignore[no-untyped-def]
    """The one-pass projection answers what moto's own (one full copy per path) answers, and leaves
    the stored item as it was."""
    from moto.dynamodb.models.dynamo_type import Item

    item = {"k": {"S": "a"}, "n": {"N": "1.5"}, "task": {"M": {
        "name": {"S": "Hero"}, "type": {"S": "create_file"},
        "input": {"M": {"targetPath": {"S": "src/a.ts"}, "dependencies": {"L": [{"S": "x"}]}, "prompt": {"S": "p"}}}}},
        "files": {"L": [{"M": {"path": {"S": "a"}, "sha256": {"S": "f00"}}}]}, "empty": {"M": {}}}
    table.put_item(TableName="t", Item=item)
    names = {"#t": "task", "#n": "name", "#i": "input", "#p": "targetPath", "#d": "dependencies", "#f": "files",
             "#x": "missing", "#y": "deeper", "#e": "empty", "#v": "n", "#h": "path"}
    projections = [
        "#v", "#t.#n, #t.#i.#p, #t.#i.#d, #f", "#t, #t.#n", "#t.#n, #t", "#t.#i.#x, #x.#y", "files[0].#h, #v",
        "#e, #t.#i",
    ]
    ours = Item.project
    for expression in projections:
        used = {k: v for k, v in names.items() if k in expression}
        answers = []
        for project in (ours, moto_fixes._moto_project):
            Item.project = project  # type: ignore[method-assign]
            answers.append(table.get_item(TableName="t", Key={"k": {"S": "a"}}, ProjectionExpression=expression,
                                          ExpressionAttributeNames=used).get("Item"))
        Item.project = ours  # type: ignore[method-assign]
        assert answers[0] == answers[1], expression
    assert table.get_item(TableName="t", Key={"k": {"S": "a"}})["Item"] == item


def test_a_stream_write_wakes_the_relay() -> None:
    with mock_aws():
        moto_fixes.install()
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName="s", BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                         StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
        moto_fixes.stream_written.clear()
        ddb.put_item(TableName="s", Item={"k": {"S": "a"}})
        assert moto_fixes.stream_written.is_set()


def test_plain_updates_in_a_transaction_leave_what_moto_leaves(table) -> None:  # type: ignore[no-untyped-def]
    """The transaction's fast path for plain SET/REMOVE/ADD updates and moto's own update_item,
    applied to the same items, leave the same items (and both refuse what moto refuses)."""

    base = {"n": {"N": "1.5"}, "gone": {"S": "x"}, "m": {"M": {"a": {"L": [{"N": "1"}, {"S": "b"}]}}}}
    updates = [  # (expression, names, values)
        ("SET #s = :a, #m = :b REMOVE #g ADD #n :c, #new :d",
         {"#s": "s", "#m": "m", "#g": "gone", "#n": "n", "#new": "new"},
         {":a": {"S": "done"}, ":b": {"M": {"z": {"BOOL": True}, "y": {"NULL": True}}}, ":c": {"N": "0.25"},
          ":d": {"N": "3"}}),
        ("SET #s = :a", {"#s": "s"}, {":a": {"L": [{"M": {"p": {"SS": ["q", "r"]}}}]}}),
        ("REMOVE #g, #n", {"#g": "gone", "#n": "n"}, {}),
        ("SET #n = #n + :a", {"#n": "n"}, {":a": {"N": "1"}}),  # not plain: moto's own path
        ("ADD #g :a", {"#g": "gone"}, {":a": {"N": "1"}}),  # ADD to a string: moto refuses it
    ]
    fast_hits = 0
    original = moto_fixes._plain_update

    def counting(*args):  # type: ignore[no-untyped-def]
        nonlocal fast_hits
        hit = original(*args)
        fast_hits += hit
        return hit

    results = []
    for use_fast in (True, False):
        moto_fixes._plain_update = counting if use_fast else (lambda *args: False)  # type: ignore[assignment]
        try:
            got = []
            for i, (expr, names, values) in enumerate(updates):
                key = {"k": {"S": f"{use_fast}-{i}"}}
                table.put_item(TableName="t", Item={**key, **base})
                update = {"TableName": "t", "Key": key, "UpdateExpression": expr,
                          "ExpressionAttributeNames": {**names, "#c": "k"}, "ConditionExpression": "attribute_exists(#c)"}
                if values:
                    update["ExpressionAttributeValues"] = values
                try:
                    table.transact_write_items(TransactItems=[{"Update": update}])
                    outcome = "ok"
                except Exception as exc:
                    outcome = type(exc).__name__
                item = table.get_item(TableName="t", Key=key, ConsistentRead=True)["Item"]
                item.pop("k")
                got.append((outcome, item))
            results.append(got)
        finally:
            moto_fixes._plain_update = original  # type: ignore[assignment]
    assert results[0] == results[1]
    assert fast_hits == 3  # the three plain updates took the fast path
    assert results[0][0][1]["n"] == {"N": "1.75"} and "gone" not in results[0][0][1]


def test_plain_stream_records_are_the_response_moto_would_write(aws: None) -> None:
    import json

    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    ddb = boto3.client("dynamodb", region_name="us-east-1")
    arn = ddb.create_table(TableName="s", BillingMode="PAY_PER_REQUEST",
                           KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                           AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                           StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
                           )["TableDescription"]["LatestStreamArn"]
    ddb.put_item(TableName="s", Item={"k": {"S": "a"}, "n": {"N": "2.5"}, "m": {"M": {"l": {"L": [{"S": "x"}]}}}})
    ddb.put_item(TableName="s", Item={"k": {"S": "a"}, "b": {"BOOL": False}})
    streams = boto3.client("dynamodbstreams", region_name="us-east-1")
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]

    def read() -> list[dict]:  # type: ignore[type-arg]
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        return streams.get_records(ShardIterator=it["ShardIterator"])["Records"]  # type: ignore[no-any-return]

    ours = read()
    fast = DynamoDBStreamsHandler.get_records
    DynamoDBStreamsHandler.get_records = DynamoDBStreamsHandler._moto_get_records  # type: ignore[attr-defined]
    try:
        theirs = read()
    finally:
        DynamoDBStreamsHandler.get_records = fast  # type: ignore[method-assign]
    assert len(ours) == 2
    assert json.dumps(ours, default=str) == json.dumps(theirs, default=str)


def test_an_item_over_the_size_limit_is_still_refused(table) -> None:  # type: ignore[no-untyped-def]
    """The item is built at once and its size checked once: the same items pass and fail."""
    from botocore.exceptions import ClientError

    near = "x" * 200_000
    table.put_item(TableName="t", Item={"k": {"S": "ok"}, "a": {"S": near}, "m": {"M": {"b": {"S": near}}}})
    got = table.get_item(TableName="t", Key={"k": {"S": "ok"}}, ConsistentRead=True)["Item"]
    assert got["m"]["M"]["b"]["S"] == near
    with pytest.raises(ClientError) as refused:
        table.put_item(TableName="t", Item={"k": {"S": "big"}, "a": {"S": near}, "m": {"M": {"b": {"S": near + near}}}})
    assert "size" in str(refused.value).lower()
    assert "Item" not in table.get_item(TableName="t", Key={"k": {"S": "big"}}, ConsistentRead=True)


def test_a_kept_condition_is_evaluated_with_each_call_s_values(table) -> None:  # type: ignore[no-untyped-def]
    from botocore.exceptions import ClientError

    table.put_item(TableName="t", Item={"k": {"S": "a"}, "n": {"N": "1"}})
    for _ in range(2):  # the second round takes every parse from what the first kept
        for expected, holds in (("1", True), ("2", False), ("1", True)):
            kwargs = {"TableName": "t", "Item": {"k": {"S": "a"}, "n": {"N": "1"}},
                      "ConditionExpression": "#n = :n", "ExpressionAttributeNames": {"#n": "n"},
                      "ExpressionAttributeValues": {":n": {"N": expected}}}
            if holds:
                table.put_item(**kwargs)
            else:
                with pytest.raises(ClientError, match="ConditionalCheckFailed"):
                    table.put_item(**kwargs)
        with pytest.raises(ClientError, match="unused") as refused:  # moto still names what went unused
            table.put_item(TableName="t", Item={"k": {"S": "a"}}, ConditionExpression="#n = :n",
                           ExpressionAttributeNames={"#n": "n", "#x": "x"},
                           ExpressionAttributeValues={":n": {"N": "1"}})
        assert "#x" in str(refused.value) and "#n" not in str(refused.value)


def test_plain_dynamodb_requests_are_read_as_moto_reads_them(table) -> None:  # type: ignore[no-untyped-def]
    from moto.dynamodb.responses import DynamoHandler

    fast = DynamoHandler.parse_parameters
    compared: list[str] = []

    def both(self, request) -> None:  # type: ignore[no-untyped-def]
        DynamoHandler._moto_parse_parameters(self, request)  # type: ignore[attr-defined]
        theirs = self.params
        fast(self, request)
        assert self.params == theirs, request.data
        compared.append(self._get_action())

    item = {"k": {"S": "a"}, "n": {"N": "-1.50"}, "t": {"BOOL": True}, "z": {"NULL": True},
            "m": {"M": {"l": {"L": [{"S": "é\"q"}, {"N": "2"}, {"SS": ["x", "y"]}]}}}, "ns": {"NS": ["1", "2"]}}
    DynamoHandler.parse_parameters = both  # type: ignore[method-assign]
    try:
        table.put_item(TableName="t", Item=item)
        table.put_item(TableName="t", Item={"k": {"S": "b"}, "bin": {"B": b"\x00\x01"}, "bs": {"BS": [b"x"]}})
        table.update_item(TableName="t", Key={"k": {"S": "a"}}, UpdateExpression="SET #n = :n",
                          ExpressionAttributeNames={"#n": "n"}, ExpressionAttributeValues={":n": {"N": "3"}},
                          ReturnValues="ALL_NEW")
        table.query(TableName="t", KeyConditionExpression="k = :k", ExpressionAttributeValues={":k": {"S": "a"}},
                    Limit=5, ScanIndexForward=False, ConsistentRead=True)
        table.batch_get_item(RequestItems={"t": {"Keys": [{"k": {"S": "a"}}, {"k": {"S": "b"}}]}})
        table.transact_write_items(TransactItems=[
            {"Put": {"TableName": "t", "Item": {"k": {"S": "c"}}, "ConditionExpression": "attribute_not_exists(k)"}},
            {"Update": {"TableName": "t", "Key": {"k": {"S": "a"}}, "UpdateExpression": "ADD #n :one",
                        "ExpressionAttributeNames": {"#n": "n"}, "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        ])
        got = table.get_item(TableName="t", Key={"k": {"S": "b"}})["Item"]
    finally:
        DynamoHandler.parse_parameters = fast  # type: ignore[method-assign]
    assert compared == ["PutItem", "PutItem", "UpdateItem", "Query", "BatchGetItem", "TransactWriteItems", "GetItem"]
    assert got["bin"] == {"B": b"\x00\x01"} and got["bs"] == {"BS": [b"x"]}  # binary values took moto's way


def test_random_strings_keep_moto_s_alphabet_and_length() -> None:
    from moto.moto_api._internal import mock_random

    moto_fixes.install()
    import string

    for digits, lower in ((True, False), (False, False), (True, True)):
        drawn = mock_random.get_random_string(length=52, include_digits=digits, lower_case=lower)
        alphabet = (string.ascii_lowercase if lower else string.ascii_letters) + (string.digits if digits else "")
        assert len(drawn) == 52 and set(drawn) <= set(alphabet)
    assert len({mock_random.get_random_string(length=52) for _ in range(100)}) == 100
