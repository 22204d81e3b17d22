"""The Faust agents of the flows: decode, look up tables, call the pure function, send, update tables.

Per input record (:meth:`Runtime.handle`):

1. decode the Avro bytes (undecodable → dead letter POISON);
2. call the flow's pure function with the entity's state and the master-data tables; while it answers
   :class:`~bizbus.streams.mapping.Missing`, poll again (asyncio sleep) until the flow's grace period for
   that key ends, then dead-letter the record (PERMANENT ``unknown_master_data``); a
   :class:`~bizbus.streams.mapping.Reject`, or an exception of the pure function, dead-letters too;
3. encode the outputs, write the new state to the table (it records the outputs, so a crash before the
   sends is repaired by re-emitting them), send the outputs and await the broker's acknowledgement.

Only then does the agent take the next record, so Faust never commits an input offset whose outputs are
not on the broker, and its commit flushes the changelog writes first. Dead letters carry the original
bytes and headers and are flushed before the agent moves on; nothing stops the agent.

Tables (memory store, changelog-backed): ``projects``, ``employees`` and ``suppliers`` are GlobalTables
(read by agents of other topics); ``worklogs`` and ``approvals`` are partitioned like their topics.

Skipped input: a rebalance under load (a worker joining, another leaving on SIGTERM) made Faust 0.15
on Tansu skip 32 records in a row (measured): they were fetched, dropped from the stream buffer and
never handled, while later ones were. The cause found (buffers cleared after the seek that ends a
table recovery) is fixed in ``app.py``; as a second line of defence every agent keeps a
``progress-<topic>`` table (partition → last handled offset, written after the outputs were
acknowledged), and an event beyond it first has the records in between read from the broker and handled.
Records fetched and dropped with no later record to reveal the gap would stall the partition: the
watchdog (:func:`watch`) then stops the worker for a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bizbus.connectors.dlq import DeadLetterWriter, dead_letter
from bizbus.connectors.errors import ConnectorError, Permanent, Poison
from bizbus.schemas import catalog
from bizbus.streams import f1_cost_centers as f1
from bizbus.streams import f2_labor_cost as f2
from bizbus.streams import f4_approvals as f4
from bizbus.streams.mapping import (
    APPROVAL_TOPIC,
    COST_CENTER_TOPIC,
    CROSSWALK_TOPIC,
    EMPLOYEE_TOPIC,
    PROJECT_TOPIC,
    PURCHASE_ORDER_TOPIC,
    SUPPLIER_TOPIC,
    TIMESHEET_TOPIC,
    VOUCHER_TOPIC,
    GraceClock,
    Missing,
    Reject,
    Result,
    Verdict,
    dumps_state,
    loads_state,
)
from confluent_kafka import Consumer, TopicPartition

from bizbus import lineage, logs, metrics
from bizbus.crashpoints import crashpoint
from bizbus.errors import RegistryError
from bizbus.serde import AvroSerde, PoisonRecord, SerdeError

if TYPE_CHECKING:
    import faust
    from bizbus.streams.app import FlowPlan

    from bizbus.catalogue import Catalogue
    from bizbus.settings import Settings

log = logging.getLogger("bizbus.flows")

FLOW_EVENTS = metrics.FLOW_EVENTS
SKIPPED_OUTCOMES = ("ignored", "skipped_stale", "skipped")
MASTER_DATA = "master-data"  # flow label of the agents that only keep master-data tables
POLL_SECONDS = 0.2  # how often a record waiting for master data looks again
MAX_BACKOFF = 30.0


class StateTable:
    """A Faust table whose values are JSON states (:func:`dumps_state`), keyed by text."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._decoded: dict[str, tuple[bytes, dict[str, Any]]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.table.get(key.encode("utf-8"))
        if raw is None:
            return None
        hit = self._decoded.get(key)
        if hit is not None and hit[0] is raw:
            return hit[1]
        state = loads_state(raw)
        assert state is not None
        self._decoded[key] = (raw, state)
        return state

    def set(self, key: str, state: dict[str, Any]) -> None:
        self.table[key.encode("utf-8")] = dumps_state(state)


@dataclass(frozen=True)
class AgentSpec:
    """What one agent does with a record: the pure function and where its state and progress live."""

    flow: str  # label in metrics and the connector name of dead letters
    decide: Callable[[dict[str, Any]], Verdict]
    store: Callable[[dict[str, Any], dict[str, Any]], None]
    grace: GraceClock
    progress: Any  # Faust table: partition (text) -> last handled offset (text)


@dataclass(frozen=True)
class RawMessage:
    """A record read directly from the broker (to fill a gap), shaped like Faust's ``Message``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: float | None


def read_range(kafka_config: dict[str, Any], topic: str, partition: int, start: int, end: int,
               idle: float = 10.0) -> list[RawMessage]:  # fmt: skip
    """The records of ``topic[partition]`` with ``start <= offset < end`` (a broker may have none for some
    offsets: transaction markers, compaction); stops at ``end`` or after ``idle`` quiet seconds."""
    consumer = Consumer({**kafka_config, "group.id": f"bizbus-gap-{uuid.uuid4().hex[:12]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    out: list[RawMessage] = []
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        quiet = time.monotonic()
        while time.monotonic() - quiet < idle:
            for m in consumer.consume(500, 0.2):
                if m.error() is not None:
                    continue
                quiet = time.monotonic()
                if m.offset() >= end:
                    return out
                ts = m.timestamp()[1]
                out.append(RawMessage(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                                      list(m.headers() or []), ts / 1000 if ts and ts > 0 else None))  # fmt: skip
    finally:
        consumer.close()
    log.error("reading %s[%d] offsets %d..%d stopped after %.0f quiet seconds at %d record(s)",
              topic, partition, start, end - 1, idle, len(out))  # fmt: skip
    return out


def _headers(msg: Any) -> list[tuple[str, bytes | None]]:
    raw = msg.headers or []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v) for k, v in items]


class Runtime:
    """What every agent shares: the serde, the output encoders, the dead-letter writer, the producer."""

    def __init__(self, app: faust.App, catalogue: Catalogue, serde: AvroSerde, dlq: DeadLetterWriter,
                 kafka_config: dict[str, Any]) -> None:  # fmt: skip
        self.app, self.catalogue, self.serde, self.dlq = app, catalogue, serde, dlq
        self.kafka_config = kafka_config
        self.encoders: dict[str, Callable[[dict[str, Any]], bytes]] = {}
        self.busy: set[str] = set()  # topics whose agent is inside an event right now

    def setup(self, output_topics: list[str]) -> None:
        """Register the output schemas and open the dead-letter producer (fails fast without a registry)."""
        for topic in output_topics:
            spec = self.catalogue.get(topic)
            self.encoders[topic] = self.serde.encoder(spec.subject, catalog.load(spec.value_schema))
        self.dlq.setup()

    async def handle(self, spec: AgentSpec, event: Any) -> str:
        """Process one input event completely (see the module doc), first any records skipped before it."""
        self.busy.add(event.message.topic)
        try:
            return await self._handle_event(spec, event)
        finally:
            self.busy.discard(event.message.topic)

    async def _handle_event(self, spec: AgentSpec, event: Any) -> str:
        msg = event.message
        key = str(msg.partition).encode()
        raw = spec.progress.get(key)
        last = int(raw) if raw is not None else None
        if last is not None and msg.offset > last + 1:
            await self._fill_gap(spec, msg.topic, msg.partition, last + 1, msg.offset)
        outcome = await self._handle(spec, msg)
        log.debug("flow %s: %s[%d]@%d %s", spec.flow, msg.topic, msg.partition, msg.offset, outcome)
        if last is None or msg.offset > last:
            spec.progress[key] = str(msg.offset).encode()
        self._report_lag(msg)
        return outcome

    def _report_lag(self, msg: Any) -> None:
        """``bizbus_consumer_lag_records`` of this record's partition: records after it (never < 0)."""
        try:
            from faust.types import TP

            high = self.app.consumer.highwater(TP(msg.topic, msg.partition))
        except Exception:  # no consumer (tests) or no fetch yet
            return
        nxt = msg.offset + 1
        lag = metrics.partition_lag(high if high is not None else -1, nxt, nxt)
        metrics.CONSUMER_LAG.labels(self.app.conf.id, msg.topic, str(msg.partition)).set(lag)

    async def _fill_gap(self, spec: AgentSpec, topic: str, partition: int, start: int, end: int) -> None:
        log.warning("flow %s: %s[%d] offsets %d..%d were skipped by the consumer; handling them now",
                    spec.flow, topic, partition, start, end - 1)  # fmt: skip
        for m in await asyncio.to_thread(read_range, self.kafka_config, topic, partition, start, end):
            await self._handle(spec, m)

    async def _handle(self, spec: AgentSpec, msg: Any) -> str:
        """One record through decode → decide → state → send; counts it in the flow's metrics."""
        metrics.RECORDS_IN.labels(spec.flow).inc()
        outcome = await self._handle_record(spec, msg)
        FLOW_EVENTS.labels(spec.flow, outcome).inc()
        if outcome in SKIPPED_OUTCOMES:
            metrics.RECORDS_SKIPPED.labels(spec.flow).inc()
        return outcome

    async def _handle_record(self, spec: AgentSpec, msg: Any) -> str:
        flow, decide, store, grace = spec.flow, spec.decide, spec.store, spec.grace
        if msg.value is None:
            return "ignored"  # a tombstone: nothing to process
        record = await self._decode(msg)
        if isinstance(record, ConnectorError):
            await self._dead_letter(flow, msg, record)
            return "dead_letter"
        verdict = self._decide(flow, decide, record)
        waiting_for, deadline = "", 0.0
        while isinstance(verdict, Missing):
            if verdict.key != waiting_for:  # the deadline is fixed once per missing key of this record
                waiting_for, deadline = verdict.key, grace.deadline(verdict.key)
            if grace.clock() >= deadline:
                break
            await asyncio.sleep(POLL_SECONDS)
            verdict = self._decide(flow, decide, record)
        if isinstance(verdict, Missing):
            await self._dead_letter(flow, msg, Permanent(verdict.message, reason="unknown_master_data"))
            return "dead_letter"
        if isinstance(verdict, Reject):
            await self._dead_letter(flow, msg, Permanent(verdict.message, reason=verdict.reason))
            return "dead_letter"
        try:
            encoded = [(o.topic, o.key.encode("utf-8"), self.encoders[o.topic](o.value), lineage.headers(o.value["meta"]))
                       for o in verdict.outputs]  # fmt: skip
        except SerdeError as exc:
            await self._dead_letter(
                flow, msg, Permanent(f"an output does not fit its schema: {exc}", reason="invalid_output")
            )
            return "dead_letter"
        if verdict.state is not None:
            store(record, verdict.state)
        crashpoint("flows.after-state")
        if encoded:
            await self._send(encoded)
            metrics.RECORDS_OUT.labels(flow).inc(len(encoded))
            metrics.observe_end_to_end(flow, [record])
        crashpoint("flows.after-send")
        return verdict.outcome

    @staticmethod
    def _decide(flow: str, decide: Callable[[dict[str, Any]], Verdict], record: dict[str, Any]) -> Verdict:
        try:
            return decide(record)
        except Exception as exc:  # a bug or an unforeseen input: dead letter, never a dead agent
            log.exception("flow %s failed on event %s", flow, (record.get("meta") or {}).get("event_id"),
                          extra=logs.record_fields(record.get("meta"), component=flow))  # fmt: skip
            return Reject("unexpected", f"flow {flow} failed on this record: {type(exc).__name__}: {exc}")

    async def _decode(self, msg: Any) -> dict[str, Any] | ConnectorError:
        backoff = 0.5
        while True:
            try:
                value = self.serde.decode(msg.value)
            except PoisonRecord as exc:
                return Poison(str(exc), raw=msg.value)
            except RegistryError as exc:  # the registry is down: wait, never dead-letter a good record
                log.warning("cannot decode %s[%d]@%d yet: %s", msg.topic, msg.partition, msg.offset, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if not isinstance(value, dict) or not isinstance(value.get("meta"), dict):
                return Poison("the value decodes but is not a bizbus event (no meta)", raw=msg.value)
            return value

    async def _send(self, encoded: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]) -> None:
        """Send all outputs and wait until the broker acknowledged each; retry (same records) on failure."""
        backoff = 0.5
        while True:
            try:
                futures = [await self.app.producer.send(topic, key, value, None, None, headers)
                           for topic, key, value, headers in encoded]  # fmt: skip
                await asyncio.gather(*futures)
                return
            except Exception as exc:  # the broker refused or is unreachable: the event is not done yet
                log.warning("sending %d output(s) failed (%s: %s); retrying in %.1f s",
                            len(encoded), type(exc).__name__, exc, backoff)  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _dead_letter(self, flow: str, msg: Any, error: ConnectorError) -> None:
        """Dead-letter the original record (bytes and headers) and wait until the broker has it."""
        log.warning("flow %s: %s[%d]@%d to the dead-letter topic: %s (%s)", flow, msg.topic, msg.partition,
                    msg.offset, error, error.reason,
                    extra=logs.record_fields(headers=_headers(msg), component=flow))  # fmt: skip
        ts = int(msg.timestamp * 1000) if msg.timestamp else None
        record = dead_letter(connector=flow, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                             key=msg.key, value=msg.value, headers=_headers(msg), timestamp_ms=ts, error=error,
                             attempts=1)  # fmt: skip
        backoff = 0.5
        while True:
            try:
                self.dlq.send(record)
                await asyncio.to_thread(self.dlq.flush)
                return
            except Exception as exc:
                log.warning("dead letter not delivered (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)


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
        consumer.assign([TopicPartition(t, p, off) for (t, p), off in begin.items()])
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and len(found) < len(begin):
            for m in consumer.consume(100, 0.2):
                if m.error() is None and m.offset() >= begin[(m.topic(), m.partition())]:
                    found.add((m.topic(), m.partition()))
    finally:
        consumer.close()
    return found


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
        handled: dict[tuple[str, int], int | None] = {}
        for tp in app.consumer.assignment():
            spec = specs.get(tp.topic)
            if spec is not None:
                raw = spec.progress.get(str(tp.partition).encode())
                handled[(tp.topic, tp.partition)] = int(raw) if raw is not None else None
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


def _stored(new_state: dict[str, Any] | None) -> Result:
    """Verdict of a master-data merge: stored (nothing to send) or older than what is known."""
    return Result("skipped_stale") if new_state is None else Result("ignored", (), new_state)


def register(
    app: faust.App, plan: FlowPlan, settings: Settings, catalogue: Catalogue, serde: AvroSerde
) -> Runtime:
    """Declare the tables and agents of ``plan`` on ``app``; returns the runtime they share."""
    rt = Runtime(
        app, catalogue, serde, DeadLetterWriter(settings.kafka_config(), serde), settings.kafka_config()
    )
    outputs: list[str] = []
    if plan.cost_centers:
        outputs += [COST_CENTER_TOPIC, CROSSWALK_TOPIC]
    if plan.labor_cost:
        outputs.append(VOUCHER_TOPIC)
    if plan.approvals:
        outputs.append(PURCHASE_ORDER_TOPIC)
    rt.setup(outputs)

    specs: dict[str, AgentSpec] = {}

    def table(name: str, source: str, global_: bool = False) -> Any:
        factory = app.GlobalTable if global_ else app.Table
        return factory(name, partitions=catalogue.get(source).partitions, key_type=bytes, value_type=bytes)

    def agent(source: str, flow: str, decide: Callable[[dict[str, Any]], Verdict],
              store: Callable[[dict[str, Any], dict[str, Any]], None], grace: GraceClock) -> None:  # fmt: skip
        """An agent on ``source`` that hands every event to the runtime with this spec."""
        short = source.split(".")[2]
        spec = AgentSpec(flow, decide, store, grace, table(f"progress-{short}", source))
        specs[source] = spec
        metrics.init_component(flow, metrics.RECORDS_IN, metrics.RECORDS_OUT, metrics.RECORDS_SKIPPED)
        channel = app.topic(source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                            partitions=catalogue.get(source).partitions)  # fmt: skip

        async def run(stream: Any) -> None:
            async for event in stream.events():
                await rt.handle(spec, event)

        run.__name__ = run.__qualname__ = f"{short}_agent"
        app.agent(channel, name=f"bizbus-{short}")(run)

    # -- projects (F1 + F8 close; the state F2 and F4 read) -------------------------------------------
    projects = StateTable(table("projects", PROJECT_TOPIC, global_=True))
    name1, cfg1 = plan.cost_centers or (MASTER_DATA, f1.CostCentersConfig())
    m1: f1.CostCenterMapping = cfg1.loaded_mapping()
    emit = plan.cost_centers is not None
    agent(PROJECT_TOPIC, name1, lambda r: f1.apply_project(r, projects.get(r["project"]), m1, emit),
          lambda r, s: projects.set(r["project"], s), GraceClock(cfg1.master_data_grace_seconds, time.monotonic))  # fmt: skip

    # -- F2 labor cost ------------------------------------------------------------------------------------
    if plan.labor_cost:
        name2, cfg2 = plan.labor_cost
        m2: f2.LaborCostMapping = cfg2.loaded_mapping()
        grace2 = GraceClock(cfg2.master_data_grace_seconds, time.monotonic)
        employees = StateTable(table("employees", EMPLOYEE_TOPIC, global_=True))
        worklogs = StateTable(table("worklogs", TIMESHEET_TOPIC))
        costs = StateTable(table("project-costs", TIMESHEET_TOPIC))  # the topic is keyed by project
        metrics.init_component(name2, metrics.BUDGET_ALERTS)

        def store_worklog(r: dict[str, Any], s: dict[str, Any]) -> None:
            worklogs.set(r["worklog_id"], s)
            new, alert = f2.roll_up(costs.get(r["project"]), projects.get(r["project"]), r["project"],
                                    r["worklog_id"], s.get("voucher"), cfg2.budget_alert_percent)  # fmt: skip
            costs.set(r["project"], new)
            if alert is not None:
                metrics.BUDGET_ALERTS.labels(name2).inc()
                log.warning("budget alert: %s", alert.message,
                            extra={"component": name2, "correlation_id": r["project"]})  # fmt: skip

        agent(EMPLOYEE_TOPIC, MASTER_DATA, lambda r: _stored(f2.merge_employee(r, employees.get(r["code"]))),
              lambda r, s: employees.set(r["code"], s), grace2)  # fmt: skip
        agent(TIMESHEET_TOPIC, name2,
              lambda r: f2.post_labor(r, worklogs.get(r["worklog_id"]), projects.get, employees.get, m2),
              store_worklog, grace2)  # fmt: skip

    # -- F4 approvals -------------------------------------------------------------------------------------
    if plan.approvals:
        name4, cfg4 = plan.approvals
        m4: f4.ApprovalsMapping = cfg4.loaded_mapping()
        grace4 = GraceClock(cfg4.master_data_grace_seconds, time.monotonic)
        suppliers = StateTable(table("suppliers", SUPPLIER_TOPIC, global_=True))
        approvals = StateTable(table("approvals", APPROVAL_TOPIC))
        agent(SUPPLIER_TOPIC, MASTER_DATA, lambda r: _stored(f4.merge_supplier(r, suppliers.get(r["code"]))),
              lambda r, s: suppliers.set(r["code"], s), grace4)  # fmt: skip
        agent(APPROVAL_TOPIC, name4,
              lambda r: f4.handle_approval(r, approvals.get(r["instance_id"]), projects.get, suppliers.get, m4),
              lambda r, s: approvals.set(r["instance_id"], s), grace4)  # fmt: skip

    configs = [cfg for _, cfg in plan.configured()]
    stall = max(
        max(c.stall_restart_seconds for c in configs), 3 * max(c.master_data_grace_seconds for c in configs)
    )
    watch(app, rt, specs, settings, stall)
    return rt
