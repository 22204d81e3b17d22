"""The Faust agents of the flows: decode, look up tables, call the pure function, send, update tables.

Every agent takes its events in batches (Faust's ``take_events``, at most ``BATCH_MAX`` events or what
arrives within ``BATCH_WITHIN`` s; :meth:`Runtime.handle_batch`). Per record of a batch:

1. decode the Avro bytes (undecodable → dead letter POISON);
2. call the flow's pure function with the entity's state and the master-data tables; while it answers
   :class:`~bizbus.streams.runtime.results.Missing`, poll again (asyncio sleep) until the flow's grace
   period for that key ends, then dead-letter the record (PERMANENT ``unknown_master_data``); a
   :class:`~bizbus.streams.runtime.results.Reject`, or an exception of the pure function, dead-letters too;
3. encode the outputs and write the new state (it records the outputs, so a crash before the sends is
   repaired by re-emitting them) into the table's write buffer (:class:`StateTable`).

Then the batch is made durable in this order (:meth:`Runtime._finish`): the dead letters (original bytes
and headers) are sent and flushed; the buffered states are put in the tables' stores and their changelog
records, with all outputs, are produced and their acknowledgements awaited once
(streams/runtime/delivery.py: one confluent-kafka producer per worker, not Faust's); the ``progress``
table is written. Only then does the agent ask for the next batch, which is when Faust acks the events of
this one: Faust never commits an input offset whose outputs and state are not on the broker. A record that
must wait for master data first makes the records before it in its batch durable the same way, so their
outputs do not wait with it. Nothing stops the agent.

Tables (memory store, changelog-backed) are declared by the flows' specs
(:mod:`bizbus.streams.runtime.register`): master data read by agents of other topics (a flow's
``projects``, ``employees``, ``suppliers``) are GlobalTables, an entity's state is partitioned like its
topic.

Skipped input: a rebalance under load (a worker joining, another leaving on SIGTERM) made Faust 0.15
on Tansu skip 32 records in a row (measured): they were fetched, dropped from the stream buffer and
never handled, while later ones were. The cause found (buffers cleared after the seek that ends a
table recovery) is fixed in ``runtime/app.py``; as a second line of defence every agent keeps a
``progress-<topic>`` table (partition → last handled offset, written after the outputs were
acknowledged), and an event beyond it first has the records in between read from the broker and handled
(in the same batch).
Records fetched and dropped with no later record to reveal the gap would stall the partition: the
watchdog (:func:`~bizbus.streams.runtime.watchdog.watch`) then stops the worker for a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bizbus.schemas import catalog
from bizbus.streams.runtime.delivery import Delivery, FaustDelivery, OutRecord
from bizbus.streams.runtime.events import enter_event, handling, leave_event
from bizbus.streams.runtime.grace import GraceClock
from bizbus.streams.runtime.results import Missing, Output, Reject, Verdict, sent_output
from bizbus.streams.runtime.tables import StateTable
from confluent_kafka import Consumer, TopicPartition

from bizbus import lineage, logs, metrics
from bizbus.backoff import Backoff
from bizbus.checkpoint import Checkpoint, until_done
from bizbus.crashpoints import crashpoint
from bizbus.deadletters import DeadLetterWriter, dead_letter
from bizbus.errors import RegistryError
from bizbus.failures import ConnectorError, Permanent, Poison
from bizbus.kafka import read_until_quiet
from bizbus.serde import AvroSerde, PoisonRecord, SerdeError

if TYPE_CHECKING:
    import faust

    from bizbus.catalogue import Catalogue

log = logging.getLogger("bizbus.flows")

FLOW_EVENTS = metrics.FLOW_EVENTS
SKIPPED_OUTCOMES = ("ignored", "skipped_stale", "skipped")
POLL_SECONDS = 0.2  # how often a record waiting for master data looks again
MAX_BACKOFF = 30.0
BATCH_MAX = 2000  # events per batch of an agent (Faust's take_events)
BATCH_WITHIN = 0.2  # seconds a batch waits to fill up


@dataclass(frozen=True)
class AgentSpec:
    """What one agent does with a record: the pure function and where its state and progress live."""

    flow: str  # label in metrics and the connector name of dead letters
    decide: Callable[[dict[str, Any]], Verdict]
    store: Callable[[dict[str, Any], dict[str, Any]], None]
    grace: GraceClock
    progress: Any  # Faust table: partition (text) -> last handled offset (text)
    tables: tuple[StateTable, ...] | None = None  # the state tables this agent writes (None: all of the runtime's)
    source: str = ""  # the topic it reads (several agents may read one topic)


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
    ends = {(topic, partition): end}
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        for m in read_until_quiet(consumer, idle, ends=ends, poll=0.2):
            ts = m.timestamp()[1]
            out.append(RawMessage(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                                  list(m.headers() or []), ts / 1000 if ts and ts > 0 else None))  # fmt: skip
    finally:
        consumer.close()
    if ends:
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
    outputs and changelog records (streams/runtime/delivery.py), the state tables (flushed once per batch)."""

    def __init__(self, app: faust.App, catalogue: Catalogue, serde: AvroSerde, dlq: DeadLetterWriter,
                 kafka_config: dict[str, Any], delivery: Delivery | None = None) -> None:  # fmt: skip
        self.app, self.catalogue, self.serde, self.dlq = app, catalogue, serde, dlq
        self.kafka_config = kafka_config
        self.delivery: Delivery = delivery if delivery is not None else FaustDelivery(app)
        self.encoders: dict[str, Callable[[dict[str, Any]], bytes]] = {}
        self.busy: Counter[str] = Counter()  # topics whose agents are inside a batch right now (how many)
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
        self.busy[topic] += 1
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
            self.busy[topic] -= 1
            if self.busy[topic] <= 0:
                del self.busy[topic]

    async def _finish(self, spec: AgentSpec, batch: Batch, topic: str) -> None:
        """Make the batch so far durable through the bus's one :class:`~bizbus.checkpoint.Checkpoint`: dead
        letters acknowledged; states written (changelog records) and outputs sent in one delivery, both
        acknowledged; the position (the ``progress`` table) written. Then ``batch`` is empty again."""

        async def dead_letters() -> None:
            if batch.dead_letters:
                await self._flush_dead_letters(batch.dead_letters)

        async def state_and_outputs() -> None:  # the changelog records travel with the outputs
            records: list[OutRecord] = []
            changelog = records if self.delivery.changelog else None
            for table in self.tables if spec.tables is None else spec.tables:
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

        def position() -> None:
            for partition, offset in batch.handled.items():
                last = last_handled(spec.progress, partition)
                if last is None or offset > last:
                    with handling(batch.events.get(partition)):
                        spec.progress[str(partition).encode()] = str(offset).encode()

        await Checkpoint(dead_letters=dead_letters, state=state_and_outputs, position=position).acommit()
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
        streak = None  # made on the first registry error only: this runs for every record
        while True:
            try:
                value = self.serde.decode(msg.value)
            except PoisonRecord as exc:
                return Poison(str(exc), raw=msg.value)
            except RegistryError as exc:  # the registry is down: wait, never dead-letter a good record
                log.warning("cannot decode %s[%d]@%d yet: %s", msg.topic, msg.partition, msg.offset, exc)
                streak = streak or Backoff(0.5, MAX_BACKOFF).streak()
                await streak.await_()
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

        async def flush() -> None:
            for record in records:
                try:
                    self.dlq.send(record)
                except BufferError:  # the local queue is full: deliver what is queued first
                    await asyncio.to_thread(self.dlq.flush)
                    self.dlq.send(record)
            await asyncio.to_thread(self.dlq.flush)

        await until_done(flush, f"{len(records)} dead letter(s) not delivered", Backoff(0.5, MAX_BACKOFF))


def recorded_as_sent(state: dict[str, Any], outputs: tuple[Output, ...], sent: list[OutRecord]) -> dict[str, Any]:
    """``state`` with the outputs it records (:func:`~bizbus.streams.runtime.results.with_outputs`) replaced by the
    bytes and headers sent for them (:func:`~bizbus.streams.runtime.results.sent_output`), when they are this
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
