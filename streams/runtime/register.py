"""Declare the tables and agents of a worker's flows on its Faust app, from their flow specs.

Per flow of the plan (each after the flows it needs, see :meth:`FlowPlan.with_kept`): its state tables
(``app.Table``, or ``app.GlobalTable`` for tables other topics' agents read), then per agent a
``progress-<short>`` table and the agent ``bizbus-<short>`` on its source topic, which takes its events
in batches and hands them to the shared :class:`~bizbus.streams.runtime.agents.Runtime`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bizbus.streams.runtime.agents import BATCH_MAX, BATCH_WITHIN, AgentSpec, Runtime
from bizbus.streams.runtime.delivery import ConfluentDelivery
from bizbus.streams.runtime.grace import GraceClock
from bizbus.streams.runtime.plan import FlowPlan
from bizbus.streams.runtime.spec import MASTER_DATA, FlowContext
from bizbus.streams.runtime.tables import StateTable
from bizbus.streams.runtime.watchdog import watch

from bizbus import metrics
from bizbus.deadletters import DeadLetterWriter

if TYPE_CHECKING:
    import faust

    from bizbus.catalogue import Catalogue
    from bizbus.serde import AvroSerde
    from bizbus.settings import Settings


def register(app: faust.App, plan: FlowPlan, settings: Settings, catalogue: Catalogue,
             serde: AvroSerde) -> Runtime:  # fmt: skip
    """Declare the tables and agents of ``plan`` on ``app`` and start its stall watchdog; returns the
    runtime they share (its output schemas registered, its producers open)."""
    config = settings.kafka_config()
    rt = Runtime(app, catalogue, serde, DeadLetterWriter(config, serde), config, ConfluentDelivery(config))
    rt.setup(output_topics(plan))
    specs = declare(app, plan, catalogue, rt)
    configs = [f.config for f in plan.flows]
    stall = max(
        max(c.stall_restart_seconds for c in configs), 3 * max(c.master_data_grace_seconds for c in configs)
    )
    watch(app, rt, specs, settings, stall)
    return rt


def output_topics(plan: FlowPlan) -> list[str]:
    """The topics the planned flows write (a flow kept for its tables writes none)."""
    return [t for f in plan.with_kept() if f.emit for t in f.spec.outputs]


def declare(app: faust.App, plan: FlowPlan, catalogue: Catalogue, rt: Runtime) -> dict[str, AgentSpec]:
    """Declare the tables and agents of ``plan`` on ``app`` (nothing is contacted); the agents' specs by
    source topic (a second agent of the same topic: ``<topic>#<short>``)."""
    flows = plan.with_kept()

    def table(name: str, source: str, global_: bool = False) -> Any:
        factory = app.GlobalTable if global_ else app.Table
        return factory(name, partitions=catalogue.get(source).partitions, key_type=bytes, value_type=bytes)

    tables: dict[str, StateTable[Any]] = {}
    for flow in flows:
        for t in flow.spec.tables:
            parts = catalogue.get(t.source).partitions if t.by_key else None
            st: StateTable[Any] = StateTable(table(t.name, t.source, t.global_), t.load, parts)
            tables[t.name] = st
            rt.tables.append(st)

    specs: dict[str, AgentSpec] = {}
    for flow in flows:
        ctx = FlowContext(flow.name, flow.config, flow.emit, tables, lambda data: rt.serde.decode(data))
        grace = GraceClock(flow.config.master_data_grace_seconds, time.monotonic)
        for decl in flow.spec.agents:
            label = MASTER_DATA if decl.master_data else flow.name
            handler = decl.handler(ctx)
            spec = AgentSpec(label, handler.decide, handler.store, grace, table(f"progress-{decl.short}", decl.source),
                             tuple(tables[n] for n in handler.writes), decl.source)  # fmt: skip
            # keyed by topic; a second agent on a topic (F7's budget-project beside F1's project) by topic#short
            specs[decl.source if decl.source not in specs else f"{decl.source}#{decl.short}"] = spec
            metrics.init_component(label, metrics.RECORDS_IN, metrics.RECORDS_OUT, metrics.RECORDS_SKIPPED)
            _agent(app, rt, spec, decl.source, decl.short, catalogue.get(decl.source).partitions)
    return specs


def _agent(app: faust.App, rt: Runtime, spec: AgentSpec, source: str, short: str, partitions: int) -> None:
    """The agent ``bizbus-<short>`` on ``source``: every batch of events goes to the runtime."""
    channel = app.topic(source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                        partitions=partitions)  # fmt: skip

    async def run(stream: Any) -> None:
        # take_events acks a batch's events when the loop comes back for the next batch, i.e. after
        # handle_batch made every output durable
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
            await rt.handle_batch(spec, list(events))

    run.__name__ = run.__qualname__ = f"{short}_agent"
    app.agent(channel, name=f"bizbus-{short}")(run)
