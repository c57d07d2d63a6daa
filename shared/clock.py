"""Time as a port: the logic asks the services' clock what time it is, so a test can move time on
instead of sleeping. On Lambda and in the local runtime it is the system's clock."""

from __future__ import annotations

import time


class Clock:
    """The system's clocks. Subclass it to control time in a test."""

    def time(self) -> float:
        """Seconds since the epoch: what records store and deadlines are written in."""
        return time.time()

    def now_ms(self) -> int:
        return int(self.time() * 1000)

    def monotonic(self) -> float:
        """For measuring how long something took or waiting up to a bound within one process."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = Clock()
