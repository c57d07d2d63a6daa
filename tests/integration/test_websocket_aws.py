"""The AWS WebSocket pieces on moto: the connection handler's routes, the connections table, replay,
and the broadcaster fed with real stream records, pushing through the real Management API client.

moto implements PostToConnection (it appends each frame to the connection's data) but never answers
410 GoneException; the one fake here is that answer, raised from moto's backend for the connection
ids a test names, so the client, its error parsing and our handling of it are still the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shared.clock import Clock
from shared.dal.aws import client
from shared.dal.connections import BY_CONNECTION_INDEX
from shared.dal.events import EventLog
from shared.models.events import EventType
from tests.helpers import ACCOUNT, REGION

CALLBACK = "https://abc123.execute-api.us-east-1.amazonaws.com/v1"
ALICE, BOB = "alice-sub", "bob-sub"


@pytest.fixture
def tables(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    from shared.logic import live_delivery

    ddb = client("dynamodb")
    ddb.create_table(
        TableName="t-builds",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "buildId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "buildId", "AttributeType": "S"}],
    )
    events = ddb.create_table(
        TableName="t-events",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "buildId", "KeyType": "HASH"}, {"AttributeName": "seq", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "buildId", "AttributeType": "S"},
            {"AttributeName": "seq", "AttributeType": "N"},
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    ddb.create_table(
        TableName="t-connections",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "connectionId", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": BY_CONNECTION_INDEX,
                "KeySchema": [{"AttributeName": "connectionId", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    for key, value in {
        "BUILDS_TABLE": "t-builds",
        "EVENTS_TABLE": "t-events",
        "CONNECTIONS_TABLE": "t-connections",
        "WEBSOCKET_CALLBACK_URL": CALLBACK,
    }.items():
        monkeypatch.setenv(key, value)
    live_delivery.live_services.cache_clear()
    yield {"stream": events["TableDescription"]["LatestStreamArn"]}
    live_delivery.live_services.cache_clear()


class Stream:
    """Reads the events table's stream from where it was last read, as the event source mapping does."""

    def __init__(self, arn: str) -> None:
        streams = client("dynamodbstreams")
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        self.iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]

    def read(self) -> list[dict[str, Any]]:
        resp = client("dynamodbstreams").get_records(ShardIterator=self.iterator)
        self.iterator = resp["NextShardIterator"]
        return json.loads(json.dumps(resp["Records"], default=str))  # as the Lambda event carries them


def _backend() -> Any:
    from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

    return apigatewaymanagementapi_backends[ACCOUNT][REGION]


def frames(connection_id: str) -> list[dict[str, Any]]:
    """What the client received, frame by frame (moto concatenates them)."""
    data = _backend().connections[connection_id].data.decode() if connection_id in _backend().connections else ""
    out, pos, decoder = [], 0, json.JSONDecoder()
    while pos < len(data):
        frame, pos = decoder.raw_decode(data, pos)
        out.append(frame)
    return out


def _build(build_id: str, owner: str) -> None:
    client("dynamodb").put_item(
        TableName="t-builds",
        Item={
            "buildId": {"S": build_id},
            "ownerId": {"S": owner},
            "status": {"S": "executing"},
            "prompt": {"S": "a landing page"},
            "createdAt": {"N": "1700000000000"},
        },
    )


def _record(log: EventLog, build_id: str, n: int) -> None:
    for _ in range(n):
        log.record(
            build_id,
            EventType.task_started,
            {"taskId": "t", "taskName": "T", "description": "", "attempt": 1},
        )


def _route(route: str, connection_id: str, owner: str | None, body: str | None = None) -> dict[str, Any]:
    from functions.ws_connection.handler import handler
    from tests.integration.quiet import lambda_context

    request: dict[str, Any] = {"routeKey": route, "connectionId": connection_id, "stage": "v1"}
    if owner:
        request["authorizer"] = {"principalId": owner, "sub": owner}
    return handler(
        {"requestContext": request, "body": body, "isBase64Encoded": False}, lambda_context("ws_connection", 29)
    )


def _send(connection_id: str, owner: str, **frame: Any) -> None:
    assert _route("$default", connection_id, owner, json.dumps(frame)) == {"statusCode": 200}


def _broadcast(stream: Stream) -> dict[str, Any]:
    from functions.ws_broadcast.handler import handler
    from tests.integration.quiet import lambda_context

    return handler({"Records": stream.read()}, lambda_context("ws_broadcast", 60))


def _seqs(connection_id: str) -> list[int]:
    return [f["seq"] for f in frames(connection_id) if "seq" in f and "type" in f and f["type"] != "error"]


def test_subscribe_replays_then_the_broadcaster_pushes_live_in_order_once(tables: dict[str, str]) -> None:
    log, stream = EventLog("t-events"), Stream(tables["stream"])
    _build("bld_a", ALICE)
    _record(log, "bld_a", 5)
    _broadcast(stream)  # nobody listens yet: nothing is pushed, nothing fails

    assert _route("$connect", "c1", ALICE) == {"statusCode": 200}
    _send("c1", ALICE, action="subscribe", buildId="bld_a", after=2)
    got = frames("c1")
    assert got[0] == {"type": "subscribed", "buildId": "bld_a", "lastSeq": 5}
    assert _seqs("c1") == [3, 4, 5]

    _record(log, "bld_a", 3)
    assert _broadcast(stream) == {"batchItemFailures": []}
    assert _seqs("c1") == [3, 4, 5, 6, 7, 8]
    envelope = frames("c1")[-1]
    assert set(envelope) == {"id", "type", "buildId", "seq", "timestamp", "data"}
    assert envelope == log.read("bld_a", after=7)[0][0].model_dump(mode="json")

    # the stream redelivers a batch (a retry): nothing is pushed twice
    again = Stream(tables["stream"])
    _broadcast(again)
    assert _seqs("c1") == [3, 4, 5, 6, 7, 8]


def test_an_event_recorded_during_the_replay_is_pushed_once_after_it(
    tables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the lease exists for: while the subscribe handler replays, a new event is recorded
    and broadcast. The broadcast finds the lease taken and skips; the subscribe handler, after
    releasing, sees the newer event in the log and pushes it. Exactly once, in order."""
    from shared.dal.sockets import ConnectionPoster

    log, stream = EventLog("t-events"), Stream(tables["stream"])
    _build("bld_r", ALICE)
    _record(log, "bld_r", 4)
    stream.read()
    _route("$connect", "c1", ALICE)
    original = ConnectionPoster.post
    raced: list[int] = []

    def post(self: ConnectionPoster, connection_id: str, text: str) -> None:
        original(self, connection_id, text)
        if '"seq":2,' in text and not raced:  # mid-replay
            raced.append(1)
            _record(log, "bld_r", 2)
            assert _broadcast(stream) == {"batchItemFailures": []}

    monkeypatch.setattr(ConnectionPoster, "post", post)
    _send("c1", ALICE, action="subscribe", buildId="bld_r", after=0)
    assert raced
    assert _seqs("c1") == [1, 2, 3, 4, 5, 6]
    assert frames("c1")[0]["lastSeq"] == 4


def test_another_users_build_and_a_missing_one_answer_alike(tables: dict[str, str]) -> None:
    log = EventLog("t-events")
    _build("bld_a", ALICE)
    _record(log, "bld_a", 2)
    _route("$connect", "cb", BOB)
    _send("cb", BOB, action="subscribe", buildId="bld_a", after=0)
    _send("cb", BOB, action="subscribe", buildId="bld_missing", after=0)
    other, missing = frames("cb")
    assert other == {"type": "error", "code": "not_found", "buildId": "bld_a"}
    assert missing == {**other, "buildId": "bld_missing"}
    from shared.dal.connections import ConnectionStore

    assert ConnectionStore("t-connections").subscribers("bld_a") == []


def test_ping_unsubscribe_and_bad_frames(tables: dict[str, str]) -> None:
    log, stream = EventLog("t-events"), Stream(tables["stream"])
    _build("bld_a", ALICE)
    _route("$connect", "c1", ALICE)
    _send("c1", ALICE, action="ping")
    _send("c1", ALICE, action="subscribe", buildId="bld_a")
    _send("c1", ALICE, action="unsubscribe", buildId="bld_a")
    _record(log, "bld_a", 2)
    _broadcast(stream)
    assert _route("$default", "c1", ALICE, "{oops") == {"statusCode": 200}
    got = frames("c1")
    assert got[:3] == [
        {"type": "pong"},
        {"type": "subscribed", "buildId": "bld_a", "lastSeq": 0},
        {"type": "unsubscribed", "buildId": "bld_a"},
    ]
    assert got[3]["code"] == "invalid_request" and got[3]["details"] == [{"field": "frame"}]
    assert len(got) == 4  # nothing of the build after the unsubscribe


def test_a_gone_client_is_forgotten_and_others_still_get_their_events(
    tables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.core.exceptions import JsonRESTError

    from shared.dal.connections import ConnectionStore

    class Gone(JsonRESTError):
        code = 410

        def __init__(self) -> None:
            super().__init__("GoneException", "connection is gone")

    log, stream = EventLog("t-events"), Stream(tables["stream"])
    _build("bld_a", ALICE)
    for cid in ("alive", "gone"):
        _route("$connect", cid, ALICE)
        _send(cid, ALICE, action="subscribe", buildId="bld_a")
    backend = type(_backend())
    original = backend.post_to_connection

    def post_to_connection(self: Any, data: bytes, connection_id: str) -> None:
        if connection_id == "gone":
            raise Gone()
        original(self, data, connection_id)

    monkeypatch.setattr(backend, "post_to_connection", post_to_connection)
    _record(log, "bld_a", 3)
    assert _broadcast(stream) == {"batchItemFailures": []}
    store = ConnectionStore("t-connections")
    assert store.subscribers("bld_a") == ["alive"]
    assert store.owner("gone") is None and store.owner("alive") == ALICE
    assert _seqs("alive") == [1, 2, 3]


def test_disconnect_forgets_the_connection_and_its_subscriptions(tables: dict[str, str]) -> None:
    from shared.dal.connections import ConnectionStore

    store = ConnectionStore("t-connections")
    for build_id in ("bld_a", "bld_b"):
        _build(build_id, ALICE)
    _route("$connect", "c1", ALICE)
    _send("c1", ALICE, action="subscribe", buildId="bld_a")
    _send("c1", ALICE, action="subscribe", buildId="bld_b")
    assert store.subscription_count("c1") == 2
    item = client("dynamodb").get_item(TableName="t-connections", Key={"pk": {"S": "bld_a"}, "sk": {"S": "c1"}})
    assert int(item["Item"]["expiresAt"]["N"]) > 0  # every item expires (the table's TTL)
    assert _route("$disconnect", "c1", None) == {"statusCode": 200}
    assert client("dynamodb").scan(TableName="t-connections")["Items"] == []


def test_connect_without_an_authorized_caller_is_refused(tables: dict[str, str]) -> None:
    assert _route("$connect", "c1", None) == {"statusCode": 401}
    assert client("dynamodb").scan(TableName="t-connections")["Items"] == []


def test_a_broadcast_that_fails_names_its_first_record_for_the_retry(
    tables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.dal.sockets import ConnectionPoster

    log, stream = EventLog("t-events"), Stream(tables["stream"])
    _build("bld_a", ALICE)
    _route("$connect", "c1", ALICE)
    _send("c1", ALICE, action="subscribe", buildId="bld_a")
    _record(log, "bld_a", 3)
    records = stream.read()

    def broken(self: ConnectionPoster, connection_id: str, text: str) -> None:
        raise RuntimeError("throttled")

    monkeypatch.setattr(ConnectionPoster, "post", broken)
    from functions.ws_broadcast.handler import handler
    from tests.integration.quiet import lambda_context

    first = min(records, key=lambda r: int(r["dynamodb"]["SequenceNumber"]))["dynamodb"]["SequenceNumber"]
    assert handler({"Records": records}, lambda_context("ws_broadcast", 60)) == {
        "batchItemFailures": [{"itemIdentifier": first}]
    }
    monkeypatch.undo()
    monkeypatch.setenv("CONNECTIONS_TABLE", "t-connections")
    handler({"Records": records}, lambda_context("ws_broadcast", 60))  # the retry delivers, from where it stopped
    assert _seqs("c1") == [1, 2, 3]


def test_a_replay_that_fails_tells_the_client_to_resubscribe_and_a_resubscribe_resumes(
    tables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog("t-events")
    _build("bld_a", ALICE)
    _record(log, "bld_a", 3)
    _route("$connect", "c1", ALICE)
    original = EventLog.read
    monkeypatch.setattr(EventLog, "read", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("throttled")))
    _send("c1", ALICE, action="subscribe", buildId="bld_a", after=0)
    assert frames("c1")[-1]["code"] == "subscription_stopped" and frames("c1")[-1]["buildId"] == "bld_a"
    monkeypatch.setattr(EventLog, "read", original)
    _send("c1", ALICE, action="subscribe", buildId="bld_a", after=0)
    assert _seqs("c1") == [1, 2, 3]


class SlowClock(Clock):
    """Each look at the monotonic clock is one second later: a function runs out of time after a few pushes."""

    def __init__(self) -> None:
        self.ticks = iter(range(10**6))

    def monotonic(self) -> float:
        return float(next(self.ticks))


@pytest.fixture
def slow_clock(tables: dict[str, str]) -> None:
    from shared.logic import live_delivery

    live_delivery.live_services().clock = SlowClock()


def test_a_replay_longer_than_the_function_may_run_stops_and_resumes_without_repeats(
    tables: dict[str, str], slow_clock: None
) -> None:
    from shared.logic import live_delivery

    log = EventLog("t-events")
    _build("bld_a", ALICE)
    _record(log, "bld_a", 12)
    _route("$connect", "c1", ALICE)
    live_delivery.receive("c1", ALICE, json.dumps({"action": "subscribe", "buildId": "bld_a"}), time_left_ms=10_000)
    first = _seqs("c1")
    assert 0 < len(first) < 12
    assert frames("c1")[-1] == {**frames("c1")[-1], "type": "error", "code": "subscription_stopped", "buildId": "bld_a"}
    after = first[-1]
    _send("c1", ALICE, action="subscribe", buildId="bld_a", after=after)  # what a client does next
    assert _seqs("c1") == list(range(1, 13))


def test_a_broadcast_out_of_time_hands_its_records_back_for_the_retry(tables: dict[str, str], slow_clock: None) -> None:
    from shared.logic import live_delivery

    log, stream = EventLog("t-events"), Stream(tables["stream"])
    _build("bld_a", ALICE)
    _route("$connect", "c1", ALICE)
    _send("c1", ALICE, action="subscribe", buildId="bld_a")
    _record(log, "bld_a", 12)
    records = stream.read()
    failed = live_delivery.broadcast(records, time_left_ms=10_000)
    first = min(records, key=lambda r: int(r["dynamodb"]["SequenceNumber"]))["dynamodb"]["SequenceNumber"]
    assert failed == [first]
    assert 0 < len(_seqs("c1")) < 12
    assert live_delivery.broadcast(records) == []  # the stream's retry of the same batch
    assert _seqs("c1") == list(range(1, 13))
