"""The reporting sink's own table: ``<schema>._parked_events``, where the records of a topic wait while its
tables cannot take its schema (an incompatible change). A record is parked in the same transaction as its
ledger row, so it is accounted for exactly once; once the tables fit again the parked records are written in
(partition, offset) order and deleted, in one transaction, before any newer record of that topic. A parked record that cannot be written then either (an empty
business key) stays in the table with ``failed`` set: kept for a person, out of the topic's way."""

from __future__ import annotations

from typing import Any

from .mapping import ident

PARKED = "_parked_events"
DRAIN_CHUNK = 500


def create_sql(schema: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {ident(schema)}.{PARKED} (topic text NOT NULL, kafka_partition integer NOT NULL, "
            "kafka_offset bigint NOT NULL, event_id text NOT NULL, record_key bytea, raw bytea NOT NULL, "
            "reason text NOT NULL, failed text, parked_at timestamp with time zone NOT NULL DEFAULT now(), "
            "PRIMARY KEY (topic, kafka_partition, kafka_offset))")  # fmt: skip


def park_sql(schema: str) -> str:
    return (f"INSERT INTO {ident(schema)}.{PARKED} (topic, kafka_partition, kafka_offset, event_id, record_key, raw, "
            "reason) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING")  # fmt: skip


def parked_topics(cur: Any, schema: str) -> dict[str, str]:
    """topic -> the reason its first parked record gives."""
    cur.execute(f"SELECT DISTINCT ON (topic) topic, reason FROM {ident(schema)}.{PARKED} WHERE failed IS NULL "
                "ORDER BY topic, kafka_partition, kafka_offset")  # fmt: skip
    return {str(t): str(r) for t, r in cur.fetchall()}


def parked_chunk(cur: Any, schema: str, topic: str) -> list[tuple[int, int, bytes | None, bytes]]:
    """The next parked records of ``topic`` in order, locked: (partition, offset, key, raw)."""
    cur.execute(f"SELECT kafka_partition, kafka_offset, record_key, raw FROM {ident(schema)}.{PARKED} WHERE topic = %s "
                f"AND failed IS NULL ORDER BY kafka_partition, kafka_offset LIMIT {DRAIN_CHUNK} FOR UPDATE", (topic,))  # fmt: skip
    return [(int(p), int(o), None if k is None else bytes(k), bytes(v)) for p, o, k, v in cur.fetchall()]


def unpark(cur: Any, schema: str, topic: str, partition: int, offset: int) -> None:
    cur.execute(f"DELETE FROM {ident(schema)}.{PARKED} WHERE topic = %s AND kafka_partition = %s AND kafka_offset = %s",
                (topic, partition, offset))  # fmt: skip


def set_reason(cur: Any, schema: str, topic: str, reason: str) -> None:
    cur.execute(f"UPDATE {ident(schema)}.{PARKED} SET reason = %s WHERE topic = %s", (reason, topic))


def set_failed(cur: Any, schema: str, topic: str, partition: int, offset: int, error: str) -> None:
    """A parked record that does not fit its tables now either (no business key): kept, out of the way."""
    cur.execute(f"UPDATE {ident(schema)}.{PARKED} SET failed = %s WHERE topic = %s AND kafka_partition = %s "
                "AND kafka_offset = %s", (error, topic, partition, offset))  # fmt: skip
