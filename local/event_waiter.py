"""Long-polls without polling the table: a waiting request listens to the live feed (the events
table's stream, read by the relay that plays the EventBridge Pipe) and wakes the moment its build's
log passes the seq it has seen. Installed as `shared.dal.events`' waiter by the local runtime."""

from __future__ import annotations

import threading
import time

from local.live import feed
from shared.models.events import Event

# Without a relay (a runtime with no workers) nothing is fed: look at the log now and then instead.
_RECHECK_S = 1.0


def wait(build_id: str, after: int, timeout_s: float) -> bool:
    """True once an event after seq `after` is recorded for `build_id`; False after `timeout_s`."""
    from shared.logic.services import services

    arrived = threading.Event()

    def on_event(event: Event) -> None:
        if event.seq > after:
            arrived.set()

    stop = feed.listen(build_id, on_event)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if services().events.last_seq(build_id) > after:  # recorded before this listened
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if arrived.wait(min(left, _RECHECK_S)):
                return True
    finally:
        stop()
