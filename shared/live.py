"""Live delivery, without I/O: frames within the message limit, and a build's events in seq order,
each exactly once, from any mix of replayed (read from the log) and live (from the stream) events."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from shared.models.events import Event
from shared.models.live import MAX_FRAME_BYTES, too_large


class FrameTooLarge(ValueError):
    def __init__(self, size: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte message limit")
        self.size = size


def encode_frame(message: dict[str, Any]) -> str:
    """The frame's text; FrameTooLarge when API Gateway would refuse it (so local refuses it too)."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    size = len(text.encode("utf-8"))
    if size > MAX_FRAME_BYTES:
        raise FrameTooLarge(size)
    return text


def event_frame(event: Event) -> str:
    """The event's envelope as a frame, or, when it is too large to push, the `too_large` error that
    tells the client to read it from the log. Events are bounded well below the limit, so this is a
    bug somewhere: it is logged as an error."""
    try:
        return encode_frame(event.model_dump(mode="json"))
    except FrameTooLarge as exc:
        from shared.observability import logger

        logger.error(
            "live event too large to push",
            extra={"buildId": event.buildId, "seq": event.seq, "type": str(event.type), "bytes": exc.size},
        )
        return encode_frame(too_large(event.buildId, event.seq))


class Sequencer:
    """One subscription's order: `offer` takes events in any order, duplicates included, and returns
    those that are next in line (seq delivered+1, +2, ...). An event beyond a gap waits (`waiting`)
    until the gap is filled; one at or below `delivered` is dropped."""

    def __init__(self, after: int) -> None:
        self.delivered = after
        self._held: dict[int, Event] = {}

    def offer(self, events: Iterable[Event]) -> list[Event]:
        for event in events:
            if event.seq > self.delivered:
                self._held.setdefault(event.seq, event)
        ready: list[Event] = []
        while (nxt := self._held.pop(self.delivered + 1, None)) is not None:
            ready.append(nxt)
            self.delivered = nxt.seq
        return ready

    @property
    def waiting(self) -> bool:
        """Events are held back behind a gap: the log has what is missing."""
        return bool(self._held)
