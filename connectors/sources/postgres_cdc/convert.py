"""Decoding of PostgreSQL's ``pgoutput`` logical replication messages (protocol version 1), pure.

Messages used: Begin ``B``, Commit ``C``, Relation ``R``, Insert ``I``, Update ``U``, Delete ``D``; Origin,
Type and Truncate are read past (a TRUNCATE is not captured: documented). Values come as text (the
column's output function), which is also what the snapshot reads (``col::text``), so a row reads the same
from either.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)

# type OID -> the kit's type family (bizbus.connectors.runtime.cdc.model.FAMILIES)
FAMILY_BY_OID = {16: "boolean", 17: "bytes", 20: "integer", 21: "integer", 23: "integer", 26: "integer",
                 700: "float", 701: "float", 1700: "numeric", 18: "text", 19: "text", 25: "text", 1042: "text",
                 1043: "text", 2950: "text", 1082: "date", 1114: "timestamp", 1184: "timestamp", 1083: "time",
                 1266: "time", 114: "json", 3802: "json"}  # fmt: skip


def family(type_oid: int) -> str:
    return FAMILY_BY_OID.get(type_oid, "other")


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_int(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


@dataclass
class Relation:
    rel_id: int
    schema: str
    name: str
    columns: tuple[str, ...]
    type_oids: tuple[int, ...]
    families: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_time: dt.datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: dt.datetime


@dataclass(frozen=True)
class Change:
    rel_id: int
    op: str  # insert | update | delete
    old: dict[str, Any] | None
    new: dict[str, Any] | None


class Decoder:
    """Decodes messages one by one; keeps the relations the stream described."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}

    def decode(self, data: bytes) -> Begin | Commit | Relation | Change | None:
        kind = data[:1]
        if kind == b"B":
            final_lsn, ts, xid = struct.unpack_from("!QqI", data, 1)
            return Begin(final_lsn, _time(ts), xid)
        if kind == b"C":
            _flags, commit_lsn, end_lsn, ts = struct.unpack_from("!bQQq", data, 1)
            return Commit(commit_lsn, end_lsn, _time(ts))
        if kind == b"R":
            return self._relation(data)
        if kind == b"I":
            (rel_id,) = struct.unpack_from("!I", data, 1)
            new, _ = self._tuple(rel_id, data, 6)  # 'N' at 5
            return Change(rel_id, "insert", None, new)
        if kind == b"U":
            (rel_id,) = struct.unpack_from("!I", data, 1)
            pos, old = 5, None
            if data[pos : pos + 1] in (b"K", b"O"):
                old, pos = self._tuple(rel_id, data, pos + 1)
            new, _ = self._tuple(rel_id, data, pos + 1)  # 'N'
            if old is not None:  # an unchanged TOASTed value is not sent again: take it from the old image
                new = {k: (old.get(k) if v is _UNCHANGED else v) for k, v in new.items()}
            new = {k: (None if v is _UNCHANGED else v) for k, v in new.items()}
            return Change(rel_id, "update", old, new)
        if kind == b"D":
            (rel_id,) = struct.unpack_from("!I", data, 1)
            old, _ = self._tuple(rel_id, data, 6)  # 'K' or 'O' at 5
            return Change(rel_id, "delete", old, None)
        return None  # Origin, Type, Truncate, Message: not captured

    def _relation(self, data: bytes) -> Relation:
        (rel_id,) = struct.unpack_from("!I", data, 1)
        schema, pos = _cstring(data, 5)
        name, pos = _cstring(data, pos)
        pos += 1  # replica identity setting
        (ncols,) = struct.unpack_from("!H", data, pos)
        pos += 2
        cols, oids = [], []
        for _ in range(ncols):
            pos += 1  # flags (part of the replica identity)
            col, pos = _cstring(data, pos)
            oid, _typmod = struct.unpack_from("!Ii", data, pos)
            pos += 8
            cols.append(col)
            oids.append(oid)
        rel = Relation(rel_id, schema, name, tuple(cols), tuple(oids), {c: family(o) for c, o in zip(cols, oids, strict=True)})
        self.relations[rel_id] = rel
        return rel

    def _tuple(self, rel_id: int, data: bytes, pos: int) -> tuple[dict[str, Any], int]:
        rel = self.relations[rel_id]
        (ncols,) = struct.unpack_from("!H", data, pos)
        pos += 2
        row: dict[str, Any] = {}
        for i in range(ncols):
            kind = data[pos : pos + 1]
            pos += 1
            col = rel.columns[i] if i < len(rel.columns) else f"col{i}"
            if kind == b"n":
                row[col] = None
            elif kind == b"u":
                row[col] = _UNCHANGED
            else:  # b"t" text (b"b" binary is not asked for)
                (length,) = struct.unpack_from("!I", data, pos)
                pos += 4
                row[col] = data[pos : pos + length].decode("utf-8")
                pos += length
        return row, pos


class _Unchanged:
    def __repr__(self) -> str:
        return "<unchanged toast>"


_UNCHANGED: Any = _Unchanged()


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\x00", pos)
    return data[pos:end].decode("utf-8"), end + 1


def _time(us: int) -> dt.datetime:
    return PG_EPOCH + dt.timedelta(microseconds=us)
