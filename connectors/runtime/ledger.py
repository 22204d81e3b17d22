"""Applied-effect ledger for sinks whose target is PostgreSQL (DESIGN.md, "Exactly-once effects").

A sink writes each effect and its ledger row in ONE transaction on the target database, so an effect
is either applied and recorded, or neither. The ledger also keeps, per (topic, partition), the next
offset the sink has durably applied and the effect id of the record just before it (``last_effect_id``);
both are written in the same transaction, so a restarted sink can seek to its own ledger even when Kafka's
committed offsets lag behind (Kafka offsets are committed only after the ledger), after checking that the
record at ``next_offset - 1`` is still the one with that effect id (a new broker or a re-created topic
starts the log again at 0: ``forget_offsets``).

Per-record failures are isolated with a SAVEPOINT per effect: a failing ``write`` rolls back only that
record (ledger row included), which is reported in ``BatchResult.failed``; the rest of the batch commits.
Failed records do not advance the ledger offsets; the caller decides (retry, dead-letter). Connection
level failures (the connection dies, the server goes away) roll back the whole batch and re-raise.

A ``PgLedger`` owns one connection and is not thread-safe; use one instance per worker thread.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bizbus.statetables import KeptConnection

__all__ = ["BatchResult", "Effect", "PgLedger", "WriteFn", "int_array", "ledger_lock", "text_array"]


@dataclass(slots=True)
class Effect:
    """One effect to apply: its deterministic id (derived from the record's event_id) and source coordinates.
    Read-only by convention (one per record of a batch: a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` for every field)."""

    effect_id: str
    topic: str
    partition: int
    offset: int
    payload: Any


@dataclass
class BatchResult:
    """Outcome of ``PgLedger.apply_batch``.

    ``applied``: effect ids written now; ``duplicates``: ids already in the ledger (write skipped);
    ``failed``: ids whose write raised (rolled back, not recorded); ``offsets``: the ledger's next offset
    per (topic, partition) after the commit, for the partitions this batch touched.
    """

    applied: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    failed: dict[str, Exception] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


def text_array(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of ``values`` (each quoted, ``"`` and ``\\`` escaped), for a ``%s::text[]``
    parameter: 500 ids go as one string instead of through psycopg's per-element list adaptation."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def int_array(values: Sequence[int]) -> str:
    """A PostgreSQL array literal of integers, for an ``%s::int[]`` / ``%s::bigint[]`` parameter."""
    return "{" + ",".join(map(str, map(int, values))) + "}"


def ledger_lock(schema: str) -> int:
    """The advisory-lock key under which the tables of the ledger schema ``schema`` are made (the ledger's
    and the intent table of ``connectors/runtime/intents.py``): two processes setting up the same ledger
    at once queue instead of racing on pg_namespace / pg_type."""
    return zlib.crc32(f"bizbus_ledger:{schema}".encode()) - 2**31


WriteFn = Callable[[psycopg.Cursor[Any], Effect], "str | None"]
"""Performs the target write on the given cursor (same transaction); returns an optional target_ref."""


class PgLedger:
    """Ledger of applied effects for one connector, stored in ``<schema>.applied_effects`` / ``offsets``."""

    def __init__(self, dsn: str, connector: str, schema: str = "bizbus_ledger") -> None:
        """Store the settings only; ``setup()`` connects."""
        self.dsn = dsn
        self.connector = connector
        self.schema = schema
        s = sql.Identifier(schema)

        def add_last_effect_id(cur: psycopg.Cursor[Any]) -> None:
            """Ledgers from before last_effect_id: added once (checked first, so no ALTER's lock when present)."""
            cur.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = 'offsets'"
                        " AND column_name = 'last_effect_id'", (schema,))  # fmt: skip
            if cur.fetchone() is None:
                cur.execute(sql.SQL("ALTER TABLE {}.offsets ADD COLUMN IF NOT EXISTS last_effect_id text NULL").format(s))

        # DDL runs under a transaction-scoped advisory lock keyed on the schema name (ledger_lock)
        self._kept = KeptConnection(dsn, f"ledger {connector}", schema, [
            sql.SQL("""CREATE TABLE IF NOT EXISTS {}.applied_effects (
                connector text NOT NULL,
                effect_id text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                source_topic text NOT NULL,
                source_partition int NOT NULL,
                source_offset bigint NOT NULL,
                target_ref text NULL,
                PRIMARY KEY (connector, effect_id))""").format(s),
            sql.SQL("""CREATE TABLE IF NOT EXISTS {}.offsets (
                connector text NOT NULL,
                topic text NOT NULL,
                partition int NOT NULL,
                next_offset bigint NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (connector, topic, partition))""").format(s),
            add_last_effect_id,
        ], lock=ledger_lock(schema), autocommit=False)  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Connect (autocommit off) and create schema and tables idempotently, safe against concurrent setups
        (``bizbus/statetables.py``)."""
        self._kept.make_tables()

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back by the server)."""
        self._kept.close()

    def _connection(self) -> psycopg.Connection[Any]:
        """The live connection; reconnects if it was never opened, closed, or broken (e.g. terminated)."""
        return self._kept.get()

    # -- writing -----------------------------------------------------------------------------------

    def apply_batch(
        self,
        effects: Sequence[Effect],
        write: WriteFn,
        *,
        transactional_write: bool = False,
        write_many: Callable[[Any, list[Effect]], None] | None = None,
    ) -> BatchResult:
        """Apply ``effects`` exactly once, in one transaction, and advance the ledger offsets.

        ``transactional_write``: ``write`` only changes this database (a rollback undoes it completely).
        Then the whole batch is first tried at once — one multi-row ledger insert and the writes sent in
        pipeline mode, no savepoints — and only if that raises is it done again record by record as below
        (same result, found ten times faster when nothing fails). Never set it for a ``write`` with effects
        outside the transaction (an HTTP call): the retry would repeat them. ``write_many(cur, effects)``,
        if given, does the writes of the at-once attempt in one call (e.g. ``executemany``; no target refs).

        For each effect a ledger row is inserted (``ON CONFLICT DO NOTHING``); only if it is new is
        ``write(cur, effect)`` called on the same cursor, and its return value stored as target_ref.
        Existing rows count as duplicates. Each effect runs in its own savepoint, so a raising ``write``
        only drops that effect (reported in ``failed``). Offsets move to max(offset)+1 of the applied and
        duplicate effects per partition, never backwards. A broken connection re-raises with nothing
        committed.
        """
        if transactional_write and len(effects) > 1:
            try:
                return self._apply_at_once(effects, write, write_many)
            except Exception:
                conn = self._connection()
                if conn.broken or conn.closed:
                    self.close()
                    raise
                # a record of the batch failed: the transaction was rolled back; isolate it below
        conn = self._connection()
        s = sql.Identifier(self.schema)
        insert = sql.SQL(
            "INSERT INTO {}.applied_effects (connector, effect_id, source_topic, source_partition, source_offset)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (connector, effect_id) DO NOTHING RETURNING effect_id"
        ).format(s)
        set_ref = self._set_ref_sql()
        result = BatchResult()
        high: dict[tuple[str, int], tuple[int, str]] = {}
        try:
            with conn.transaction(), conn.cursor() as cur:
                for eff in effects:
                    try:
                        with conn.transaction():
                            cur.execute(
                                insert, (self.connector, eff.effect_id, eff.topic, eff.partition, eff.offset)
                            )
                            if cur.fetchone() is None:
                                result.duplicates.append(eff.effect_id)
                            else:
                                ref = write(cur, eff)
                                if ref is not None:
                                    cur.execute(set_ref, (ref, self.connector, eff.effect_id))
                                result.applied.append(eff.effect_id)
                    except Exception as exc:
                        if conn.broken or conn.closed or isinstance(exc, psycopg.OperationalError):
                            raise
                        result.failed[eff.effect_id] = exc
                        continue
                    key = (eff.topic, eff.partition)
                    if eff.offset >= high.get(key, (-1, ""))[0]:
                        high[key] = (eff.offset + 1, eff.effect_id)
                result.offsets = self._upsert_offsets(cur, high)
        except BaseException:
            if conn.broken or conn.closed:
                self.close()
            raise
        return result

    def _set_ref_sql(self) -> sql.Composed:
        return sql.SQL(
            "UPDATE {}.applied_effects SET target_ref = %s WHERE connector = %s AND effect_id = %s"
        ).format(sql.Identifier(self.schema))

    def _upsert_offsets(
        self, cur: psycopg.Cursor[Any], high: dict[tuple[str, int], tuple[int, str]]
    ) -> dict[tuple[str, int], int]:
        """Move each partition's next offset forward (never back) in one statement, with the effect id of the
        record before it; the stored offsets.

        Rows go in (topic, partition) order, so two tasks upserting the same partitions lock them in the
        same order (no deadlock)."""
        if not high:
            return {}
        keys = sorted(high)
        cur.execute(
            sql.SQL(
                "INSERT INTO {0}.offsets (connector, topic, partition, next_offset, last_effect_id)"
                " SELECT %s, t, p, o, e FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::text[])"
                " WITH ORDINALITY AS u(t, p, o, e, i) ORDER BY i"
                " ON CONFLICT (connector, topic, partition) DO UPDATE"
                " SET next_offset = GREATEST({0}.offsets.next_offset, EXCLUDED.next_offset),"
                " last_effect_id = CASE WHEN EXCLUDED.next_offset >= {0}.offsets.next_offset"
                " THEN EXCLUDED.last_effect_id ELSE {0}.offsets.last_effect_id END, updated_at = now()"
                " RETURNING topic, partition, next_offset"
            ).format(sql.Identifier(self.schema)),
            (self.connector, [t for t, _ in keys], [p for _, p in keys], [high[k][0] for k in keys],
             text_array([high[k][1] for k in keys])),
        )  # fmt: skip
        return {(str(t), int(p)): int(n) for t, p, n in cur.fetchall()}

    def forget_offsets(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Drop the stored next offsets of ``partitions``: the log they pointed into is gone (a new broker, a
        re-created topic). The applied effects stay, so what arrives again is a duplicate; the next batch
        stores the new log's offsets (``GREATEST`` would otherwise keep the old, higher ones)."""
        if not partitions:
            return
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "DELETE FROM {}.offsets WHERE connector = %s"
                    " AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
                ).format(sql.Identifier(self.schema)),
                (self.connector, [t for t, _ in partitions], [p for _, p in partitions]),
            )

    def _apply_at_once(
        self,
        effects: Sequence[Effect],
        write: WriteFn,
        write_many: Callable[[Any, list[Effect]], None] | None,
    ) -> BatchResult:
        """The whole batch in one transaction without savepoints; raises (rolled back) if anything fails."""
        conn = self._connection()
        s = sql.Identifier(self.schema)
        result = BatchResult()
        high: dict[tuple[str, int], tuple[int, str]] = {}
        by_topic: dict[str, list[Effect]] = {}
        for eff in effects:
            by_topic.setdefault(eff.topic, []).append(eff)
        insert = sql.SQL(
            "INSERT INTO {}.applied_effects (connector, effect_id, source_topic, source_partition, source_offset)"
            " SELECT %s, e, %s, p, o FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS u(e, p, o)"
            " ON CONFLICT (connector, effect_id) DO NOTHING RETURNING effect_id"
        ).format(s)  # fmt: skip
        new: set[str] = set()
        with conn.transaction(), conn.cursor() as cur:
            # one statement per topic (a batch has one, mostly): the topic goes once, not once per effect;
            # the arrays go as literals (psycopg's list adaptation cost more than the statement itself)
            for topic, group in by_topic.items():
                cur.execute(insert, (self.connector, topic, text_array([e.effect_id for e in group]),
                                     int_array([e.partition for e in group]), int_array([e.offset for e in group])))  # fmt: skip
                new.update(row[0] for row in cur.fetchall())
            set_ref = self._set_ref_sql()
            todo: list[Effect] = []
            for eff in effects:
                if eff.effect_id in new:
                    new.discard(eff.effect_id)  # a second copy in the same batch is a duplicate
                    todo.append(eff)
                    result.applied.append(eff.effect_id)
                else:
                    result.duplicates.append(eff.effect_id)
                key = (eff.topic, eff.partition)
                if eff.offset >= high.get(key, (-1, ""))[0]:
                    high[key] = (eff.offset + 1, eff.effect_id)
            if write_many is not None:
                if todo:
                    write_many(cur, todo)
            else:
                with conn.pipeline():
                    for eff in todo:
                        ref = write(cur, eff)
                        if ref is not None:
                            cur.execute(set_ref, (ref, self.connector, eff.effect_id))
            result.offsets = self._upsert_offsets(cur, high)
        return result

    # -- reading -----------------------------------------------------------------------------------

    def _query(self, query: sql.Composable, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run a read in its own short transaction (no idle-in-transaction sessions left behind)."""
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to consume per (topic, partition): where a restarted sink should seek."""
        rows = self._query(
            sql.SQL("SELECT topic, partition, next_offset FROM {}.offsets WHERE connector = %s").format(
                sql.Identifier(self.schema)
            ),
            (self.connector,),
        )
        return {(str(t), int(p)): int(n) for t, p, n in rows}

    def positions(self) -> dict[tuple[str, int], tuple[int, str | None]]:
        """``committed_offsets`` with the effect id of the record at ``next_offset - 1`` (None in rows
        written before that column existed)."""
        rows = self._query(
            sql.SQL(
                "SELECT topic, partition, next_offset, last_effect_id FROM {}.offsets WHERE connector = %s"
            ).format(sql.Identifier(self.schema)),
            (self.connector,),
        )
        return {(str(t), int(p)): (int(n), None if e is None else str(e)) for t, p, n, e in rows}

    def is_applied(self, effect_id: str) -> bool:
        """Whether this connector's ledger records ``effect_id`` as applied."""
        rows = self._query(
            sql.SQL("SELECT 1 FROM {}.applied_effects WHERE connector = %s AND effect_id = %s").format(
                sql.Identifier(self.schema)
            ),
            (self.connector, effect_id),
        )
        return bool(rows)

    def applied_ids(self, effect_ids: Sequence[str]) -> set[str]:
        """Which of ``effect_ids`` this connector's ledger records as applied (one query)."""
        if not effect_ids:
            return set()
        rows = self._query(
            sql.SQL(
                "SELECT effect_id FROM {}.applied_effects WHERE connector = %s AND effect_id = ANY(%s)"
            ).format(sql.Identifier(self.schema)),
            (self.connector, list(effect_ids)),
        )
        return {str(r[0]) for r in rows}

    def applied_count(self) -> int:
        """Number of effects recorded for this connector."""
        rows = self._query(
            sql.SQL("SELECT count(*) FROM {}.applied_effects WHERE connector = %s").format(
                sql.Identifier(self.schema)
            ),
            (self.connector,),
        )
        return int(rows[0][0])
