"""Keep the garbage collector's full passes off the objects that live as long as the process.

A full pass walks every tracked object, and in a bizbus process most of them are modules, classes,
pydantic models, clients and connections made at start and never freed. In a ``bizbus worker`` taking
1,000 webhooks/s those passes stopped every thread for 75-170 ms each, several times a minute (measured with
``gc.callbacks`` in the latency benchmark, ~100-150k tracked objects on two busy cores): the p99 spikes of
the webhook -> row latency. ``gc.freeze`` moves the objects alive at that moment to a permanent
generation that passes skip; a ``gc.collect`` first, so no garbage is frozen with them.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def freeze_long_lived() -> int:
    """Collect, then freeze everything alive now; the number of objects frozen in all."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class FreezeAfterStart:
    """Freeze at :meth:`start` and once more ``later`` seconds after it (when the tasks' first steps have
    opened their connections, producers and consumers); :meth:`tick` from the process's main loop."""

    def __init__(self, later: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.later, self.clock = later, clock
        self._due: float | None = None
        self.freezes = 0

    def start(self) -> None:
        freeze_long_lived()
        self.freezes += 1
        self._due = self.clock() + self.later

    def tick(self) -> None:
        if self._due is not None and self.clock() >= self._due:
            self._due = None
            freeze_long_lived()
            self.freezes += 1
