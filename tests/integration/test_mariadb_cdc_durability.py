"""What survives for the MariaDB binlog source when ``bizbus up`` runs as an operator runs it (its memory-only
embedded broker): a restart with a backlog on the topic and a broker killed mid-stream lose no change and
duplicate no effect. A private mariadbd with the 进销存 tables feeds a ``mariadb-cdc`` source; a ``pg-table``
sink writes every stock level record into a PostgreSQL table without a unique constraint (a duplicate would
show); the test counts rows there. The binlog has long moved on (its GTID is confirmed in the journal): what
the new broker gets again comes from the journal."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.bus_harness import BusProcess, wait_until, write_pipeline
from tests.mariadb_private import PrivateMariaDB, create_jxc, private_mariadb

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
MAPPING = "deploy/examples/mappings/jxc-cdc.yaml"
KEYS = 10

pytestmark = pytest.mark.timeout(600)


class Stock:
    """The application: +1 stock updates, one per transaction; every update after the snapshot is one record
    downstream (one before it is part of the snapshot's row: the state at its GTID, not the history before)."""

    def __init__(self, db: PrivateMariaDB) -> None:
        self.db, self.n = db, 0
        self.before_snapshot = 0  # updates committed before the snapshot was taken
        create_jxc(db)
        db.execute("INSERT INTO jxc.warehouses (code, name) VALUES ('W1', 'main')")
        for k in range(KEYS):
            db.execute("INSERT INTO jxc.materials (code, name, unit) VALUES (%s, 'm', 'KG')", (f"D{k}",))
            db.execute("INSERT INTO jxc.stock_levels (warehouse, material, unit) VALUES ('W1', %s, 'KG')", (f"D{k}",))

    def updates(self, count: int, pause: float = 0.0) -> None:
        with self.db.connect("jxc") as conn, conn.cursor() as cur:
            for _ in range(count):
                cur.execute("UPDATE stock_levels SET on_hand = on_hand + 1 WHERE material = %s", (f"D{self.n % KEYS}",))
                self.n += 1
                time.sleep(pause)

    @property
    def expected(self) -> int:
        return KEYS + self.n - self.before_snapshot  # the snapshot's rows and every update after it


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path,
        postgres: psycopg.Connection) -> Iterator[tuple[BusProcess, Stock, Any, str]]:  # fmt: skip
    tag = uuid.uuid4().hex[:6]
    source, sink, table = f"maria-{tag}", f"levels-{tag}", f"mdur_{tag}"
    postgres.execute(f"CREATE TABLE public.{table} (effect_id text, material text, on_hand numeric(18,4))")
    with private_mariadb() as db:
        stock = Stock(db)
        stock.updates(getattr(request, "param", 0))  # before the bus starts: before the snapshot
        pipeline = write_pipeline(tmp_path / "pipeline.yaml", [
            {"name": source, "type": "mariadb-cdc", "config": {
                "host": "127.0.0.1", "port": db.port, "user": "root", "database": "jxc", "mapping": MAPPING,
                "server_id": 6100, "heartbeat_seconds": 0.3, "batch_size": 50}},
            {"name": sink, "type": "pg-table", "config": {
                "topics": ["bizbus.inventory.level.v1"], "dsn": DSN, "table": f"public.{table}", "batch_size": 50,
                "columns": {"effect_id": "$effect_id", "material": "material", "on_hand": "on_hand"}}},
        ])  # fmt: skip
        bus = BusProcess(tmp_path, pipeline)

        def rows() -> tuple[int, int]:
            total, distinct = postgres.execute(
                f"SELECT count(*), count(DISTINCT (material, on_hand)) FROM public.{table}").fetchone()  # fmt: skip
            return int(total), int(distinct)

        def diag() -> str:  # on a failure: which stock values are missing, does the journal have them, the ledger
            have = {(m, int(q)) for m, q in postgres.execute(f"SELECT material, on_hand FROM public.{table}")}
            levels = dict(db.execute("SELECT material, on_hand FROM jxc.stock_levels"))
            missing = sorted({(m, v) for m, q in levels.items() for v in range(int(q) + 1)} - have)[:10]
            inbox = f'bizbus_state."inbox_{source.replace("-", "_")}"'
            journal = [(kind, changes) for kind, changes in postgres.execute(
                f"SELECT kind, payload->'changes' FROM {inbox} ORDER BY id")]  # fmt: skip
            images = {(kind, c[4]["material"], int(float(c[4]["on_hand"]))) for kind, changes in journal
                      for c in changes if c[0] == "stock_levels" and c[4]}  # fmt: skip
            found = {f"{m}={v}": sorted(k for k, mm, vv in images if (mm, vv) == (m, v)) for m, v in missing}
            snapshot = sorted((m, v) for k, m, v in images if k == "cdc:snapshot")
            ledgered = postgres.execute(
                "SELECT count(*) FROM bizbus_ledger.applied_effects WHERE connector = %s", (sink,)).fetchone()[0]
            unwritten = [r[0] for r in postgres.execute(
                f"SELECT effect_id FROM bizbus_ledger.applied_effects WHERE connector = %s"
                f" EXCEPT SELECT effect_id FROM public.{table}", (sink,))][:10]  # fmt: skip
            return (f"missing (material, on_hand) -> journal rows holding that row image: {found}; journal rows: "
                    f"{len(journal)}; the snapshot's images: {snapshot}; ledger entries: {ledgered}, in the ledger "
                    f"but not in the table: {unwritten}")

        try:
            bus.start()
            rig_diag.append(diag)
            # the application writes once the snapshot is taken: a change committed before it is part of the
            # snapshot's state (a snapshot is the state at its GTID, not the history before it), so its earlier
            # value never becomes a row downstream and a count of every value would be one short
            _wait_rows(rows, bus, KEYS)
            stock.before_snapshot = stock.n
            rig_values.append(lambda: sorted((m, int(q)) for m, q in postgres.execute(
                f"SELECT material, on_hand FROM public.{table}")))  # fmt: skip
            yield bus, stock, rows, sink
        finally:
            bus.kill()
            postgres.execute(f"DROP TABLE IF EXISTS public.{table}")
            postgres.execute(f'DROP TABLE IF EXISTS bizbus_state."inbox_{source.replace("-", "_")}"')
            postgres.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (source,))
            postgres.execute("DELETE FROM bizbus_ledger.applied_effects WHERE connector = %s", (sink,))
            postgres.execute("DELETE FROM bizbus_ledger.offsets WHERE connector = %s", (sink,))


rig_diag: list[Any] = []
rig_values: list[Any] = []


def _wait_rows(rows: Any, bus: BusProcess, expected: int, timeout: float = 120) -> None:
    wait_until(lambda: rows() == (expected, expected), timeout, f"{expected} rows once each",
               lambda: f"rows (total, distinct) = {rows()}\n{rig_diag[-1]()}\n{bus.log()[-3000:]}")  # fmt: skip
    time.sleep(3)  # anything extra (a duplicate) would show now
    assert rows() == (expected, expected)


def test_a_restart_with_a_backlog_loses_no_change_and_duplicates_no_effect(rig) -> None:
    bus, stock, rows, sink = rig
    stock.updates(20)
    _wait_rows(rows, bus, stock.expected)

    assert bus.stop() == 0  # a clean restart: the new log is empty, the journal is sent again, the ledger drops it
    bus.start()
    stock.updates(15)
    _wait_rows(rows, bus, stock.expected)

    # a backlog: the sink paused, updates reach the memory-only topic, a restart drops it with the broker
    assert bus.admin_post(f"/connectors/{sink}/pause").status_code == 202
    wait_until(lambda: set(bus.admin_get("/connectors").json()[sink]["tasks"].values()) == {"paused"}, 30,
               "the sink's tasks paused", lambda: bus.admin_get("/connectors").text)  # fmt: skip
    before = rows()
    stock.updates(25)
    time.sleep(4)
    assert rows() == before
    assert bus.stop() == 0
    stock.updates(5)  # and some while the bus is down: the binlog keeps them for the journal's GTID
    bus.start()
    assert bus.admin_post(f"/connectors/{sink}/resume").status_code == 202
    _wait_rows(rows, bus, stock.expected)


def test_a_broker_killed_mid_stream_loses_no_change(rig) -> None:
    bus, stock, rows, _sink = rig
    writing = threading.Thread(target=stock.updates, args=(150, 0.03), daemon=True)
    writing.start()
    wait_until(lambda: rows()[0] >= 30, 60, "the first rows")
    bus.kill_broker()
    bus.wait_output("the embedded broker is back", 90)
    time.sleep(1)
    bus.kill_broker()
    bus.wait_output("the embedded broker is back", 90, count=2)
    writing.join(120)
    assert not writing.is_alive()
    _wait_rows(rows, bus, stock.expected, timeout=180)


@pytest.mark.parametrize("rig", [3], indirect=True)
def test_a_change_before_the_snapshot_is_the_snapshot_rows_value_and_no_row_of_its_own(rig) -> None:
    """Why the broker-kill test once counted 159 of 160 rows: its first update (D0 0 -> 1) committed just before
    the capture took its snapshot (the snapshot's GTID was that update's), so the snapshot row already said 1 and
    the value 0 was never a change after the snapshot. The rig now waits for the snapshot before writing; here the
    race is made certain: three updates before the bus starts are in the snapshot rows, and every later one is a
    row of its own."""
    bus, stock, rows, _sink = rig
    assert stock.before_snapshot == 3
    snapshot = [(f"D{k}", 1 if k < 3 else 0) for k in range(KEYS)]
    assert rig_values[-1]() == snapshot
    stock.updates(12)
    _wait_rows(rows, bus, stock.expected)
    assert stock.expected == KEYS + 12
    after = sorted([*snapshot, *((f"D{k % KEYS}", 2 if k % KEYS < 3 else 1) for k in range(3, 13)),
                    *((f"D{k % KEYS}", 3 if k % KEYS < 3 else 2) for k in range(13, 15))])  # fmt: skip
    assert rig_values[-1]() == after
