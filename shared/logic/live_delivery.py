"""Live events on AWS: the WebSocket API's `$connect`, messages and `$disconnect`, and the
broadcaster fed by the events table's stream (the same outbox that feeds webhooks).

Order and exactly-once per subscription come from one rule: only the holder of a subscription's
lease pushes to it, starting after its `delivered` seq, reading any gap from the event log. The
subscribe handler holds the lease while it sends `subscribed` and the replay; a broadcast that finds
the lease taken skips that subscription, and every holder, once it has released, looks at the log
again and takes the lease back if something newer was recorded meanwhile. So no event is missed
and none is pushed twice, whichever of the two runs first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from shared.clock import SYSTEM_CLOCK, Clock
from shared.dal.builds import BuildStore
from shared.dal.connections import ConnectionStore
from shared.dal.events import EventLog, event_from_stream_image
from shared.dal.sockets import ConnectionGone, ConnectionPoster
from shared.errors import InvalidInput, NotFound
from shared.live import encode_frame, event_frame
from shared.models import live as frames
from shared.models.events import Event
from shared.observability import count, logger
from shared.settings import Settings, get_settings

BROADCAST_FAILED_METRIC = "live.broadcast_failed"
LEASE_MS = 90_000  # longer than any function that holds one may run: a live holder never loses it
REPLAY_PAGE = 100
SUBSCRIBE_WAIT_S = 2.0  # how long a resubscribe waits for a broadcast in progress to finish
TIME_MARGIN_S = 5.0  # stop pushing this long before the function's time runs out (progress is saved)


class OutOfTime(Exception):
    """The function must stop pushing now; what was pushed is recorded when the lease is released."""


def deadline_of(svc: LiveServices, time_left_ms: int | None) -> float:
    """When to stop pushing, on the services' monotonic clock."""
    return svc.clock.monotonic() + (time_left_ms / 1000 - TIME_MARGIN_S if time_left_ms is not None else 1e9)


@dataclass
class LiveServices:
    settings: Settings
    clock: Clock = SYSTEM_CLOCK  # what leases and connection times are written in, deadlines measured by

    @cached_property
    def connections(self) -> ConnectionStore:
        return ConnectionStore(self.settings.connections_table)

    @cached_property
    def poster(self) -> ConnectionPoster:
        return ConnectionPoster(self.settings.websocket_callback_url)

    @cached_property
    def events(self) -> EventLog:
        return EventLog(self.settings.events_table)

    @cached_property
    def builds(self) -> BuildStore:
        return BuildStore(self.settings.builds_table)


@lru_cache(maxsize=1)
def live_services() -> LiveServices:
    return LiveServices(get_settings())


# --- $connect / $disconnect ----------------------------------------------------------------------
def connect(connection_id: str, owner: str, svc: LiveServices | None = None) -> None:
    svc = svc or live_services()
    svc.connections.connect(connection_id, owner, svc.clock.now_ms() // 1000)


def disconnect(connection_id: str, svc: LiveServices | None = None) -> None:
    (svc or live_services()).connections.forget(connection_id)


# --- client messages -----------------------------------------------------------------------------
def receive(
    connection_id: str,
    owner: str | None,
    body: str,
    svc: LiveServices | None = None,
    *,
    time_left_ms: int | None = None,
) -> None:
    """One client frame: answer it on the connection (a gone client is forgotten). A replay longer
    than the function's time stops early and asks the client to subscribe again from where it is."""
    svc = svc or live_services()
    try:
        _receive(svc, connection_id, owner, body, deadline_of(svc, time_left_ms))
    except ConnectionGone:
        svc.connections.forget(connection_id)


def _receive(svc: LiveServices, connection_id: str, owner: str | None, body: str, deadline: float) -> None:
    post = svc.poster.post
    try:
        msg = frames.parse_client_message(body)
    except InvalidInput as exc:
        post(connection_id, encode_frame(frames.invalid_request(exc)))
        return
    if isinstance(msg, frames.Ping):
        post(connection_id, encode_frame(frames.pong()))
        return
    if isinstance(msg, frames.Unsubscribe):
        svc.connections.unsubscribe(connection_id, msg.buildId)
        post(connection_id, encode_frame(frames.unsubscribed(msg.buildId)))
        return
    owner = owner or svc.connections.owner(connection_id)
    try:
        if not owner:
            raise NotFound(msg.buildId)
        svc.builds.get_owned(msg.buildId, owner)
    except NotFound:
        post(connection_id, encode_frame(frames.not_found(msg.buildId)))
        return
    if not svc.connections.is_subscribed(connection_id, msg.buildId) and (
        svc.connections.subscription_count(connection_id) >= frames.MAX_SUBSCRIPTIONS
    ):
        post(connection_id, encode_frame(frames.too_many_subscriptions(msg.buildId)))
        return
    try:
        _subscribe(svc, connection_id, owner, msg, deadline)
    except ConnectionGone:
        raise
    except OutOfTime:
        post(connection_id, encode_frame(frames.subscription_stopped(msg.buildId)))
    except Exception:
        logger.exception("live subscription failed", extra={"buildId": msg.buildId})
        post(connection_id, encode_frame(frames.subscription_stopped(msg.buildId)))


def _subscribe(svc: LiveServices, connection_id: str, owner: str, msg: frames.Subscribe, deadline: float) -> None:
    post = svc.poster.post
    holder = f"sub-{uuid.uuid4().hex}"
    wait_until = svc.clock.monotonic() + SUBSCRIBE_WAIT_S
    while not svc.connections.subscribe(
        connection_id,
        msg.buildId,
        owner=owner,
        after=msg.after,
        holder=holder,
        now_ms=svc.clock.now_ms(),
        lease_ms=LEASE_MS,
        force=svc.clock.monotonic() > wait_until,  # a broadcast still pushing the old subscription loses it
    ):
        svc.clock.sleep(0.05)
    last_seq = svc.events.last_seq(msg.buildId)
    post(connection_id, encode_frame(frames.subscribed(msg.buildId, last_seq)))
    _pump(svc, connection_id, msg.buildId, holder, msg.after, {}, deadline)


# --- the broadcaster -----------------------------------------------------------------------------
def events_of(records: list[dict[str, Any]]) -> dict[str, list[tuple[str, Event]]]:
    """Stream records (INSERTs of the events table) by build, in seq order, with their sequence numbers."""
    by_build: dict[str, list[tuple[str, Event]]] = {}
    for record in records:
        if record.get("eventName") != "INSERT":
            continue
        ddb = record.get("dynamodb") or {}
        event = event_from_stream_image(ddb.get("NewImage") or {})
        by_build.setdefault(event.buildId, []).append((str(ddb.get("SequenceNumber", "")), event))
    for items in by_build.values():
        items.sort(key=lambda pair: pair[1].seq)
    return by_build


def broadcast(
    records: list[dict[str, Any]], svc: LiveServices | None = None, *, time_left_ms: int | None = None
) -> list[str]:
    """Push the records' events to every subscribed connection. Returns the sequence numbers of the
    records to retry (the first record of each build whose push failed for a reason other than a
    gone client, and of every build not reached in time): a retry is harmless, each subscription
    starts after what it already got."""
    svc = svc or live_services()
    deadline = deadline_of(svc, time_left_ms)
    failed: list[str] = []
    builds = list(events_of(records).items())
    for index, (build_id, items) in enumerate(builds):
        known = {event.seq: event for _, event in items}
        try:
            for connection_id in svc.connections.subscribers(build_id):
                holder = f"bc-{uuid.uuid4().hex}"
                delivered = svc.connections.acquire(
                    connection_id, build_id, holder=holder, now_ms=svc.clock.now_ms(), lease_ms=LEASE_MS
                )
                if delivered is None:
                    continue  # gone, or its holder is pushing and will look again after releasing
                try:
                    _pump(svc, connection_id, build_id, holder, delivered, known, deadline)
                except ConnectionGone:
                    svc.connections.drop(connection_id, build_id)
                    svc.connections.forget(connection_id)
        except OutOfTime:
            failed += [later[0][0] for _, later in builds[index:]]
            break
        except Exception:
            logger.exception("live broadcast failed; the records will be retried", extra={"buildId": build_id})
            count(BROADCAST_FAILED_METRIC)
            failed.append(items[0][0])
    return failed


# --- pushing one subscription, lease held ----------------------------------------------------------
def _pump(
    svc: LiveServices,
    connection_id: str,
    build_id: str,
    holder: str,
    delivered: int,
    known: dict[int, Event],
    deadline: float,
) -> None:
    while True:
        progress = [delivered]
        try:
            _push_after(svc, connection_id, build_id, progress, known, deadline)
        finally:
            released = svc.connections.release(connection_id, build_id, holder=holder, delivered=progress[0])
        if not released:
            return  # unsubscribed or resubscribed meanwhile: whoever holds it now carries on
        # Recorded while we held the lease? A broadcast of it may have found the lease taken.
        if svc.events.last_seq(build_id) <= progress[0]:
            return
        again = svc.connections.acquire(
            connection_id, build_id, holder=holder, now_ms=svc.clock.now_ms(), lease_ms=LEASE_MS
        )
        if again is None:
            return
        delivered = again


def _push_after(
    svc: LiveServices,
    connection_id: str,
    build_id: str,
    progress: list[int],
    known: dict[int, Event],
    deadline: float,
) -> None:
    """Push every event after progress[0]: from `known` when it holds the next ones (the broadcast's
    own records; anything newer is found by the look after release), else from the log, page by
    page to its end. progress[0] follows each successful push."""
    while True:
        from_log = progress[0] + 1 not in known
        more: int | None = None
        if from_log:
            batch, more = svc.events.read(build_id, after=progress[0], limit=REPLAY_PAGE)
        else:
            batch = []
            while progress[0] + 1 + len(batch) in known:
                batch.append(known[progress[0] + 1 + len(batch)])
        for event in batch:
            if svc.clock.monotonic() > deadline:
                raise OutOfTime
            svc.poster.post(connection_id, event_frame(event))
            progress[0] = event.seq
        if not batch or not from_log or more is None:
            return
