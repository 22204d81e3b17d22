"""The source loop: lease the shard, read from the stored cursor, produce, and move the cursor only after
the broker acknowledged every record before it.

    lease shard -> load cursor -> reader.read(cursor) -> encode + produce (idempotent, acks=all)
      -> undecodable / schema mismatch -> dead letter -> flush both -> store cursor of the acked prefix

A crash anywhere before the cursor is stored re-reads and re-sends the same rows with the same
deterministic event ids; nothing is skipped (DESIGN.md, "Sources at least once, never less").
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from bizbus.connectors.base import Task
from bizbus.connectors.cursor import CursorTracker, PgCursorStore, Position
from bizbus.connectors.dlq import DeadLetterWriter, dead_letter
from bizbus.connectors.errors import ConnectorError, Permanent
from bizbus.connectors.lease import PgLease
from bizbus.schemas import catalog
from confluent_kafka import KafkaException, Producer

from bizbus import lineage, metrics
from bizbus.broker import log_epoch
from bizbus.catalogue import Catalogue
from bizbus.crashpoints import crashpoint
from bizbus.serde import AvroSerde, RecordInvalid

log = logging.getLogger(__name__)

SHARD_LEASED = metrics.SHARD_LEASED
# records produced between two ``poll(0)``s. Not one per record: poll releases the GIL, and getting it back
# from a busy thread (a webhook worker's HTTP loop) can take a switch interval (5 ms) each time
POLL_EVERY = 1000
# seconds between two checks that the broker's log is still the one the cursor's records went to (a metadata
# request); also checked at every lease take-over
EPOCH_EVERY = 5.0


@dataclass(frozen=True)
class SourceItem:
    """One change read from a source: an event for ``topic``, or an error with the original bytes.

    ``position`` is the cursor *after* this item; ``origin`` and ``offset`` locate it in the source
    (e.g. ``pg:public.outbox`` and the row id) for dead letters.
    """

    position: Position
    origin: str
    offset: int
    raw: bytes | Callable[[], bytes]  # the bytes, or how to make them (only a dead letter needs them)
    topic: str | None = None
    key: bytes | None = None
    value: dict[str, Any] | None = None
    error: ConnectorError | None = None

    def raw_bytes(self) -> bytes:
        return self.raw if isinstance(self.raw, bytes) else self.raw()


class SourceReader(ABC):
    """Reads one shard of a source system from a cursor; holds no cursor state of its own."""

    def setup(self) -> None:
        """Open connections."""

    @abstractmethod
    def read(self, position: Position | None, limit: int) -> list[SourceItem]:
        """Up to ``limit`` items after ``position`` (None: from the beginning), in source order."""

    def rewind(self, position: Position | None) -> Position | None:
        """Where to read again from when the broker lost the log the records up to ``position`` went to (a
        restarted in-memory broker, a rebuilt cluster). Default: the beginning of what the source still holds,
        so that consumers that rebuild state from the topics (the flows) see every change again; what was
        already applied is absorbed by the sinks' ledgers."""
        return None

    def close(self) -> None:
        """Release connections."""


@dataclass
class SourceStats:
    read: int = 0
    produced: int = 0
    dead_lettered: int = 0
    cursor_stores: int = 0
    takeovers: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class SourceTask(Task):
    """One source shard: lease, read, produce, advance the cursor."""

    def __init__(
        self,
        connector: str,
        shard: str,
        reader: SourceReader,
        kafka_config: dict[str, Any],
        serde: AvroSerde,
        catalogue: Catalogue,
        dlq: DeadLetterWriter,
        state_dsn: str,
        state_schema: str = "bizbus_state",
        batch_size: int = 500,
        flush_timeout: float = 30.0,
    ) -> None:
        self.connector, self.shard, self.reader = connector, shard, reader
        self.kafka_config, self.serde, self.catalogue, self.dlq = kafka_config, serde, catalogue, dlq
        self.state_dsn, self.state_schema = state_dsn, state_schema
        self.batch_size, self.flush_timeout = batch_size, flush_timeout
        self.stats = SourceStats()
        self.position: Position | None = None
        self.epoch: str | None = None  # the broker log (cluster id) this task's sends go to
        self._epoch_at = 0.0
        self._paused = False
        self._encoders: dict[str, Callable[[dict[str, Any]], bytes]] = {}

    def setup(self) -> None:
        self.lease = PgLease(self.state_dsn, self.connector, self.shard)
        self.store = PgCursorStore(self.state_dsn, self.state_schema)
        self.reader.setup()
        self.dlq.setup()
        metrics.init_component(self.connector, metrics.RECORDS_IN, metrics.RECORDS_OUT, metrics.RECORDS_SKIPPED,
                               metrics.SOURCE_REWINDS)
        self._producer = self._new_producer()
        self._standby_logged = False

    # -- lease -------------------------------------------------------------------------------------

    def _ensure_lease(self) -> bool:
        if self.lease.held:
            return True
        if not self.lease.try_acquire():
            if not self._standby_logged:
                log.info(
                    "source %s shard %s: another worker holds the lease; standing by",
                    self.connector,
                    self.shard,
                )
                self._standby_logged = True
            return False
        try:
            self.store.setup(conn=self.lease.conn)  # cursor writes go through the lease session (fencing)
            self.position, stored_epoch = self.store.load_with_epoch(self.connector, self.shard)
        except BaseException:  # no cursor, no lease: never read on from a position that was not loaded
            self.lease.release()
            raise
        try:
            self.epoch = stored_epoch
            self._check_epoch(force=True)
        except KafkaException as exc:  # which log is it? unknown yet: send nothing, try again
            log.warning("source %s shard %s: the broker does not answer (%s); waiting", self.connector, self.shard, exc)
            self.lease.release()
            return False
        self.stats.takeovers += 1
        self._standby_logged = False
        SHARD_LEASED.labels(self.connector, self.shard).set(1)
        log.info(
            "source %s shard %s: lease taken, starting after %s", self.connector, self.shard, self.position
        )
        return True

    def _check_epoch(self, force: bool = False) -> None:
        """Rewind when the broker's log is not the one the stored cursor's records went to: they may be gone.

        Checked at take-over and every ``EPOCH_EVERY`` seconds before a batch is read, so a cursor is only ever
        stored with the epoch that was current before its records were sent: a log that changes mid-batch is
        found by the next check and the batch is sent again."""
        now = time.monotonic()
        if not force and now - self._epoch_at < EPOCH_EVERY:
            return
        current = log_epoch(self._producer, timeout=5)
        self._epoch_at = now
        if self.epoch is not None and current != self.epoch:
            rewound = self.reader.rewind(self.position)
            log.warning(
                "source %s shard %s: the broker's log changed (%s -> %s), so what it acknowledged may be lost;"
                " sending again from %s (the sinks' ledgers absorb what was applied before)",
                self.connector, self.shard, self.epoch, current, rewound or "the beginning",
            )  # fmt: skip
            metrics.SOURCE_REWINDS.labels(self.connector).inc()
            self.stats.extra["rewinds"] = self.stats.extra.get("rewinds", 0) + 1
            self.position = rewound
            if not force:  # a producer of the old log may carry sequence state the new one never saw
                self._producer.flush(5)
                self._producer = self._new_producer()
        self.epoch = current

    def _new_producer(self) -> Producer:
        return Producer({**self.kafka_config, "enable.idempotence": True, "acks": "all", "linger.ms": 5})

    def _lost_lease(self, exc: BaseException) -> None:
        log.warning(
            "source %s shard %s: lease session lost (%s); re-acquiring", self.connector, self.shard, exc
        )
        self.lease.release()
        self.position = None
        SHARD_LEASED.labels(self.connector, self.shard).set(0)

    def recover(self) -> None:
        """After a failed step (e.g. its database connection was terminated): if the lease session went
        too, give the lease up, so that it is taken again and the cursor re-read before anything is sent."""
        if getattr(self, "lease", None) is not None and self.lease.conn is not None and not self.lease.check():
            self._lost_lease(RuntimeError("the lease session did not answer after a failed step"))

    # -- loop --------------------------------------------------------------------------------------

    def step(self) -> int:
        if self._paused or not self._ensure_lease():
            return 0
        try:
            self._check_epoch()
        except KafkaException as exc:  # the broker is away: the sends below fail and are tried again
            log.debug("source %s: log epoch check failed: %s", self.connector, exc)
        items = self.reader.read(self.position, self.batch_size)
        if not items:
            return 0
        self.stats.read += len(items)
        metrics.RECORDS_IN.labels(self.connector).inc(len(items))
        metrics.BATCH_SIZE.labels(self.connector).observe(len(items))
        tracker = CursorTracker()
        dead: list[int] = []
        skipped = 0
        for i, item in enumerate(items):
            tracker.add(i, item.position)
            err = item.error
            if err is None and item.topic is None:  # nothing to send for this item; the cursor may pass it
                tracker.ack(i)
                skipped += 1
                continue
            if err is None:
                try:
                    value = self._encode(item)
                except RecordInvalid as exc:
                    err = Permanent(str(exc), reason="schema_mismatch")
                else:
                    self._producer.produce(
                        item.topic, key=item.key, value=value, headers=lineage.headers(item.value["meta"]),  # type: ignore[index]
                        on_delivery=lambda e, _m, i=i: tracker.fail(i) if e else tracker.ack(i),
                    )  # fmt: skip
                    if i % POLL_EVERY == POLL_EVERY - 1:  # serve delivery reports now and then; flush does the rest
                        self._producer.poll(0)
                    continue
            self.dlq.send(dead_letter(connector=self.connector, topic=item.origin, partition=0, offset=item.offset,
                                      key=item.key, value=item.raw_bytes(), headers=None, timestamp_ms=None, error=err,
                                      attempts=1))  # fmt: skip
            dead.append(i)
        self._producer.flush(self.flush_timeout)
        if dead:
            self.dlq.flush(self.flush_timeout)  # raises if not acknowledged: the cursor stays put
            for i in dead:
                tracker.ack(i)
        crashpoint("source.after-send")
        pos = tracker.committable()
        if pos is not None:
            try:
                self.store.store(self.connector, self.shard, pos, self.epoch)
            except psycopg.Error as exc:
                self._lost_lease(exc)
                return len(items)
            self.stats.cursor_stores += 1
        produced = len(items) - len(dead) - skipped - tracker.failed - tracker.pending
        self.stats.produced += produced
        self.stats.dead_lettered += len(dead)
        metrics.RECORDS_OUT.labels(self.connector).inc(produced)
        metrics.RECORDS_SKIPPED.labels(self.connector).inc(skipped)
        metrics.saw_changes(self.connector, (item.value for item in items if item.value is not None))
        if not tracker.complete:
            log.warning("source %s shard %s: %d record(s) not acknowledged by the broker; re-sending from %s",
                        self.connector, self.shard, tracker.failed + tracker.pending, pos or self.position)  # fmt: skip
        self.position = pos or self.position
        return len(items)

    def _encode(self, item: SourceItem) -> bytes:
        assert item.topic is not None and item.value is not None
        enc = self._encoders.get(item.topic)
        if enc is None:
            spec = self.catalogue.get(item.topic)
            enc = self._encoders[item.topic] = self.serde.encoder(
                spec.subject, catalog.load(spec.value_schema)
            )
        return enc(item.value)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def drain(self) -> None:
        self._producer.flush(self.flush_timeout)

    def abandon(self) -> None:
        """The broker is gone: drop unsent records (the cursor did not pass them; they are read again)."""
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.purge()
        self.dlq.abandon()

    def close(self) -> None:
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.flush(10)
            del self._producer  # destroyed now: no client of a replaced broker asks the next one for topics
        self.dlq.close()
        self.reader.close()
        if getattr(self, "lease", None) is not None:
            self.lease.release()
            SHARD_LEASED.labels(self.connector, self.shard).set(0)
