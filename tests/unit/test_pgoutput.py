"""Decoding of pgoutput messages (built here byte by byte as the protocol documents them)."""

from __future__ import annotations

import struct

from bizbus.connectors.sources.postgres_cdc.convert import (
    Begin,
    Change,
    Commit,
    Decoder,
    Relation,
    lsn_int,
    lsn_text,
)


def cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def relation(rel_id: int, cols: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!I", rel_id) + cstr("public") + cstr("stock_moves") + b"f" + struct.pack("!H", len(cols))
    for name, oid in cols:
        body += b"\x01" + cstr(name) + struct.pack("!Ii", oid, -1)
    return b"R" + body


def tuple_data(values: list[str | None | bytes]) -> bytes:
    out = struct.pack("!H", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == b"u":
            out += b"u"
        else:
            raw = v.encode() if isinstance(v, str) else v
            out += b"t" + struct.pack("!I", len(raw)) + raw
    return out


def test_a_transaction_with_insert_update_and_delete() -> None:
    d = Decoder()
    rel = d.decode(relation(7, [("move_no", 1043), ("quantity", 1700), ("note", 25)]))
    assert isinstance(rel, Relation) and rel.families == {"move_no": "text", "quantity": "numeric", "note": "text"}
    b = d.decode(b"B" + struct.pack("!QqI", 0x16B3748, 86_400_000_000, 42))
    assert isinstance(b, Begin) and b.commit_time.isoformat() == "2000-01-02T00:00:00+00:00" and b.xid == 42
    ins = d.decode(b"I" + struct.pack("!I", 7) + b"N" + tuple_data(["MV1", "2.5000", None]))
    assert ins == Change(7, "insert", None, {"move_no": "MV1", "quantity": "2.5000", "note": None})
    upd = d.decode(b"U" + struct.pack("!I", 7) + b"O" + tuple_data(["MV1", "2.5000", "long text"])
                   + b"N" + tuple_data(["MV1", "3.0000", b"u"]))  # fmt: skip
    assert isinstance(upd, Change) and upd.new == {"move_no": "MV1", "quantity": "3.0000", "note": "long text"}
    dele = d.decode(b"D" + struct.pack("!I", 7) + b"O" + tuple_data(["MV1", "3.0000", None]))
    assert isinstance(dele, Change) and dele.op == "delete" and dele.old == {"move_no": "MV1", "quantity": "3.0000", "note": None}
    c = d.decode(b"C" + struct.pack("!bQQq", 0, 0x16B3748, 0x16B3778, 86_400_000_000))
    assert isinstance(c, Commit) and (c.commit_lsn, c.end_lsn) == (0x16B3748, 0x16B3778)
    assert d.decode(b"Y" + struct.pack("!I", 1) + cstr("public") + cstr("t")) is None


def test_lsn_text_round_trip() -> None:
    assert lsn_text(0x16B3748) == "0/16B3748" and lsn_text((3 << 32) | 0xA) == "3/A"
    assert lsn_int("3/A") == (3 << 32) | 0xA
