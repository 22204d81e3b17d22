"""F5's decisions written back into the sales system's PostgreSQL database exactly once: the pg-table sink
configured as deploy/examples/jxc-atp-writeback.yaml (upsert by order_no, newer order versions win), its
workers SIGKILLed at random moments while the decisions stream in. A trigger on the target table records
every write it receives: each decision is written once (never twice, never missing) and the row of each
order holds its newest decision."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from bizbus.schemas import catalog
from confluent_kafka import Producer

from bizbus import lineage
from bizbus.host.pipeline import load_pipeline
from bizbus.serde import AvroSerde
from bizbus.settings import PROJECT_ROOT
from tests.chaos.harness import Worker, chaos, private_stack, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(400)]

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TOPIC = "bizbus.sales.order-decision.v1"
ORDERS = 300
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def db() -> Iterator[tuple[psycopg.Connection, str]]:
    try:
        conn = psycopg.connect(DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {DSN} not reachable: {exc}")
    schema = f"jxc_wb_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"""CREATE TABLE {schema}.sales_order_atp (order_no text PRIMARY KEY, order_version bigint NOT NULL,
                     atp_status text NOT NULL, atp_reason text, decided_at timestamptz NOT NULL, effect_id text NOT NULL)""")
    conn.execute(f"CREATE TABLE {schema}.writes (order_no text, order_version bigint, effect_id text)")
    conn.execute(f"""CREATE FUNCTION {schema}.audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                     INSERT INTO {schema}.writes VALUES (NEW.order_no, NEW.order_version, NEW.effect_id); RETURN NEW;
                     END $$""")
    conn.execute(f"""CREATE TRIGGER audit AFTER INSERT OR UPDATE ON {schema}.sales_order_atp
                     FOR EACH ROW EXECUTE FUNCTION {schema}.audit()""")
    yield conn, schema
    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    prefix = schema.replace("_", "-") + "%"
    conn.execute("DELETE FROM bizbus_ledger.applied_effects WHERE connector LIKE %s", (prefix,))
    conn.execute("DELETE FROM bizbus_ledger.offsets WHERE connector LIKE %s", (prefix,))
    conn.close()


def decision(no: str, version: int, kind: str, reason: str | None = None, role: str = "decision") -> dict[str, Any]:
    at = T0 + timedelta(minutes=version)
    return {"meta": lineage.meta(lineage.derived_id(lineage.event_id("jxc", "sales_order", no, version), role),
                                 no, "bizbus", at), "order_no": no, "company": "SH01", "order_version": version,
            "decision": kind, "reason": reason, "warehouse": "WH1", "lines": [], "shortfalls": {}, "decided_at": at}  # fmt: skip


def test_the_example_pipeline_is_valid() -> None:
    pipe = load_pipeline(PROJECT_ROOT / "deploy" / "examples" / "jxc-atp-writeback.yaml")
    sink = next(c for c in pipe.components if c.name == "jxc-atp-writeback")
    assert sink.config.upsert_key == ("order_no",) and sink.config.newer_column == "order_version"


def test_decisions_are_written_back_once_under_sigkill(db: tuple[psycopg.Connection, str], tmp_path: Path) -> None:
    conn, schema = db
    name = f"{schema.replace('_', '-')}-writeback"
    example = yaml.safe_load((PROJECT_ROOT / "deploy" / "examples" / "jxc-atp-writeback.yaml").read_text())
    sink = next(c for c in example["connectors"] if c["name"] == "jxc-atp-writeback")
    config = {**sink["config"], "dsn": DSN, "table": f"{schema}.sales_order_atp", "batch_size": 50}
    rng = random.Random(int(time.time()))
    with private_stack(tmp_path, {TOPIC: 3, "bizbus.ops.dead-letter.v1": 1}) as stack:
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(yaml.safe_dump({"version": 1, "name": "wb", "flows": [],
                                            "connectors": [{"name": name, "type": "pg-table", "config": config}]}))  # fmt: skip
        workers = [Worker(f"{name}#1", stack, pipeline), Worker(f"{name}#2", stack, pipeline)]
        for w in workers:
            w.start()
        serde = AvroSerde({"url": stack.registry_url})
        spec = catalog.load("bizbus.sales.OrderDecision")
        encode = serde.encoder(f"{TOPIC}-value", spec)
        producer = Producer({"bootstrap.servers": stack.bootstrap, "enable.idempotence": True})
        expected: dict[str, tuple[int, str]] = {}
        sent: list[dict[str, Any]] = []
        for n in range(ORDERS):
            no = f"SO-{n:05d}"
            records = [decision(no, 1, "ACCEPTED")]
            if n % 3 == 0:
                records.append(decision(no, 2, "RELEASED", "order cancelled"))
            if n % 10 == 0:  # a refusal of version 3, then a late decision of version 1 (another effect): the newest stays
                records += [decision(no, 3, "REFUSED", f"M1 in WH1: short by {n}"),
                            decision(no, 1, "ACCEPTED", role="late")]  # fmt: skip
            sent += records
            newest = max(records, key=lambda r: r["order_version"])
            expected[no] = (newest["order_version"], newest["decision"])
        done = {"sent": False}

        def produce() -> None:
            for i, r in enumerate(sent):
                producer.produce(TOPIC, key=r["order_no"].encode(), value=encode(r), headers=lineage.headers(r["meta"]))
                if i % 50 == 0:
                    producer.flush(15)
                    time.sleep(0.05)
            assert producer.flush(15) == 0
            done["sent"] = True

        t = threading.Thread(target=produce)
        t.start()

        def rows() -> dict[str, tuple[int, str]]:
            return {r[0]: (r[1], r[2]) for r in conn.execute(f"SELECT order_no, order_version, atp_status FROM "
                                                              f"{schema}.sales_order_atp").fetchall()}  # fmt: skip

        chaos(workers, 2, until=lambda: done["sent"], rng=rng, pause=(1.0, 2.5))
        t.join(60)
        wait_for(lambda: rows() == expected, 180, "every order's newest decision in the sales table", workers)
        time.sleep(3)  # a duplicate would land now
        for w in workers:
            w.stop()
        assert rows() == expected
        writes = conn.execute(f"SELECT effect_id, count(*) FROM {schema}.writes GROUP BY effect_id").fetchall()
        twice = [e for e, c in writes if c > 1]
        distinct = {r["meta"]["event_id"] for r in sent}
        # each decision effect written at most once; the late version-1 decisions changed nothing
        late = {decision(f"SO-{n:05d}", 1, "ACCEPTED", role="late")["meta"]["event_id"] for n in range(0, ORDERS, 10)}
        assert twice == [] and {e for e, _ in writes} <= distinct - late
        assert {e for e, _ in writes} >= {decision(no, v, k)["meta"]["event_id"] for no, (v, k) in expected.items()}
        reason = conn.execute(f"SELECT atp_reason FROM {schema}.sales_order_atp WHERE order_no = 'SO-00010'").fetchone()
        assert reason == ("M1 in WH1: short by 10",) and sum(w.kills for w in workers) >= 4


def test_upsert_options_are_checked() -> None:
    from bizbus.connectors.sinks.postgres.config import PgTableSinkConfig

    base = {"topics": [TOPIC], "dsn": DSN, "table": "jxc.t", "columns": {"order_no": "order_no", "v": "order_version"}}
    with pytest.raises(ValueError, match="not in columns: nope"):
        PgTableSinkConfig(**base, upsert_key=("nope",))
    with pytest.raises(ValueError, match="newer_column needs upsert_key"):
        PgTableSinkConfig(**base, newer_column="v")
    assert PgTableSinkConfig(**base, upsert_key=("order_no",), newer_column="v").newer_column == "v"
