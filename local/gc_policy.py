"""Garbage collection in the local runtime, whose one process also holds every AWS service's data.

moto keeps the tables, queues, buckets and streams as Python objects in this process: hundreds of
thousands of them after a few builds. A full collection (generation 2) walks every tracked object
with the GIL held, so it stopped every task, poll and request for about half a second (measured:
470-550 ms of CPU per full collection at ~700,000 objects), and it came about once per 100-task
build. That was the tail of the local dependency latency.

So what survives a full collection is frozen (`gc.freeze`): the next full collection walks only
what was created since (measured: 11-16 ms of CPU each). The cost: cyclic garbage made of objects
that were alive at a freeze is not reclaimed while the runtime runs (measured after five 100-task
builds: the same object count and RSS as without the policy). Everything is unfrozen when the
runtime stops.
"""

from __future__ import annotations

import gc
from typing import Any


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def install() -> None:
    """Freeze what exists now (the runtime as started) and what survives each full collection."""
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
    gc.freeze()


def uninstall() -> None:
    if _freeze_survivors in gc.callbacks:
        gc.callbacks.remove(_freeze_survivors)
    gc.unfreeze()
