"""`ws://HOST:PORT/ws?token=…` on `stepwise serve`: live events of the caller's builds.

One connection watches several builds. A subscription listens to the live feed first and reads the
log second, then hands both through one `Sequencer`: every event after `after` arrives once, in seq
order, whatever the race between the read and the stream. A bad token is accepted and closed at once
with 4401 (a close before accept would reach a browser as a bare handshake failure).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from local.auth import user_for
from local.live import feed
from shared.errors import InvalidInput, NotFound
from shared.live import Sequencer, encode_frame, event_frame
from shared.logic.services import services
from shared.models import live as frames
from shared.models.events import Event
from shared.observability import logger

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PATH = "/ws"
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 1008  # policy violation: the client does not read what it asked for
MAX_QUEUED_FRAMES = 20_000
REPLAY_PAGE = 200


async def websocket_app(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if scope.get("path") != PATH:
        await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
        return
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    token = (query.get("token") or [""])[0]
    user = await asyncio.to_thread(user_for, token)  # a JWT's check may fetch the pool's keys
    await send({"type": "websocket.accept"})
    if not user:
        await send({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED, "reason": "unauthorized"})
        return
    await Connection(user, send).run(receive)


class Connection:
    def __init__(self, user: str, send: Send) -> None:
        self.user = user
        self._send = send
        self._out: asyncio.Queue[str | None] = asyncio.Queue()
        self._subscriptions: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    async def run(self, receive: Receive) -> None:
        writer = asyncio.create_task(self._write())
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message["type"] != "websocket.receive":
                    continue
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
                self._handle(text)
        finally:
            for task in self._subscriptions.values():
                task.cancel()
            self._out.put_nowait(None)
            with contextlib.suppress(Exception):
                await writer

    def _handle(self, text: str) -> None:
        try:
            msg = frames.parse_client_message(text)
        except InvalidInput as exc:
            self._push(frames.invalid_request(exc))
            return
        if isinstance(msg, frames.Ping):
            self._push(frames.pong())
        elif isinstance(msg, frames.Unsubscribe):
            task = self._subscriptions.pop(msg.buildId, None)
            if task is not None:
                task.cancel()
            self._push(frames.unsubscribed(msg.buildId))
        else:
            previous = self._subscriptions.pop(msg.buildId, None)
            if previous is not None:
                previous.cancel()
            if len(self._subscriptions) >= frames.MAX_SUBSCRIPTIONS:
                self._push(frames.too_many_subscriptions(msg.buildId))
                return
            self._subscriptions[msg.buildId] = asyncio.create_task(self._follow(msg.buildId, msg.after))

    # --- one subscription ----------------------------------------------------------------------
    async def _follow(self, build_id: str, after: int) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Event] = asyncio.Queue()

        def deliver(event: Event) -> None:  # called on the relay's thread
            loop.call_soon_threadsafe(inbox.put_nowait, event)

        stop = feed.listen(build_id, deliver)
        try:  # listening before reading the log: an event is in the read, in the feed, or in both
            last_seq = await asyncio.to_thread(_owned_last_seq, self.user, build_id)
            if last_seq is None:
                if self._subscriptions.get(build_id) is asyncio.current_task():
                    del self._subscriptions[build_id]
                self._push(frames.not_found(build_id))
                return
            self._push(frames.subscribed(build_id, last_seq))
            order = Sequencer(after)
            await self._read_log(build_id, order)
            while True:
                batch = [await inbox.get()]
                while not inbox.empty():
                    batch.append(inbox.get_nowait())
                self._push_events(order.offer(batch))
                if order.waiting:  # the feed skipped something: the log has it
                    await self._read_log(build_id, order)
        except Exception:
            logger.exception("live subscription failed", extra={"buildId": build_id})
            if self._subscriptions.get(build_id) is asyncio.current_task():
                del self._subscriptions[build_id]
            self._push(frames.subscription_stopped(build_id))
        finally:
            stop()

    async def _read_log(self, build_id: str, order: Sequencer) -> None:
        while True:
            events, more = await asyncio.to_thread(services().events.read, build_id, order.delivered, REPLAY_PAGE)
            self._push_events(order.offer(events))
            if more is None:
                return

    def _push_events(self, events: list[Event]) -> None:
        for event in events:
            self._out_put(event_frame(event))

    def _push(self, frame: dict[str, Any]) -> None:
        self._out_put(encode_frame(frame))

    def _out_put(self, text: str) -> None:
        if self._closing:
            return
        if self._out.qsize() >= MAX_QUEUED_FRAMES:  # the client stopped reading: it reconnects with `after`
            self._closing = True
            for task in self._subscriptions.values():
                task.cancel()
            while not self._out.empty():
                self._out.get_nowait()
            self._out.put_nowait(None)
            return
        self._out.put_nowait(text)

    async def _write(self) -> None:
        while (text := await self._out.get()) is not None:
            await self._send({"type": "websocket.send", "text": text})
        if self._closing:
            await self._send({"type": "websocket.close", "code": CLOSE_TOO_SLOW, "reason": "too slow"})


def _owned_last_seq(user: str, build_id: str) -> int | None:
    """The build's last recorded seq, or None when it is missing or not the user's (alike)."""
    svc = services()
    try:
        svc.builds.get_owned(build_id, user)
    except NotFound:
        return None
    return svc.events.last_seq(build_id)
