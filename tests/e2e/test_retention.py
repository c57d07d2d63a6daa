"""RECORD_TTL_DAYS: a build, its tasks, its events, the cache entries it made and its files expire
together (DynamoDB TTL on `expiresAt`, the bucket's lifecycle on `builds/`), in the local runtime as
on AWS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from local.runtime import LocalRuntime
from tests.e2e.test_engine import Engine, end_of, fast
from tests.helpers import task

pytestmark = pytest.mark.e2e

DAYS = 7


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    script = tmp_path_factory.mktemp("retention") / "script.json"
    script.write_text("{}")
    with LocalRuntime(env={"RECORD_TTL_DAYS": str(DAYS), "STEPWISE_MOCK_SCRIPT": str(script)}) as rt:
        yield Engine(rt, script)


def items(table: str, **key: str) -> list[dict[str, Any]]:
    from shared.dal.aws import client, from_item

    ddb = client("dynamodb")
    if key:
        (name, value), = key.items()
        found = ddb.query(TableName=table, KeyConditionExpression=f"{name} = :v",
                          ExpressionAttributeValues={":v": {"S": value}})["Items"]
    else:
        found = ddb.scan(TableName=table)["Items"]
    return [from_item(i) for i in found]


def test_every_record_of_a_build_expires_after_record_ttl_days(engine: Engine) -> None:
    from shared.logic.services import services

    plan = [task("a", target="a.txt"), task("b", "a", target="b.txt")]
    bid = engine.build("retention", {"plan": {"tasks": plan}, **fast()},
                       files=[{"path": "README.md", "content": "hi\n"}])
    assert end_of(engine.wait_end(bid))["type"] == "build_completed"
    settings = services().settings
    expected = time.time() + DAYS * 86_400
    records = {
        "builds": items(settings.builds_table, buildId=bid),
        "tasks": items(settings.tasks_table, buildId=bid),
        "events": items(settings.events_table, buildId=bid),
        "cache": items(settings.cache_table),
    }
    for kind, found in records.items():
        assert found, kind
        for record in found:
            ttl = record.get("expiresAt")
            assert ttl is not None, (kind, record)
            if kind == "cache":  # an hour (TASK_CACHE_TTL_SECONDS), never beyond the records' retention
                assert time.time() < ttl <= expected + 5
            else:
                assert abs(int(ttl) - expected) < 300, (kind, ttl)


def test_tables_and_bucket_expire_with_the_same_retention(engine: Engine) -> None:
    from shared.dal.aws import client
    from shared.logic.services import services

    settings = services().settings
    for table in (settings.builds_table, settings.tasks_table, settings.events_table, settings.cache_table):
        ttl = client("dynamodb").describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expiresAt"), table
    [rule] = client("s3").get_bucket_lifecycle_configuration(Bucket=settings.files_bucket)["Rules"]
    assert rule["Filter"]["Prefix"] == "builds/" and rule["Expiration"]["Days"] == DAYS
