"""The MariaDB binlog reader on a private mariadbd (binlog on): snapshot → stream handover without gap or
duplicate while writers run, resume by GTID after a new reader, and a server restart / crash under it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bizbus.connectors.runtime.cdc.model import Transaction
from bizbus.connectors.sources.mariadb_cdc.api import BinlogReader

from bizbus.failures import Fatal, NotConnected
from tests.mariadb_private import PrivateMariaDB, private_mariadb

pytestmark = pytest.mark.timeout(180)
TABLES = ("item", "line")


@pytest.fixture(scope="module")
def db() -> Iterator[PrivateMariaDB]:
    with private_mariadb() as server:
        yield server


@pytest.fixture
def shop(db: PrivateMariaDB) -> PrivateMariaDB:
    db.execute("DROP DATABASE IF EXISTS shop")
    db.execute("CREATE DATABASE shop")
    db.execute("CREATE TABLE shop.item (id int PRIMARY KEY, qty int NOT NULL, note varchar(40) NULL)")
    db.execute("CREATE TABLE shop.line (doc varchar(10), no int, amount decimal(12,2), PRIMARY KEY (doc, no))")
    db.execute("CREATE TABLE shop.other (id int PRIMARY KEY)")  # not captured
    return db


def reader(db: PrivateMariaDB, server_id: int = 4242) -> BinlogReader:
    return BinlogReader({"host": "127.0.0.1", "port": db.port, "user": "root", "password": ""}, server_id, "shop", TABLES,
                        heartbeat=0.2, snapshot_chunk=50)  # fmt: skip


def drain(r: BinlogReader, until: str, timeout: float = 30) -> list[Transaction]:
    """Read until the reader's position reaches ``until`` (a GTID state)."""
    out: list[Transaction] = []
    deadline = time.monotonic() + timeout
    while r.state != until:
        assert time.monotonic() < deadline, f"reader at {r.state}, server at {until}"
        try:
            out.extend(r.read(500, 0.3))
        except NotConnected:
            time.sleep(0.2)
    return out


def apply(state: dict[Any, dict[str, Any]], txs: list[Transaction]) -> None:
    for tx in txs:
        for c in tx.changes:
            key = (c.table, tuple(sorted(c.key.items())))
            if c.op == "delete":
                assert key in state, f"delete of a row never seen: {key}"
                del state[key]
            else:
                state[key] = dict(c.after or {})


def current(db: PrivateMariaDB) -> dict[Any, dict[str, Any]]:
    out: dict[Any, dict[str, Any]] = {}
    with db.connect("shop", cursorclass=__import__("pymysql").cursors.DictCursor) as conn, conn.cursor() as cur:
        for table, keys in (("item", ("id",)), ("line", ("doc", "no"))):
            cur.execute(f"SELECT * FROM {table}")
            for row in cur.fetchall():
                out[(table, tuple(sorted((k, row[k]) for k in keys)))] = dict(row)
    return out


def test_snapshot_hands_over_to_the_binlog_without_gap_or_duplicate(shop: PrivateMariaDB) -> None:
    with shop.connect("shop") as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO item VALUES (%s, %s, NULL)", [(i, i) for i in range(300)])
        cur.executemany("INSERT INTO line VALUES ('D1', %s, %s)", [(i, i * 1.5) for i in range(120)])
    stop = threading.Event()

    def writer() -> None:  # updates, inserts and deletes while the snapshot streams out
        n = 1000
        with shop.connect("shop") as conn, conn.cursor() as cur:
            while not stop.is_set():
                n += 1
                cur.execute("UPDATE item SET qty = qty + 1, note = 'w' WHERE id = %s", (n % 300,))
                cur.execute("INSERT INTO item VALUES (%s, 1, 'new')", (n,))
                cur.execute("DELETE FROM line WHERE doc = 'D1' AND no = %s", (n % 120,))
                cur.execute("INSERT INTO shop.other VALUES (%s)", (n,))
                time.sleep(0.002)

    r = reader(shop)
    r.setup(None)
    t = threading.Thread(target=writer)
    t.start()
    try:
        snap: list[Transaction] = []
        for chunk in r.snapshot(TABLES):
            snap.append(chunk)
            time.sleep(0.02)  # slow consumer: the writers go on meanwhile
        handover = snap[0].position
        assert {c.position for c in snap} == {handover} and r.state == handover
        assert all(c.op == "read" and c.before is None for tx in snap for c in tx.changes)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    state: dict[Any, dict[str, Any]] = {}
    apply(state, snap)
    assert {k for (t, k) in state if t == "item" and k[0][1] < 300} == {(("id", i),) for i in range(300)}
    streamed = drain(r, shop.gtid_pos())
    r.close()
    assert streamed, "the writers' transactions after the snapshot"
    assert all(tx.position > "" for tx in streamed)
    positions = [tx.position for tx in streamed]
    assert len(positions) == len(set(positions)) and positions == sorted(positions, key=lambda p: int(p.split("-")[2]))
    apply(state, streamed)  # a duplicate insert is harmless here, a missing one or a double delete is not
    assert state == current(shop)
    inserted = [c.key["id"] for tx in snap + streamed for c in tx.changes if c.table == "item"
                and c.op in ("insert", "read") and c.key["id"] > 1000]  # fmt: skip
    assert len(inserted) == len(set(inserted)), "an insert came both in the snapshot and from the binlog"
    assert all(c.table in TABLES for tx in streamed for c in tx.changes)


def test_transactions_keep_their_rows_and_resume_by_gtid(shop: PrivateMariaDB) -> None:
    r = reader(shop)
    r.setup(None)
    list(r.snapshot(TABLES))
    start = r.state
    with shop.connect("shop", autocommit=False) as conn, conn.cursor() as cur:
        for size in (1, 7, 250, 3):  # transactions of mixed sizes
            for i in range(size):
                cur.execute("INSERT INTO line VALUES (%s, %s, 1.25)", (f"T{size}", i))
            conn.commit()
        cur.execute("UPDATE line SET amount = 2 WHERE doc = 'T7'")
        cur.execute("DELETE FROM line WHERE doc = 'T1'")
        conn.commit()
    first = r.read(8, 5)  # stops after about 8 changes, whole transactions only
    assert [len(tx.changes) for tx in first] == [1, 7]
    resumed_at = first[-1].position
    r.close()
    r2 = reader(shop, server_id=4243)
    r2.setup(resumed_at)
    rest = drain(r2, shop.gtid_pos())
    r2.close()
    assert [len(tx.changes) for tx in rest] == [250, 3, 8]
    upd = rest[-1].changes
    assert [c.op for c in upd] == ["update"] * 7 + ["delete"]
    assert upd[0].before == {"doc": "T7", "no": 0, "amount": __import__("decimal").Decimal("1.25")}
    assert upd[0].key == {"doc": "T7", "no": 0} and upd[0].columns == {"doc": "text", "no": "integer",
                                                                        "amount": "numeric"}  # fmt: skip
    assert start and all(tx.commit_time.tzinfo is not None for tx in rest)


@pytest.mark.parametrize("mode", ["fast", "kill"])
def test_server_restart_under_the_reader(shop: PrivateMariaDB, mode: str) -> None:
    r = reader(shop)
    r.setup(None)
    list(r.snapshot(TABLES))
    seen: list[Transaction] = []
    for round_ in range(3):
        with shop.connect("shop") as conn, conn.cursor() as cur:
            for i in range(20):
                cur.execute("INSERT INTO item VALUES (%s, %s, NULL)", (round_ * 100 + i, i))
        seen.extend(r.read(5, 0.5))  # part of it
        target = shop.gtid_pos()
        with shop.down(0.5, mode), pytest.raises(NotConnected):
            for _ in range(50):
                seen.extend(r.read(100, 0.3))
        seen.extend(drain(r, target))
    r.close()
    ids = [c.key["id"] for tx in seen for c in tx.changes]
    assert sorted(ids) == sorted(round_ * 100 + i for round_ in range(3) for i in range(20))


def test_a_changed_table_is_read_with_its_new_columns(shop: PrivateMariaDB) -> None:
    """Table maps are parsed once per table id (freeze_schema); ALTER TABLE gives the table a new id."""
    r = reader(shop)
    r.setup(None)
    list(r.snapshot(TABLES))
    shop.execute("INSERT INTO shop.item VALUES (1, 1, 'a')")
    shop.execute("ALTER TABLE shop.item ADD COLUMN bin varchar(8) NULL")
    shop.execute("INSERT INTO shop.item VALUES (2, 2, 'b', 'B-01')")
    shop.execute("ALTER TABLE shop.item MODIFY qty decimal(12,3) NOT NULL")
    shop.execute("UPDATE shop.item SET qty = 2.5 WHERE id = 2")
    changes = [c for tx in drain(r, shop.gtid_pos()) for c in tx.changes]
    r.close()
    assert [c.op for c in changes] == ["insert", "insert", "update"]
    assert changes[0].columns == {"id": "integer", "qty": "integer", "note": "text"}
    assert changes[1].after == {"id": 2, "qty": 2, "note": "b", "bin": "B-01"} and "bin" in (changes[1].columns or {})
    assert changes[2].columns is not None and changes[2].columns["qty"] == "numeric"
    assert changes[2].after is not None and str(changes[2].after["qty"]) == "2.500"


def test_a_missing_table_or_binlog_is_a_clear_fatal_error(shop: PrivateMariaDB) -> None:
    r = reader(shop)
    r.setup(None)
    with pytest.raises(Fatal, match="does not have"):
        list(r.snapshot(("item", "nosuch")))
    r.setup("0-1-999999")  # a GTID the server never wrote (as after the binlog was purged past it)
    with pytest.raises(Fatal, match="no longer has the binlog"):
        r.read(10, 1)
    r.close()
