"""Source cursors: where a source shard has durably got to, and the rules for moving it.

Rule (DESIGN.md, "Sources at least once, never less"): a cursor moves past a record only after the broker
acknowledged that record *and every record before it*. ``CursorTracker`` applies the rule to a batch in
flight; ``PgCursorStore`` keeps the result in PostgreSQL (the bus's state database), one opaque JSON map
per (connector, shard) as in Kafka Connect's source offsets, read back when a task starts.

A crash after the broker acknowledged and before the cursor was stored re-sends those records with the
same deterministic event ids; sinks absorb them (applied-effect ledger).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bizbus.pgconn import connect
from bizbus.statetables import ensure_tables

Position = Mapping[str, Any]  # an opaque cursor map, e.g. {"id": 42}


@dataclass
class CursorTracker:
    """Records sent in order; tells which cursor is safe to store once deliveries are reported.

    ``add(ref, position)`` in send order; ``ack(ref)`` / ``fail(ref)`` from delivery reports in any
    order. ``committable()`` is the position of the last record of the longest acknowledged prefix
    (None if the first record is not acknowledged yet): everything up to it reached the broker.
    """

    _order: list[Hashable] = field(default_factory=list)
    _pos: dict[Hashable, Position] = field(default_factory=dict)
    _state: dict[Hashable, str] = field(default_factory=dict)

    def add(self, ref: Hashable, position: Position) -> None:
        if ref in self._pos:
            raise ValueError(f"record {ref!r} added twice")
        self._order.append(ref)
        self._pos[ref] = position
        self._state[ref] = "sent"

    def ack(self, ref: Hashable) -> None:
        self._state[ref] = "acked"

    def fail(self, ref: Hashable) -> None:
        self._state[ref] = "failed"

    def committable(self) -> Position | None:
        last: Position | None = None
        for ref in self._order:
            if self._state[ref] != "acked":
                break
            last = self._pos[ref]
        return last

    @property
    def complete(self) -> bool:
        """Every record added has been acknowledged."""
        return all(s == "acked" for s in self._state.values())

    @property
    def failed(self) -> int:
        return sum(1 for s in self._state.values() if s == "failed")

    @property
    def pending(self) -> int:
        return sum(1 for s in self._state.values() if s == "sent")


class PgCursorStore:
    """Cursor maps in ``<schema>.source_cursors``; one connection per task (not thread-safe)."""

    def __init__(self, dsn: str, schema: str = "bizbus_state") -> None:
        self.dsn, self.schema = dsn, schema
        self._conn: psycopg.Connection[Any] | None = None

    def setup(self, conn: psycopg.Connection[Any] | None = None) -> None:
        """Connect (or share ``conn``, e.g. the lease's session, so a lost lease also fails writes)."""
        self._conn = conn or connect(self.dsn, "cursors")
        s = sql.Identifier(self.schema)
        ensure_tables(self._conn, self.schema, [
            sql.SQL("""CREATE TABLE IF NOT EXISTS {}.source_cursors (
                connector text NOT NULL, shard text NOT NULL, cursor jsonb NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (connector, shard))""").format(s),
            # the broker's log epoch (cluster id) that acknowledged what the cursor passed (added later: IF NOT EXISTS)
            sql.SQL("ALTER TABLE {}.source_cursors ADD COLUMN IF NOT EXISTS log_epoch text NULL").format(s),
        ])  # fmt: skip

    def load(self, connector: str, shard: str) -> dict[str, Any] | None:
        """The stored cursor map, or None when the shard never stored one (start from the beginning)."""
        return self.load_with_epoch(connector, shard)[0]

    def load_with_epoch(self, connector: str, shard: str) -> tuple[dict[str, Any] | None, str | None]:
        """The stored cursor map and the log epoch it was stored under (None: never stored / not recorded)."""
        assert self._conn is not None, "setup() first"
        row = self._conn.execute(
            sql.SQL("SELECT cursor, log_epoch FROM {}.source_cursors WHERE connector = %s AND shard = %s").format(
                sql.Identifier(self.schema)
            ),
            (connector, shard),
        ).fetchone()
        return (dict(row[0]), row[1]) if row else (None, None)

    def store(self, connector: str, shard: str, position: Position, log_epoch: str | None = None) -> None:
        """Durably store ``position`` (autocommit: durable when this returns); ``log_epoch``: the broker log
        that acknowledged the records up to it (kept as it was when None)."""
        assert self._conn is not None, "setup() first"
        self._conn.execute(
            sql.SQL(
                "INSERT INTO {0}.source_cursors (connector, shard, cursor, log_epoch) VALUES (%s, %s, %s::jsonb, %s)"
                " ON CONFLICT (connector, shard) DO UPDATE SET cursor = EXCLUDED.cursor,"
                " log_epoch = coalesce(EXCLUDED.log_epoch, {0}.source_cursors.log_epoch), updated_at = now()"
            ).format(sql.Identifier(self.schema)),
            (connector, shard, json.dumps(dict(position)), log_epoch),
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -- ids from a sequence: gaps that may still fill ---------------------------------------------------


@dataclass
class _Gap:
    first_seen: float
    xids: list[int] | None = None  # transactions in progress once the grace period was over
    ready: bool = False  # all of them ended (checked before the read that uses it)


class GapGuard:
    """Decides how far a read may move the cursor when the ids it saw have holes.

    ``refresh(ended)`` runs *before* each read (``ended(xids)`` asks the database whether all those
    transactions finished); ``admit(after, ids, now, in_progress)`` runs after it and returns how many of
    ``ids`` (ascending) may be taken. A gap is jumped only when it outlived ``grace`` and every transaction
    in progress after that has ended while the gap stayed: nothing can fill it any more.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.pending: dict[int, _Gap] = {}

    def refresh(self, ended: Callable[[list[int]], bool]) -> None:
        for gap in self.pending.values():
            if gap.xids is not None and not gap.ready:
                gap.ready = not gap.xids or ended(gap.xids)

    def admit(self, after: int, ids: Iterable[int], now: float, in_progress: Callable[[], list[int]]) -> int:
        expected, taken = after + 1, 0
        for i in ids:
            if i != expected:
                gap = self.pending.get(expected)
                if gap is None:
                    self.pending[expected] = _Gap(now)
                    break
                if now - gap.first_seen < self.grace:
                    break
                if gap.xids is None:
                    gap.xids = in_progress()
                    break
                if not gap.ready:
                    break
                del self.pending[expected]
            expected = i + 1
            taken += 1
        for k in [k for k in self.pending if k < expected]:  # filled or jumped
            del self.pending[k]
        return taken


def pg_in_progress(conn: psycopg.Connection[Any]) -> list[int]:
    """Transaction ids in progress now (the candidates that could still fill a gap)."""
    rows = conn.execute("SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) AS x").fetchall()
    return [int(r[0]) for r in rows]


def pg_ended(conn: psycopg.Connection[Any], xids: list[int]) -> bool:
    """Whether every one of ``xids`` has committed or aborted."""
    row = conn.execute(
        "SELECT bool_and(coalesce(pg_xact_status(x::text::xid8), 'aborted') <> 'in progress')"
        " FROM unnest(%s::bigint[]) AS x",
        (xids,),
    ).fetchone()
    return bool(row and row[0])

