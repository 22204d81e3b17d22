"""The stall watchdog: a worker whose partition stopped being delivered stops itself to be restarted."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, TopicPartition

from bizbus.kafka import read_until_quiet

if TYPE_CHECKING:
    import faust
    from bizbus.streams.runtime.agents import AgentSpec, Runtime

    from bizbus.settings import Settings

log = logging.getLogger("bizbus.flows")


class StallDetector:
    """Decides when a partition is stuck: records wait after the last handled offset, and that offset has
    not moved for ``seconds`` (pure; the watchdog feeds it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._since: dict[tuple[str, int], tuple[int | None, float]] = {}

    def stalled(
        self, tp: tuple[str, int], handled: int | None, pending: bool, busy: bool, now: float
    ) -> bool:
        """``busy``: the partition's agent is inside an event (e.g. waiting for master data)."""
        if not pending or busy:
            self._since.pop(tp, None)
            return False
        seen = self._since.get(tp)
        if seen is None or seen[0] != handled:
            self._since[tp] = (handled, now)
            return False
        return now - seen[1] >= self.seconds


def pending_partitions(kafka_config: dict[str, Any], group: str, starts: dict[tuple[str, int], int | None],
                       wait: float = 1.0) -> set[tuple[str, int]]:  # fmt: skip
    """The partitions that hold a record at or after their start offset (None: the group's committed
    offset, else the beginning)."""
    consumer = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})  # fmt: skip
    found: set[tuple[str, int]] = set()
    try:
        unknown = [TopicPartition(t, p) for (t, p), start in starts.items() if start is None]
        committed = (
            {(c.topic, c.partition): c.offset for c in consumer.committed(unknown, timeout=10)}
            if unknown
            else {}
        )
        begin = {
            tp: start if start is not None else max(committed.get(tp, 0), 0) for tp, start in starts.items()
        }
        if begin:
            consumer.assign([TopicPartition(t, p, off) for (t, p), off in begin.items()])
            for m in read_until_quiet(consumer, 0, timeout=wait, poll=0.2, batch=100):
                if m.offset() >= begin[(m.topic(), m.partition())]:
                    found.add((m.topic(), m.partition()))
                    if len(found) == len(begin):
                        break
    finally:
        consumer.close()
    return found


def handled_offsets(specs: dict[str, AgentSpec], assignment: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
    """Per assigned partition, the last offset its agents handled: the slowest of the agents reading the
    topic (F1's ``bizbus-project`` and F7's ``bizbus-budget-project`` both read the project topic); None
    while one of them has handled nothing there."""
    handled: dict[tuple[str, int], int | None] = {}
    for topic, partition in assignment:
        for spec in specs.values():
            if spec.source != topic:
                continue
            raw = spec.progress.get(str(partition).encode())
            h, key = (int(raw) if raw is not None else None), (topic, partition)
            seen = handled.get(key, h)
            handled[key] = None if h is None or seen is None else min(h, seen)
    return handled


def watch(
    app: faust.App, rt: Runtime, specs: dict[str, AgentSpec], settings: Settings, seconds: float
) -> None:
    """Stall watchdog: a partition with records waiting after its last handled one, its agent idle and no
    progress for ``seconds``, stops the worker with exit code 3, so its supervisor restarts it.

    Faust 0.15 on Tansu was seen, rarely, to stop delivering a partition after a restart; a restarted
    worker resumes from the committed offsets and handles the records (same ids: sinks dedupe)."""
    detector = StallDetector(seconds)
    config = settings.kafka_config()

    @app.timer(min(15.0, seconds / 3))
    async def stall_watchdog() -> None:
        if app.rebalancing or not app.consumer.assignment():
            return
        handled = handled_offsets(specs, [(tp.topic, tp.partition) for tp in app.consumer.assignment()])
        starts = {tp: (h + 1 if h is not None else None) for tp, h in handled.items()}
        pending = await asyncio.to_thread(pending_partitions, config, app.conf.id, starts)
        now = time.monotonic()
        stuck = [
            tp for tp, h in handled.items() if detector.stalled(tp, h, tp in pending, tp[0] in rt.busy, now)
        ]
        if stuck:
            log.error("no progress for %.0f s on %s although records wait there: stopping this worker "
                      "(exit code 3) so that it is restarted", detector.seconds,
                      ", ".join(f"{t}[{p}]" for t, p in stuck))  # fmt: skip
            logging.shutdown()
            os._exit(3)
