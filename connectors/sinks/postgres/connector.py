"""``pg-table`` sink: each record becomes one row of a PostgreSQL table, written in the same transaction as
its ledger row (connectors/runtime/ledger.py), so a replay or a crash-restart never writes a row twice.

The target table needs no unique constraint: exactly once comes from the ledger. Columns are filled from
dotted paths into the decoded event (``employee.code``) or from the record's coordinates
(``$effect_id``, ``$topic``, ``$partition``, ``$offset``).

With ``upsert_key`` the row of a business key is kept current instead (e.g. a sales order's decision written
back into the sales system): ``INSERT ... ON CONFLICT (key) DO UPDATE``, the table needing a unique index on
the key; with ``newer_column`` the update happens only when the record's value is at least the stored one
(a document version), so a late replay of an older record changes nothing. The row and the ledger entry
still go in one transaction: a replay after a crash is a ledger duplicate, never a second update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from bizbus.connectors.runtime import probes
from bizbus.connectors.runtime.ledger import Effect, PgLedger
from bizbus.connectors.runtime.sink import (
    LedgerSinkWriter,
    PlannedEffect,
    SinkConnector,
    SinkRecord,
    WriteResult,
)
from psycopg import sql

from bizbus.errors import ConfigError
from bizbus.failures import classify
from bizbus.pgconn import connect

from .config import PgTableSinkConfig
from .mapping import ColumnMapper, column_mapper

RowFn = Callable[[SinkRecord], dict[str, Any]]


class PgTableWriter(LedgerSinkWriter):
    """Inserts ``row(record)`` into ``schema.table``; the ledger makes a replay a no-op."""

    def __init__(self, dsn: str, connector: str, table: str, row: RowFn, schema: str = "public",
                 ledger_schema: str = "bizbus_ledger", upsert_key: tuple[str, ...] = (),
                 newer_column: str | None = None) -> None:  # fmt: skip
        self.dsn, self.connector, self.table, self.row, self.schema = dsn, connector, table, row, schema
        self.upsert_key, self.newer_column = tuple(upsert_key), newer_column
        self.ledger = PgLedger(dsn, connector, ledger_schema)

    def _conflict(self, cols: tuple[str, ...]) -> sql.Composable:
        """`` ON CONFLICT (key) DO UPDATE SET ...`` of the upsert mode (empty when inserting only)."""
        if not self.upsert_key:
            return sql.SQL("")
        rest = [c for c in cols if c not in self.upsert_key] or list(self.upsert_key)
        clause = sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
            sql.SQL(", ").join(map(sql.Identifier, self.upsert_key)),
            sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in rest),
        )
        if self.newer_column:
            col = sql.Identifier(self.newer_column)
            clause += sql.SQL(" WHERE {}.{} <= EXCLUDED.{}").format(sql.Identifier(self.table), col, col)
        return clause

    def setup(self) -> None:
        self.ledger.setup()

    def write(self, records: list[SinkRecord]) -> WriteResult:
        effects = [Effect(r.effect_id, r.topic, r.partition, r.offset, r) for r in records]
        target = sql.Identifier(self.schema, self.table)

        statements: dict[tuple[str, ...], str] = {}  # rendered once: psycopg re-renders a Composed per call

        def insert(cur: Any, effect: Effect) -> None:
            row = self.row(effect.payload)
            cols = tuple(row)
            stmt = statements.get(cols)
            if stmt is None:
                stmt = statements[cols] = (
                    sql.SQL("INSERT INTO {} ({}) VALUES ({}){}")
                    .format(
                        target,
                        sql.SQL(", ").join(map(sql.Identifier, cols)),
                        sql.SQL(", ").join(sql.Placeholder() * len(cols)),
                        self._conflict(cols),
                    )
                    .as_string(cur.connection)
                )
            cur.execute(stmt, tuple(row.values()))

        def copy_many(cur: Any, todo: list[Effect]) -> None:
            """The rows of the at-once attempt with COPY: several times less client and server time than
            ``executemany`` per row. Defaults and row triggers apply as with INSERT; a bad value fails the
            COPY, so the ledger rolls back and goes record by record with ``insert``."""
            groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
            row_of = self.row
            if isinstance(row_of, ColumnMapper):  # the same columns for every record: one group, tuples
                values_of = row_of.values
                groups[row_of.columns] = [values_of(effect.payload) for effect in todo]
            else:
                for effect in todo:
                    row = row_of(effect.payload)
                    groups.setdefault(tuple(row), []).append(tuple(row.values()))
            for cols, values in groups.items():
                with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                        target, sql.SQL(", ").join(map(sql.Identifier, cols)))) as copy:  # fmt: skip
                    for value in values:
                        copy.write_row(value)

        # the row and its ledger entry only touch this database: the whole batch is tried at once first
        # COPY cannot upsert: an upserting writer sends its INSERTs in the pipeline of the at-once attempt
        res = self.ledger.apply_batch(effects, insert, transactional_write=True,
                                      write_many=None if self.upsert_key else copy_many)  # fmt: skip
        return WriteResult(
            len(res.applied), len(res.duplicates), {k: classify(v) for k, v in res.failed.items()}
        )

    def plan(self, records: list[SinkRecord]) -> list[PlannedEffect]:
        done = self.ledger.applied_ids([r.effect_id for r in records])
        out = []
        for r in records:
            if r.effect_id in done:
                out.append(PlannedEffect(r.effect_id, "skip", "already applied (ledger)"))
                continue
            try:
                row = self.row(r)
            except Exception as exc:
                out.append(PlannedEffect(r.effect_id, "skip", f"error: {classify(exc)}"))
                continue
            cols = ", ".join(f"{k}={v!r}" for k, v in row.items())
            verb = f"UPSERT ON ({', '.join(self.upsert_key)})" if self.upsert_key else "INSERT"
            out.append(PlannedEffect(r.effect_id, "create", f"{verb} INTO {self.schema}.{self.table}: {cols}"))
        return out


    def close(self) -> None:
        self.ledger.close()


class PgTableSink(SinkConnector):
    """``tasks_max`` consumer-group members; more processes running it join the same group."""

    Config = PgTableSinkConfig
    config: PgTableSinkConfig

    def probe(self) -> str | None:
        return probes.pg(self.config.dsn)

    def validate(self) -> None:
        super().validate()
        schema, table = self.config.table.split(".")
        try:
            with connect(self.config.dsn, f"check {self.name}", connect_timeout=5) as conn:
                cols = {r[0] for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                    (schema, table)).fetchall()}  # fmt: skip
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"connector {self.name}: cannot connect to the target database: {exc}"
            ) from None
        if not cols:
            raise ConfigError(f"connector {self.name}: target table {self.config.table} does not exist")
        missing = sorted(set(self.config.columns) - cols)
        if missing:
            raise ConfigError(
                f"connector {self.name}: {self.config.table} has no column(s) {', '.join(missing)}"
            )

    def writer(self) -> PgTableWriter:
        schema, table = self.config.table.split(".")
        return PgTableWriter(self.config.dsn, self.name, table, column_mapper(self.config.columns), schema,
                             self.config.ledger_schema, self.config.upsert_key, self.config.newer_column)  # fmt: skip
