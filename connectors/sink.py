"""The sink loop: consume a batch, decode, write idempotently, dead-letter what cannot be written, and only
then commit the offsets (Kafka Connect's preCommit idea: the writer says what is safe).

    consume (size/time bound) -> decode (poison -> DLQ) -> writer.write(batch) with retries
      -> permanent per-record failures -> DLQ -> DLQ flush acknowledged -> commit offsets

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
from dataclasses import dataclass, field
from threading import Event
from typing import Any, Literal

from bizbus.connectors.base import Connector, Task, TaskSpec
from bizbus.connectors.dlq import DeadLetterWriter, dead_letter
from bizbus.connectors.errors import ConnectorError, Permanent, Poison, RetryPolicy, call_with_retry
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from bizbus import logs, metrics
from bizbus.serde import AvroSerde, PoisonRecord

log = logging.getLogger(__name__)

LAG_EVERY = 2.0  # seconds between consumer-lag updates of a sink task
WRITER_SWITCH_INTERVAL = 0.0005
"""GIL switch interval (seconds) of a process once one of its sinks has a writer thread. The writer comes back
from each round trip to the target (BEGIN, ledger, COPY, offsets, COMMIT ...) needing the GIL while the task
thread decodes the next batch; with CPython's default of 5 ms it waits up to that long each time, and the
overlap costs more than it saves (tests/bench/sinks.py, pg-table: ratio ~0.7 at 5 ms, ~0.9-1.0 at 0.5 ms).
Process-wide; only ever lowered."""


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
        """Next offsets the target has durably applied (seek there on assignment); {} if unknown."""
        return {}

    def close(self) -> None:
        """Release connections."""


@dataclass
class _Batch:
    """A consumed batch on its way: its messages, decoded records, failures so far, the write in flight."""

    msgs: list[Any]
    records: list[SinkRecord] = field(default_factory=list)
    failures: list[tuple[Any, ConnectorError, int]] = field(default_factory=list)
    future: Future[tuple[WriteResult, int]] | None = None


@dataclass
class SinkStats:
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0


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
        self._inflight: _Batch | None = None  # consumed, its write started, not yet committed
        self._executor: ThreadPoolExecutor | None = None

    def setup(self) -> None:
        self.writer.setup()
        self.dlq.setup()
        self._consumer = Consumer({
            **self.kafka_config, "group.id": self._group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "isolation.level": "read_committed",
        })  # fmt: skip
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        metrics.init_component(self.name, metrics.RECORDS_IN, metrics.RECORDS_OUT, metrics.IDEMPOTENT_HITS)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions another member takes over: the batch in flight is finished and committed first (the
        next owner starts after it), and their lag is no longer this task's to report."""
        self._finish_before_rebalance()
        for tp in partitions:
            metrics.forget_lag(self._group, tp.topic, tp.partition)
            self._consumed.pop((tp.topic, tp.partition), None)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each partition at the later of Kafka's committed offset and the writer's ledger."""
        self._finish_before_rebalance()  # the writer is free (and its ledger current) before it is asked
        safe = self.writer.safe_offsets()
        try:
            found = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError._DESTROY:
                return  # an assignment while the consumer closes: nothing to start
            raise
        committed = {(tp.topic, tp.partition): tp.offset for tp in found}
        for tp in partitions:
            ledger = safe.get((tp.topic, tp.partition))
            kafka = committed.get((tp.topic, tp.partition), -1001)
            if ledger is not None and ledger > kafka:
                tp.offset = ledger
        for tp in partitions:
            start = tp.offset if tp.offset >= 0 else committed.get((tp.topic, tp.partition), -1001)
            if start >= 0:
                self._committed[(tp.topic, tp.partition)] = start
        consumer.assign(partitions)
        if self._paused:
            consumer.pause(partitions)

    def _finish_before_rebalance(self) -> None:
        """``_finish`` from a rebalance callback: an offset commit refused because the group moved on is
        only logged (the writer's ledger or idempotency key absorbs the re-delivery)."""
        try:
            self._finish()
        except KafkaException as exc:
            log.warning("sink %s: committing the last batch before a rebalance failed: %s", self.name, exc)

    def step(self) -> int:
        """Consume one batch (size/time bound) and decode it while the previous batch's write is still in
        flight; once that write has ended, start this batch's write, then settle the previous one (dead
        letters, offset commit) while the writer works. If settling fails, nothing past the unsettled batch
        is committed. An empty poll finishes the batch in flight. Paused partitions return nothing."""
        msgs = self._consumer.consume(self.batch_size, self.batch_timeout)
        msgs = [m for m in msgs if m.error() is None]
        batch = self._decode(msgs) if msgs else None
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
        return len(msgs)

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
        """Finish the batch whose write is in flight: its dead letters, then its offsets."""
        self._finish()

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

    def _submit(self, batch: _Batch) -> _Batch:
        """Start the batch's write on the writer thread (nothing to write: the batch is done already)."""
        if batch.records:
            if self._executor is None:
                if sys.getswitchinterval() > WRITER_SWITCH_INTERVAL:
                    sys.setswitchinterval(WRITER_SWITCH_INTERVAL)
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"sink-{self.name}-write")
            batch.future = self._executor.submit(self._write_batch, batch.records)
        return batch

    def _write_batch(self, records: list[SinkRecord]) -> tuple[WriteResult, int]:
        """(result, attempts of the whole batch): retries, then one by one past the retry budget. Runs on
        the writer thread; the end-to-end latency is observed here, when the effects are applied."""
        attempts = 0

        def attempt() -> WriteResult:
            nonlocal attempts
            attempts += 1
            return self._timed_write(records)

        try:
            result = call_with_retry(attempt, self.policy, on_retry=metrics.retry_counter(self.name))
        except ConnectorError as exc:
            if exc.error_class == "fatal":
                raise
            # batch-wide failure past the retry budget: isolate per record so one bad record
            # cannot block the partition; each gets its own verdict
            result = self._one_by_one(records)
        self._observe_end_to_end(records, result)
        return result, attempts

    def _finish(self) -> None:
        """Wait for the write in flight, dead-letter its failures (acknowledged), then commit its offsets."""
        batch = self._await_inflight()
        if batch is not None:
            self._settle(batch)

    def _abandon_inflight(self) -> None:
        """After the previous batch could not be settled: let the write in flight end, but commit nothing
        past the unsettled batch (its records come again to the next owner; the writer's ledger or
        idempotency key absorbs them)."""
        batch, self._inflight = self._inflight, None
        if batch is not None and batch.future is not None:
            try:
                batch.future.result()
            except Exception as exc:  # noqa: BLE001 - the first error is the one raised
                log.warning("sink %s: the write in flight failed while abandoned: %s", self.name, exc)

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
                batch.failures += [(by_id[effect_id], err, attempts) for effect_id, err in result.failed.items()]
        return batch

    def _settle(self, batch: _Batch) -> None:
        """A written batch made final: its failures dead-lettered (acknowledged), then its offsets committed."""
        failures = batch.failures
        for item, err, n in failures:
            self.dlq.send(self._dead_letter(item, err, n))
        if failures:
            self.dlq.flush()  # acknowledged before the offsets move past them
            self.stats.dead_lettered += len(failures)
        self._commit(batch.msgs)
        self.stats.batches += 1

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

    def _one_by_one(self, records: list[SinkRecord]) -> WriteResult:
        total = WriteResult(applied_ids=set())
        for r in records:
            try:
                res = call_with_retry(lambda r=r: self._timed_write([r]), self.policy,
                                      on_retry=metrics.retry_counter(self.name))  # fmt: skip
            except ConnectorError as exc:
                if exc.error_class == "fatal":
                    raise
                total.failed[r.effect_id] = exc
                continue
            total.applied += res.applied
            total.duplicates += res.duplicates
            total.failed.update(res.failed)
            if res.applied and r.effect_id not in res.failed:
                total.applied_ids.add(r.effect_id)  # type: ignore[union-attr]
        return total

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
                    self._finish()
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
