"""The events stream, fanned out to this process's live subscribers (the WebSocket connections of
`stepwise serve`). The stream relay that plays the EventBridge Pipe hands every batch of stream
records here too, so live pages read the same outbox as webhooks: nothing is written twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from shared.dal.aws import from_item
from shared.dal.events import event_from_item
from shared.models.events import Event
from shared.observability import logger

Listener = Callable[[Event], None]


class LiveFeed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, set[Listener]] = {}

    def listen(self, build_id: str, listener: Listener) -> Callable[[], None]:
        """Call `listener` (from the relay's thread) with each new event of the build; returns the
        function that stops it."""
        with self._lock:
            self._listeners.setdefault(build_id, set()).add(listener)

        def stop() -> None:
            with self._lock:
                found = self._listeners.get(build_id)
                if found is not None:
                    found.discard(listener)
                    if not found:
                        del self._listeners[build_id]

        return stop

    def publish_records(self, records: list[dict[str, Any]]) -> None:
        """Stream records as the relay read them: each INSERT is an event recorded."""
        for record in records:
            if record.get("eventName") != "INSERT":
                continue
            image = (record.get("dynamodb") or {}).get("NewImage") or {}
            build_id = (image.get("buildId") or {}).get("S")
            with self._lock:
                listeners = list(self._listeners.get(build_id or "", ()))
            if not listeners:
                continue
            try:
                event = event_from_item(from_item(image))
            except Exception:
                logger.exception("live feed could not read a stream record", extra={"buildId": build_id})
                continue
            for listener in listeners:
                listener(event)

    @property
    def listening(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._listeners.values())


feed = LiveFeed()  # one per process: the runtime's relay publishes, the WebSocket server listens
