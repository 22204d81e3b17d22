"""Proof by violence for the MariaDB binlog source: an application commits more than 10,000 stock changes
in transactions of mixed sizes (1 to 500 rows) into a private mariadbd, while the `bizbus worker` running
the `mariadb-cdc` connector is SIGKILLed several times and MariaDB itself is shut down cleanly once and
killed (SIGKILL, crash recovery) once; the worker also dies on its own at random between the broker's
acknowledgement and its cursor write (crash point ``source.after-send``). Every change must be on the topic once (by event id: the source is
at least once, a re-send repeats the same id), none missing, in commit order per key.

Each UPDATE adds 1 to a stock level's ``on_hand``, so the records of one key, first occurrences in topic
order, must read s (the snapshot's row, taken while the application already writes), s + 1, s + 2, ... up to
the final value the database holds: a gap or a repeat at the snapshot handover or after a crash shows.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest

from bizbus.kafka import read_topic
from bizbus.serde import AvroSerde
from tests.chaos.harness import Worker, crash_count, private_stack, write_pipeline
from tests.mariadb_private import PrivateMariaDB, create_jxc, private_mariadb

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MAPPING = "deploy/examples/mappings/jxc-cdc.yaml"
LEVEL = "bizbus.inventory.level.v1"
TOPICS = {LEVEL: 3, "bizbus.md.material.v1": 1, "bizbus.inventory.goods-issue.v1": 1, "bizbus.pm.material-need.v1": 1,
          "bizbus.sales.order.v1": 1, "bizbus.inventory.goods-receipt.v1": 1, "bizbus.ops.dead-letter.v1": 1}  # fmt: skip
KEYS = 40
CHANGES = 11_500  # row changes the application commits; >= 10,000 of them after the snapshot
SIZES = [1] * 10 + [5] * 5 + [50, 200, 500]  # rows per transaction
# what happens to the worker and to MariaDB, one action every 2-4 s while the application writes
PLAN = ["kill-worker", "db-fast", "kill-worker", "kill-worker", "db-kill", "kill-worker", "kill-worker"]


@pytest.fixture
def maria() -> Iterator[PrivateMariaDB]:
    with private_mariadb() as db:
        create_jxc(db)
        db.execute("INSERT INTO jxc.warehouses (code, name) VALUES ('W1', 'main')")
        for k in range(KEYS):
            db.execute("INSERT INTO jxc.materials (code, name, unit) VALUES (%s, 'm', 'PCS')", (f"M{k:03d}",))
            db.execute("INSERT INTO jxc.stock_levels (warehouse, material, unit) VALUES ('W1', %s, 'PCS')",
                       (f"M{k:03d}",))  # fmt: skip
        yield db


class Application(threading.Thread):
    """Commits +1 stock updates in transactions of mixed sizes; reconnects while MariaDB is away."""

    def __init__(self, db: PrivateMariaDB) -> None:
        super().__init__(daemon=True)
        self.db, self.rng = db, random.Random(20)
        self.committed = self.transactions = self.failed = 0

    def run(self) -> None:
        conn: Any = None
        while self.committed < CHANGES:
            try:
                if conn is None:
                    conn = self.db.connect("jxc", autocommit=False)
                size = self.rng.choice(SIZES)
                with conn.cursor() as cur:
                    for _ in range(size):
                        cur.execute("UPDATE stock_levels SET on_hand = on_hand + 1 WHERE warehouse = 'W1'"
                                    " AND material = %s", (f"M{self.rng.randrange(KEYS):03d}",))  # fmt: skip
                conn.commit()
                self.committed += size
                self.transactions += 1
                time.sleep(0.08)
            except pymysql.err.MySQLError:
                self.failed += 1
                conn = None
                time.sleep(0.3)


def level_records(bootstrap: str, registry_url: str) -> list[tuple[str, str, Decimal]]:
    """(key, event_id, on_hand) of every record of the stock level topic, in partition order."""
    serde = AvroSerde({"url": registry_url})
    msgs = read_topic({"bootstrap.servers": bootstrap}, LEVEL, 3.0, group_prefix="chaos-maria", batch=2000)
    out = []
    for m in msgs:
        v = serde.decode(m.value())
        out.append((m.key().decode(), v["meta"]["event_id"], v["on_hand"]))
    return out


def check(records: list[tuple[str, str, Decimal]], final: dict[str, int]) -> tuple[list[str], int, int]:
    """Problems found (empty: every change once, in order), the number of re-sent records and of the changes
    streamed after the snapshot (distinct records less one snapshot row per key)."""
    seen: set[str] = set()
    values: dict[str, list[int]] = {}
    resent = 0
    for key, eid, on_hand in records:
        if eid in seen:
            resent += 1
            continue
        seen.add(eid)
        values.setdefault(key, []).append(int(on_hand))
    problems = []
    for material, n in final.items():
        key = f"W1/{material}"
        got = values.get(key, [])
        want = list(range(got[0], n + 1)) if got else [n]
        if got != want:
            bad = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
            problems.append(f"{key}: {len(got)} distinct records {got[max(0, bad - 2):bad + 3]}... at {bad},"
                            f" expected {want[0]}..{n}")  # fmt: skip
    return problems, resent, len(seen) - len(values)


def test_every_change_once_in_commit_order_under_worker_kills_and_db_restarts(maria: PrivateMariaDB,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    rng = random.Random(int(time.time()))
    name = f"maria-chaos-{uuid.uuid4().hex[:6]}"
    with private_stack(tmp_path, TOPICS) as stack:
        pipeline = write_pipeline(tmp_path / "pipeline.yaml", [
            {"name": name, "type": "mariadb-cdc", "config": {
                "host": "127.0.0.1", "port": maria.port, "user": "root", "database": "jxc", "mapping": MAPPING,
                "server_id": 7001, "heartbeat_seconds": 0.3, "batch_size": 1000}}])  # fmt: skip
        crashes = tmp_path / "crashes.log"  # the worker also dies on its own between the broker's ack and the cursor
        worker = Worker(name, stack, pipeline, {"BIZBUS_CRASHPOINTS": "source.after-send:0.02",
                                                "BIZBUS_CRASHPOINT_LOG": str(crashes)})  # fmt: skip
        app = Application(maria)
        t0 = time.monotonic()
        app.start()
        time.sleep(1.0)
        worker.start()  # the snapshot is taken while the application writes
        done: list[str] = []
        for action in PLAN:
            time.sleep(rng.uniform(2.0, 4.0))
            if not worker.alive():  # died at a crash point: restarted as an orchestrator would
                worker.start()
            if action == "kill-worker":
                worker.kill()
                worker.start()
            else:
                maria.restart("fast" if action == "db-fast" else "kill")
            done.append(action)
        app.join(600)
        assert not app.is_alive(), "the application did not finish"
        final = {m: int(q) for m, q in maria.execute("SELECT material, on_hand FROM jxc.stock_levels")}
        changes = sum(final.values())
        deadline = time.monotonic() + 300
        while True:
            if not worker.alive():
                worker.start()
            records = level_records(stack.bootstrap, stack.registry_url)
            problems, resent, streamed = check(records, final)
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(3)
        worker.stop()
        elapsed = time.monotonic() - t0
        print(f"\nchaos mariadb-cdc: row changes={changes} in {app.transactions} transactions, {streamed} of them"
              f" streamed after the snapshot of {KEYS} rows; records={len(records)} re-sent={resent};"
              f" worker SIGKILLs={worker.kills}, db restarts: {done.count('db-fast')} clean + {done.count('db-kill')}"
              f" SIGKILL; crash points hit={crash_count(crashes)}; application retries={app.failed}; {elapsed:.0f} s")  # fmt: skip
        assert not problems, "\n".join(problems[:10]) + "\n" + worker.logs()[-6000:]
        assert streamed >= 10_000 and worker.kills >= 5
