"""The local runtime's collection policy: a full collection walks only what is new since the last."""

from __future__ import annotations

import gc

from local import gc_policy


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector can free it


def test_what_survives_a_full_collection_is_not_walked_again_and_garbage_is_still_freed() -> None:
    gc_policy.install()
    try:
        kept = [Node() for _ in range(1000)]
        gc.collect()
        survivors = gc.get_freeze_count()
        assert survivors >= 1000  # frozen: the next full collection does not walk them
        assert not any(o is kept[0] for o in gc.get_objects(generation=2))
        garbage = [Node() for _ in range(1000)]
        del garbage
        assert gc.collect() >= 1000  # cycles made since the last freeze are still collected
    finally:
        gc_policy.uninstall()
    assert gc.get_freeze_count() == 0 and gc_policy._freeze_survivors not in gc.callbacks
