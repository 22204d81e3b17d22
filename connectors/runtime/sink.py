"""The sink loop: consume a batch, decode, write idempotently, dead-letter what cannot be written, and only
then commit the offsets (Kafka Connect's preCommit idea: the writer says what is safe).

    consume (size/time bound) -> decode (poison -> DLQ) -> writer.write(batch) with retries
      -> permanent per-record failures -> DLQ -> DLQ flush acknowledged -> commit offsets

A target that is down is waited for, a record that is bad is set aside: retryable failures are retried
within the ``RetryPolicy`` budget; when every record of a batch keeps failing retryably past it, the target
counts as unreachable and the batch is retried with capped backoff for as long as it takes, while the task
keeps polling with its partitions paused (no eviction from the group, ``bizbus_sink_paused`` = 1,
``problem()`` says so). Only per-record verdicts become dead letters: a permanent error at once, a
retryable one that kept failing past the budget while the target answered the other records (dead-lettered
as ``retryable`` with its real attempt count). A rebalance, ``drain`` or ``close`` abandons a waiting batch
uncommitted; its records go to the next owner and the ledger absorbs what was already applied.

On assignment the runner starts a partition at the writer's ledger offset when that is ahead of Kafka's,
but only after it found the record just before it (``next_offset - 1``) with the effect id the ledger
recorded: a new broker or a re-created topic starts the log at 0 again, and seeking to the old offset would
skip the new records silently. A log that is not the one the ledger knew is said in a WARNING and
``bizbus_sink_log_reset_total``; the partition is read from the beginning, de-duplicated by the ledger, and
the ledger's stored offsets of the partition are dropped (``SinkWriter.forget_offsets``).

The write of one batch overlaps the consume and decode of the next (a writer thread, one batch in flight);
the dead letters and the commit of a batch still follow its write. A crash anywhere before the commit
re-delivers the batch; the writer's ledger (or the target's own idempotency key) absorbs what was already
applied. A record is never dropped: it is applied, or it is a dead letter whose delivery the broker
acknowledged before the offset moved past it.
"""

from __future__ import annotations

import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from threading import Event
from typing import Any, Literal

from bizbus.connectors.runtime.base import Connector, Task, TaskSpec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from bizbus import logs, metrics
from bizbus.checkpoint import Checkpoint, Outage
from bizbus.deadletters import DeadLetterWriter, dead_letter
from bizbus.failures import ConnectorError, Permanent, Poison, Retryable, RetryPolicy, classify
from bizbus.serde import AvroSerde, PoisonRecord

log = logging.getLogger(__name__)

LAG_EVERY = 2.0  # seconds between consumer-lag updates of a sink task
WRITER_SWITCH_INTERVAL = 0.0005
"""GIL switch interval (seconds) of a process once one of its sinks has a writer thread. The writer comes back
from each round trip to the target (BEGIN, ledger, COPY, offsets, COMMIT ...) needing the GIL while the task
thread decodes the next batch; with CPython's default of 5 ms it waits up to that long each time, and the
overlap costs more than it saves (tests/bench/sinks.py, pg-table: ratio ~0.7 at 5 ms, ~0.9-1.0 at 0.5 ms).
Process-wide; only ever lowered."""
WAIT_SLICE = 2.0
"""Least seconds the task thread waits for the write in flight before it pauses its partitions and keeps polling
until the write ends (a target that is down, a long lock): the member is never evicted for not polling. The
wait is a quarter of ``max.poll.interval.ms`` (at most 30 s): pausing purges the prefetched records, so the batch
after a hold comes short, and a target that simply takes a few seconds per batch (Tryton: ~2.5 s for 200 vouchers)
must not pay that each time (measured: tryton sink ratio 0.71-0.78 with a 2-s slice, against 1.08-1.23 before)."""
VERIFY_SECONDS = 5.0
"""Seconds to wait for the record at the ledger's ``next_offset - 1`` before asking the broker for the
partition's end (Tansu does not answer a fetch beyond the end with OFFSET_OUT_OF_RANGE: it waits)."""
ISOLATION_PROBES = 10
"""Single-record calls that may fail retryably in a row, none answered, before the target counts as
unreachable (not every record of a big batch is tried against a target that times out)."""
VERIFY_GIVE_UP = 60.0
"""Seconds after which a record the broker says is there but never arrived counts as not there."""


class HoldBatch(Retryable):
    """Raised by a writer for a batch it must not write now and whose records must not be isolated and
    dead-lettered one by one (the reporting sink: a schema change its tables cannot take). The step fails
    without committing anything: the task backs off and tries again from the committed offsets
    (``bizbus_task_problem`` = 1, the task's retrying state names the error) until the cause is fixed."""

    default_reason = "hold"


class Abandoned(Exception):
    """A batch given up while it was retried (rebalance, drain, close): nothing of it is committed."""


def field_at(value: Any, path: str) -> Any:
    """The field at a dotted ``path`` of a decoded event; a missing one is a per-record ``Permanent`` error."""
    cur = value
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(cur, dict) or part not in cur:
            walked = ".".join(parts[:i]) or "the record"
            raise Permanent(
                f"path {path!r} does not exist in the record (no {part!r} in {walked})", reason="mapping"
            )
        cur = cur[part]
    return cur


def next_offsets(msgs: list[Any]) -> list[TopicPartition]:
    """The offsets to commit after ``msgs``: one past the highest consumed offset per partition."""
    nxt: dict[tuple[str, int], int] = {}
    for m in msgs:
        k = (m.topic(), m.partition())
        nxt[k] = max(nxt.get(k, 0), m.offset() + 1)
    return [TopicPartition(t, p, o) for (t, p), o in nxt.items()]


class _computed_once:
    """``functools.cached_property`` without its lock: Python 3.11 takes an RLock on every first access,
    which cost 4.3 µs per record in a sink batch (cProfile of PgTableWriter.write, 40,000 records), more
    than the value itself. A record is used by one thread at a time, so a race is harmless anyway: the
    value is stored in the instance dict, which shadows this (non-data) descriptor from then on."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn, self.name = fn, fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass
class SinkRecord:
    """One decoded source record with its coordinates; ``effect_id`` is derived from its event_id.

    Treated as read-only; not a frozen dataclass because one is made per consumed record and a frozen
    ``__init__`` goes through ``object.__setattr__`` for every field."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]
    raw: bytes
    headers: list[tuple[str, bytes | None]]
    timestamp_ms: int | None

    @_computed_once  # type: ignore[misc]
    def effect_id(self) -> str:  # cached: asked several times per record and batch
        return str(self.value["meta"]["event_id"])


@dataclass
class WriteResult:
    """What a writer did with a batch; ``failed`` maps effect ids to classified per-record errors.

    ``applied_ids`` (optional) names the effects newly applied; without it, end-to-end latency is only
    recorded for batches without duplicates (a re-delivered old record would look like a slow one)."""

    applied: int = 0
    duplicates: int = 0
    failed: dict[str, ConnectorError] = field(default_factory=dict)
    applied_ids: set[str] | None = None


@dataclass(frozen=True)
class PlannedEffect:
    """What ``write`` would do with one record (``bizbus dlq replay --dry-run``): nothing is written."""

    effect_id: str
    action: Literal["create", "skip"]  # skip: the ledger (or the target) already has this effect
    detail: str  # one line a person can check, e.g. the row or the request body


class SinkWriter(ABC):
    """Writes a batch idempotently; raises for batch-wide failures, reports per-record ones."""

    def setup(self) -> None:
        """Open connections."""

    @abstractmethod
    def write(self, records: list[SinkRecord]) -> WriteResult: ...

    @abstractmethod
    def plan(self, records: list[SinkRecord]) -> list[PlannedEffect]:
        """What ``write(records)`` would do, record by record, without writing anything."""

    def safe_offsets(self) -> dict[tuple[str, int], int]:
        """Next offsets the target has durably applied; {} if unknown."""
        return {}

    def safe_positions(self) -> dict[tuple[str, int], tuple[int, str | None]]:
        """``safe_offsets`` with the effect id of the record at ``next_offset - 1`` when known. The runner
        seeks past Kafka's committed offset only to a position whose effect id it can check (a None id:
        it starts at Kafka's committed offset)."""
        return {k: (o, None) for k, o in self.safe_offsets().items()}

    def forget_offsets(self, partitions: list[tuple[str, int]]) -> None:
        """The log these partitions' stored offsets pointed into is gone (new broker, re-created topic): drop
        them, so a later assignment does not seek by them. Called on the writer thread."""

    def close(self) -> None:
        """Release connections."""


class LedgerSinkWriter(SinkWriter):
    """A writer whose applied effects and offsets live in a ledger (``self.ledger``, a
    :class:`~bizbus.connectors.runtime.ledger.PgLedger`): where it stands is what the ledger recorded."""

    ledger: Any  # PgLedger

    def safe_offsets(self) -> dict[tuple[str, int], int]:
        """The ledger's next offsets: what the target has durably received and was recorded."""
        return self.ledger.committed_offsets()

    def safe_positions(self) -> dict[tuple[str, int], tuple[int, str | None]]:
        """The ledger's next offsets with the effect id of the record before each (checked before a seek)."""
        return self.ledger.positions()

    def forget_offsets(self, partitions: list[tuple[str, int]]) -> None:
        self.ledger.forget_offsets(partitions)


@dataclass
class _Batch:
    """A consumed batch on its way: its messages, decoded records, failures so far, the write in flight."""

    msgs: list[Any]
    records: list[SinkRecord] = field(default_factory=list)
    failures: list[tuple[Any, ConnectorError, int]] = field(default_factory=list)
    future: Future[tuple[WriteResult, dict[str, int]]] | None = None
    cancel: Event = field(default_factory=Event)  # set: stop retrying, give the batch up (Abandoned)


@dataclass
class _Verify:
    """A partition started at ``offset`` whose first record must carry ``effect_id`` (the ledger's last)."""

    offset: int
    effect_id: str
    deadline: float  # then ask the broker whether the record is there at all
    since: float


@dataclass
class SinkStats:
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    verified: int = 0  # partitions whose ledger position was found in the log (that record not re-written)
    log_resets: int = 0  # partitions whose log was not the one the ledger knew
    outages: int = 0  # times the target counted as unreachable


class SinkRunner(Task):
    """Runs one sink task: a consumer-group member over ``topics`` feeding ``writer``.

    All tasks of one connector (in any number of processes) share the group ``bizbus-sink-<name>``.

    One batch is written while the next is consumed and decoded: ``writer.write`` runs on a writer thread
    (the target's I/O releases the GIL), at most one batch at a time and in consumption order. A batch's
    dead letters and offset commit still happen only after its write returned, on the task's thread,
    before the next batch's write starts; a rebalance, ``drain`` and ``close`` finish the batch in flight
    first. The writer is never used by two threads at once. The first writer thread lowers the process's
    GIL switch interval to ``WRITER_SWITCH_INTERVAL`` (why: there).
    """

    def __init__(
        self,
        name: str,
        topics: list[str],
        kafka_config: dict[str, Any],
        serde: AvroSerde,
        writer: SinkWriter,
        dlq: DeadLetterWriter,
        policy: RetryPolicy | None = None,
        batch_size: int = 500,
        batch_timeout: float = 0.2,
    ) -> None:
        self.name, self.topics, self.serde, self.writer, self.dlq = name, topics, serde, writer, dlq
        self.kafka_config = kafka_config
        self.policy = policy or RetryPolicy()
        self.batch_size, self.batch_timeout = batch_size, batch_timeout
        self.stats = SinkStats()
        self._paused = False
        self._group = f"bizbus-sink-{name}"
        self._consumed: dict[tuple[str, int], int] = {}  # next offset after the last record seen
        self._committed: dict[tuple[str, int], int] = {}
        self._lag_at = 0.0
        max_poll = float(kafka_config.get("max.poll.interval.ms", 300_000)) / 1000
        self._wait_slice = max(WAIT_SLICE, min(30.0, max_poll / 4))
        self._inflight: _Batch | None = None  # consumed, its write started, not yet committed
        self._executor: ThreadPoolExecutor | None = None
        self._position: dict[tuple[str, int], int] = {}  # next offset after the last record taken
        self._verify: dict[tuple[str, int], _Verify] = {}
        self._pending: _Batch | None = None  # consumed while a slow write held the writer; not yet submitted
        self._holding = False  # partitions paused by the runner while the write in flight takes long
        self._outage = Outage(f"sink {name}", lambda v: metrics.SINK_PAUSED.labels(name).set(v))  # target down

    def setup(self) -> None:
        self.writer.setup()
        self.dlq.setup()
        self._consumer = Consumer({
            **self.kafka_config, "group.id": self._group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "isolation.level": "read_committed",
        })  # fmt: skip
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        metrics.init_component(self.name, metrics.RECORDS_IN, metrics.RECORDS_OUT, metrics.IDEMPOTENT_HITS)
        self._outage.reset()
        for topic in self.topics:
            metrics.SINK_LOG_RESETS.labels(self.name, topic)

    def problem(self) -> str | None:
        return self._outage.problem()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions another member takes over: the batch in flight is finished and committed first (the
        next owner starts after it), and their lag is no longer this task's to report."""
        self._finish_before_rebalance()
        for tp in partitions:
            metrics.forget_lag(self._group, tp.topic, tp.partition)
            self._consumed.pop((tp.topic, tp.partition), None)
            self._position.pop((tp.topic, tp.partition), None)
            self._verify.pop((tp.topic, tp.partition), None)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each partition at the later of Kafka's committed offset and the writer's ledger; a ledger
        position (even one equal to Kafka's) is started one record early, at the record whose effect id the
        ledger recorded, and checked in ``_take`` (see the module doc)."""
        self._finish_before_rebalance()  # the writer is free (and its ledger current) before it is asked
        safe = self.writer.safe_positions()
        try:
            found = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError._DESTROY:
                return  # an assignment while the consumer closes: nothing to start
            raise
        committed = {(tp.topic, tp.partition): tp.offset for tp in found}
        now = time.monotonic()
        for tp in partitions:
            k = (tp.topic, tp.partition)
            self._position.pop(k, None)
            self._verify.pop(k, None)
            ledger, last_id = safe.get(k, (None, None))
            kafka = committed.get(k, -1001)
            start = kafka
            if ledger is not None and ledger > 0 and ledger >= kafka and last_id is not None:
                tp.offset, start = ledger - 1, ledger
                self._verify[k] = _Verify(ledger - 1, last_id, now + VERIFY_SECONDS, now)
            elif ledger is not None and ledger > kafka:
                log.info("sink %s: %s[%d]: the ledger's next offset %d has no effect id to check it by: starting at "
                         "Kafka's committed offset (%d), duplicates absorbed by the ledger", self.name, tp.topic,
                         tp.partition, ledger, kafka)  # fmt: skip
            if start >= 0:
                self._committed[k] = start
            log.info("sink %s: %s[%d] assigned: ledger next offset %s (last effect %s), Kafka's committed %s; "
                     "starting at %s", self.name, tp.topic, tp.partition, ledger, last_id, kafka, tp.offset)  # fmt: skip
        consumer.assign(partitions)
        if self._paused or self._holding:
            consumer.pause(partitions)

    def _finish_before_rebalance(self) -> None:
        """``_finish`` from a rebalance callback: an offset commit refused because the group moved on is
        only logged (the writer's ledger or idempotency key absorbs the re-delivery)."""
        try:
            self._finish(cancel=True)
        except KafkaException as exc:
            log.warning("sink %s: committing the last batch before a rebalance failed: %s", self.name, exc)

    def step(self) -> int:
        """Consume one batch (size/time bound) and decode it while the previous batch's write is still in
        flight; once that write has ended, start this batch's write, then settle the previous one (dead
        letters, offset commit) while the writer works. If settling fails, nothing past the unsettled batch
        is committed. An empty poll finishes the batch in flight. Paused partitions return nothing.

        A write still running after ``WAIT_SLICE`` seconds (retries, a target that is down) does not block
        the loop: the partitions are paused, the consumed batch waits, and each step only polls (the group
        keeps this member) until the write has ended; then the partitions resume where they were."""
        if self._holding:
            return self._step_holding()
        msgs = self._take(self._consumer.consume(self.batch_size, self.batch_timeout))
        self._check_verifications()
        batch = self._decode(msgs) if msgs else None
        inflight = self._inflight
        if inflight is not None and inflight.future is not None and not inflight.future.done():
            wait_futures([inflight.future], self._wait_slice)
            if not inflight.future.done():
                self._hold(batch)
                return len(msgs)
        self._continue(batch)
        return len(msgs)

    def _continue(self, batch: _Batch | None) -> None:
        """The write in flight has ended: start ``batch``'s write, then settle the ended one."""
        done = self._await_inflight()
        if batch is not None:  # the writer starts on this batch while the previous one is committed
            self._inflight = self._submit(batch)
        if done is not None:
            try:
                self._settle(done)
            except BaseException:
                self._abandon_inflight()
                raise
        self._report_lag()

    def _hold(self, batch: _Batch | None) -> None:
        """Pause every assigned partition while the write in flight takes long; ``batch`` waits its turn."""
        self._pending, self._holding = batch, True
        self._consumer.pause(self._consumer.assignment())
        log.debug("sink %s: the write in flight takes long: partitions paused, polling", self.name)

    def _release_hold(self) -> None:
        """Undo ``_hold`` (the partitions stay paused if the operator paused the task)."""
        if self._holding:
            self._holding = False
            if not self._paused:
                self._consumer.resume(self._consumer.assignment())

    def _step_holding(self) -> int:
        """One step while the write in flight takes long: poll (paused partitions: nothing comes, the member
        stays in the group; anything that comes anyway is fetched again later), and once the write has ended
        resume the partitions and carry on with the batch that waited."""
        inflight = self._inflight
        if inflight is not None and inflight.future is not None:  # the write's end is seen at once, not a poll later
            wait_futures([inflight.future], 0.5)
        msgs = self._consumer.consume(self.batch_size, 0)
        self._put_back(msgs)
        inflight = self._inflight
        if not self._holding:  # a rebalance during the poll settled or abandoned everything
            return 0
        if inflight is not None and inflight.future is not None and not inflight.future.done():
            self._check_verifications()
            return 0
        batch, self._pending = self._pending, None
        self._release_hold()
        self._continue(batch)
        return len(batch.msgs) if batch is not None else 0

    def _put_back(self, msgs: list[Any]) -> None:
        """Records a paused partition still returned: seek back to them, so they come again after resuming."""
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            if m.error() is None:
                k = (m.topic(), m.partition())
                first[k] = min(first.get(k, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))

    def _take(self, msgs: list[Any]) -> list[Any]:
        """The records of a poll to process: errors left out, the first record of a partition started at a
        ledger position checked (and left out: it is applied already), a log that went backwards noticed."""
        out = []
        pos, verify = self._position, self._verify
        resets: dict[tuple[str, int], str] = {}
        for m in msgs:
            if m.error() is not None:
                continue
            k = (m.topic(), m.partition())
            off = m.offset()
            if verify and k in verify:
                v = verify.pop(k)
                found = self._effect_id_of(m)
                if off == v.offset and found == v.effect_id:
                    pos[k] = off + 1
                    self.stats.verified += 1
                    log.info("sink %s: %s[%d]: the ledger's record %s found at offset %d; continuing after it",
                             self.name, k[0], k[1], found, off)  # fmt: skip
                    continue
                resets[k] = (f"the record at offset {off} has effect id {found}, the ledger's at {v.offset} was "
                             f"{v.effect_id}")  # fmt: skip
                continue
            if k in resets:
                continue  # read again from the beginning
            expected = pos.get(k)
            if expected is not None and off < expected:
                self._log_reset(
                    k, f"offset {off} arrived after {expected - 1}: the broker moved the position back"
                )
            pos[k] = off + 1
            out.append(m)
        for k, why in resets.items():
            self._log_reset(k, why, rewind=True)
        return out

    def _effect_id_of(self, m: Any) -> str | None:
        try:
            return str(self.serde.decode(m.value())["meta"]["event_id"])
        except Exception:  # noqa: BLE001 - not a bizbus event: it cannot be the ledger's record
            return None

    def _check_verifications(self) -> None:
        """Partitions whose checked record has not come: ask the broker for the end; none there -> a new log."""
        if not self._verify:
            return
        now = time.monotonic()
        for k, v in list(self._verify.items()):
            if self._paused or self._holding:  # nothing is fetched while paused: the wait starts again after
                v.deadline, v.since = now + VERIFY_SECONDS, now
                continue
            if now < v.deadline:
                continue
            try:
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(*k), timeout=5, cached=False)
            except KafkaException:
                high = -1
            if high > v.offset and now - v.since < VERIFY_GIVE_UP:
                v.deadline = now + VERIFY_SECONDS  # the broker says it is there: give the fetch more time
                continue
            del self._verify[k]
            self._log_reset(k, f"no record at offset {v.offset} after {now - v.since:.0f} s (the broker reports "
                               f"its end at {high})", rewind=True)  # fmt: skip

    def _log_reset(self, k: tuple[str, int], why: str, rewind: bool = False) -> None:
        """Partition ``k``'s log is not the one the ledger knew: say so, read it from the beginning (``rewind``)
        and drop the ledger's stored offsets of it (on the writer thread, after the write in flight)."""
        topic, partition = k
        log.warning("sink %s: %s[%d] is not the log the ledger knew (%s): a new broker or a re-created topic; "
                    "reading the partition from the beginning, records already applied are skipped by the "
                    "ledger", self.name, topic, partition, why)  # fmt: skip
        metrics.SINK_LOG_RESETS.labels(self.name, topic).inc()
        self.stats.log_resets += 1
        self._position.pop(k, None)
        self._committed[k] = 0
        self._writer_thread().submit(self._forget_offsets, [k])
        if rewind:
            self._consumer.seek(TopicPartition(topic, partition, OFFSET_BEGINNING))

    def _forget_offsets(self, partitions: list[tuple[str, int]]) -> None:
        try:
            self.writer.forget_offsets(partitions)
        except Exception as exc:  # noqa: BLE001 - the next assignment checks again and finds the same
            log.warning("sink %s: could not drop the ledger offsets of %s: %s", self.name, partitions, exc)

    def _report_lag(self, force: bool = False) -> None:
        """``bizbus_consumer_lag_records`` of the assigned partitions, at most every LAG_EVERY seconds."""
        now = time.monotonic()
        if not force and now - self._lag_at < LAG_EVERY:
            return
        self._lag_at = now
        try:
            assigned = self._consumer.assignment()
        except Exception:  # closed or not yet assigned: nothing to report
            return
        for tp in assigned:
            k = (tp.topic, tp.partition)
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except Exception:
                high = -1
            lag = metrics.partition_lag(high, self._consumed.get(k), self._committed.get(k))
            metrics.CONSUMER_LAG.labels(self._group, tp.topic, str(tp.partition)).set(lag)

    def pause(self) -> None:
        self._paused = True
        self._consumer.pause(self._consumer.assignment())

    def resume(self) -> None:
        self._paused = False
        if not self._holding:
            self._consumer.resume(self._consumer.assignment())

    def run(self, stop: Event) -> None:
        """Loop without the task runtime (tests, one-off tools); returns with the last batch committed."""
        while not stop.is_set():
            self.step()
        self.drain()

    def process(self, msgs: list[Any]) -> None:
        """One batch through decode -> write -> dead letters -> commit, before returning (no overlap)."""
        self._finish()
        self._inflight = self._submit(self._decode(msgs))
        self._finish()

    def drain(self) -> None:
        """Finish the batch whose write is in flight: its dead letters, then its offsets (README: a stop
        finishes and commits the batch in hand). Only a batch waiting for an unreachable target is given up
        (uncommitted: the next owner reads it again) instead of waited for."""
        self._finish(cancel="if_down")

    def recover(self) -> None:
        """After a failed step (the task runtime tries again): the batch in flight is abandoned and every
        assigned partition goes back to the offset last committed, so records consumed but not settled are
        consumed again, never skipped (the writer's ledger or idempotency key absorbs a second write)."""
        self._abandon_inflight()
        assigned = self._consumer.assignment()
        if not assigned:
            return
        kafka = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.committed(assigned, timeout=10)}
        for tp in assigned:
            k = (tp.topic, tp.partition)
            offset = self._committed.get(k, kafka.get(k, OFFSET_BEGINNING))
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset if offset >= 0 else OFFSET_BEGINNING))

    def _decode(self, msgs: list[Any]) -> _Batch:
        """Decode ``msgs`` (a poison record becomes a dead letter of the batch); CPU only, no I/O."""
        self.stats.consumed += len(msgs)
        metrics.RECORDS_IN.labels(self.name).inc(len(msgs))
        metrics.BATCH_SIZE.labels(self.name).observe(len(msgs))
        batch = _Batch(msgs)
        decode = self.serde.decode
        for m in msgs:
            raw = m.value()
            try:
                value = decode(raw)
                if not isinstance(value, dict) or "meta" not in value:
                    raise PoisonRecord("record has no meta: not a bizbus event")
            except PoisonRecord as exc:
                batch.failures.append((m, Poison(str(exc)), 1))
                continue
            batch.records.append(SinkRecord(m.topic(), m.partition(), m.offset(), m.key(), value, raw,
                                            m.headers() or [], m.timestamp()[1]))  # fmt: skip
        return batch

    def _writer_thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            if sys.getswitchinterval() > WRITER_SWITCH_INTERVAL:
                sys.setswitchinterval(WRITER_SWITCH_INTERVAL)
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"sink-{self.name}-write")
        return self._executor

    def _submit(self, batch: _Batch) -> _Batch:
        """Start the batch's write on the writer thread (nothing to write: the batch is done already)."""
        if batch.records:
            batch.future = self._writer_thread().submit(self._write_batch, batch)
        return batch

    def _write_batch(self, batch: _Batch) -> tuple[WriteResult, dict[str, int]]:
        """(result, calls per effect id that failed): one call when nothing fails, else ``_retry``. Runs on
        the writer thread; the end-to-end latency is observed here, when the effects are applied."""
        records = batch.records
        try:
            result = self._timed_write(records)
        except Exception as exc:  # noqa: BLE001 - classified; fatal stops the task
            err = classify(exc)
            if err.error_class == "fatal" or isinstance(exc, HoldBatch):
                raise err from (None if err is exc else exc)
            return self._retry(batch, None, err)
        if result.failed:
            return self._retry(batch, result, None)
        self._observe_end_to_end(records, result)
        return result, {}

    def _retry(self, batch: _Batch, first: WriteResult | None, first_err: ConnectorError | None,
               ) -> tuple[WriteResult, dict[str, int]]:  # fmt: skip
        """Retry what failed until every record has a verdict; ``first`` / ``first_err``: the outcome of the
        first call, with the whole batch.

        Each round writes the records still open in one call, or in one call each once a failure of the
        whole call outlived the budget or was permanent (a batch the target refuses as a whole is isolated
        per record). After a round in which the target answered (applied, duplicate or a per-record
        verdict), only the records that failed retryably are retried, each within the budget (also when,
        retried alone, they fail again: the target answered their neighbours), then dead-lettered as
        ``retryable`` with their calls as attempts. A round in which every record failed
        retryably counts against the budget of the batch; past it the target counts as unreachable
        (``_set_down``): retried with capped backoff until it answers, one record at a time, a round stopping
        at its first failure. ``batch.cancel`` ends the wait: ``Abandoned``, nothing of the batch committed."""
        policy, on_retry = self.policy, metrics.retry_counter(self.name)
        total = WriteResult(applied_ids=set())
        attempts: dict[str, int] = {}
        first_failed: dict[str, float] = {}
        final: dict[str, ConnectorError] = {}
        todo, single, down_rounds, down_start = list(batch.records), False, 0, time.monotonic()
        done: set[str] = set()
        errors: dict[str, ConnectorError] = {}
        answered = self._account(todo, first, first_err, total, attempts, done, errors)
        raised = first_err is not None
        singled: set[str] = set()  # failed retryably in a call whose other records the target answered
        try:
            while True:
                wide = (
                    raised and not single and len(todo) > 1
                )  # one error for a whole call of several records
                for r in todo:
                    e = errors.get(r.effect_id)
                    if e is not None and e.error_class != "retryable" and not wide:
                        final[r.effect_id] = e
                todo = [r for r in todo if r.effect_id not in done and r.effect_id not in final]
                if not todo:
                    break
                now = time.monotonic()
                err = next((e for e in errors.values() if e.error_class == "retryable"), None)
                if err is None:  # a permanent error for a whole call: each record gets its own verdict
                    single = True
                elif answered or (not raised and all(r.effect_id in singled for r in todo)):
                    # the target works: what fails is the record's own problem, retried within its budget
                    if self._outage.active:
                        self._outage.end()
                    down_rounds, down_start = 0, now
                    singled.update(i for i, e in errors.items() if e.error_class == "retryable")
                    keep = []
                    for r in todo:
                        e = errors.get(r.effect_id)
                        since = first_failed.setdefault(r.effect_id, now) if e is not None else now
                        n = attempts.get(r.effect_id, 0)
                        if e is not None and (n >= policy.max_attempts or now - since >= policy.max_elapsed):
                            e.attempts = n
                            final[r.effect_id] = e
                        else:
                            keep.append(r)
                    todo = keep
                    if not todo:
                        break
                    n = min(attempts.get(r.effect_id, 1) for r in todo)
                    self._backoff(batch, policy.delay(max(n, 1), err), err, on_retry)
                else:  # every record failed retryably
                    down_rounds += 1
                    delay = policy.delay(down_rounds, err)
                    within = (
                        down_rounds < policy.max_attempts and now - down_start + delay < policy.max_elapsed
                    )
                    if within or self._outage.active:
                        self._backoff(batch, delay, err, on_retry)
                    elif not single and len(todo) > 1:
                        single = True  # past the budget: isolate per record at once, maybe only batches fail
                    else:
                        self._set_down(err, len(todo))
                        self._backoff(batch, delay, err, on_retry)
                done, errors = set(), {}
                start = (
                    down_rounds % len(todo) if self._outage.active else 0
                )  # probe another one each time
                answered, raised = self._round(
                    todo[start:] + todo[:start], single, total, attempts, done, errors
                )
        finally:
            if self._outage.active:
                self._outage.end(abandoned=batch.cancel.is_set())
        total.failed = final
        if total.applied_ids:
            metrics.observe_end_to_end(
                self.name, [r.value for r in batch.records if r.effect_id in total.applied_ids]
            )
        return total, attempts

    def _round(self, todo: list[SinkRecord], single: bool, total: WriteResult, attempts: dict[str, int],
               done: set[str], errors: dict[str, ConnectorError]) -> tuple[bool, bool]:  # fmt: skip
        """One write of ``todo`` (one call, or one call per record): whether the target answered, and whether
        a call raised (a failure of the call, not a verdict on its records). A round of single calls stops at the first retryable failure
        while the target counts as unreachable, or after ``ISOLATION_PROBES`` of them with no answer (the
        others are not tried: no attempt counted)."""
        answered = raised = False
        failed = 0
        for recs in ([r] for r in todo) if single else (todo,):
            try:
                res, err = self._timed_write(recs), None
            except Exception as exc:  # noqa: BLE001 - classified; fatal stops the task
                res, err = None, classify(exc)
                if err.error_class == "fatal" or isinstance(exc, HoldBatch):
                    raise err from (None if err is exc else exc)
                raised = True
            if self._account(recs, res, err, total, attempts, done, errors):
                answered = True
            elif single and not answered:
                failed += 1
                if self._outage.active or failed >= ISOLATION_PROBES:
                    break
        return answered, raised

    @staticmethod
    def _account(recs: list[SinkRecord], res: WriteResult | None, err: ConnectorError | None, total: WriteResult,
                 attempts: dict[str, int], done: set[str], errors: dict[str, ConnectorError]) -> bool:  # fmt: skip
        """Add one call's outcome to the round's; whether the target answered it (not only retryable errors)."""
        for r in recs:
            attempts[r.effect_id] = attempts.get(r.effect_id, 0) + 1
        if res is None:
            if err is not None:
                errors.update((r.effect_id, err) for r in recs)
            return False
        total.applied += res.applied
        total.duplicates += res.duplicates
        errors.update(res.failed)
        ok = [r.effect_id for r in recs if r.effect_id not in res.failed]
        done.update(ok)
        applied = total.applied_ids if total.applied_ids is not None else set()
        if res.applied_ids is not None:
            applied.update(res.applied_ids)
        elif res.duplicates == 0:
            applied.update(ok)
        return bool(ok) or any(e.error_class != "retryable" for e in res.failed.values())

    def _backoff(self, batch: _Batch, delay: float, err: ConnectorError,
                 on_retry: Callable[[ConnectorError, int, float], None]) -> None:  # fmt: skip
        """Wait ``delay`` before the next round, unless the batch is given up meanwhile (``Abandoned``)."""
        on_retry(err, 0, delay)
        if batch.cancel.wait(delay):
            raise Abandoned(
                f"sink {self.name}: a batch of {len(batch.records)} record(s) given up while retried"
            )

    def _set_down(self, err: ConnectorError, waiting: int) -> None:
        self._outage.begin(err, waiting)
        self.stats.outages += 1

    def _finish(self, cancel: bool | Literal["if_down"] = False) -> None:
        """Wait for the write in flight, dead-letter its failures (acknowledged), then commit its offsets.
        ``cancel``: a write still being retried is abandoned (``Abandoned``: nothing committed), and a batch
        consumed while it waited is dropped (its records come again from the committed offsets); ``"if_down"``:
        only once (or while) the target counts as unreachable, a retry within the budget is waited for."""
        inflight = self._inflight
        if cancel == "if_down" and inflight is not None and inflight.future is not None:
            while not inflight.future.done():
                if self._outage.active:
                    inflight.cancel.set()
                    break
                inflight.cancel.wait(0.1)
        elif cancel and inflight is not None:
            inflight.cancel.set()
        try:
            batch = self._await_inflight()
        except Abandoned as exc:
            batch = None
            if self._pending is not None:
                self._pending.cancel.set()
            log.warning("%s; its records come again from the committed offsets", exc)
        if batch is not None:
            self._settle(batch)
        pending, self._pending = self._pending, None
        if pending is not None:
            if cancel is True or pending.cancel.is_set() or (cancel and self._outage.active):
                log.info("sink %s: %d consumed record(s) that waited are left uncommitted", self.name,
                         len(pending.msgs))  # fmt: skip
            else:
                self._inflight = self._submit(pending)
                self._finish()
        self._release_hold()

    def _abandon_inflight(self) -> None:
        """After the previous batch could not be settled: let the write in flight end, but commit nothing
        past the unsettled batch (its records come again to the next owner; the writer's ledger or
        idempotency key absorbs them)."""
        batch, self._inflight = self._inflight, None
        if batch is not None and batch.future is not None:
            batch.cancel.set()  # a write still retrying a target that is down gives up (Abandoned)
            try:
                batch.future.result()
            except Exception as exc:  # noqa: BLE001 - the first error is the one raised
                log.warning("sink %s: the write in flight failed while abandoned: %s", self.name, exc)
        self._pending = None  # a batch consumed while it waited: its records come again
        if getattr(self, "_consumer", None) is not None:
            self._release_hold()

    def _await_inflight(self) -> _Batch | None:
        """The batch in flight once its write has ended (its failures and result recorded), or None."""
        batch, self._inflight = self._inflight, None
        if batch is None:
            return None
        if batch.future is not None:
            result, attempts = batch.future.result()
            self.stats.applied += result.applied
            self.stats.duplicates += result.duplicates
            metrics.RECORDS_OUT.labels(self.name).inc(result.applied)
            metrics.IDEMPOTENT_HITS.labels(self.name).inc(result.duplicates)
            if result.failed:
                by_id = {r.effect_id: r for r in batch.records}
                batch.failures += [(by_id[effect_id], err, attempts.get(effect_id, 1))
                                   for effect_id, err in result.failed.items()]  # fmt: skip
        return batch

    def _settle(self, batch: _Batch) -> None:
        """A written batch made final (its write returned: outputs and ledger state are durable, one
        transaction of the writer): its failures dead-lettered (acknowledged), then its offsets committed."""
        Checkpoint(dead_letters=lambda: self._flush_failures(batch.failures),
                   position=lambda: self._commit(batch.msgs)).commit()  # fmt: skip
        self.stats.batches += 1

    def _flush_failures(self, failures: list[tuple[Any, ConnectorError, int]]) -> None:
        for item, err, n in failures:
            self.dlq.send(self._dead_letter(item, err, n))
        if failures:
            self.dlq.flush()  # acknowledged before the offsets move past them
            self.stats.dead_lettered += len(failures)

    def _timed_write(self, records: list[SinkRecord]) -> WriteResult:
        started = time.perf_counter()
        try:
            return self.writer.write(records)
        finally:
            metrics.SINK_WRITE_SECONDS.labels(self.name).observe(time.perf_counter() - started)

    def _observe_end_to_end(self, records: list[SinkRecord], result: WriteResult) -> None:
        if result.applied_ids is not None:
            done = [r.value for r in records if r.effect_id in result.applied_ids]
        elif result.duplicates == 0:
            done = [r.value for r in records if r.effect_id not in result.failed]
        else:
            return
        metrics.observe_end_to_end(self.name, done)

    def _dead_letter(self, item: Any, err: ConnectorError, attempts: int) -> dict[str, Any]:
        if isinstance(item, SinkRecord):
            coords = (
                item.topic,
                item.partition,
                item.offset,
                item.key,
                item.raw,
                item.headers,
                item.timestamp_ms,
            )
        else:
            coords = (item.topic(), item.partition(), item.offset(), item.key(), item.value(),
                      list(item.headers() or []), item.timestamp()[1])  # fmt: skip
        topic, partition, offset, key, value, headers, ts = coords
        meta = item.value.get("meta") if isinstance(item, SinkRecord) else None
        log.warning("sink %s: dead-lettering %s[%d]@%d: %s", self.name, topic, partition, offset, err,
                    extra=logs.record_fields(meta, headers=headers, component=self.name))  # fmt: skip
        return dead_letter(connector=self.name, topic=topic, partition=partition, offset=offset, key=key, value=value,
                           headers=headers, timestamp_ms=ts, error=err, attempts=attempts)  # fmt: skip

    def _commit(self, msgs: list[Any]) -> None:
        offsets = next_offsets(msgs)
        self._consumer.commit(offsets=offsets, asynchronous=False)
        for tp in offsets:
            self._committed[(tp.topic, tp.partition)] = tp.offset
            self._consumed[(tp.topic, tp.partition)] = max(
                self._consumed.get((tp.topic, tp.partition), 0), tp.offset
            )

    def abandon(self) -> None:
        """The broker is gone: nothing in flight is committed at close (the next owner reads it again; the ledger
        absorbs what the write in flight applied). May be called from another thread while a step runs."""
        self._abandoned = True
        self.dlq.abandon()

    def close(self) -> None:
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:
            try:  # a batch still in flight (no drain before, e.g. after an error) is finished while a member
                if getattr(self, "_abandoned", False):
                    self._abandon_inflight()
                else:
                    self._finish(cancel=True)
            except Exception as exc:  # closing matters more; the batch is re-delivered to the next owner
                log.warning("sink %s: the batch in flight at close was not committed: %s", self.name, exc)
            consumer.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.dlq.close()
        self.writer.close()


class SinkConnector(Connector):
    """A sink connector: ``tasks_max`` members of the group ``bizbus-sink-<name>``, each with its own writer.

    Subclasses give ``writer()``; their config has ``topics``, ``retry``, ``batch_size``,
    ``batch_timeout_seconds`` and ``tasks_max``. ``bizbus dlq replay`` uses ``writer()`` too, so a replay
    goes through the same idempotent path as live traffic.
    """

    kind = "sink"

    @abstractmethod
    def writer(self) -> SinkWriter:
        """A new, not yet set up writer for this connector's target."""

    def validate(self) -> None:
        for t in self.config.topics:  # type: ignore[attr-defined]
            self.ctx.catalogue.get(t)  # ConfigError naming the known topics

    def task_specs(self, max_tasks: int) -> list[TaskSpec]:
        return [TaskSpec(i) for i in range(max_tasks)]

    def create_task(self, spec: TaskSpec) -> Task:
        c: Any = self.config
        kafka = self.ctx.settings.kafka_config()
        return SinkRunner(self.name, list(c.topics), kafka, self.ctx.serde, self.writer(),
                          DeadLetterWriter(kafka, self.ctx.serde), c.retry, c.batch_size, c.batch_timeout_seconds)  # fmt: skip
