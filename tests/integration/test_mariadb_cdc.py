"""The ``mariadb-cdc`` source as the host runs it (capture + inbox tasks), on a private mariadbd with the
进销存 tables, the embedded broker and the state database: the snapshot of existing rows hands over to the
binlog while writers run (each change once, the last value last), a new connector of the same name goes on
by GTID from its journal, and rows that do not fit the mapping become dead letters with their key while
the rows behind them flow on."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.mariadb_private import PrivateMariaDB, create_jxc, private_mariadb
from tests.webhook_harness import webhook_rig

pytestmark = pytest.mark.timeout(240)
MAPPING = "deploy/examples/mappings/jxc-cdc.yaml"
MATERIAL, LEVEL, ISSUE, ORDER = ("bizbus.md.material.v1", "bizbus.inventory.level.v1",
                                 "bizbus.inventory.goods-issue.v1", "bizbus.sales.order.v1")  # fmt: skip


@pytest.fixture(scope="module")
def maria() -> Iterator[PrivateMariaDB]:
    with private_mariadb() as db:
        yield db


@pytest.fixture
def jxc(maria: PrivateMariaDB) -> PrivateMariaDB:
    create_jxc(maria)
    maria.execute("INSERT INTO jxc.warehouses (code, name) VALUES ('W1', 'main')")
    return maria


def config(db: PrivateMariaDB, **over: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": db.port, "user": "root", "database": "jxc", "mapping": MAPPING,
            "server_id": 5000 + int(uuid.uuid4().int % 1000), "heartbeat_seconds": 0.2, "batch_size": 500, **over}  # fmt: skip


def material(db: PrivateMariaDB, code: str, cost: str = "1.5", unit: str = "PCS") -> None:
    db.execute("INSERT INTO jxc.materials (code, name, unit, standard_cost) VALUES (%s, %s, %s, %s)"
               " ON DUPLICATE KEY UPDATE standard_cost = VALUES(standard_cost)", (code, f"n {code}", unit, cost))  # fmt: skip


def by_code(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for v in events:
        out.setdefault(v["code"], []).append(v)
    return out


def test_snapshot_then_binlog_each_change_once_while_writers_run(jxc: PrivateMariaDB, embedded_broker: Any,
                                                                  registry: Any) -> None:  # fmt: skip
    tag = uuid.uuid4().hex[:6].upper()
    for i in range(200):
        material(jxc, f"S{tag}-{i}", "1")
    stop = threading.Event()
    written: dict[str, str] = {f"S{tag}-{i}": "1" for i in range(200)}

    def writer() -> None:  # cost updates and new materials while the connector snapshots and streams
        n = 0
        while not stop.is_set() and n < 400:
            n += 1
            code = f"S{tag}-{n % 200}" if n % 2 else f"N{tag}-{n}"
            written[code] = f"{n}.5"
            material(jxc, code, f"{n}.5")
            time.sleep(0.003)

    t = threading.Thread(target=writer)
    t.start()
    try:
        with webhook_rig(embedded_broker, registry, "mariadb-cdc", config(jxc)) as rig:
            time.sleep(1.0)
            stop.set()
            t.join()
            events = rig.events(MATERIAL, lambda v: tag in v["code"], expect=len(written) + 1, timeout=60)
    finally:
        stop.set()
        t.join()
    got = by_code(events)
    assert set(got) == set(written)
    for code, cost in written.items():  # the last record of each material has its last cost
        assert got[code][-1]["standard_cost"] == Decimal(cost).quantize(Decimal("0.000001")), code
    ids = [v["meta"]["event_id"] for v in events]
    assert len(ids) == len(set(ids)), "a change was published twice"
    # once each: the snapshot row or the binlog change, never both (at most one record per written value)
    for code, records in got.items():
        costs = [r["standard_cost"] for r in records]
        assert len(costs) == len(set(costs)) or costs.count(costs[-1]) == 1, (code, costs)


def test_a_new_connector_goes_on_by_gtid_from_its_journal(jxc: PrivateMariaDB, embedded_broker: Any,
                                                          registry: Any) -> None:  # fmt: skip
    tag = uuid.uuid4().hex[:6].upper()
    name = f"maria-{tag.lower()}"
    cfg = config(jxc)
    material(jxc, f"R{tag}-0")
    with webhook_rig(embedded_broker, registry, "mariadb-cdc", cfg, name=name, forget=False) as rig:
        rig.events(MATERIAL, lambda v: tag in v["code"], expect=1)
    with jxc.connect("jxc", autocommit=False) as conn, conn.cursor() as cur:  # written while it is stopped
        for i in range(1, 6):
            cur.execute("INSERT INTO materials (code, name, unit) VALUES (%s, 'x', 'KG')", (f"R{tag}-{i}",))
        conn.commit()
    with webhook_rig(embedded_broker, registry, "mariadb-cdc", cfg, name=name) as rig:
        material(jxc, f"R{tag}-9")
        events = rig.events(MATERIAL, lambda v: tag in v["code"], expect=7)
    assert sorted(v["code"] for v in events) == sorted(f"R{tag}-{i}" for i in (0, 1, 2, 3, 4, 5, 9))


def test_rows_that_do_not_fit_are_dead_letters_with_their_key(jxc: PrivateMariaDB, embedded_broker: Any,
                                                               registry: Any) -> None:  # fmt: skip
    tag = uuid.uuid4().hex[:6].upper()
    with webhook_rig(embedded_broker, registry, "mariadb-cdc", config(jxc)) as rig:
        material(jxc, f"B{tag}-1")
        rig.events(MATERIAL, lambda v: tag in v["code"], expect=1)
        material(jxc, f"B{tag}-2", unit="PAIR")  # a unit the mapping does not know
        jxc.execute("INSERT INTO jxc.stock_moves (move_no, kind, warehouse, material, quantity, unit, project)"
                    " VALUES (%s, 'issue', 'W1', %s, -3, 'PCS', 'P1')", (f"M{tag}-1", f"B{tag}-1"))  # negative  # fmt: skip
        jxc.execute("INSERT INTO jxc.stock_moves (move_no, kind, warehouse, material, quantity, unit, project)"
                    " VALUES (%s, 'issue', 'W1', %s, 2, 'PCS', 'P1')", (f"M{tag}-2", f"B{tag}-1"))  # fmt: skip
        material(jxc, f"B{tag}-3")  # the rows behind the bad ones flow on
        good = rig.events(MATERIAL, lambda v: tag in v["code"], expect=2)
        issues = rig.events(ISSUE, lambda v: tag in v["issue_no"], expect=1)
        dead = rig.dead_letters(expect=2)
        assert rig.component.runtimes and all(rt.error is None for rt in rig.component.runtimes)
    assert sorted(v["code"] for v in good) == [f"B{tag}-1", f"B{tag}-3"]
    assert [v["issue_no"] for v in issues] == [f"M{tag}-2"] and issues[0]["lines"][0]["quantity"] == Decimal("2.0000")
    keys = sorted(d["key"].decode() if isinstance(d["key"], bytes) else str(d["key"]) for d in dead)
    assert keys == sorted([f"B{tag}-2", f"M{tag}-1"]), dead
    assert all(d["error_class"] == "PERMANENT" for d in dead)



def test_a_new_column_flows_and_a_dropped_mapped_column_stops_the_connector(jxc: PrivateMariaDB, embedded_broker: Any,
                                                                             registry: Any) -> None:  # fmt: skip
    tag = uuid.uuid4().hex[:6].upper()
    with webhook_rig(embedded_broker, registry, "mariadb-cdc", config(jxc)) as rig:
        material(jxc, f"C{tag}-1")
        rig.events(MATERIAL, lambda v: tag in v["code"], expect=1)
        jxc.execute("ALTER TABLE jxc.materials ADD COLUMN barcode varchar(20) NULL")  # compatible: flows on
        jxc.execute("INSERT INTO jxc.materials (code, name, unit, barcode) VALUES (%s, 'x', 'KG', '690123')",
                    (f"C{tag}-2",))  # fmt: skip
        assert [v["code"] for v in rig.events(MATERIAL, lambda v: v["code"] == f"C{tag}-2", expect=1)] == [f"C{tag}-2"]
        jxc.execute("ALTER TABLE jxc.materials DROP COLUMN category")  # mapped: the connector must stop
        material(jxc, f"C{tag}-3")
        deadline = time.monotonic() + 30
        capture = next(rt for rt in rig.component.runtimes if rt.spec.shard == "capture")
        while capture.error is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert capture.error is not None and "category" in str(capture.error), capture.error
        assert not rig.events(MATERIAL, lambda v: v["code"] == f"C{tag}-3", timeout=3, idle=1)
