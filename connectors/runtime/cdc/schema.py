"""Schema changes of captured tables: a new column flows through, a mapped column that is dropped or
changes type stops the connector (``SchemaIncompatible``, fatal) before its rows reach the journal.

The columns each table had when last checked are kept in ``<schema>.cdc_columns`` (per connector), so a
type change is found also across restarts."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from bizbus.connectors.runtime.cdc.model import SchemaIncompatible
from psycopg import sql

from bizbus.statetables import ensure_tables

log = logging.getLogger(__name__)


def check_columns(table: str, mapped: set[str], known: Mapping[str, str] | None,
                  now: Mapping[str, str]) -> tuple[list[str], list[str]]:  # fmt: skip
    """(added, dropped) columns of ``table`` since ``known``; raises ``SchemaIncompatible`` for a mapped
    column that is gone or whose type family changed."""
    gone = sorted(c for c in mapped if c not in now)
    if gone:
        raise SchemaIncompatible(f"captured table {table}: mapped column(s) {', '.join(gone)} no longer exist;"
                                 " change the mapping (or the table) and start the connector again")  # fmt: skip
    known = known or {}
    changed = sorted(c for c in mapped if c in known and known[c] != now[c])
    if changed:
        what = ", ".join(f"{c} {known[c]} -> {now[c]}" for c in changed)
        raise SchemaIncompatible(f"captured table {table}: the type of mapped column(s) changed ({what});"
                                 " change the mapping and start the connector again")  # fmt: skip
    if not known:
        return [], []
    return sorted(set(now) - set(known)), sorted(set(known) - set(now))


class SchemaGuard:
    """Checks the columns a reader reports per table, once per distinct column set."""

    def __init__(self, connector: str, schema: str, mapped: Mapping[str, set[str]]) -> None:
        self.connector, self.schema, self.mapped = connector, schema, mapped
        self.table = sql.Identifier(schema, "cdc_columns")
        self._known: dict[str, dict[str, str]] = {}

    def setup(self, conn: Any) -> None:
        ensure_tables(conn, self.schema, [sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (connector text NOT NULL, tbl text NOT NULL, columns jsonb NOT NULL,"
            " updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (connector, tbl))").format(self.table)],
            lock="bizbus cdc columns ddl")  # fmt: skip
        rows = conn.execute(sql.SQL("SELECT tbl, columns FROM {} WHERE connector = %s").format(self.table),
                            (self.connector,)).fetchall()  # fmt: skip
        self._known = {t: dict(c) for t, c in rows}

    def check(self, conn: Any, table: str, columns: Mapping[str, str] | None) -> None:
        if columns is None or self._known.get(table) == columns:
            return
        known = self._known.get(table)
        added, dropped = check_columns(table, self.mapped.get(table, set()), known, columns)
        if added or dropped:
            log.warning("cdc %s: table %s changed: new column(s) %s, dropped unmapped column(s) %s; flowing on",
                        self.connector, table, added or "none", dropped or "none")  # fmt: skip
        conn.execute(sql.SQL("INSERT INTO {} (connector, tbl, columns) VALUES (%s, %s, %s::jsonb)"
                             " ON CONFLICT (connector, tbl) DO UPDATE SET columns = EXCLUDED.columns, updated_at = now()")
                     .format(self.table), (self.connector, table, json.dumps(dict(columns))))  # fmt: skip
        self._known[table] = dict(columns)
