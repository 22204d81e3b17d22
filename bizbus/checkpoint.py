"""The one commit order of the bus, and the waiting while a target is down.

Every loop that consumes and produces (the source loop, the sink loop, the flows runtime) makes a batch
durable in the same order::

    outputs durable -> dead letters acknowledged -> state -> position (offsets or cursor)

:class:`Checkpoint` runs these steps in that order; a step that raises stops the ones after it, so the
position is never committed before what it covers is durable (a crash or an error re-delivers the batch;
the sinks' ledgers and the deterministic event ids absorb the second time). A step may be left out (None):
a sink's outputs and ledger state are one transaction of its writer; a source keeps no state apart from
its cursor. ``commit()`` runs plain functions, ``acommit()`` also awaits steps that return an awaitable
(the flows runtime).

:class:`Outage` is the pause-and-wait behaviour while a target does not answer: since when and why, a
WARNING when it starts and when it ends, a gauge (``bizbus_sink_paused``) at 1 meanwhile and the line
``problem()`` gives ``/readyz``. :func:`until_done` retries one step with a :class:`~bizbus.backoff.Backoff`
until it succeeds (a dead-letter flush while the broker is away).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bizbus import logs
from bizbus.backoff import Backoff
from bizbus.failures import ConnectorError

log = logging.getLogger(__name__)

STEPS = ("outputs", "dead_letters", "state", "position")
"""The commit order, first to last."""

Step = Callable[[], Any]


@dataclass(frozen=True)
class Checkpoint:
    """The steps that make one batch durable, run in :data:`STEPS` order (see the module doc)."""

    outputs: Step | None = None
    dead_letters: Step | None = None
    state: Step | None = None
    position: Step | None = None

    def steps(self) -> list[tuple[str, Step]]:
        """The steps given, in commit order."""
        return [(name, step) for name in STEPS if (step := getattr(self, name)) is not None]

    def commit(self) -> None:
        """Run the steps in order; the first that raises stops the rest (the position stays where it was)."""
        for name, step in self.steps():
            if inspect.isawaitable(result := step()):
                close = getattr(result, "close", None)
                if close is not None:
                    close()  # never awaited: no "coroutine was never awaited" warning
                raise TypeError(f"checkpoint step {name} is asynchronous: use acommit()")

    async def acommit(self) -> None:
        """``commit`` for a coroutine: a step that returns an awaitable is awaited before the next starts."""
        for _name, step in self.steps():
            result = step()
            if inspect.isawaitable(result):
                await result


class Outage:
    """Whether the target of ``name`` (e.g. ``sink pg-out``) counts as unreachable, since when and why.

    ``begin`` and ``end`` log once each and set ``gauge`` (1 while down, 0 after); ``problem()`` is the line
    for ``/readyz``. Shared by the threads of one task: only the thread that retries changes it."""

    def __init__(self, name: str, gauge: Callable[[int], None] | None = None) -> None:
        self.name, self._gauge = name, gauge
        self.down: tuple[float, ConnectorError] | None = None
        self.count = 0  # times the target counted as unreachable

    @property
    def active(self) -> bool:
        return self.down is not None

    def reset(self) -> None:
        """Not down, nothing logged (at start-up)."""
        self.down = None
        if self._gauge is not None:
            self._gauge(0)

    def begin(self, err: ConnectorError, waiting: int) -> None:
        """The target stopped answering: ``waiting`` records wait for it, the partitions are paused."""
        self.down = (time.monotonic(), err)
        self.count += 1
        if self._gauge is not None:
            self._gauge(1)
        log.warning("%s: the target is unreachable (%s: %s): %d record(s) wait, partitions paused, retrying "
                    "until it answers", self.name, err.reason, err, waiting)  # fmt: skip

    def end(self, abandoned: bool = False) -> None:
        """The target answers again, or (``abandoned``) the batch that waited was given up."""
        down, self.down = self.down, None
        if self._gauge is not None:
            self._gauge(0)
        if down is None:
            return
        took = time.monotonic() - down[0]
        if abandoned:
            log.warning("%s: stopped waiting for the target after %.0f s: the batch is given up uncommitted "
                        "(rebalance or stop)", self.name, took)  # fmt: skip
        else:
            log.warning("%s: the target answers again after %.0f s: resuming", self.name, took)

    def problem(self) -> str | None:
        down = self.down
        if down is None:
            return None
        since, err = down
        return f"waiting for the target for {time.monotonic() - since:.0f} s ({err.reason}): {logs.redact(str(err))[:200]}"


async def until_done(step: Callable[[], Awaitable[Any]], what: str, backoff: Backoff,
                     sleep: Callable[[float], Awaitable[Any]] | None = None) -> Any:  # fmt: skip
    """Await ``step()`` until it returns, waiting ``backoff``'s delays after each failure (a WARNING each
    time, naming ``what``); the result of the call that succeeded."""
    streak = backoff.streak()
    while True:
        try:
            return await step()
        except Exception as exc:  # noqa: BLE001 - retried until it succeeds; the caller's loop cannot go on
            delay = streak.next()
            log.warning("%s (%s); retrying in %.1f s", what, exc, delay)
            await (sleep or asyncio.sleep)(delay)
