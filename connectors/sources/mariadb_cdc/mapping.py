"""Pure rules of the MariaDB binlog source: GTID positions, binlog row events as ``RowChange``s, the type
family of a binlog column, and how the server answers become connector errors.

Position: the binlog's GTID state after a transaction, ``domain-server-seq`` per replication domain, sorted
by domain and joined by commas (one domain, the usual case: just the transaction's GTID ``0-1-42``). It is
what ``@slave_connect_state`` takes to resume right after that transaction, and it is unique per
transaction. The empty string is the state before the first GTID of a fresh server (stream from the start).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bizbus.connectors.runtime.cdc.model import RowChange

# MariaDB GTID event flags (log_event.h): the group is one statement (DDL, non-transactional) without COMMIT
FL_STANDALONE = 1

# binlog column types (pymysqlreplication.constants.FIELD_TYPE) -> the kit's type families
_FAMILIES: dict[int, str] = {
    0: "numeric", 246: "numeric",  # DECIMAL, NEWDECIMAL
    1: "integer", 2: "integer", 3: "integer", 8: "integer", 9: "integer", 13: "integer", 16: "integer",
    4: "float", 5: "float",
    7: "timestamp", 17: "timestamp", 12: "timestamp", 18: "timestamp",  # TIMESTAMP(2), DATETIME(2)
    10: "date", 14: "date", 11: "time", 19: "time",
    15: "text", 253: "text", 254: "text", 247: "text", 248: "text",  # VARCHAR, VAR_STRING, STRING, ENUM, SET
    245: "json",
}  # fmt: skip
_BLOBS = (249, 250, 251, 252)  # TEXT and BLOB share these: a character set tells text


def family(column_type: int, charset: str | None = None) -> str:
    """The type family of a binlog column (``binlog_row_metadata=FULL`` gives names and character sets)."""
    if column_type in _BLOBS:
        return "text" if charset else "bytes"
    return _FAMILIES.get(column_type, "other")


def parse_state(state: str) -> dict[int, tuple[int, int]]:
    """``"0-1-42,1-3-7"`` -> {domain: (server_id, seq)}; "" -> {}."""
    out: dict[int, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in state.split(","))):
        try:
            domain, server, seq = (int(x) for x in part.split("-"))
        except ValueError:
            raise ValueError(f"not a MariaDB GTID position: {state!r}") from None
        out[domain] = (server, seq)
    return out


def format_state(state: Mapping[int, tuple[int, int]]) -> str:
    return ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(state.items()))


def advance(state: str, gtid: str) -> str:
    """The state after the transaction ``gtid`` (its domain's entry replaced)."""
    parsed = parse_state(state)
    domain, server, seq = (int(x) for x in gtid.split("-"))
    parsed[domain] = (server, seq)
    return format_state(parsed)


def seen(state: str, gtid: str) -> bool:
    """The transaction ``gtid`` is at or before ``state`` (a reconnect of the binlog client re-sends from
    where it first started: those groups are skipped by sequence number, strict mode keeps them ordered)."""
    domain, _server, seq = (int(x) for x in gtid.split("-"))
    have = parse_state(state).get(domain)
    return have is not None and seq <= have[1]


def key_of(image: Mapping[str, Any], key_columns: Sequence[str]) -> dict[str, Any]:
    """The primary key columns of a row image; a table without one is keyed by the whole row."""
    if not key_columns:
        return dict(image)
    return {c: image.get(c) for c in key_columns}


def key_columns(primary_key: Any) -> tuple[str, ...]:
    """pymysqlreplication's ``primary_key``: "" (none), a name, or a tuple of names."""
    if not primary_key:
        return ()
    return (primary_key,) if isinstance(primary_key, str) else tuple(primary_key)


def columns_of(columns: Iterable[Any]) -> dict[str, str]:
    """name -> type family of a table map's columns."""
    return {c.name: family(c.type, getattr(c, "character_set_name", None)) for c in columns if c.name}


def row_changes(kind: str, table: str, keys: Sequence[str], rows: Iterable[Mapping[str, Any]],
                columns: Mapping[str, str] | None) -> list[RowChange]:  # fmt: skip
    """The ``RowChange``s of one binlog rows event (``kind``: write / update / delete)."""
    out = []
    for row in rows:
        if kind == "write":
            after = row["values"]
            out.append(RowChange(table, "insert", key_of(after, keys), None, after, columns))
        elif kind == "update":
            before, after = row["before_values"], row["after_values"]
            out.append(RowChange(table, "update", key_of(after, keys), before, after, columns))
        else:
            before = row["values"]
            out.append(RowChange(table, "delete", key_of(before, keys), before, None, columns))
    return out


def commit_time(timestamp: int | None) -> dt.datetime:
    """A binlog event's timestamp (seconds) as an aware UTC time (now when the event has none)."""
    if not timestamp:
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def is_commit(query: str) -> bool:
    """A QueryEvent that ends a transaction of a non-transactional engine (``COMMIT``) or an XA one."""
    q = query.strip().upper()
    return q == "COMMIT" or q.startswith("XA COMMIT") or q.startswith("XA ROLLBACK")

