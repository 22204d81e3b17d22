"""One capped exponential backoff for every retry loop of the bus.

``Backoff(initial, maximum, multiplier, jitter).delay(n)`` is the wait after failure ``n`` (1-based) of a
streak: ``initial * multiplier**(n-1)`` capped at ``maximum``, times a random factor in ``[1 - jitter, 1]``
so that many tasks or workers do not retry in step (``jitter=0``: exact, no random number drawn).

``Backoff.streak()`` gives the stateful form for a loop that waits after each failure and starts again
from ``initial`` once something succeeded (``next()`` / ``reset()``); ``wait()`` and ``await_()`` sleep it.
``bizbus.failures.RetryPolicy`` (the budgeted retry of one call, configurable per connector) computes its
delays with a ``Backoff`` too.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

_RNG = random.Random()


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: see the module doc."""

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"not a backoff: {self}")

    def base(self, attempt: int) -> float:
        """The delay after failure ``attempt`` (1-based) before jitter."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        try:
            return min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        except OverflowError:
            return self.maximum

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failure ``attempt`` (1-based) of a streak, jitter applied."""
        base = self.base(attempt)
        if not self.jitter:
            return base
        return base * (rng or _RNG).uniform(1.0 - self.jitter, 1.0)

    def streak(self, rng: random.Random | None = None) -> Streak:
        """A failure counter that yields this backoff's delays one after the other."""
        return Streak(self, rng)


class Streak:
    """The failures of one streak: ``next()`` counts one and says how long to wait; ``reset()`` after a
    success."""

    def __init__(self, backoff: Backoff, rng: random.Random | None = None) -> None:
        self.backoff, self.rng = backoff, rng
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return self.backoff.delay(self.failures, self.rng)

    def reset(self) -> None:
        self.failures = 0

    def wait(self, sleep: Callable[[float], object] = time.sleep) -> float:
        """Count a failure and sleep its delay; returns the delay."""
        delay = self.next()
        sleep(delay)
        return delay

    async def await_(self) -> float:
        """``wait`` for a coroutine: count a failure and ``asyncio.sleep`` its delay."""
        delay = self.next()
        await asyncio.sleep(delay)
        return delay
