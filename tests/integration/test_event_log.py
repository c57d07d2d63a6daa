"""The event log (shared.dal.events) on moto: per-build seq 1, 2, 3 ... with no gaps and no
duplicates, however many writers there are (docs/api.md#events)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from shared.clock import Clock
from shared.dal.aws import client
from shared.dal.events import EventLog
from shared.dal.table import Update
from shared.errors import StateConflict
from shared.models.events import EventType

STATE_TABLE = "test-state"


def _started(i: int) -> dict:
    return {"taskId": f"t{i}", "taskName": f"Task {i}", "description": "", "attempt": 1}


def _all(log: EventLog, build_id: str):
    events, _ = log.read(build_id, after=0, limit=10_000)
    return events


def _assert_gap_free(events, count: int) -> None:
    assert [e.seq for e in events] == list(range(1, count + 1))
    assert len({e.id for e in events}) == count


@pytest.fixture
def state_table(aws) -> str:
    client("dynamodb").create_table(
        TableName=STATE_TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "buildId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "buildId", "AttributeType": "S"}],
    )
    return STATE_TABLE


def _put_state(build_id: str, status: str) -> None:
    client("dynamodb").put_item(TableName=STATE_TABLE, Item={"buildId": {"S": build_id}, "status": {"S": status}})


def _status(build_id: str) -> str:
    item = client("dynamodb").get_item(TableName=STATE_TABLE, Key={"buildId": {"S": build_id}})["Item"]
    return item["status"]["S"]


def _transition(build_id: str, src: str, dst: str) -> dict:
    return Update().set(status=dst).when("{status} = :src", src=src).tx(STATE_TABLE, {"buildId": build_id})


def test_first_event_has_seq_one_and_a_proper_envelope(events_table):
    log = EventLog(events_table)
    before = int(time.time() * 1000)
    event = log.record("bld_a", EventType.build_started, {"prompt": "hi", "framework": None})
    assert event.seq == 1
    assert event.id.startswith("evt_") and len(event.id) == 4 + 26
    assert before <= event.timestamp <= int(time.time() * 1000)
    [stored] = _all(log, "bld_a")
    assert stored == event


def test_many_threads_recording_for_one_build_get_gap_free_seqs(events_table):
    log = EventLog(events_table)
    threads, per_thread = 12, 10
    barrier = threading.Barrier(threads)

    def writer(n: int) -> list[int]:
        barrier.wait()
        return [log.record("bld_busy", EventType.task_started, _started(n * 100 + i)).seq for i in range(per_thread)]

    with ThreadPoolExecutor(threads) as pool:
        returned = [seq for seqs in pool.map(writer, range(threads)) for seq in seqs]
    total = threads * per_thread
    events = _all(log, "bld_busy")
    _assert_gap_free(events, total)
    assert sorted(returned) == list(range(1, total + 1))  # each writer was told its own seq
    assert {e.data["taskId"] for e in events} == {f"t{n * 100 + i}" for n in range(threads) for i in range(per_thread)}


def test_two_processes_interleaving_share_one_sequence(events_table):
    first, second = EventLog(events_table), EventLog(events_table)  # separate caches, like two Lambdas
    for i in range(6):
        (first if i % 2 == 0 else second).record("bld_two", EventType.task_started, _started(i))
    first.record("bld_two", EventType.task_started, _started(6))
    first.record("bld_two", EventType.task_started, _started(7))
    second.record("bld_two", EventType.task_started, _started(8))  # its cache is two behind
    _assert_gap_free(_all(first, "bld_two"), 9)


def test_two_processes_writing_at_once(events_table):
    logs = [EventLog(events_table) for _ in range(4)]
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(8):
            logs[n % 4].record("bld_procs", EventType.task_started, _started(n * 10 + i))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    _assert_gap_free(_all(logs[0], "bld_procs"), 64)


def test_each_build_has_its_own_sequence(events_table):
    log = EventLog(events_table)
    for i in range(3):
        log.record("bld_x", EventType.task_started, _started(i))
        log.record("bld_y", EventType.task_started, _started(i))
    log.record("bld_y", EventType.task_started, _started(9))
    _assert_gap_free(_all(log, "bld_x"), 3)
    _assert_gap_free(_all(log, "bld_y"), 4)


def test_event_and_state_change_commit_together(events_table, state_table):
    log = EventLog(events_table)
    _put_state("bld_tx", "planning")
    log.record("bld_tx", EventType.build_started, {"prompt": "p", "framework": None})
    event = log.record(
        "bld_tx", EventType.build_cancelled, {"reason": "user"}, also=[_transition("bld_tx", "planning", "cancelled")]
    )
    assert event.seq == 2
    assert _status("bld_tx") == "cancelled"


def test_failed_condition_writes_nothing_and_takes_no_seq(events_table, state_table):
    log = EventLog(events_table)
    _put_state("bld_lost", "completed")
    log.record("bld_lost", EventType.build_started, {"prompt": "p", "framework": None})
    with pytest.raises(StateConflict):
        log.record(
            "bld_lost",
            EventType.build_cancelled,
            {"reason": "user"},
            also=[_transition("bld_lost", "executing", "cancelled")],
        )
    assert [e.type for e in _all(log, "bld_lost")] == [EventType.build_started]
    assert _status("bld_lost") == "completed"
    assert EventLog(events_table).last_seq("bld_lost") == 1
    # the next event still follows without a gap, from this writer and from a fresh one
    assert log.record("bld_lost", EventType.task_started, _started(1)).seq == 2
    assert EventLog(events_table).record("bld_lost", EventType.task_started, _started(2)).seq == 3


def test_racing_state_changes_report_exactly_one_event(events_table, state_table):
    """Ten workers try the same transition; one wins, its event is the only one, and no seq is lost."""
    _put_state("bld_race", "executing")
    barrier = threading.Barrier(10)
    outcomes: list[str] = []

    def attempt(n: int) -> None:
        log = EventLog(events_table)
        barrier.wait()
        try:
            log.record(
                "bld_race",
                EventType.build_cancelled,
                {"reason": f"worker {n}"},
                also=[_transition("bld_race", "executing", "cancelled")],
            )
            outcomes.append("won")
        except StateConflict:
            outcomes.append("lost")

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(attempt, range(10)))
    assert sorted(outcomes) == ["lost"] * 9 + ["won"]
    events = _all(EventLog(events_table), "bld_race")
    _assert_gap_free(events, 1)
    assert events[0].type == EventType.build_cancelled


def test_concurrent_writers_with_and_without_transactions_stay_gap_free(events_table, state_table):
    for i in range(30):
        _put_state(f"bld_mix#{i}", "a")
    barrier = threading.Barrier(6)

    def plain(n: int) -> None:
        log = EventLog(events_table)
        barrier.wait()
        for i in range(10):
            log.record("bld_mix", EventType.task_started, _started(n * 100 + i))

    def transactional(n: int) -> None:
        log = EventLog(events_table)
        barrier.wait()
        for i in range(10):
            key = f"bld_mix#{(n - 3) * 10 + i}"  # a state item of its own, no condition
            log.record(
                "bld_mix",
                EventType.task_started,
                _started(n * 100 + i),
                also=[Update().set(touched=n).tx(STATE_TABLE, {"buildId": key})],
            )

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda n: (plain if n < 3 else transactional)(n), range(6)))
    _assert_gap_free(_all(EventLog(events_table), "bld_mix"), 60)


def test_invalid_event_data_is_refused_before_anything_is_written(events_table):
    log = EventLog(events_table)
    with pytest.raises(ValueError):
        log.record("bld_bad", EventType.task_skipped, {"taskId": "a"})  # no dependency
    assert log.last_seq("bld_bad") == 0
    assert log.record("bld_bad", EventType.task_skipped, {"taskId": "a", "dependency": "b"}).seq == 1


def test_read_pages_in_order(events_table):
    log = EventLog(events_table)
    for i in range(25):
        log.record("bld_pages", EventType.task_started, _started(i))
    seen, after, pages = [], 0, 0
    while True:
        events, nxt = log.read("bld_pages", after=after, limit=10)
        pages += 1
        assert all(e.seq > after for e in events)
        seen.extend(events)
        if nxt is None:
            break
        assert nxt == events[-1].seq
        after = nxt
    assert pages == 3
    _assert_gap_free(seen, 25)
    assert [e.data["taskId"] for e in seen] == [f"t{i}" for i in range(25)]
    tail, nxt = log.read("bld_pages", after=20, limit=100)
    assert [e.seq for e in tail] == [21, 22, 23, 24, 25] and nxt is None
    assert log.read("bld_pages", after=25, limit=10) == ([], None)
    assert log.read("bld_nothing", after=0, limit=10) == ([], None)


def test_record_many_takes_consecutive_seqs_in_one_commit(events_table, state_table):
    log = EventLog(events_table)
    log.record("bld_many", EventType.task_started, _started(0))
    _put_state("bld_many", "a")
    events = log.record_many(
        "bld_many",
        [(EventType.task_started, _started(1)), (EventType.task_started, _started(2))],
        also=[_transition("bld_many", "a", "b")],
    )
    assert [e.seq for e in events] == [2, 3] and events[0].timestamp == events[1].timestamp
    assert _status("bld_many") == "b"
    _assert_gap_free(_all(log, "bld_many"), 3)


def test_record_many_names_which_condition_failed_and_writes_nothing(events_table, state_table):
    log = EventLog(events_table)
    _put_state("bld_which", "a")
    with pytest.raises(StateConflict) as caught:
        log.record_many(
            "bld_which",
            [(EventType.task_started, _started(1)), (EventType.task_started, _started(2))],
            also=[_transition("bld_which", "a", "b"), _transition("bld_which_other", "x", "y")],
        )
    assert caught.value.details == {"failed": [1]}
    assert _all(log, "bld_which") == [] and _status("bld_which") == "a"
    assert log.record("bld_which", EventType.task_started, _started(3)).seq == 1  # no seq was taken


def _big_plan_generated(n: int) -> dict:
    tasks = [{"id": f"t{i}", "name": "N", "type": "create_file", "description": "d" * 2000, "estimatedDuration": 10, "dependsOn": []}
             for i in range(n)]
    return {"planId": "p", "taskCount": n, "estimatedDuration": 1.0, "recovery": None, "tasks": tasks}


def test_a_page_cut_short_by_dynamodbs_megabyte_still_says_more_follow(events_table):
    log = EventLog(events_table)
    for _ in range(20):  # each near 64 KB: 20 of them pass the 1 MB a query returns at most
        log.record("bld_mb", EventType.plan_generated, _big_plan_generated(100))
    first, nxt = log.read("bld_mb", after=0, limit=100)
    assert 0 < len(first) < 20 and nxt == first[-1].seq
    rest, end = log.read("bld_mb", after=nxt, limit=100)
    assert end is None
    _assert_gap_free(first + rest, 20)


def test_an_event_over_the_size_bound_is_refused_and_nothing_is_written(events_table):
    from shared.errors import EventTooLarge
    from shared.models.events import MAX_EVENT_BYTES

    log = EventLog(events_table)
    with pytest.raises(EventTooLarge, match=f"over the {MAX_EVENT_BYTES:,}-byte limit"):
        log.record("bld_huge", EventType.build_failed, {"reason": "planning_failed", "message": "x" * MAX_EVENT_BYTES})
    assert log.last_seq("bld_huge") == 0
    # a big plan is cut to fit instead: recorded, marked, and read back as written
    event = log.record("bld_huge", EventType.plan_generated, _big_plan_generated(1000))
    assert event.seq == 1 and event.data["truncated"] is True
    assert event.data["tasksOmitted"] == 1000 - len(event.data["tasks"])
    assert log.read("bld_huge")[0] == [event]


class _Sleeps(Clock):
    """A clock whose waits are recorded instead of slept."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def _cancel_transactions(monkeypatch, times: int) -> list[int]:
    """The next `times` TransactWriteItems sends are answered, in moto's place, as DynamoDB answers a
    throttled transaction (moto never does); returns a one-item list counting them."""
    from botocore.awsrequest import AWSResponse
    from moto.core.botocore_stubber import BotocoreStubber, MockRawResponse

    answered = [0]
    body = json.dumps({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons [ThrottlingError, None]",
        "CancellationReasons": [{"Code": "ThrottlingError", "Message": "throttled"}, {"Code": "None"}],
    }).encode()
    moto_answers = BotocoreStubber.__call__

    def send(stubber, event_name: str, request, **kwargs):
        if not event_name.endswith(".TransactWriteItems") or answered[0] >= times:
            return moto_answers(stubber, event_name, request, **kwargs)
        answered[0] += 1
        headers = {"x-amzn-RequestId": "r", "Content-Type": "application/x-amz-json-1.0", "Content-Length": str(len(body))}
        return AWSResponse(request.url, 400, headers, MockRawResponse(body))

    monkeypatch.setattr(BotocoreStubber, "__call__", send)
    return answered


def test_a_throttled_event_transaction_backs_off_exponentially_and_gives_up_after_a_bounded_number_of_tries(
    events_table, state_table, monkeypatch
):
    import random

    from shared.dal import events as events_module

    monkeypatch.setattr(random, "random", lambda: 1.0)  # the jitter's top: each wait is its cap
    clock = _Sleeps()
    log = EventLog(events_table, clock=clock)
    _put_state("bld_throttled", "planning")
    answered = _cancel_transactions(monkeypatch, times=3)
    log.record("bld_throttled", EventType.build_cancelled, {"reason": "user"}, also=[_transition("bld_throttled", "planning", "cancelled")])
    base, cap = events_module.CANCELLED_BACKOFF_S
    assert clock.waits == [base, 2 * base, 4 * base] and answered[0] == 3  # one wait per cancelled send
    assert [e.type for e in _all(log, "bld_throttled")] == [EventType.build_cancelled]  # written once

    clock.waits.clear()
    answered = _cancel_transactions(monkeypatch, times=10_000)  # it never lets up: the caller gets the error
    with pytest.raises(ClientError) as raised:
        log.record("bld_throttled", EventType.build_failed, {"reason": "timed_out", "message": "x"},
                   also=[_transition("bld_throttled", "cancelled", "failed")])
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert answered[0] == events_module.CANCELLED_TRIES and len(clock.waits) == events_module.CANCELLED_TRIES - 1
    assert clock.waits == [min(cap, base * 2**i) for i in range(events_module.CANCELLED_TRIES - 1)]
    assert len(_all(log, "bld_throttled")) == 1 and _status("bld_throttled") == "cancelled"


def test_a_single_event_whose_response_was_lost_and_sent_again_is_written_once(events_table):
    """The put commits, its response is lost, and the SDK sends the same request again: the second
    send finds the seq taken by the very event it carries, and nothing is written twice."""
    ddb = client("dynamodb")
    sent: dict = {}

    def stash(params, **_):
        sent.setdefault("params", dict(params))

    def lost(**_):
        if not sent.get("again"):
            sent["again"] = True
            ddb.put_item(**sent["params"])  # its answer (the condition failed) is what the caller sees

    ddb.meta.events.register("before-parameter-build.dynamodb.PutItem", stash)
    ddb.meta.events.register("after-call.dynamodb.PutItem", lost)
    try:
        log = EventLog(events_table)
        event = log.record("bld_resent", EventType.task_started, _started(1))
    finally:
        ddb.meta.events.unregister("before-parameter-build.dynamodb.PutItem", stash)
        ddb.meta.events.unregister("after-call.dynamodb.PutItem", lost)
    assert sent["again"] and event.seq == 1
    assert [(e.seq, e.id) for e in _all(log, "bld_resent")] == [(1, event.id)]
    assert log.record("bld_resent", EventType.task_started, _started(2)).seq == 2
