"""The flows worker's garbage-collector settings (streams/runtime/app.py tune_gc): long-lived objects frozen,
the youngest generation collected every GC_YOUNG allocations, the older thresholds left as they were."""

from __future__ import annotations

import gc
from types import SimpleNamespace

from bizbus.streams.runtime.app import GC_YOUNG, tune_gc


def test_tune_gc_freezes_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        app = SimpleNamespace(on_startup_finished=None)
        tune_gc(app)
        assert gc.get_threshold() == (GC_YOUNG, before[1], before[2])
        assert before[0] < GC_YOUNG and gc.get_freeze_count() > 0
        assert app.on_startup_finished is not None  # frozen once more when the worker is ready
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
