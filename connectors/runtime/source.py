"""The source loop: lease the shard, read from the stored cursor, produce, and move the cursor only after
the broker acknowledged every record before it.

    lease shard -> load cursor -> reader.read(cursor) -> encode + produce (idempotent, acks=all)
      -> undecodable / schema mismatch / larger than the broker takes -> dead letter
      -> flush both -> store cursor of the acked prefix

A record is "larger than the broker takes" when its encoded key, value and headers exceed the producer's
``message.max.bytes`` (librdkafka's default 1,000,000 unless the Kafka client config sets it), when
``produce()`` refuses it for its size, or when the broker's delivery report refuses the record itself
(``MSG_SIZE_TOO_LARGE``, ``INVALID_RECORD`` ...): each becomes a dead letter (``Permanent``,
``record_too_large`` / ``record_refused``) and the cursor moves past it. Any other failed delivery (the
broker is away) keeps the cursor where it is, and the records are sent again.

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
from bizbus.connectors.runtime.base import Task
from bizbus.connectors.runtime.cursor import CursorTracker, PgCursorStore, Position
from bizbus.connectors.runtime.lease import PgLease
from bizbus.schemas import catalog
from confluent_kafka import KafkaError, KafkaException, Producer

from bizbus import lineage, metrics
from bizbus.catalogue import Catalogue
from bizbus.checkpoint import Checkpoint
from bizbus.crashpoints import crashpoint
from bizbus.deadletters import DeadLetterWriter, dead_letter
from bizbus.failures import ConnectorError, Permanent
from bizbus.kafka import log_epoch
from bizbus.serde import AvroSerde, RecordInvalid

log = logging.getLogger(__name__)

SHARD_LEASED = metrics.SHARD_LEASED
# records produced between two ``poll(0)``s. Not one per record: poll releases the GIL, and getting it back
# from a busy thread (a webhook worker's HTTP loop) can take a switch interval (5 ms) each time
POLL_EVERY = 1000
# seconds between two checks that the broker's log is still the one the cursor's records went to (a metadata
# request); also checked at every lease take-over
EPOCH_EVERY = 5.0
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes
# delivery errors about the record itself (its size or content): sending it again cannot succeed
TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE})
REFUSED_RECORD = TOO_LARGE | {KafkaError.INVALID_RECORD}


def delivery_outcome(err: KafkaError | None) -> str:
    """What a delivery report means for the record: ``acked``; ``refused`` (the broker will never take it
    as it is: its size or content; a dead letter); ``resend`` (anything else, e.g. the broker is away or
    the message timed out: the cursor stays, the record is sent again)."""
    if err is None:
        return "acked"
    return "refused" if err.code() in REFUSED_RECORD and not err.fatal() else "resend"


class _QueueFull(Exception):
    """The producer's local queue stayed full for ``flush_timeout`` (the broker is away): stop the batch."""


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
    attempts: int = 1  # conversions tried before ``error`` was final (a dead letter carries it)

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

    def problem(self) -> str | None:
        """What keeps the reader from moving on (e.g. a record it retries), or None."""
        return None


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
        self.max_message_bytes = int(kafka_config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
        self._unacked = ""  # why the last batch's cursor stayed behind (the broker did not acknowledge)

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
        refused: dict[int, KafkaError] = {}  # records the broker refused for what they are (dead-lettered)
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
                    err = self._send(item, i, tracker, refused)
                except _QueueFull:
                    break  # the cursor stops before this item; the rest is read and sent again
                if err is None:
                    if i % POLL_EVERY == POLL_EVERY - 1:  # serve delivery reports now and then; flush does the rest
                        self._producer.poll(0)
                    continue
            self._dead_letter(item, err)
            dead.append(i)
        lost, pos = self._checkpoint(items, tracker, dead, refused)
        if lost:
            return len(items)
        produced = len(items) - len(dead) - skipped - tracker.failed - tracker.pending
        self.stats.produced += produced
        self.stats.dead_lettered += len(dead)
        metrics.RECORDS_OUT.labels(self.connector).inc(produced)
        metrics.RECORDS_SKIPPED.labels(self.connector).inc(skipped)
        metrics.saw_changes(self.connector, (item.value for item in items if item.value is not None))
        self._unacked = "" if tracker.complete else (
            f"{tracker.failed + tracker.pending} record(s) not acknowledged by the broker; sending again")
        if not tracker.complete:
            log.warning("source %s shard %s: %d record(s) not acknowledged by the broker; re-sending from %s",
                        self.connector, self.shard, tracker.failed + tracker.pending, pos or self.position)  # fmt: skip
        self.position = pos or self.position
        return len(items)

    def _checkpoint(self, items: list[SourceItem], tracker: CursorTracker, dead: list[int],
                    refused: dict[int, KafkaError]) -> tuple[bool, Position | None]:  # fmt: skip
        """Make the batch durable in the one commit order (``bizbus.checkpoint``): every record's delivery
        report in (a flush), the dead letters (``dead`` and what the broker refused) acknowledged, then the
        cursor of the acknowledged prefix stored. (lost, cursor stored): ``lost`` when the lease session
        went while storing it (the lease is given up)."""
        stored: list[Position | None] = []

        def dead_letters() -> None:
            for i, kafka_error in refused.items():
                reason = "record_too_large" if kafka_error.code() in TOO_LARGE else "record_refused"
                self._dead_letter(items[i], Permanent(f"the broker refused the record: {kafka_error.str()}",
                                                      reason=reason))  # fmt: skip
                dead.append(i)
            if dead:
                self.dlq.flush(self.flush_timeout)  # raises if not acknowledged: the cursor stays put
                for i in dead:
                    tracker.ack(i)
            crashpoint("source.after-send")

        def position() -> None:
            stored.append(tracker.committable())
            if stored[0] is not None:
                self.store.store(self.connector, self.shard, stored[0], self.epoch)
                self.stats.cursor_stores += 1

        try:
            Checkpoint(outputs=lambda: self._producer.flush(self.flush_timeout), dead_letters=dead_letters,
                       position=position).commit()  # fmt: skip
        except psycopg.Error as exc:
            if not stored:
                raise
            self._lost_lease(exc)
            return True, None
        return False, stored[0]

    def _send(self, item: SourceItem, i: int, tracker: CursorTracker,
              refused: dict[int, KafkaError]) -> ConnectorError | None:  # fmt: skip
        """Encode and produce one event; the error that makes it a dead letter, or None when it went out."""
        assert item.topic is not None and item.value is not None
        encode = self._encoder(item.topic)  # registers the schema: a registry that is down is not a bad record
        try:
            value = encode(item.value)
        except RecordInvalid as exc:
            return Permanent(str(exc), reason="schema_mismatch")
        except Exception as exc:  # noqa: BLE001 - the event's content broke the encoder: that event's fault
            return Permanent(f"cannot encode the event: {type(exc).__name__}: {exc}", reason="schema_mismatch")
        headers = lineage.headers(item.value["meta"])
        size = len(value) + len(item.key or b"") + sum(len(k) + len(v or b"") for k, v in headers)
        if size > self.max_message_bytes:
            return Permanent(f"the encoded record has {size} bytes; the producer's message.max.bytes is "
                             f"{self.max_message_bytes}", reason="record_too_large")  # fmt: skip

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            outcome = delivery_outcome(err)
            if outcome == "acked":
                tracker.ack(i)
            elif outcome == "refused" and err is not None:
                refused[i] = err  # stays unacknowledged until its dead letter is
            else:
                tracker.fail(i)

        deadline = time.monotonic() + self.flush_timeout
        while True:
            try:
                self._producer.produce(item.topic, key=item.key, value=value, headers=headers, on_delivery=delivered)
                return None
            except BufferError:  # the local queue is full: wait for deliveries; too large for an empty queue
                if len(self._producer) == 0:
                    return Permanent(f"the encoded record ({size} bytes) does not fit the producer's queue",
                                     reason="record_too_large")  # fmt: skip
                if time.monotonic() > deadline:
                    raise _QueueFull() from None
                self._producer.poll(0.1)
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is None or error.code() not in REFUSED_RECORD:
                    raise
                reason = "record_too_large" if error.code() in TOO_LARGE else "record_refused"
                return Permanent(f"the producer refused the record ({size} bytes): {error.str()}", reason=reason)

    def _encoder(self, topic: str) -> Callable[[dict[str, Any]], bytes]:
        enc = self._encoders.get(topic)
        if enc is None:
            spec = self.catalogue.get(topic)
            enc = self._encoders[topic] = self.serde.encoder(spec.subject, catalog.load(spec.value_schema))
        return enc

    def _dead_letter(self, item: SourceItem, err: ConnectorError) -> None:
        self.dlq.send(dead_letter(connector=self.connector, topic=item.origin, partition=0, offset=item.offset,
                                  key=item.key, value=item.raw_bytes(), headers=None, timestamp_ms=None, error=err,
                                  attempts=item.attempts))  # fmt: skip

    def problem(self) -> str | None:
        """The reader's (a row it retries), else a batch the broker did not acknowledge."""
        reader_problem = getattr(self.reader, "problem", None)  # a reader not derived from SourceReader has none
        return (reader_problem() if reader_problem else None) or self._unacked or None

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
