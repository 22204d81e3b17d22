"""The postgres-cdc source on a private PostgreSQL with wal_level=logical and the embedded broker: the
initial snapshot hands over to the stream with neither gap nor duplicate while rows are written during it;
documents (header + lines) come from the log-ordered row images; rows that do not fit the mapping are dead
letters with their key while the rest flows on; a new nullable column flows, a dropped mapped column
stops the connector with a clear error."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
from bizbus.connectors.runtime.cdc import SchemaIncompatible

from bizbus.deadletters import DEAD_LETTER_TOPIC
from tests.cdc_harness import (
    Runner,
    config,
    drop_state,
    ensure_topics,
    load_schema,
    mapping_file,
    read_records,
    tasks,
    wait_for,
)
from tests.pg_private import private_postgres

pytestmark = pytest.mark.timeout(300)

NEED = "bizbus.pm.material-need.v1"
ORDER = "bizbus.sales.order.v1"
ISSUE = "bizbus.inventory.goods-issue.v1"
LEVEL = "bizbus.inventory.level.v1"
MATERIAL = "bizbus.md.material.v1"


def need(conn, n: int, unit: str = "PCS", qty: str = "5") -> None:
    conn.execute("INSERT INTO project_material_needs (need_id, project, material, quantity, unit, need_by)"
                 " VALUES (%s, 'P1', 'M-1', %s, %s, DATE '2026-12-20')", (f"N{n}", qty, unit))  # fmt: skip


@pytest.fixture
def rig(embedded_broker, registry, tmp_path):
    ensure_topics(embedded_broker.bootstrap_servers)
    name = f"cdc-{uuid.uuid4().hex[:8]}"
    with private_postgres(logical=True) as pg:
        load_schema(pg)
        cfg = config(pg.dsn(), mapping_file(tmp_path, name))
        yield {"pg": pg, "name": name, "cfg": cfg, "bootstrap": embedded_broker.bootstrap_servers,
               "registry": registry.url}  # fmt: skip
    drop_state(name)


def records(r, topics, expect=0, timeout=60.0):
    return read_records(r["bootstrap"], r["registry"], topics, r["name"], expect=expect, timeout=timeout)


def test_snapshot_hands_over_to_the_stream_and_documents_follow_the_log(rig) -> None:
    pg = rig["pg"]
    conn = pg.connect()
    conn.execute("INSERT INTO materials (code, name, unit, safety_stock) VALUES ('M-1', '钢管', 'M', 10), ('M-2', 'Bolt', 'PCS', 0)")
    conn.execute("INSERT INTO stock_levels (warehouse, material, unit, on_hand, reserved, safety_stock)"
                 " VALUES ('W1', 'M-1', 'M', 100, 20, 10)")  # fmt: skip
    for n in range(200):  # in the snapshot
        need(conn, n)
    with conn.transaction():
        conn.execute("INSERT INTO sales_orders (order_no, customer, total_amount) VALUES ('SO-1', 'K1', 30)")
        conn.execute("INSERT INTO sales_order_lines VALUES ('SO-1', 1, 'M-1', 2, 'M', 5, 10), ('SO-1', 2, 'M-2', 4, 'PCS', 5, 20)")

    capture, source = tasks(rig["name"], rig["cfg"], rig["bootstrap"], rig["registry"])
    written: list[int] = []

    def writer() -> None:  # one row per transaction, before, while and after the snapshot is taken
        with pg.connect() as w:
            n = 200
            while capture.journaled == 0 or n < written_after[0] + 200:
                need(w, n)
                written.append(n)
                n += 1
                if capture.journaled and not written_after[0]:
                    written_after[0] = n

    written_after = [0]
    t = threading.Thread(target=writer)
    with Runner(capture, source) as run:
        t.start()
        t.join(120)
        assert written_after[0] > 200 and not t.is_alive()
        with conn.transaction():  # one transaction: a line changed, a line added, the header updated
            conn.execute("UPDATE sales_order_lines SET quantity = 3, amount = 15 WHERE order_no = 'SO-1' AND line_no = 1")
            conn.execute("INSERT INTO sales_order_lines VALUES ('SO-1', 3, 'M-1', 1, 'M', 5, 5)")
            conn.execute("UPDATE sales_orders SET status = 'approved', total_amount = 40 WHERE order_no = 'SO-1'")
        conn.execute("UPDATE stock_levels SET reserved = 30 WHERE material = 'M-1'")
        total = 200 + len(written)
        got = records(rig, [NEED, ORDER, LEVEL, MATERIAL, DEAD_LETTER_TOPIC], expect=total + 2 + 2 + 2)
        assert not run.failed, run.failed
    assert not [v for topic, _k, v in got if topic == DEAD_LETTER_TOPIC]
    needs = Counter(v["need_id"] for topic, _k, v in got if topic == NEED)
    assert set(needs) == {f"N{n}" for n in range(total)}, "a gap between the snapshot and the stream"
    assert max(needs.values()) == 1, f"duplicates: {[k for k, c in needs.items() if c > 1][:5]}"
    orders = [v for topic, _k, v in got if topic == ORDER]
    assert [len(o["lines"]) for o in orders] == [2, 3]
    assert [o["status"] for o in orders] == ["SUBMITTED", "APPROVED"]
    assert [str(line["quantity"]) for line in orders[1]["lines"]] == ["3.0000", "4.0000", "1.0000"]
    levels = [v for topic, _k, v in got if topic == LEVEL]
    assert [str(v["available"]) for v in levels] == ["80.0000", "70.0000"]
    assert {v["code"] for topic, _k, v in got if topic == MATERIAL} == {"M-1", "M-2"}


def test_bad_rows_are_dead_letters_with_their_key_and_the_rest_flows(rig) -> None:
    conn = rig["pg"].connect()
    capture, source = tasks(rig["name"], rig["cfg"], rig["bootstrap"], rig["registry"])
    with Runner(capture, source) as run:
        need(conn, 1)
        need(conn, 2, unit="BARREL")  # unknown unit
        conn.execute("INSERT INTO stock_moves (move_no, kind, warehouse, material, quantity, unit, project)"
                     " VALUES ('MV-1', 'issue', 'W1', 'M-1', -3, 'M', 'P1'), ('MV-2', 'issue', 'W1', 'M-1', 3, 'M', 'P1')")  # fmt: skip
        conn.execute("INSERT INTO sales_orders (order_no, customer, status) VALUES ('SO-9', 'K1', 'weird')")  # not mapped
        need(conn, 3)
        got = records(rig, [NEED, ISSUE, ORDER, DEAD_LETTER_TOPIC], expect=6)
        assert not run.failed
    good = sorted(k for topic, k, _v in got if topic in (NEED, ISSUE, ORDER))
    assert good == ["MV-2", "N1", "N3"]
    dead = {k: v for topic, k, v in got if topic == DEAD_LETTER_TOPIC}
    assert set(dead) == {"N2", "MV-1", "SO-9"}
    assert "unknown unit 'BARREL'" in dead["N2"]["error_message"]
    assert "below the allowed minimum" in dead["MV-1"]["error_message"]
    assert "weird" in dead["SO-9"]["error_message"]


def test_new_nullable_column_flows_and_a_dropped_mapped_column_stops_the_connector(rig) -> None:
    conn = rig["pg"].connect()
    capture, source = tasks(rig["name"], rig["cfg"], rig["bootstrap"], rig["registry"])
    with Runner(capture, source) as run:
        need(conn, 1)
        wait_for(lambda: capture.journaled >= 1)
        conn.execute("ALTER TABLE project_material_needs ADD COLUMN note text NULL")
        conn.execute("INSERT INTO project_material_needs (need_id, project, material, quantity, unit, need_by, note)"
                     " VALUES ('N2', 'P1', 'M-1', 1, 'PCS', DATE '2026-12-24', 'urgent')")  # fmt: skip
        assert sorted(k for _t, k, _v in records(rig, [NEED], expect=2)) == ["N1", "N2"]
        conn.execute("ALTER TABLE project_material_needs DROP COLUMN warehouse")
        need(conn, 3)
        wait_for(lambda: 0 in run.failed)
        err = run.failed[0]
        assert isinstance(err, SchemaIncompatible)
        assert "project_material_needs" in str(err) and "warehouse" in str(err)
        assert [k for _t, k, _v in records(rig, [NEED], timeout=5)] == ["N1", "N2"]  # N3 waits in the slot
    with rig["pg"].connect() as c2:  # nothing lost: the slot still holds N3 (not confirmed)
        row = c2.execute("SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL,"
                         " 'proto_version', '1', 'publication_names', %s)", (capture.reader.slot, capture.reader.publication)).fetchone()  # fmt: skip
        assert row[0] > 0


def test_a_snapshot_cut_short_leaves_nothing_and_the_next_one_is_whole(rig) -> None:
    conn = rig["pg"].connect()
    for n in range(1200):  # 3 chunks of the snapshot (snapshot_fetch_rows 500)
        need(conn, n)
    cfg = rig["cfg"].model_copy(update={"snapshot_fetch_rows": 500})
    capture, source = tasks(rig["name"], cfg, rig["bootstrap"], rig["registry"])
    real = capture.reader.snapshot
    cut = []

    def snapshot_failing_once(tables):
        it = real(tables)
        if not cut:
            cut.append(next(it))  # one chunk read, then the reader's connection breaks
            raise ConnectionError("cut during the snapshot")
        yield from it

    capture.reader.snapshot = snapshot_failing_once
    with Runner(capture, source) as run:
        try:
            wait_for(lambda: capture.journaled > 0, 60)
        except AssertionError:
            raise AssertionError(f"errors: {run.errors[:5]} failed: {run.failed}") from None
        need(conn, 1200)  # streamed after the second snapshot
        got = records(rig, [NEED], expect=1201)
        assert not run.failed and any("cut during the snapshot" in str(e) for e in run.errors)
    assert len(cut[0].changes) == 500
    ids = Counter(v["need_id"] for _t, _k, v in got)
    assert len(ids) == 1201 and max(ids.values()) == 1


def test_the_slot_is_confirmed_only_once_the_journal_was_published(rig) -> None:
    conn = rig["pg"].connect()
    capture, source = tasks(rig["name"], rig["cfg"], rig["bootstrap"], rig["registry"])
    slot = capture.reader.slot

    def confirmed() -> str:
        return conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                            (slot,)).fetchone()[0]  # fmt: skip

    with Runner(capture):  # capture alone: the journal fills, nothing is published
        wait_for(lambda: capture._started)
        start = confirmed()
        for n in range(30):
            need(conn, n)
        wait_for(lambda: capture.journaled >= 30)
        time.sleep(2)  # several confirm intervals
        assert confirmed() == start, "the slot moved past changes nobody published"
    capture, source = tasks(rig["name"], rig["cfg"], rig["bootstrap"], rig["registry"])
    with Runner(capture, source):
        assert len(records(rig, [NEED], expect=30)) == 30
        wait_for(lambda: confirmed() != start, 20)
