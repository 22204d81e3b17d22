"""postgres-cdc under chaos: more than 10,000 row changes in transactions of mixed sizes while the worker that
runs the connector is SIGKILLed several times and the captured database is restarted with ``-m fast`` and
``-m immediate``. Every change reaches Kafka once (by event id; what a kill between the broker's ack and the
cursor write re-sends carries the same id) and, per key, in commit order."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

from bizbus.kafka import read_topic
from bizbus.serde import AvroSerde
from tests.cdc_harness import CATALOGUE, STATE_DSN, drop_state, load_schema, mapping_file
from tests.chaos.harness import Worker, private_stack, write_pipeline
from tests.pg_private import private_postgres

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHANGES = 10_000
KEYS = 40
SIZES = (1, 1, 1, 2, 5, 10, 30, 100, 250, 500)
LEVEL, NEED = "bizbus.inventory.level.v1", "bizbus.pm.material-need.v1"


class Application:
    """Writes transactions of mixed sizes: stock level updates (on_hand + 1 per change, so a key's values
    show its commit order) and new material needs; remembers what committed. ``hold()`` parks it between
    transactions (the database is restarted meanwhile)."""

    def __init__(self, dsn: str, rng: random.Random) -> None:
        self.dsn, self.rng = dsn, rng
        self.levels: dict[str, int] = dict.fromkeys(range(KEYS), 0)  # type: ignore[arg-type]
        self.needs: list[str] = []
        self.changes = 0
        self.txs = 0
        self._hold, self._parked, self.done = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def hold(self) -> None:
        self._hold.set()
        while not self._parked.wait(0.2):
            assert not self.done.is_set() or not self.thread.is_alive(), "the application did not park"
            if self.done.is_set():
                return

    def release(self) -> None:
        self._parked.clear()
        self._hold.clear()

    def _connect(self) -> psycopg.Connection:
        while True:
            try:
                return psycopg.connect(self.dsn, connect_timeout=5)
            except psycopg.OperationalError:
                time.sleep(0.3)

    def _run(self) -> None:
        conn = self._connect()
        while self.changes < CHANGES:
            if self._hold.is_set():
                self._parked.set()
                while self._hold.is_set():
                    time.sleep(0.05)
                conn.close()
                conn = self._connect()
            size = self.rng.choice(SIZES)
            levels = dict(self.levels)
            needs: list[str] = []
            with conn.transaction():
                for _ in range(size):
                    if self.rng.random() < 0.6:
                        k = self.rng.randrange(KEYS)
                        conn.execute("UPDATE stock_levels SET on_hand = on_hand + 1 WHERE material = %s", (f"M-{k}",))
                        levels[k] += 1
                    else:
                        nid = f"N{len(self.needs) + len(needs)}"
                        conn.execute("INSERT INTO project_material_needs (need_id, project, material, quantity, unit,"
                                     " need_by) VALUES (%s, 'P1', 'M-1', 1, 'PCS', DATE '2026-12-20')", (nid,))  # fmt: skip
                        needs.append(nid)
            self.levels, self.needs = levels, self.needs + needs
            self.changes += size
            self.txs += 1
            time.sleep(0.05 + 0.002 * size)  # about 25 s for all: kills and restarts land in the middle
        conn.close()
        self.done.set()


def test_pg_cdc_exactly_once_in_commit_order_under_kills_and_db_restarts(tmp_path: Path) -> None:
    rng = random.Random(int(time.time()))
    name = f"cdc-chaos-{uuid.uuid4().hex[:6]}"
    topics = {t.name: t.partitions for t in CATALOGUE.topics}
    with private_postgres(logical=True) as pg, private_stack(tmp_path, topics) as stack:
        load_schema(pg)
        with pg.connect() as c:
            c.execute("INSERT INTO materials (code, name, unit) SELECT 'M-' || k, 'm', 'PCS' FROM generate_series(0, %s) k",
                      (KEYS - 1,))  # fmt: skip
            c.execute("INSERT INTO stock_levels (warehouse, material, unit) SELECT 'W1', 'M-' || k, 'PCS'"
                      " FROM generate_series(0, %s) k", (KEYS - 1,))  # fmt: skip
        pipeline = write_pipeline(tmp_path / "pipeline.yaml", [
            {"name": name, "type": "postgres-cdc",
             "config": {"dsn": pg.dsn(), "mapping": str(mapping_file(tmp_path, "chaos")), "state_dsn": STATE_DSN,
                        "status_interval_seconds": 1, "confirm_interval_seconds": 0.2}}])  # fmt: skip
        worker = Worker(name, stack, pipeline)
        app = Application(pg.dsn(), rng)
        try:
            worker.start()
            time.sleep(3)
            app.thread.start()
            t0 = time.monotonic()
            restarts = ["fast", "immediate"]
            while not app.done.is_set() or worker.kills < 4 or restarts:
                time.sleep(rng.uniform(1.5, 4.0))
                if restarts and worker.kills >= 1 + (2 - len(restarts)):
                    mode = restarts.pop(0)
                    app.hold()
                    pg.stop(mode)
                    time.sleep(1)
                    pg.start()
                    app.release()
                    continue
                worker.kill()
                worker.start()
            expected = len(app.needs) + sum(app.levels.values())
            serde = AvroSerde({"url": stack.registry_url})
            got: dict[str, list] = {}

            def read() -> int:
                for topic in (LEVEL, NEED):
                    got[topic] = read_topic({"bootstrap.servers": stack.bootstrap}, topic, 3.0,
                                            partitions=list(range(topics[topic])), group_prefix="cdc-chaos", batch=2000)  # fmt: skip
                return len({serde.decode(m.value())["meta"]["event_id"] for t in got.values() for m in t})

            deadline = time.monotonic() + 240
            while read() < expected + KEYS and time.monotonic() < deadline:
                if not worker.alive():
                    worker.start()
                time.sleep(2)
            elapsed = time.monotonic() - t0
            with pg.connect() as c:  # what the database holds is what the application saw committed
                in_db = sorted(r[0] for r in c.execute("SELECT need_id FROM project_material_needs").fetchall())
                levels = dict(c.execute("SELECT material, on_hand::int FROM stock_levels").fetchall())
            assert in_db == sorted(app.needs) and levels == {f"M-{k}": v for k, v in app.levels.items()}
        finally:
            worker.stop()
            drop_state(name)
        per_key: dict[str, list[int]] = defaultdict(list)
        seen: set[str] = set()
        raw = resent = 0
        needs: list[str] = []
        for topic, msgs in got.items():
            for m in msgs:
                v = serde.decode(m.value())
                raw += 1
                if v["meta"]["event_id"] in seen:
                    resent += 1
                    continue
                seen.add(v["meta"]["event_id"])
                if topic == LEVEL:
                    per_key[v["material"]].append(int(v["on_hand"]))
                else:
                    needs.append(v["need_id"])
        print(f"\nchaos postgres-cdc: changes={app.changes} in {app.txs} transactions, expected records="
              f"{expected + KEYS} distinct={len(seen)} raw={raw} re-sent={resent} sigkills={worker.kills} "
              f"db restarts=fast+immediate in {elapsed:.0f}s")  # fmt: skip
        assert app.changes >= CHANGES and worker.kills >= 4
        assert sorted(needs) == sorted(app.needs), "a material need missing or twice"
        for k in range(KEYS):
            assert per_key[f"M-{k}"] == list(range(app.levels[k] + 1)), f"M-{k}: not each value once in commit order"
