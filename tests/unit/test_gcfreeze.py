"""bizbus.gcfreeze: long-lived objects leave the collector's passes; garbage is collected, not frozen."""

from __future__ import annotations

import gc
import weakref

from bizbus.gcfreeze import FreezeAfterStart, freeze_long_lived


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_freezing_moves_live_objects_out_of_the_passes_and_collects_garbage_first() -> None:
    try:
        kept = Node()
        dropped = Node()
        gone = weakref.ref(dropped)
        del dropped
        frozen = freeze_long_lived()
        assert gone() is None  # the cycle was collected, not frozen
        assert frozen >= 1 and gc.get_freeze_count() == frozen
        assert not any(o is kept for o in gc.get_objects())  # frozen objects are not walked by passes
    finally:
        gc.unfreeze()


def test_freeze_after_start_freezes_again_once_later() -> None:
    now = [100.0]
    f = FreezeAfterStart(later=10.0, clock=lambda: now[0])
    try:
        f.start()
        assert f.freezes == 1
        now[0] = 109.0
        f.tick()
        assert f.freezes == 1
        now[0] = 110.0
        f.tick()
        f.tick()
        assert f.freezes == 2  # once
    finally:
        gc.unfreeze()
