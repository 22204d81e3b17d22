"""The Faust agents of the flows: decode, look up tables, call the pure function, send, update tables.

Every agent takes its events in batches (Faust's ``take_events``, at most ``BATCH_MAX`` events or what
arrives within ``BATCH_WITHIN`` s; :meth:`Runtime.handle_batch`). Per record of a batch:

1. decode the Avro bytes (undecodable → dead letter POISON);
2. call the flow's pure function with the entity's state and the master-data tables; while it answers
   :class:`~bizbus.streams.mapping.Missing`, poll again (asyncio sleep) until the flow's grace period for
   that key ends, then dead-letter the record (PERMANENT ``unknown_master_data``); a
   :class:`~bizbus.streams.mapping.Reject`, or an exception of the pure function, dead-letters too;
3. encode the outputs and write the new state (it records the outputs, so a crash before the sends is
   repaired by re-emitting them) into the table's write buffer (:class:`StateTable`).

Then the batch is made durable in this order (:meth:`Runtime._finish`): the dead letters (original bytes
and headers) are sent and flushed; the buffered states are put in the tables' stores and their changelog
records, with all outputs, are produced and their acknowledgements awaited once (streams/delivery.py: one
confluent-kafka producer per worker, not Faust's); the ``progress`` table is written. Only then does the
agent ask for the next batch, which is when Faust acks the events of this one: Faust never commits an
input offset whose outputs and state are not on the broker. A record that must wait for master data first makes the records before it in its batch
durable the same way, so their outputs do not wait with it. Nothing stops the agent.

Tables (memory store, changelog-backed): ``projects``, ``employees`` and ``suppliers`` are GlobalTables
(read by agents of other topics); ``worklogs`` and ``approvals`` are partitioned like their topics.

Skipped input: a rebalance under load (a worker joining, another leaving on SIGTERM) made Faust 0.15
on Tansu skip 32 records in a row (measured): they were fetched, dropped from the stream buffer and
never handled, while later ones were. The cause found (buffers cleared after the seek that ends a
table recovery) is fixed in ``app.py``; as a second line of defence every agent keeps a
``progress-<topic>`` table (partition → last handled offset, written after the outputs were
acknowledged), and an event beyond it first has the records in between read from the broker and handled
(in the same batch).
Records fetched and dropped with no later record to reveal the gap would stall the partition: the
watchdog (:func:`watch`) then stops the worker for a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bizbus.schemas import catalog
from bizbus.streams import f1_cost_centers as f1
from bizbus.streams import f2_labor_cost as f2
from bizbus.streams import f4_approvals as f4
from bizbus.streams.delivery import ConfluentDelivery, Delivery, FaustDelivery, OutRecord
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
    Output,
    Reject,
    Result,
    Verdict,
    dumps_state,
    loads_state,
    sent_output,
)
from confluent_kafka import Consumer, TopicPartition

from bizbus import lineage, logs, metrics
from bizbus.crashpoints import crashpoint
from bizbus.deadletters import DeadLetterWriter, dead_letter
from bizbus.errors import RegistryError
from bizbus.failures import ConnectorError, Permanent, Poison
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
BATCH_MAX = 2000  # events per batch of an agent (Faust's take_events)
BATCH_WITHIN = 0.2  # seconds a batch waits to fill up


def current_event() -> Any:
    """The event Faust considers being handled in this task (None outside a stream)."""
    ref = _faust_current_event().get(None)
    return ref() if ref is not None else None


_CURRENT_EVENT: list[Any] = []


def _faust_current_event() -> Any:
    """Faust's context variable of the current event (imported once: this runs for every table write)."""
    if not _CURRENT_EVENT:
        from faust.streams import _current_event

        _CURRENT_EVENT.append(_current_event)
    return _CURRENT_EVENT[0]


def enter_event(event: Any) -> Any:
    """Make ``event`` Faust's current event (table writes go to its partition's changelog); the token for
    :func:`leave_event`, None when it cannot be one (None, or a stand-in of a test)."""
    try:
        ref = weakref.ref(event)
    except TypeError:
        return None
    return _faust_current_event().set(ref)


def leave_event(token: Any) -> None:
    """Undo :func:`enter_event`."""
    if token is not None:
        _faust_current_event().reset(token)


@contextmanager
def handling(event: Any) -> Iterator[None]:
    """:func:`enter_event` for a block."""
    token = enter_event(event)
    try:
        yield
    finally:
        leave_event(token)


class StateTable:
    """A Faust table whose values are JSON states (:func:`dumps_state`), keyed by text.

    Writes are buffered until :meth:`flush` (once per batch): a key written many times in a batch (a
    project's cost roll-up) is encoded and sent to the changelog once. :meth:`get` sees the buffered
    writes, so later records of the batch and other agents of the worker read the newest state."""

    CACHE_MAX = 4096  # decoded states kept

    def __init__(self, table: Any) -> None:
        self.table = table
        self._changelog_topic: str | None = None
        self._decoded: dict[str, tuple[bytes, dict[str, Any]]] = {}
        self._dirty: dict[str, tuple[dict[str, Any], Any]] = {}  # key -> (state, event that wrote it)

    def get(self, key: str) -> dict[str, Any] | None:
        dirty = self._dirty.get(key)
        if dirty is not None:
            return dirty[0]
        # the store itself: Faust's Table.__getitem__ adds sensor callbacks per read (≈ 3 % of a worker's time)
        raw = self._store().get(key.encode("utf-8"))
        if raw is None:
            return None
        hit = self._decoded.get(key)
        if hit is not None and hit[0] is raw:
            return hit[1]
        state = loads_state(raw)
        assert state is not None
        self._remember(key, raw, state)
        return state

    def _remember(self, key: str, raw: bytes, state: dict[str, Any]) -> None:
        """Keep a decoded state for the next read (master data is read for every record). Bounded: a cache
        of every worklog ever seen doubled the worker's memory, and the garbage collector's full passes
        over those dicts took ≈ 8 % of its time (measured with gc.callbacks, 30,000 worklogs)."""
        if len(self._decoded) >= self.CACHE_MAX:
            self._decoded.clear()
        self._decoded[key] = (raw, state)

    def set(self, key: str, state: dict[str, Any]) -> None:
        self._dirty[key] = (state, current_event())

    def _store(self) -> Any:
        """Where the table's values are (a Faust table's store; a plain mapping in tests)."""
        return getattr(self.table, "data", self.table)

    def flush(self, changelog: list[OutRecord] | None = None) -> int:
        """Write the buffered states to the Faust table; how many keys.

        A changelog record goes to the changelog partition of the event that set the key (a batch spans
        partitions). With ``changelog`` the value is put in the table's store and its changelog record
        appended there, for the caller to produce (streams/delivery.py); without, Faust's
        ``Table.__setitem__`` sends it through the app's producer."""
        dirty, self._dirty = self._dirty, {}
        for key, (state, event) in dirty.items():
            raw = dumps_state(state)
            raw_key = key.encode("utf-8")
            if changelog is None or event is None:
                with handling(event):
                    self.table[raw_key] = raw
            else:
                self._store()[raw_key] = raw
                changelog.append(OutRecord(self.changelog_topic, raw_key, raw, None, event.message.partition))
        # not remembered as decoded: most keys written (a worklog) are not read again soon, and a read
        # decodes once; keeping each written state alive only gave the collector more to walk
        return len(dirty)

    @property
    def changelog_topic(self) -> str:
        if self._changelog_topic is None:
            self._changelog_topic = self.table.changelog_topic.get_topic_name()
        return self._changelog_topic


class ProjectCosts:
    """F2's per-project labor-cost roll-up (budget alerts) at constant cost per worklog.

    :func:`f2.roll_up` keeps every worklog's amount in one project state; stored like that, each timesheet
    re-encoded (and re-sent to the changelog) a state that grows with the project: 228 records/s at 20,000
    worklogs on 12 projects. Here the table holds ``<project>`` → ``{"total", "over"}`` and
    ``<project>␟<worklog>`` → ``{"amount"}``, and ``roll_up`` decides on a two-entry view (this worklog's
    amount and the rest of the total), so the rule (idempotent per worklog, alert once per crossing) stays
    in f2. A state in the old one-value form is split on first use."""

    SEP = "\x1f"
    REST = "\x1f"  # the view's entry for all other worklogs (no worklog id is a lone unit separator)

    def __init__(self, table: StateTable) -> None:
        self.table = table

    def update(self, project_key: str, project: dict[str, Any] | None, worklog_id: str,
               voucher: dict[str, Any] | None, percent: float,
               previous: dict[str, Any] | None | object = ...) -> f2.BudgetAlert | None:  # fmt: skip
        """``previous``: the worklog's state before this record, when the caller has it (the F2 agent
        does). Its voucher is the amount booked so far, so no ``<project>␟<worklog>`` entry is read or
        written: one state and one changelog record less per timesheet. A worklog seen before on another
        project books here as new (as with the entries, which are per project)."""
        head = self.table.get(project_key) or {}
        if "worklogs" in head:
            head = self._split(project_key, head)
        total = Decimal(head.get("total") or "0")
        wkey = f"{project_key}{self.SEP}{worklog_id}"
        if previous is ...:
            old = (self.table.get(wkey) or {}).get("amount")
        else:
            old = f2.booked_in(previous, project_key)
            wkey = ""  # nothing to keep per worklog
        amounts = {self.REST: str(total - Decimal(old))} if old is not None else {self.REST: str(total)}
        if old is not None:
            amounts[worklog_id] = old
        new, alert = f2.roll_up({"worklogs": amounts, "over": bool(head.get("over"))}, project, project_key,
                                worklog_id, voucher, percent)  # fmt: skip
        booked = sum((Decimal(v) for v in new["worklogs"].values()), Decimal(0))
        amount = new["worklogs"].get(worklog_id)
        if amount != old and wkey:
            self.table.set(wkey, {"amount": amount})
        self.table.set(project_key, {"total": str(booked), "over": new["over"]})
        return alert

    def _split(self, project_key: str, legacy: dict[str, Any]) -> dict[str, Any]:
        amounts: dict[str, str] = legacy.get("worklogs") or {}
        for wid, amount in amounts.items():
            self.table.set(f"{project_key}{self.SEP}{wid}", {"amount": amount})
        head = {"total": str(sum((Decimal(v) for v in amounts.values()), Decimal(0))), "over": bool(legacy.get("over"))}
        self.table.set(project_key, head)
        return head


def labor_verdict(entry: dict[str, Any], stored: dict[str, Any] | None, decode: Callable[[bytes], Any],
                  projects: Callable[[str], Any], employees: Callable[[str], Any],
                  m: f2.LaborCostMapping) -> Verdict:  # fmt: skip
    """F2's verdict on ``entry`` against the worklog's ``stored`` state, its voucher read back from the bytes
    sent (:func:`f2.full_state`). While the schema registry cannot be reached for that, the record waits
    like one missing master data (never dead-lettered at once)."""
    try:
        state = f2.full_state(stored, decode)
    except RegistryError as exc:
        return Missing("schema-registry", f"the previous voucher of worklog {entry['worklog_id']} cannot be "
                                          f"read while the schema registry is unreachable: {exc}")  # fmt: skip
    return f2.post_labor(entry, state, projects, employees, m)


@dataclass(frozen=True)
class AgentSpec:
    """What one agent does with a record: the pure function and where its state and progress live."""

    flow: str  # label in metrics and the connector name of dead letters
    decide: Callable[[dict[str, Any]], Verdict]
    store: Callable[[dict[str, Any], dict[str, Any]], None]
    grace: GraceClock
    progress: Any  # Faust table: partition (text) -> last handled offset (text)
    tables: tuple[StateTable, ...] = ()  # the state tables this agent writes (empty: all of the runtime's)


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


@dataclass
class Batch:
    """What a batch of one agent has done but not yet made durable: dead letters written (not flushed),
    outputs encoded (not sent), records handled per partition (progress not written)."""

    dead_letters: list[dict[str, Any]] = field(default_factory=list)  # dead-letter records
    outputs: list[OutRecord] = field(default_factory=list)
    stored: int = 0  # records whose state was written (the after-state crash point counts them)
    records: list[dict[str, Any]] = field(default_factory=list)  # inputs with outputs (end-to-end metric)
    handled: dict[int, int] = field(default_factory=dict)  # partition -> highest offset handled
    events: dict[int, Any] = field(default_factory=dict)  # partition -> an event of it (table writes)
    outcomes: Counter[str] = field(default_factory=Counter)  # counted in the metrics once per batch

    def done(self, partition: int, offset: int) -> None:
        if offset > self.handled.get(partition, -1):
            self.handled[partition] = offset

    @property
    def empty(self) -> bool:
        return not (self.dead_letters or self.outputs or self.stored or self.handled or self.outcomes)


def last_handled(progress: Any, partition: int) -> int | None:
    raw = progress.get(str(partition).encode())
    return int(raw) if raw is not None else None


class Runtime:
    """What every agent shares: the serde, the output encoders, the dead-letter writer, the delivery of
    outputs and changelog records (streams/delivery.py), the state tables (flushed once per batch)."""

    def __init__(self, app: faust.App, catalogue: Catalogue, serde: AvroSerde, dlq: DeadLetterWriter,
                 kafka_config: dict[str, Any], delivery: Delivery | None = None) -> None:  # fmt: skip
        self.app, self.catalogue, self.serde, self.dlq = app, catalogue, serde, dlq
        self.kafka_config = kafka_config
        self.delivery: Delivery = delivery if delivery is not None else FaustDelivery(app)
        self.encoders: dict[str, Callable[[dict[str, Any]], bytes]] = {}
        self.busy: set[str] = set()  # topics whose agent is inside a batch right now
        self.tables: list[StateTable] = []

    def setup(self, output_topics: list[str]) -> None:
        """Register the output schemas and open the dead-letter producer (fails fast without a registry)."""
        for topic in output_topics:
            spec = self.catalogue.get(topic)
            self.encoders[topic] = self.serde.encoder(spec.subject, catalog.load(spec.value_schema))
        self.dlq.setup()
        self.delivery.setup()

    async def handle(self, spec: AgentSpec, event: Any) -> None:
        """Process one input event completely (a batch of one)."""
        await self.handle_batch(spec, [event])

    async def handle_batch(self, spec: AgentSpec, events: list[Any]) -> None:
        """Process the events of one agent's batch completely (see the module doc): when this returns,
        every output and dead letter of every event is on the broker and the progress table says so."""
        if not events:
            return
        topic = events[0].message.topic
        self.busy.add(topic)
        try:
            batch = Batch()
            started = time.monotonic()
            debug = log.isEnabledFor(logging.DEBUG)
            for event in events:
                msg = event.message
                batch.events[msg.partition] = event
                last = batch.handled.get(msg.partition)
                if last is None:
                    last = last_handled(spec.progress, msg.partition)
                token = enter_event(event)  # not ``with handling()``: a generator per event on the hot path
                try:
                    if last is not None and msg.offset > last + 1:
                        await self._fill_gap(spec, batch, msg.topic, msg.partition, last + 1, msg.offset)
                    outcome = await self._handle(spec, batch, msg)
                finally:
                    leave_event(token)
                batch.done(msg.partition, msg.offset)
                if debug:
                    log.debug("flow %s: %s[%d]@%d %s", spec.flow, msg.topic, msg.partition, msg.offset, outcome)
            handled = time.monotonic()
            await self._finish(spec, batch, topic)
            log.debug("flow %s: batch of %d event(s): handled in %.3f s, made durable in %.3f s", spec.flow,
                      len(events), handled - started, time.monotonic() - handled)  # fmt: skip
            self._report_lag(topic, batch_ends(events))
        finally:
            self.busy.discard(topic)

    async def _finish(self, spec: AgentSpec, batch: Batch, topic: str) -> None:
        """Make the batch so far durable, in this order: dead letters flushed; states written (changelog
        records) and outputs sent, both acknowledged; progress written. Then ``batch`` is empty again."""
        if batch.dead_letters:
            await self._flush_dead_letters(batch.dead_letters)
        records: list[OutRecord] = []
        changelog = records if self.delivery.changelog else None
        for table in spec.tables or self.tables:
            table.flush(changelog)
        for _ in range(batch.stored):
            crashpoint("flows.after-state")
        records.extend(batch.outputs)
        if records:
            await self.delivery.send(records)
        if batch.outputs:
            metrics.RECORDS_OUT.labels(spec.flow).inc(len(batch.outputs))
            metrics.observe_end_to_end(spec.flow, batch.records)
            crashpoint("flows.after-send")
        for partition, offset in batch.handled.items():
            last = last_handled(spec.progress, partition)
            if last is None or offset > last:
                with handling(batch.events.get(partition)):
                    spec.progress[str(partition).encode()] = str(offset).encode()
        self._count(spec.flow, batch.outcomes)
        batch.outcomes.clear()
        batch.stored = 0
        batch.dead_letters.clear()
        batch.outputs.clear()
        batch.records.clear()
        batch.handled.clear()

    def _report_lag(self, topic: str, ends: dict[int, int]) -> None:
        """``bizbus_consumer_lag_records`` of the batch's partitions: records after it (never < 0)."""
        try:
            from faust.types import TP

            highs = {p: self.app.consumer.highwater(TP(topic, p)) for p in ends}
        except Exception:  # no consumer (tests) or no fetch yet
            return
        for partition, offset in ends.items():
            high, nxt = highs[partition], offset + 1
            lag = metrics.partition_lag(high if high is not None else -1, nxt, nxt)
            metrics.CONSUMER_LAG.labels(self.app.conf.id, topic, str(partition)).set(lag)

    async def _fill_gap(self, spec: AgentSpec, batch: Batch, topic: str, partition: int, start: int,
                        end: int) -> None:  # fmt: skip
        log.warning("flow %s: %s[%d] offsets %d..%d were skipped by the consumer; handling them now",
                    spec.flow, topic, partition, start, end - 1)  # fmt: skip
        for m in await asyncio.to_thread(read_range, self.kafka_config, topic, partition, start, end):
            await self._handle(spec, batch, m)
            batch.done(m.partition, m.offset)

    async def _handle(self, spec: AgentSpec, batch: Batch, msg: Any) -> str:
        """One record through decode → decide → state → outputs queued; its outcome is counted in the batch
        (the flow's metrics take the counts when the batch is made durable)."""
        outcome = await self._handle_record(spec, batch, msg)
        batch.outcomes[outcome] += 1
        return outcome

    @staticmethod
    def _count(flow: str, outcomes: Counter[str]) -> None:
        metrics.RECORDS_IN.labels(flow).inc(sum(outcomes.values()))
        for outcome, n in outcomes.items():
            FLOW_EVENTS.labels(flow, outcome).inc(n)
            if outcome in SKIPPED_OUTCOMES:
                metrics.RECORDS_SKIPPED.labels(flow).inc(n)

    async def _handle_record(self, spec: AgentSpec, batch: Batch, msg: Any) -> str:
        flow, decide, store, grace = spec.flow, spec.decide, spec.store, spec.grace
        if msg.value is None:
            return "ignored"  # a tombstone: nothing to process
        record = await self._decode(msg)
        if isinstance(record, ConnectorError):
            self._dead_letter(flow, batch, msg, record)
            return "dead_letter"
        verdict = self._decide(flow, decide, record)
        if isinstance(verdict, Missing) and not batch.empty:
            # the records before this one are done: make them durable before waiting here
            await self._finish(spec, batch, msg.topic)
        waiting_for, deadline = "", 0.0
        while isinstance(verdict, Missing):
            if verdict.key != waiting_for:  # the deadline is fixed once per missing key of this record
                waiting_for, deadline = verdict.key, grace.deadline(verdict.key)
            if grace.clock() >= deadline:
                break
            await asyncio.sleep(POLL_SECONDS)
            verdict = self._decide(flow, decide, record)
        if isinstance(verdict, Missing):
            self._dead_letter(flow, batch, msg, Permanent(verdict.message, reason="unknown_master_data"))
            return "dead_letter"
        if isinstance(verdict, Reject):
            self._dead_letter(flow, batch, msg, Permanent(verdict.message, reason=verdict.reason))
            return "dead_letter"
        try:
            encoded = [self._encode(o) for o in verdict.outputs]
        except SerdeError as exc:
            self._dead_letter(flow, batch, msg,
                              Permanent(f"an output does not fit its schema: {exc}", reason="invalid_output"))  # fmt: skip
            return "dead_letter"
        if verdict.state is not None:
            store(record, recorded_as_sent(verdict.state, verdict.outputs, encoded))
            batch.stored += 1
        if encoded:
            batch.outputs.extend(encoded)
            batch.records.append(record)
        return verdict.outcome

    def _encode(self, o: Output) -> OutRecord:
        """The record to produce for ``o`` (one re-emitted from a state goes out as first sent)."""
        if o.wire is not None:
            return OutRecord(o.topic, o.key.encode("utf-8"), o.wire[0], o.wire[1])
        assert o.value is not None
        return OutRecord(o.topic, o.key.encode("utf-8"), self.encoders[o.topic](o.value),
                         lineage.headers(o.value["meta"]))  # fmt: skip

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

    def _dead_letter(self, flow: str, batch: Batch, msg: Any, error: ConnectorError) -> None:
        """Queue a dead letter of the original record (bytes and headers) in the batch; its finish sends and
        flushes the dead letters before anything else of the batch becomes durable."""
        log.warning("flow %s: %s[%d]@%d to the dead-letter topic: %s (%s)", flow, msg.topic, msg.partition,
                    msg.offset, error, error.reason,
                    extra=logs.record_fields(headers=_headers(msg), component=flow))  # fmt: skip
        ts = int(msg.timestamp * 1000) if msg.timestamp else None
        batch.dead_letters.append(dead_letter(connector=flow, topic=msg.topic, partition=msg.partition,
                                              offset=msg.offset, key=msg.key, value=msg.value, headers=_headers(msg),
                                              timestamp_ms=ts, error=error, attempts=1))  # fmt: skip

    async def _flush_dead_letters(self, records: list[dict[str, Any]]) -> None:
        """Send ``records`` to the dead-letter topic and wait until the broker has each; on a failure all
        of them again (a dead letter may then exist twice, never not at all)."""
        backoff = 0.5
        while True:
            try:
                for record in records:
                    try:
                        self.dlq.send(record)
                    except BufferError:  # the local queue is full: deliver what is queued first
                        await asyncio.to_thread(self.dlq.flush)
                        self.dlq.send(record)
                await asyncio.to_thread(self.dlq.flush)
                return
            except Exception as exc:
                log.warning("%d dead letter(s) not delivered (%s); retrying in %.1f s", len(records), exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)


def recorded_as_sent(state: dict[str, Any], outputs: tuple[Output, ...], sent: list[OutRecord]) -> dict[str, Any]:
    """``state`` with the outputs it records (:func:`~bizbus.streams.mapping.with_outputs`) replaced by the
    bytes and headers sent for them (:func:`~bizbus.streams.mapping.sent_output`), when they are this
    verdict's outputs; else ``state`` as is. A re-emission then sends exactly what was sent, and the state
    packs cheaper (a voucher's Decimals and dates are MessagePack extension types, each a
    Python call; its Avro bytes are one copy)."""
    kept = state.get("outputs")
    if not kept or len(kept) != len(sent):
        return state
    for k, o in zip(kept, outputs, strict=True):
        if not isinstance(k, dict) or k.get("topic") != o.topic or k.get("key") != o.key:
            return state
    return {**state, "outputs": [sent_output(o.topic, o.key, r.value or b"", r.headers or [])
                                 for o, r in zip(outputs, sent, strict=True)]}  # fmt: skip


def batch_ends(events: list[Any]) -> dict[int, int]:
    """Partition → highest offset among ``events``."""
    ends: dict[int, int] = {}
    for e in events:
        m = e.message
        if m.offset > ends.get(m.partition, -1):
            ends[m.partition] = m.offset
    return ends


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
    config = settings.kafka_config()
    rt = Runtime(app, catalogue, serde, DeadLetterWriter(config, serde), config, ConfluentDelivery(config))
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

    def state_table(name: str, source: str, global_: bool = False) -> StateTable:
        st = StateTable(table(name, source, global_))
        rt.tables.append(st)
        return st

    def agent(source: str, flow: str, decide: Callable[[dict[str, Any]], Verdict],
              store: Callable[[dict[str, Any], dict[str, Any]], None], grace: GraceClock,
              writes: tuple[StateTable, ...]) -> None:  # fmt: skip
        """An agent on ``source`` that hands every event to the runtime with this spec; ``writes``: the state
        tables its ``store`` writes (its batches flush exactly those)."""
        short = source.split(".")[2]
        spec = AgentSpec(flow, decide, store, grace, table(f"progress-{short}", source), writes)
        specs[source] = spec
        metrics.init_component(flow, metrics.RECORDS_IN, metrics.RECORDS_OUT, metrics.RECORDS_SKIPPED)
        channel = app.topic(source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                            partitions=catalogue.get(source).partitions)  # fmt: skip

        async def run(stream: Any) -> None:
            # take_events acks a batch's events when the loop comes back for the next batch, i.e. after
            # handle_batch made every output durable
            async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
                await rt.handle_batch(spec, list(events))

        run.__name__ = run.__qualname__ = f"{short}_agent"
        app.agent(channel, name=f"bizbus-{short}")(run)

    # -- projects (F1 + F8 close; the state F2 and F4 read) -------------------------------------------
    projects = state_table("projects", PROJECT_TOPIC, global_=True)
    name1, cfg1 = plan.cost_centers or (MASTER_DATA, f1.CostCentersConfig())
    m1: f1.CostCenterMapping = cfg1.loaded_mapping()
    emit = plan.cost_centers is not None
    agent(PROJECT_TOPIC, name1, lambda r: f1.apply_project(r, projects.get(r["project"]), m1, emit),
          lambda r, s: projects.set(r["project"], s), GraceClock(cfg1.master_data_grace_seconds, time.monotonic),
          (projects,))  # fmt: skip

    # -- F2 labor cost ------------------------------------------------------------------------------------
    if plan.labor_cost:
        name2, cfg2 = plan.labor_cost
        m2: f2.LaborCostMapping = cfg2.loaded_mapping()
        grace2 = GraceClock(cfg2.master_data_grace_seconds, time.monotonic)
        employees = state_table("employees", EMPLOYEE_TOPIC, global_=True)
        worklogs = state_table("worklogs", TIMESHEET_TOPIC)
        cost_table = state_table("project-costs", TIMESHEET_TOPIC)  # the topic is keyed by project
        costs = ProjectCosts(cost_table)
        metrics.init_component(name2, metrics.BUDGET_ALERTS)

        def store_worklog(r: dict[str, Any], s: dict[str, Any]) -> None:
            previous = worklogs.get(r["worklog_id"])
            worklogs.set(r["worklog_id"], f2.stored_state(s))
            alert = costs.update(r["project"], projects.get(r["project"]), r["worklog_id"], s.get("voucher"),
                                 cfg2.budget_alert_percent, previous)  # fmt: skip
            if alert is not None:
                metrics.BUDGET_ALERTS.labels(name2).inc()
                log.warning("budget alert: %s", alert.message,
                            extra={"component": name2, "correlation_id": r["project"]})  # fmt: skip

        agent(EMPLOYEE_TOPIC, MASTER_DATA, lambda r: _stored(f2.merge_employee(r, employees.get(r["code"]))),
              lambda r, s: employees.set(r["code"], s), grace2, (employees,))  # fmt: skip
        agent(TIMESHEET_TOPIC, name2,
              lambda r: labor_verdict(r, worklogs.get(r["worklog_id"]), rt.serde.decode, projects.get,
                                      employees.get, m2),
              store_worklog, grace2, (worklogs, cost_table))  # fmt: skip

    # -- F4 approvals -------------------------------------------------------------------------------------
    if plan.approvals:
        name4, cfg4 = plan.approvals
        m4: f4.ApprovalsMapping = cfg4.loaded_mapping()
        grace4 = GraceClock(cfg4.master_data_grace_seconds, time.monotonic)
        suppliers = state_table("suppliers", SUPPLIER_TOPIC, global_=True)
        approvals = state_table("approvals", APPROVAL_TOPIC)
        agent(SUPPLIER_TOPIC, MASTER_DATA, lambda r: _stored(f4.merge_supplier(r, suppliers.get(r["code"]))),
              lambda r, s: suppliers.set(r["code"], s), grace4, (suppliers,))  # fmt: skip
        agent(APPROVAL_TOPIC, name4,
              lambda r: f4.handle_approval(r, approvals.get(r["instance_id"]), projects.get, suppliers.get, m4),
              lambda r, s: approvals.set(r["instance_id"], s), grace4, (approvals,))  # fmt: skip

    configs = [cfg for _, cfg in plan.configured()]
    stall = max(
        max(c.stall_restart_seconds for c in configs), 3 * max(c.master_data_grace_seconds for c in configs)
    )
    watch(app, rt, specs, settings, stall)
    return rt
