"""The event log: per-build `seq` 1, 2, 3 ... with no gaps and no duplicates, across processes.

An event is written with `attribute_not_exists` on its (buildId, seq) key, so two writers can never
take the same number, and a writer only ever takes last+1, so there are no gaps. A state change
and the event that reports it can be committed in one transaction (`also=`), so an event is never
emitted without its change or twice for one change. The events table's stream is the outbox: every
recorded event reaches the webhook queue without a second write here.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

from shared.backoff import exponential_backoff_s
from shared.clock import SYSTEM_CLOCK, Clock
from shared.constants import TTL_ATTRIBUTE
from shared.dal.aws import client, from_item, query_items, to_item
from shared.dal.vendor_errors import (
    TRANSACTION_CANCELED,
    cancellation_codes,
    error_code,
    is_conditional_failure,
)
from shared.errors import EventTooLarge, StateConflict
from shared.ids import new_event_id
from shared.models.events import MAX_EVENT_BYTES, Event, EventType, event_data, json_size

_MAX_TRIES = 100
# A transaction DynamoDB cancelled for a conflict or a throttle (never retried by the SDK) is sent
# again after the one backoff (exponential, full jitter), at most this many times in all; then the
# error goes to the caller, whose message or request is retried in its own time.
CANCELLED_TRIES = 8
CANCELLED_BACKOFF_S = (0.01, 1.0)  # base, cap: waits of up to 10, 20, 40 ms ... 1 s; ~2.3 s at most in all
POLL_INTERVAL_S = 0.25  # how often `wait_for` looks at the log when nothing tells it of a write

# How `EventLog.wait_for` learns that a build's log grew: (buildId, after, timeout_s) -> grew.
# None (AWS): a bounded poll of the table. The local runtime installs one that wakes on each write.
Waiter = Callable[[str, int, float], bool]
_waiter: Waiter | None = None


def set_waiter(waiter: Waiter | None) -> None:
    global _waiter
    _waiter = waiter

# Delivery state written with each event: only events of a build with a webhook endpoint travel
# the outbox. The EventBridge Pipe filters the stream with this pattern; the local relay applies
# the same one (`outbox_wants`), so both runtimes forward exactly the same records.
DELIVERY_PENDING, DELIVERY_NONE = "pending", "none"
OUTBOX_FILTER: dict[str, Any] = {
    "eventName": ["INSERT"],
    "dynamodb": {"NewImage": {"delivery": {"S": [DELIVERY_PENDING]}}},
}


def outbox_wants(record: dict[str, Any]) -> bool:
    image = (record.get("dynamodb") or {}).get("NewImage") or {}
    return record.get("eventName") == "INSERT" and image.get("delivery", {}).get("S") == DELIVERY_PENDING


class EventLog:
    """`notify(build_id)` says whether the build's events are to be delivered as webhooks."""

    def __init__(
        self,
        table: str,
        notify: Callable[[str], bool] | None = None,
        ttl_seconds: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.table = table
        self.clock = clock  # what each event's timestamp reads
        self.ttl_seconds = ttl_seconds  # each event expires this long after it was recorded
        self._notify = notify
        self._last: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._turns: OrderedDict[str, threading.RLock] = OrderedDict()

    # --- writing ---------------------------------------------------------------------------------
    def record(
        self,
        build_id: str,
        event_type: EventType,
        data: BaseModel | dict[str, Any],
        *,
        also: list[dict[str, Any]] | None = None,
        notify: bool | None = None,
    ) -> Event:
        """Append one event. `also`: TransactWriteItems entries that must commit with it.

        Raises StateConflict when a condition in `also` fails (nothing is written then).
        """
        return self.record_many(build_id, [(event_type, data)], also=also, notify=notify)[0]

    def record_many(
        self,
        build_id: str,
        entries: list[tuple[EventType, BaseModel | dict[str, Any]]],
        *,
        also: list[dict[str, Any]] | None = None,
        notify: bool | None = None,
    ) -> list[Event]:
        """Append consecutive events in one transaction with `also` (a step and what it reports).

        Raises StateConflict, whose `details` lists the indexes into `also` whose condition failed,
        when a condition in `also` fails (nothing is written then).
        """
        payloads = [(event_type, event_data(event_type, data)) for event_type, data in entries]
        for event_type, payload in payloads:
            check_size(build_id, event_type, payload)
        if notify is None:
            notify = self._notify(build_id) if self._notify else True
        delivery = DELIVERY_PENDING if notify else DELIVERY_NONE
        kept: dict[str, Any] = {TTL_ATTRIBUTE: int(time.time()) + self.ttl_seconds} if self.ttl_seconds else {}
        ddb = client("dynamodb")
        count = len(payloads)
        with self.serial(build_id):  # writers in one process take turns instead of racing for seq
            seq = self._next_seq(build_id, refresh=False)
            probes = cancelled = 0
            for _ in range(_MAX_TRIES):
                now = self.clock.now_ms()
                events = [
                    Event(id=new_event_id(), type=t, buildId=build_id, seq=seq + i, timestamp=now, data=payload)
                    for i, (t, payload) in enumerate(payloads)
                ]
                puts = [
                    {
                        "TableName": self.table,
                        "Item": to_item({**event.model_dump(mode="json"), "delivery": delivery, **kept}),
                        "ConditionExpression": "attribute_not_exists(seq)",
                        # a failed condition returns what holds the seq: our own write, if an SDK
                        # retry follows a write whose response was lost
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                    for event in events
                ]
                try:
                    if also or count > 1:
                        ddb.transact_write_items(TransactItems=[*({"Put": put} for put in puts), *(also or [])])
                    else:
                        ddb.put_item(**puts[0])
                except Exception as exc:
                    codes = cancellation_codes(exc)
                    if is_conditional_failure(exc) or "ConditionalCheckFailed" in codes[:count]:
                        if _already_written(exc, events):  # it did commit: nothing to write again
                            self._remember(build_id, seq + count - 1)
                            return events
                        # seq is taken, so it exists: seq + 1 is still gap-free. After a few lost races
                        # (another process ran ahead) read the real end of the log instead of probing.
                        self._remember(build_id, seq)
                        probes += 1
                        seq = self._next_seq(build_id, refresh=probes % 4 == 0)
                        continue
                    failed = [i for i, c in enumerate(codes[count:]) if c == "ConditionalCheckFailed"]
                    if failed:
                        raise StateConflict(
                            f"{payloads[0][0]} not recorded: state changed", details={"failed": failed}
                        ) from None
                    if error_code(exc) == TRANSACTION_CANCELED:  # TransactionConflict, ThrottlingError
                        cancelled += 1
                        if cancelled >= CANCELLED_TRIES:
                            raise
                        base, cap = CANCELLED_BACKOFF_S
                        self.clock.sleep(exponential_backoff_s(cancelled, base=base, cap=cap, rng=random.random))
                        seq = self._next_seq(build_id, refresh=True)
                        continue
                    raise
                self._remember(build_id, seq + count - 1)
                return events
        raise RuntimeError(f"could not record {payloads[0][0]} for {build_id}: too much contention")

    def begin(self, build_id: str) -> None:
        """The build is new (its id just made): its log is empty. Its seq condition still holds
        every writer to the real end of the log."""
        self._remember(build_id, 0)

    @contextlib.contextmanager
    def serial(self, build_id: str) -> Iterator[None]:
        """Hold the build's in-process turn: its event writes (and a step that reads state before
        writing with them) do not race other threads of this process. Across processes, the
        conditions on seq and on state still decide."""
        with self._lock:
            turn = self._turns.get(build_id)
            if turn is None:
                turn = self._turns[build_id] = threading.RLock()
                while len(self._turns) > 2048:
                    self._turns.popitem(last=False)
            self._turns.move_to_end(build_id)
        with turn:
            yield

    def _next_seq(self, build_id: str, *, refresh: bool) -> int:
        with self._lock:
            cached = self._last.get(build_id)
        if cached is None or refresh:
            cached = self.last_seq(build_id)
            self._remember(build_id, cached)
        return cached + 1

    def _remember(self, build_id: str, seq: int) -> None:
        with self._lock:
            if self._last.get(build_id, 0) < seq or seq == 0:
                self._last[build_id] = seq
            self._last.move_to_end(build_id)
            while len(self._last) > 2048:
                self._last.popitem(last=False)

    # --- webhook delivery state ------------------------------------------------------------------
    def mark_delivery(self, build_id: str, seq: int, state: str, reason: str | None, at_ms: int) -> None:
        """Record how the event's webhook delivery ended (`delivered`, `gone`, `dead`, `no_endpoint`)."""
        from shared.dal.table import Update

        client("dynamodb").update_item(
            **Update()
            .set(delivery=state, deliveryReason=reason, deliveryAt=at_ms)
            .when("attribute_exists({seq})")
            .kwargs(self.table, {"buildId": build_id, "seq": seq})
        )

    def delivery_counts(self, build_id: str) -> dict[str, int]:
        """How many of the build's events are in each delivery state (`pending` when unmarked)."""
        counts: dict[str, int] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "buildId = :b",
            "ExpressionAttributeValues": {":b": {"S": build_id}},
            "ProjectionExpression": "delivery",
            "ConsistentRead": True,
        }
        for item in query_items(**kwargs):
            state = item.get("delivery", {}).get("S", "pending")
            counts[state] = counts.get(state, 0) + 1
        return counts

    # --- reading ---------------------------------------------------------------------------------
    def last_seq(self, build_id: str) -> int:
        resp = client("dynamodb").query(
            TableName=self.table,
            KeyConditionExpression="buildId = :b",
            ExpressionAttributeValues={":b": {"S": build_id}},
            ProjectionExpression="seq",
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = resp.get("Items") or []
        return int(items[0]["seq"]["N"]) if items else 0

    def wait_for(self, build_id: str, after: int, timeout_s: float) -> bool:
        """Block until the build's log holds an event after seq `after` (True) or `timeout_s` passes
        (False). Without a waiter this polls the table every POLL_INTERVAL_S, within the caller."""
        if _waiter is not None:
            return _waiter(build_id, after, timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.last_seq(build_id) > after:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(POLL_INTERVAL_S, left))

    def read(self, build_id: str, after: int = 0, limit: int = 100) -> tuple[list[Event], int | None]:
        """Events with seq > after, in order; `next` is the seq to pass as `after` for more."""
        resp = client("dynamodb").query(
            TableName=self.table,
            KeyConditionExpression="buildId = :b AND seq > :s",
            ExpressionAttributeValues={":b": {"S": build_id}, ":s": {"N": str(after)}},
            ScanIndexForward=True,
            Limit=limit,
            ConsistentRead=True,
        )
        events = [event_from_item(from_item(i)) for i in resp.get("Items") or []]
        # A page ends early at DynamoDB's 1 MB per query as well as at `limit`: either way, more may follow.
        more = bool(resp.get("LastEvaluatedKey"))
        return events, (events[-1].seq if more and events else None)


def check_size(build_id: str, event_type: EventType, payload: dict[str, Any]) -> None:
    """Refuse an event whose JSON would exceed MAX_EVENT_BYTES: nothing that big is ever written."""
    widest = Event(
        id=new_event_id(), type=event_type, buildId=build_id, seq=10**15, timestamp=10**15, data=payload
    )
    size = json_size(widest.model_dump(mode="json"))
    if size > MAX_EVENT_BYTES:
        raise EventTooLarge(
            f"{event_type} event of build {build_id} not recorded: its JSON is {size:,} bytes, over the "
            f"{MAX_EVENT_BYTES:,}-byte limit of every event",
            details={"type": str(event_type), "bytes": size, "limit": MAX_EVENT_BYTES},
        )


def _already_written(exc: Exception, events: list[Event]) -> bool:
    """Whether the seq a write found taken holds the very event it wrote (the write committed, its
    response was lost, and the SDK sent it again), per the failed condition's ALL_OLD item."""
    response = getattr(exc, "response", None) or {}
    reasons = response.get("CancellationReasons")
    found = [r.get("Item") for r in reasons[: len(events)]] if reasons else [response.get("Item")]
    return any((item or {}).get("id", {}).get("S") == event.id for item, event in zip(found, events, strict=False))


def event_from_stream_image(image: dict[str, Any]) -> Event:
    """The event in a stream record's `NewImage` (DynamoDB attribute values)."""
    return event_from_item(from_item(image))


def event_from_item(item: dict[str, Any]) -> Event:
    fields = {k: item[k] for k in ("id", "type", "buildId", "seq", "timestamp", "data") if k in item}
    return Event.model_validate(fields)
