"""The ``pg-outbox`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec


def _writes(config: Any) -> tuple[str, ...]:
    """The topics rows may name (none listed: any catalogue topic, so nothing to cross-check)."""
    return tuple(config.topics)


SPEC = ComponentSpec(
    "pg-outbox",
    "source",
    "bizbus.connectors.sources.pg_outbox.connector:PgOutboxSource",
    "Transactional outbox in PostgreSQL: each row becomes a canonical event; cursor and shard lease in PostgreSQL.",
    writes=_writes,
    docs="docs/connectors/pg_outbox.md",
    guarantee="at least once into Kafka: cursor moves after the broker's ack; the outbox is re-sent after a lost broker; deterministic event ids",
    example="deploy/examples/outbox-to-postgres-and-api.yaml",
)
