"""Faust's table recovery, patched: end offsets probed, GlobalTables followed.

Table recovery on Tansu: Faust reads a changelog up to the partition's end offset, and Tansu reports end
offsets that lag behind the records it serves (measured: 109 reported, 112 there), so a restarted worker
lost the last table writes. :class:`ProbingRecovery` reads on from the reported end until the partition
stays quiet and recovers up to the true end; on Apache Kafka the probe finds nothing more.

GlobalTables with more than one worker (bizbus issue 7). Faust's assignor gives every worker every
partition of a GlobalTable's changelog as an *active* (recovered at each rebalance) and, those another
worker writes (its project partitions), also as a *standby* (read on after the recovery, to follow the
other worker's writes). Faust's recovery loop (``Recovery._slurp_changelogs``) asks "active?" before
"standby?", so the followed records took the active path: buffered, and applied to the table only per
``recovery_buffer_size`` (1,000) records or at the next rebalance; the ``standby_buffer_size=1`` that
``app.GlobalTable`` sets for just this never came into play. A worker so missed every write of another
worker made after its own last recovery: with two workers started together (the benchmark's
``--workers 2``), and equally for projects written after a second worker joined or after a rebalance
(tests/integration/test_flows_scale_out.py, all three cases dead-lettered before the fix). A worker
started after the projects were written recovered them, which is why starting the second worker later
seemed to help. Faust's own advice (the GlobalTable docstring: ``partitions=1, recovery_buffer_size=1``)
would also resume the changelog partitions the worker writes itself, whose echo of its own writes could
put an older value back for a moment. The fix, :meth:`ProbingRecovery._follow_as_standbys`: once the
actives are recovered, just before Faust starts the standbys, a partition that is both leaves the active
set (it is recovered; the set is only rebuilt at the next rebalance), its cached buffer size is dropped
and its standby offset starts where the recovery ended (nothing read twice), so each record of the other
worker is applied as it arrives. At the next rebalance its recovery goes on from where that reading got.
With that fixed, two workers started together on 20,000 timesheets still stalled (30 s per timesheet,
then dead letters): each worker's timesheet agent waited for a project of the other, its stream buffer
(Faust's default: 4,096 events) filled up, and Faust's delivery loop, waiting for room there, no longer
delivered anything else, the GlobalTable changelog included. Fetches are now bounded and the stream buffer
sized so that delivering a fetch never waits (:func:`stream_buffer_size`); 50,000 timesheets on two
workers started together: every voucher, no dead letter (``faust_profile --records 50000 --workers 2``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

log = logging.getLogger("bizbus.flows")

PROBE_IDLE_SECONDS = 1.0  # a changelog partition quiet this long is at its end


def true_end_offsets(kafka_config: dict[str, Any], reported: dict[tuple[str, int], int],
                     idle: float = PROBE_IDLE_SECONDS) -> dict[tuple[str, int], int]:  # fmt: skip
    """End offsets of partitions as the records show them: read from just before each reported end
    until nothing new arrives for ``idle`` seconds (the broker's own figure may lag behind)."""
    from confluent_kafka import Consumer, TopicPartition

    from bizbus.kafka import read_until_quiet

    if not reported:
        return {}
    consumer = Consumer({**kafka_config, "group.id": f"bizbus-probe-{uuid.uuid4().hex[:12]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    last: dict[tuple[str, int], int] = {}
    try:
        consumer.assign([TopicPartition(t, p, max(end - 1, 0)) for (t, p), end in reported.items()])
        for m in read_until_quiet(consumer, idle, poll=0.2, batch=1000):
            last[(m.topic(), m.partition())] = max(m.offset(), last.get((m.topic(), m.partition()), -1))
    finally:
        consumer.close()
    return {tp: max(end, last.get(tp, -1) + 1) for tp, end in reported.items()}


def table_manager(kafka_config: dict[str, Any]) -> type:
    """Faust's TableManager with :class:`ProbingRecovery`: end offsets probed, GlobalTables followed (see the
    module doc)."""
    from faust.tables.manager import TableManager
    from faust.tables.recovery import Recovery

    class ProbingRecovery(Recovery):
        #: changelog partitions recovered as actives and then followed as standbys (GlobalTables)
        _followed: set[Any]

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._followed = set()

        async def on_rebalance(
            self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
        ) -> None:
            # a followed partition is read on as a standby: its next recovery starts where that reading is
            for tp in self._followed:
                seen, recovered = self.standby_offsets.get(tp), self.active_offsets.get(tp)
                if seen is not None and tp in self.active_offsets and (recovered is None or seen > recovered):
                    self.active_offsets[tp] = seen
            self._followed = set()
            await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

        async def _seek_offsets(self, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
            if title == "standby":  # the actives are recovered; the standbys start now
                self._follow_as_standbys()
            await super()._seek_offsets(consumer, tps, offsets, title)

        def _follow_as_standbys(self) -> None:
            """Read the changelog partitions that are both active and standby (every partition of a GlobalTable
            that other workers write) on as standbys: Faust applies a standby's records one by one
            (``standby_buffer_size=1``), an active's only per 1,000 (``recovery_buffer_size``)."""
            both = self.active_tps & self.standby_tps
            if not both:
                return
            self.flush_buffers()
            for tp in both:
                self.active_tps.discard(tp)  # the set _slurp_changelogs sorts records by
                self.buffer_sizes.pop(tp, None)  # its cached buffer size: the active one
                recovered, seen = self.active_offsets.get(tp), self.standby_offsets.get(tp)
                if recovered is not None and (seen is None or recovered > seen):
                    self.standby_offsets[tp] = recovered  # where the standby seek starts: no re-reading
            self._followed = both

        async def _build_highwaters(self, consumer: Any, tps: Any, destination: Any, title: str) -> None:
            reported = await consumer.highwaters(*tps)
            ends = {(tp.topic, tp.partition): (v if v is not None else 0) for tp, v in reported.items()}
            true_ends = await asyncio.to_thread(true_end_offsets, kafka_config, ends)
            behind = {k: (ends[k], v) for k, v in true_ends.items() if v != ends[k]}
            if behind:
                log.info("recovery (%s): the broker's end offsets lag behind its records, using the records' "
                         "end: %s", title, behind)  # fmt: skip
            destination.clear()
            # Faust's highwater is the offset of the last record (end offset - 1)
            destination.update({tp: true_ends[(tp.topic, tp.partition)] - 1 for tp in reported})

    class ProbingTableManager(TableManager):
        @property
        def recovery(self) -> Recovery:
            if self._recovery is None:
                self._recovery = ProbingRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
            return self._recovery

    return ProbingTableManager
