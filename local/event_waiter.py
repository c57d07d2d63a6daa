"""Long-polls without polling: the events table's stream tells this module of every event the
moment it is written (`local.moto_fixes`), and a waiting request sleeps on a condition until its
build's log passes the seq it has seen. Installed as `shared.dal.events`' waiter by the runtime."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

_cond = threading.Condition()
_last: OrderedDict[str, int] = OrderedDict()  # buildId -> highest seq written
_MAX_BUILDS = 10_000


def note(build_id: str, seq: int) -> None:
    """An event of `build_id` with `seq` was written."""
    with _cond:
        if _last.get(build_id, 0) < seq:
            _last[build_id] = seq
        _last.move_to_end(build_id)
        while len(_last) > _MAX_BUILDS:
            _last.popitem(last=False)
        _cond.notify_all()


def wait(build_id: str, after: int, timeout_s: float) -> bool:
    """True once an event after `after` is written for `build_id`; False after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    with _cond:
        while _last.get(build_id, 0) <= after:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _cond.wait(left)
        return True
