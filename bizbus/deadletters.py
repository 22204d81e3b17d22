"""Dead letters: a record a connector cannot process goes to ``bizbus.ops.dead-letter.v1`` with the original
key, value and headers as bytes, its source coordinates, the error class and message and the attempts.

The dead letter's ``event_id`` derives from (connector, topic, partition, offset), so dead-lettering the
same record twice (after a crash before the offset commit) yields the same id, and a replay can tell.
A sink must ``flush()`` the writer (delivery acknowledged) before it commits the source offset; otherwise
a crash could lose the record.

A dead letter must fit the broker too: when the original's bytes would make it larger than the producer's
``message.max.bytes``, it carries a truncated copy (half of that), and its error message starts with the original's size,
its SHA-256 and its coordinates (e.g. ``inbox:jira@17``: row 17 of the connector's inbox table), where the
whole original still is.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from bizbus import lineage, logs, metrics
from bizbus.failures import ConnectorError
from bizbus.schemas import catalog
from bizbus.serde import AvroSerde

DEAD_LETTER_TOPIC = "bizbus.ops.dead-letter.v1"
DEAD_LETTER_SCHEMA = "bizbus.ops.DeadLetter"
MAX_MESSAGE = 2000  # characters of the error message kept (enough to act on, bounded in size)
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes
KEY_KEPT = 1024  # bytes of an original key kept in a dead letter that would be too large


def count_dead_letter(record: dict[str, Any]) -> None:
    """One dead letter in ``bizbus_dead_letters_total`` and, by its reason, ``bizbus_records_failed_total``."""
    error_type = str(record["error_type"])
    reason = error_type.split("/", 1)[1] if "/" in error_type else record["error_class"].lower()
    metrics.DEAD_LETTERS.labels(record["connector"], record["error_class"].lower()).inc()
    metrics.RECORDS_FAILED.labels(record["connector"], reason).inc()


class DeadLetterNotDelivered(ConnectorError):
    """The broker did not acknowledge a dead letter: the source offset must not be committed."""

    _error_class = "retryable"


def dead_letter(
    *,
    connector: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
    timestamp_ms: int | None,
    error: ConnectorError,
    attempts: int,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A ``bizbus.ops.DeadLetter`` record for one failed source record."""
    original = lineage.read_headers(headers)
    error_class = "POISON" if error.error_class == "poison" else (
        "RETRYABLE" if error.error_class == "retryable" else "PERMANENT")  # fmt: skip
    return {
        "meta": lineage.meta(
            event_id=lineage.event_id("dead-letter", connector, topic, partition, offset),
            correlation_id=original.get("correlation_id") or f"{topic}/{partition}/{offset}",
            source_system="bizbus",
            occurred_at=now or datetime.now(UTC),
            causation_id=original.get("event_id"),
        ),
        "key": key,
        "value": value,
        "headers": [{"key": k, "value": v} for k, v in (headers or [])],
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "source_timestamp": (
            datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms and timestamp_ms > 0 else None
        ),
        "connector": connector,
        "error_class": error_class,
        "error_type": type(error).__name__ + (f"/{error.reason}" if getattr(error, "reason", None) else ""),
        "error_message": logs.redact(str(error))[:MAX_MESSAGE] or type(error).__name__,
        "attempts": attempts,
        "failed_at": now or datetime.now(UTC),
    }


def truncated(record: dict[str, Any], value_bytes: int) -> dict[str, Any]:
    """``record`` with its original value cut to ``value_bytes`` (and its key to ``KEY_KEPT``); the error
    message names what was cut, the original's SHA-256 and its coordinates, so the original can be found."""
    out, notes = dict(record), []
    for name, keep in (("value", value_bytes), ("key", KEY_KEPT)):
        data = record[name]
        if data is not None and len(data) > keep:
            out[name] = data[:keep]
            notes.append(f"{name} truncated to {keep} of {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    if notes:
        where = f"{record['source_topic']}[{record['source_partition']}]@{record['source_offset']}"
        out["error_message"] = f"[{'; '.join(notes)}; the original is at {where}] {record['error_message']}"
    return out


class DeadLetterWriter:
    """Produces dead letters with the idempotent producer; ``flush()`` raises if any was not delivered."""

    def __init__(
        self, kafka_config: dict[str, Any], serde: AvroSerde, topic: str = DEAD_LETTER_TOPIC
    ) -> None:
        self.kafka_config = kafka_config
        self.serde = serde
        self.topic = topic
        self.sent = 0
        self._failed: list[str] = []
        self.max_bytes = int(kafka_config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))

    def setup(self) -> None:
        self._encode = self.serde.encoder(f"{self.topic}-value", catalog.load(DEAD_LETTER_SCHEMA))
        self._producer = Producer(
            {**self.kafka_config, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        )

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._failed.append(str(err))

    def send(self, record: dict[str, Any]) -> None:
        value = self._encode(record)
        headers = lineage.headers(record["meta"])
        if self._size(record["key"], value, headers) > self.max_bytes:  # keep what fits, say where the rest is
            record = truncated(record, self.max_bytes // 2)
            value = self._encode(record)
        self._producer.produce(
            self.topic,
            key=record["key"],
            value=value,
            headers=headers,
            on_delivery=self._on_delivery,
        )
        self._producer.poll(0)
        self.sent += 1
        count_dead_letter(record)

    @staticmethod
    def _size(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
        return len(key or b"") + len(value) + sum(len(k) + len(v or b"") for k, v in headers)

    def flush(self, timeout: float = 30.0) -> None:
        left = self._producer.flush(timeout)
        failed, self._failed = self._failed, []
        if left or failed:
            raise DeadLetterNotDelivered(
                f"{left} dead letter(s) still in flight and {len(failed)} refused by the broker"
                + (f": {failed[0]}" if failed else "")
            )

    def abandon(self) -> None:
        """Drop dead letters not yet delivered (the broker is gone; their records are read again)."""
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.purge()
        self._failed = []

    def close(self) -> None:
        """Deliver what is still queued (10 s at most), then let the producer go: a closed writer's client must not
        live on (a writer kept alive by a reference cycle, or frozen by ``bizbus.gcfreeze``, would otherwise keep a
        producer that reconnects to whatever broker answers next on the address, e.g. a restarted embedded one)."""
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.flush(10)
            del self._producer  # destroyed now (its last reference)
