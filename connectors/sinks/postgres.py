"""PostgreSQL table sink: each record becomes one row, written in the same transaction as its ledger row.

The target table needs no unique constraint: exactly once comes from the ledger (connectors/ledger.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bizbus.connectors.errors import classify
from bizbus.connectors.ledger import Effect, PgLedger
from bizbus.connectors.sink import SinkRecord, SinkWriter, WriteResult
from psycopg import sql

RowFn = Callable[[SinkRecord], dict[str, Any]]


class PgTableWriter(SinkWriter):
    """Inserts ``row(record)`` into ``schema.table``; the ledger makes a replay a no-op."""

    def __init__(self, dsn: str, connector: str, table: str, row: RowFn, schema: str = "public",
                 ledger_schema: str = "bizbus_ledger") -> None:  # fmt: skip
        self.dsn, self.connector, self.table, self.row, self.schema = dsn, connector, table, row, schema
        self.ledger = PgLedger(dsn, connector, ledger_schema)

    def setup(self) -> None:
        self.ledger.setup()

    def write(self, records: list[SinkRecord]) -> WriteResult:
        effects = [Effect(r.effect_id, r.topic, r.partition, r.offset, r) for r in records]
        target = sql.Identifier(self.schema, self.table)

        def insert(cur: Any, effect: Effect) -> None:
            row = self.row(effect.payload)
            cur.execute(
                sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    target, sql.SQL(", ").join(map(sql.Identifier, row)), sql.SQL(", ").join(sql.Placeholder() * len(row))
                ),
                tuple(row.values()),
            )

        res = self.ledger.apply_batch(effects, insert)
        return WriteResult(len(res.applied), len(res.duplicates), {k: classify(v) for k, v in res.failed.items()})

    def safe_offsets(self) -> dict[tuple[str, int], int]:
        return self.ledger.committed_offsets()

    def close(self) -> None:
        self.ledger.close()
