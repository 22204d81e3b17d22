"""The CDC journal: captured transactions stored in the connector's inbox (the durable side of a CDC
source; the embedded broker is memory-only).

    Transaction(position, changes) ──► Deliveries  delivery_id "<position>/<chunk>"  kind "cdc:tx"
    snapshot chunks                ──► Deliveries  "snapshot@<handover>/<chunk>"     kind "cdc:snapshot"
    end of the snapshot            ──► Delivery    "handover@<handover>"             kind "cdc:handover"

A transaction the log sends again after a crash has the same delivery ids and is dropped by the inbox's
unique delivery id. All chunks of a batch go in with one ``add_many`` (one state-DB transaction), so the
journal never holds half a transaction, and its newest row is the capture position (no second table to
keep in step). ``published_position`` is how far the publishing cursor (shard ``inbox``) got: only that
may be confirmed to the database's log.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from bizbus.connectors.runtime.cdc.model import RowChange, Transaction
from bizbus.connectors.runtime.inbox.interface import Delivery, InboxRow
from psycopg import sql

TX, SNAPSHOT, HANDOVER = "cdc:tx", "cdc:snapshot", "cdc:handover"
KINDS = (TX, SNAPSHOT, HANDOVER)


def jsonable(value: Any) -> Any:
    """A column value as JSON: text for decimals (exact), ISO 8601 for dates and times, base64 for bytes."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "base64:" + base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID | dt.timedelta):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    return str(value)


def _image(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: jsonable(v) for k, v in row.items()}


def encode_change(c: RowChange) -> list[Any]:
    return [c.table, c.op, _image(c.key), _image(c.before), _image(c.after)]


def decode_change(raw: list[Any]) -> RowChange:
    table, op, key, before, after = raw
    return RowChange(table, op, key or {}, before, after)


def deliveries(tx: Transaction, chunk_rows: int, kind: str = TX) -> list[Delivery]:
    """One transaction (or snapshot chunk) as inbox deliveries of at most ``chunk_rows`` changes each."""
    changes = tx.changes
    n = max(1, -(-len(changes) // chunk_rows))
    prefix = tx.position if kind == TX else f"snapshot@{tx.position}"
    out = []
    for i in range(n):
        part = changes[i * chunk_rows : (i + 1) * chunk_rows]
        payload = {"position": tx.position, "commit_time": tx.commit_time.isoformat(), "chunk": i,
                   "first": i * chunk_rows, "last": i == n - 1, "changes": [encode_change(c) for c in part]}  # fmt: skip
        out.append(Delivery(f"{prefix}/{i}", kind, payload))
    return out


def snapshot_deliveries(chunks: Iterable[Transaction], chunk_rows: int) -> list[Delivery]:
    """A whole snapshot: its chunks (numbered across tables) and the handover marker at its end."""
    out: list[Delivery] = []
    position, when, first = None, None, 0
    for tx in chunks:
        position, when = tx.position, tx.commit_time
        for d in deliveries(tx, chunk_rows, SNAPSHOT):
            payload = {**d.payload, "chunk": len(out), "first": first, "last": False}
            first += len(payload["changes"])
            out.append(Delivery(f"snapshot@{tx.position}/{len(out)}", SNAPSHOT, payload))
    if position is None:
        return out
    out.append(handover(position, when or dt.datetime.now(dt.UTC), len(out)))
    return out


def handover(position: str, when: dt.datetime, chunks: int = 0) -> Delivery:
    """The end of a snapshot; ``chunk``: how many snapshot rows precede it (their documents are made here)."""
    return Delivery(f"handover@{position}", HANDOVER, {"position": position, "commit_time": when.isoformat(),
                                                       "chunk": chunks, "first": 0, "last": True, "changes": []})  # fmt: skip


def changes_of(row: InboxRow) -> list[RowChange]:
    return [decode_change(c) for c in row.payload.get("changes", ())]


class JournalPositions:
    """Reads positions back from the inbox table (one connection, the capture task's)."""

    def __init__(self, schema: str, table: str) -> None:
        self.table = sql.Identifier(schema, table)

    def last(self, conn: Any) -> tuple[str | None, str | None]:
        """(kind, position) of the newest journal row; (None, None) when the journal is empty."""
        row = conn.execute(sql.SQL("SELECT kind, payload->>'position' FROM {} WHERE kind = ANY(%s)"
                                   " ORDER BY id DESC LIMIT 1").format(self.table), (list(KINDS),)).fetchone()  # fmt: skip
        return (row[0], row[1]) if row else (None, None)

    def published(self, conn: Any, cursor_id: int) -> tuple[int, str] | None:
        """(journal row id, position) of the newest whole transaction (or handover) at or before inbox row
        ``cursor_id``; None when there is none."""
        row = conn.execute(sql.SQL("SELECT id, payload->>'position' FROM {} WHERE id <= %s AND kind = ANY(%s)"
                                   " AND (payload->>'last')::boolean ORDER BY id DESC LIMIT 1").format(self.table),
                           (cursor_id, [TX, HANDOVER])).fetchone()  # fmt: skip
        return (int(row[0]), row[1]) if row else None
