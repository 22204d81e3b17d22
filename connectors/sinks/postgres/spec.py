"""The ``pg-table`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec


def _reads(config: Any) -> tuple[str, ...]:
    return tuple(config.topics)


SPEC = ComponentSpec(
    "pg-table",
    "sink",
    "bizbus.connectors.sinks.postgres.connector:PgTableSink",
    "Writes each event as a row of a PostgreSQL table exactly once (row and ledger in one transaction).",
    reads=_reads,
    guarantee="exactly once: row and ledger entry in one transaction",
    example="deploy/examples/outbox-to-postgres-and-api.yaml",
)
