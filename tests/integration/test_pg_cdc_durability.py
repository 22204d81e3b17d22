"""postgres-cdc under a real ``bizbus up`` (memory-only embedded broker): a restart with a backlog on the lost
log, changes made while the bus is down, and a broker killed mid-stream lose no change and apply none twice in
a pg-table target (no unique constraint there: a duplicate would show). The journal is what is sent again."""

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
from tests.cdc_harness import STATE_DSN, drop_state, load_schema, mapping_file
from tests.pg_private import private_postgres

pytestmark = pytest.mark.timeout(600)


def add_needs(pg: Any, first: int, count: int, pause: float = 0.0) -> None:
    with pg.connect() as c:
        for n in range(first, first + count):
            c.execute("INSERT INTO project_material_needs (need_id, project, material, quantity, unit, need_by)"
                      " VALUES (%s, 'P1', 'M-1', 1, 'PCS', DATE '2026-12-20')", (f"N{n}",))  # fmt: skip
            time.sleep(pause)


@pytest.fixture
def rig(tmp_path: Path, postgres: psycopg.Connection) -> Iterator[tuple[BusProcess, Any, Any]]:
    sfx = uuid.uuid4().hex[:6]
    source, sink, table = f"jxc-{sfx}", f"needs-{sfx}", f"cdc_needs_{sfx}"
    postgres.execute(f"CREATE TABLE public.{table} (effect_id text, need_id text)")
    with private_postgres(logical=True) as pg:
        load_schema(pg)
        pipeline = write_pipeline(tmp_path / "pipeline.yaml", [
            {"name": source, "type": "postgres-cdc", "config": {
                "dsn": pg.dsn(), "mapping": str(mapping_file(tmp_path, source)), "state_dsn": STATE_DSN,
                "confirm_interval_seconds": 0.2, "status_interval_seconds": 1}},
            {"name": sink, "type": "pg-table", "config": {
                "topics": ["bizbus.pm.material-need.v1"], "dsn": STATE_DSN, "table": f"public.{table}",
                "columns": {"effect_id": "$effect_id", "need_id": "need_id"}}},
        ])  # fmt: skip
        bus = BusProcess(tmp_path, pipeline)

        def rows() -> tuple[int, int]:
            total, distinct = postgres.execute(f"SELECT count(*), count(DISTINCT need_id) FROM public.{table}").fetchone()
            return int(total), int(distinct)

        try:
            bus.start()
            yield bus, pg, rows
        finally:
            bus.kill()
            postgres.execute(f"DROP TABLE IF EXISTS public.{table}")
            drop_state(source)
            postgres.execute("DELETE FROM bizbus_ledger.applied_effects WHERE connector = %s", (sink,))
            postgres.execute("DELETE FROM bizbus_ledger.offsets WHERE connector = %s", (sink,))


def _wait_rows(rows: Any, bus: BusProcess, expected: int, timeout: float = 120) -> None:
    wait_until(lambda: rows() == (expected, expected), timeout, f"{expected} rows once each",
               lambda: f"rows (total, distinct) = {rows()}\n{bus.log()[-5000:]}")  # fmt: skip
    time.sleep(3)  # a duplicate would show now
    assert rows() == (expected, expected)


def test_restarts_with_a_backlog_and_a_killed_broker_lose_and_duplicate_nothing(rig) -> None:
    bus, pg, rows = rig
    add_needs(pg, 0, 20)
    _wait_rows(rows, bus, 20)

    # a backlog on the log that a restart loses: the sink is paused while 25 changes are published
    sink = [line for line in bus.pipeline.read_text().splitlines() if "name: needs-" in line][0].split()[-1]
    assert bus.admin_post(f"/connectors/{sink}/pause").status_code == 202
    wait_until(lambda: set(bus.admin_get("/connectors").json()[sink]["tasks"].values()) == {"paused"}, 30,
               "the sink's tasks paused", lambda: bus.admin_get("/connectors").text)  # fmt: skip
    add_needs(pg, 20, 25)
    time.sleep(4)
    assert rows() == (20, 20)
    assert bus.stop() == 0
    add_needs(pg, 45, 10)  # while the bus is down: they wait in the slot
    bus.start()
    assert bus.admin_post(f"/connectors/{sink}/resume").status_code == 202
    _wait_rows(rows, bus, 55)
    assert "sending again from the beginning" in bus.log()

    # the broker killed while changes stream
    writing = threading.Thread(target=add_needs, args=(pg, 55, 100, 0.05), daemon=True)
    writing.start()
    wait_until(lambda: rows()[0] >= 65, 60, "the first streamed rows")
    bus.kill_broker()
    bus.wait_output("the embedded broker is back", 90)
    writing.join(120)
    _wait_rows(rows, bus, 155, timeout=180)
