"""The example pipeline deploy/examples/reporting.yaml in a real ``bizbus worker`` process, SIGKILLed while
it lands every catalogue topic's sample and 600 sales-order versions in a database of the test's own: every
event in the history once, the newest version current, the lines of the current version only."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from bizbus.schemas import catalog
from confluent_kafka import Producer

from bizbus import lineage
from bizbus.serde import AvroSerde
from tests.chaos.harness import Worker, private_stack
from tests.integration.test_reporting_sink import CATALOGUE, assert_landed

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SERVER = "postgresql://postgres@127.0.0.1:5432/"


def test_the_example_pipeline_survives_sigkill(tmp_path: Path) -> None:
    try:
        admin = psycopg.connect(SERVER + "postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable ({exc})")
    db = f"rep_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE DATABASE {db}")
    try:
        run(tmp_path, SERVER + db)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()


def run(tmp_path: Path, dsn: str) -> None:
    pipeline = yaml.safe_load((ROOT / "deploy" / "examples" / "reporting.yaml").read_text())
    config = pipeline["connectors"][0]["config"]
    assert sorted(config["topics"]) == sorted(e["name"] for e in CATALOGUE)  # the example reads them all
    config["dsn"] = dsn
    config["batch_size"] = 5
    path = tmp_path / "reporting.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    topics = {e["name"]: 1 for e in CATALOGUE} | {"bizbus.sales.order.v1": 3, "bizbus.ops.dead-letter.v1": 1}
    with private_stack(tmp_path, topics) as stack:
        serde = AvroSerde({"url": stack.registry_url})
        producer = Producer({"bootstrap.servers": stack.bootstrap, "enable.idempotence": True, "acks": "all"})
        encoders = {e["name"]: serde.encoder(f"{e['name']}-value", catalog.load(e["value_schema"])) for e in CATALOGUE}

        def send(topic: str, rec: dict[str, Any], key: str) -> None:
            producer.produce(topic, key=key.encode(), value=encoders[topic](rec), headers=lineage.headers(rec["meta"]))

        samples = {e["name"]: catalog.sample(e["value_schema"]) for e in CATALOGUE}
        for topic, rec in samples.items():
            send(topic, rec, "sample")
        orders: dict[str, dict[str, Any]] = {}
        n = len(samples)
        for version in range(1, 11):
            for i in range(60):
                rec = catalog.sample("bizbus.sales.SalesOrder")
                rec.update(order_no=f"SO-K{i}", version=version)
                rec["meta"]["event_id"] = f"so-k{i}-{version}"
                rec["lines"] = [dict(rec["lines"][0], line_no=j + 1) for j in range(1 + (i * version) % 3)]
                send("bizbus.sales.order.v1", rec, rec["order_no"])
                orders[rec["order_no"]] = rec
                n += 1
        assert producer.flush(20) == 0

        worker = Worker("reporting-db", stack, path)
        rng = random.Random()

        def applied() -> int:
            try:
                with psycopg.connect(dsn, connect_timeout=3) as c:
                    return int(c.execute("SELECT count(*) FROM bizbus_ledger.applied_effects").fetchone()[0])
            except psycopg.Error:
                return 0

        worker.start()
        try:
            deadline = time.monotonic() + 240
            marks = sorted(rng.uniform(lo, lo + 0.1) * n for lo in (0.15, 0.4, 0.65))  # kill mid-stream
            while marks and time.monotonic() < deadline:
                if applied() >= marks[0]:
                    marks.pop(0)
                    worker.kill()
                    worker.start()
                time.sleep(0.02)
            while applied() < n and time.monotonic() < deadline:
                assert worker.alive(), worker.logs()
                time.sleep(0.5)
            assert applied() == n, f"{applied()} of {n}\n{worker.logs()}"
        finally:
            worker.stop()
        with psycopg.connect(dsn) as conn:
            for topic, rec in samples.items():
                assert_landed(conn, "reporting", topic, rec)
            for rec in orders.values():
                assert_landed(conn, "reporting", "bizbus.sales.order.v1", rec)
            hist = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM reporting.sales_order_history").fetchone()
            assert hist == (601, 601)
            lines = conn.execute("SELECT count(*) FROM reporting.sales_order_line").fetchone()[0]
        assert lines == sum(len(r["lines"]) for r in orders.values()) + len(samples["bizbus.sales.order.v1"]["lines"])
        print(f"\nreporting worker: {n} events, {worker.kills} SIGKILLs, {worker.starts} starts")
        assert worker.kills == 3
