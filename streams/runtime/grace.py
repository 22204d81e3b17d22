"""Grace periods of records waiting for master data."""

from __future__ import annotations

from typing import Any


class GraceClock:
    """Deadlines of the grace period per missing master-data key.

    The first record that misses ``key`` starts the period; records that miss the same key before it
    ends (or within one more period after it ended) share that deadline, so a burst of records for an
    unknown project waits once, not once per record. ``clock`` is ``time.monotonic`` in production.
    """

    def __init__(self, seconds: float, clock: Any) -> None:
        self.seconds = seconds
        self.clock = clock
        self._deadlines: dict[str, float] = {}

    def deadline(self, key: str) -> float:
        now = self.clock()
        found = self._deadlines.get(key)
        if found is None or now > found + self.seconds:
            found = self._deadlines[key] = now + self.seconds
            if len(self._deadlines) > 10_000:  # forget expired keys now and then
                self._deadlines = {k: d for k, d in self._deadlines.items() if now <= d + self.seconds}
                self._deadlines[key] = found
        return found
