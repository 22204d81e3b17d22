"""What the Redmine poller remembers: ids seen, their first key and last version, in PostgreSQL."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from bizbus.statetables import KeptConnection


@dataclass(frozen=True)
class Seen:
    first_key: str  # entity key of the first sighting (that version is CREATED)
    last_version: str  # updated_on last seen
    status: int | None = None  # projects
    identifier: str | None = None  # projects
    spent_on: date | None = None  # time entries
    last: dict[str, Any] | None = None  # time entries: {"time_entry": ..., "project_identifier": ...}
    status_changed_ms: int | None = None  # projects: status changed without updated_on, seen at
    deleted_ms: int | None = None  # time entries: found deleted at


class RedmineState:
    """``<schema>.redmine_entries_<connector>``: ids seen (first key, last version) and, for time entries,
    the last values (a deletion event repeats them); written only by the poller (under the lease)."""

    COLUMNS = ("first_key", "last_version", "status", "identifier", "spent_on", "last", "status_changed_ms",
               "deleted_ms")  # fmt: skip

    def __init__(self, dsn: str, schema: str, connector: str) -> None:
        self.dsn, self.schema, self.connector = dsn, schema, connector
        self.name = "redmine_entries_" + connector.replace("-", "_")
        self.table = sql.Identifier(schema, self.name)
        note = f"bizbus redmine connector {connector}: ids seen, for CREATED/UPDATED and deletions"
        self._kept = KeptConnection(dsn, f"redmine {connector}", schema, [
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (kind text NOT NULL, id bigint NOT NULL,
                   first_key text NOT NULL, last_version text NOT NULL, status int NULL, identifier text NULL,
                   spent_on date NULL, last jsonb NULL, status_changed_ms bigint NULL, deleted_ms bigint NULL,
                   seen_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (kind, id))"""
            ).format(self.table),
            sql.SQL("COMMENT ON TABLE {} IS {}").format(self.table, sql.Literal(note)),
        ], lock="bizbus redmine ddl")  # fmt: skip

    def setup(self) -> None:
        """Create the schema and the table if missing (under the advisory lock ``bizbus redmine ddl``)."""
        self._kept.make_tables()

    def conn(self) -> psycopg.Connection[Any]:
        """The state connection, reopened when it was closed or broke (``bizbus/statetables.py``)."""
        return self._kept.get()

    def transaction(self) -> AbstractContextManager[Any]:
        return self.conn().transaction()

    def rows(self, kind: str, ids: list[int] | None = None, spent_from: date | None = None) -> dict[int, Seen]:
        """Rows of ``kind`` by id, or the time entries spent on or after ``spent_from``."""
        cols = sql.SQL(", ").join(map(sql.Identifier, ("id", *self.COLUMNS)))
        if ids is not None:
            where, args = sql.SQL("kind = %s AND id = ANY(%s)"), (kind, ids)
        else:
            where, args = sql.SQL("kind = %s AND spent_on >= %s"), (kind, spent_from)
        found = self.conn().execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(cols, self.table, where), args)
        return {int(r[0]): Seen(*r[1:]) for r in found.fetchall()}

    def put(self, kind: str, rid: int, seen: Seen, old: Seen | None = None) -> None:
        """Insert or update a row (nothing to do when it equals ``old``, the row as read)."""
        if seen == old:
            return
        values = [getattr(seen, c) for c in self.COLUMNS]
        values[5] = None if seen.last is None else json.dumps(seen.last, ensure_ascii=False)
        cols = sql.SQL(", ").join(map(sql.Identifier, self.COLUMNS))
        updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                                     for c in self.COLUMNS[1:])  # first_key stays  # fmt: skip
        query = sql.SQL("INSERT INTO {} (kind, id, {}) VALUES (%s, %s{}) ON CONFLICT (kind, id) DO UPDATE SET {}, "
                        "seen_at = now()").format(self.table, cols, sql.SQL(", %s" * len(values)), updates)  # fmt: skip
        self.conn().execute(query, (kind, rid, *values))

    def identifiers(self) -> dict[int, str]:
        """Project id -> identifier of every project seen."""
        found = self.conn().execute(sql.SQL("SELECT id, identifier FROM {} WHERE kind = 'project' AND identifier "
                                            "IS NOT NULL").format(self.table))  # fmt: skip
        return {int(r[0]): str(r[1]) for r in found.fetchall()}

    def prune_deleted(self, before: date) -> None:
        self.conn().execute(sql.SQL("DELETE FROM {} WHERE kind = 'time_entry' AND deleted_ms IS NOT NULL "
                                    "AND spent_on < %s").format(self.table), (before,))  # fmt: skip

    def close(self) -> None:
        self._kept.close()
