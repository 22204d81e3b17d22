"""The ``reporting-db`` sink on the embedded broker and a real PostgreSQL (a private schema per test): every
catalogue topic's sample lands in its tables with exact values, versions order the current state, lines are
replaced with their document, bad records are dead letters, a replay writes nothing twice, a new nullable
field adds a column while running (no table rewrite), an incompatible change holds the batch, and
terminated connections mid-stream lose nothing and write nothing twice."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from bizbus.connectors.runtime.base import TaskRuntime, TaskSpec
from bizbus.connectors.runtime.sink import SinkRunner
from bizbus.connectors.sinks.reporting import convert, mapping
from bizbus.connectors.sinks.reporting.connector import ReportingWriter
from bizbus.schemas import catalog
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import lineage
from bizbus.deadletters import DeadLetterWriter
from bizbus.failures import RetryPolicy
from bizbus.serde import AvroSerde
from tests.pg_private import private_postgres

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CATALOGUE = [t for t in yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "topics.yaml").read_text())["topics"]
             if t["name"] != "bizbus.ops.dead-letter.v1" and not t.get("internal")]  # fmt: skip


@pytest.fixture
def pg() -> Iterator[tuple[psycopg.Connection[Any], str, str]]:
    try:
        conn = psycopg.connect(DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable ({exc})")
    suffix = uuid.uuid4().hex[:8]
    schema, ledger = f"rep_{suffix}", f"rep_ledger_{suffix}"
    yield conn, schema, ledger
    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.execute(f"DROP SCHEMA IF EXISTS {ledger} CASCADE")
    conn.close()


class Bus:
    """Private topics on the embedded broker (``bizbus.t<id>.<catalogue name>``) mapped to the catalogue's
    table names, a serde and a producer."""

    def __init__(self, bootstrap: str, registry_url: str, entries: list[dict[str, Any]], partitions: int = 1) -> None:
        self.conf = {"bootstrap.servers": bootstrap}
        tag = "t" + uuid.uuid4().hex[:6]
        self.topic = {e["name"]: e["name"].replace("bizbus.", f"bizbus.{tag}.", 1) for e in entries}
        self.schema = {e["name"]: e["value_schema"] for e in entries}
        self.dlq = f"bizbus.{tag}.dlq.v1"
        admin = AdminClient(self.conf)
        for t in [*self.topic.values(), self.dlq]:
            admin.create_topics([NewTopic(t, partitions, 1)])[t].result(20)
        self.serde = AvroSerde({"url": registry_url})
        self.encoders = {name: self.serde.encoder(f"{t}-value", catalog.load(self.schema[name]))
                         for name, t in self.topic.items()}  # fmt: skip
        self.producer = Producer({**self.conf, "enable.idempotence": True, "acks": "all"})

    def tables(self) -> dict[str, str]:
        return {t: mapping.table_name(name) for name, t in self.topic.items()}

    def send(self, name: str, rec: dict[str, Any], key: str | None = None, raw: bytes | None = None) -> None:
        value = raw if raw is not None else self.encoders[name](rec)
        headers = lineage.headers(rec["meta"]) if raw is None else None
        self.producer.produce(self.topic[name], key=(key or "k").encode(), value=value, headers=headers)

    def flush(self) -> None:
        assert self.producer.flush(20) == 0

    def writer(self, dsn: str, connector: str, schema: str, ledger: str) -> ReportingWriter:
        return ReportingWriter(dsn, connector, self.serde, schema, tables=self.tables(), ledger_schema=ledger)

    def runner(self, dsn: str, connector: str, schema: str, ledger: str, batch_size: int = 50) -> SinkRunner:
        r = SinkRunner(connector, list(self.topic.values()), self.conf, self.serde,
                       self.writer(dsn, connector, schema, ledger), DeadLetterWriter(self.conf, self.serde, topic=self.dlq),
                       RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=0.5), batch_size=batch_size)  # fmt: skip
        r.setup()
        return r

    def dead_letters(self, expect: int, timeout: float = 20) -> list[dict[str, Any]]:
        c = Consumer({**self.conf, "group.id": f"dlq-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(self.dlq, 0, 0)])
        out, deadline = [], time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                out.append(self.serde.decode(m.value()))
        time.sleep(0.5 if expect else 2)
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append(self.serde.decode(m.value()))
        c.close()
        return out


def run_until(runner: SinkRunner, consumed: int, timeout: float = 90) -> None:
    stop = threading.Event()
    t = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while runner.stats.consumed < consumed and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join(20)
    assert runner.stats.consumed >= consumed, f"consumed {runner.stats.consumed} of {consumed}"


def fetch(conn: psycopg.Connection[Any], schema: str, table: str, where: str = "", args: tuple = ()) -> list[dict]:
    cur = conn.execute(f'SELECT * FROM "{schema}"."{table}" {where}', args)
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def expect_value(col: mapping.Column, record: dict[str, Any]) -> Any:
    v = convert.value_at(record, col)
    return json.loads(v) if col.json and v is not None else v


def assert_landed(conn: psycopg.Connection[Any], schema: str, name: str, rec: dict[str, Any]) -> None:
    """The current row, the lines and the history row of ``rec`` hold exactly its values."""
    lay = mapping.layout(name, catalog.load(catalog_schema(name)))
    rows = convert.build(lay, rec, 0, 0)
    match = " AND ".join(f'"{k}" = %s' for k in lay.key)
    (cur,) = fetch(conn, schema, lay.table, f"WHERE {match}", rows.key)
    (hist,) = fetch(conn, schema, lay.history, f"WHERE {lay.event_col} = %s", (rows.event_id,))
    for col in lay.columns:
        assert cur[col.name] == expect_value(col, rec), (name, col.name, cur[col.name])
        assert hist[col.name] == expect_value(col, rec), (name, col.name)
    for col in lay.history_json:
        assert hist[col.name] == expect_value(col, rec), (name, col.name)
    for lt in lay.lines:
        got = fetch(conn, schema, lt.table, f"WHERE {match} ORDER BY line_no", rows.key)
        assert len(got) == len(rec[lt.field]) > 0
        for line, item in zip(got, sorted(rec[lt.field], key=lambda x: x["line_no"]), strict=True):
            for col in lt.columns:
                assert line[col.name] == expect_value(col, item), (lt.table, col.name)


def catalog_schema(name: str) -> str:
    return next(e["value_schema"] for e in CATALOGUE if e["name"] == name)


def test_every_catalogue_sample_lands_exactly_and_a_replay_writes_nothing(embedded_broker, registry, pg) -> None:
    conn, schema, ledger = pg
    bus = Bus(embedded_broker.bootstrap_servers, registry.url, CATALOGUE)
    samples = {e["name"]: catalog.sample(e["value_schema"]) for e in CATALOGUE}
    for name, rec in samples.items():
        bus.send(name, rec)
    # the sales order again: a newer version with one line less, then an older one that changes nothing
    order = samples["bizbus.sales.order.v1"]
    newer = copy.deepcopy(order)
    newer["version"] += 1
    newer["meta"]["event_id"] = str(uuid.uuid4())
    newer["customer"] = "新客户"
    newer["lines"] = [dict(newer["lines"][0], line_no=7)]
    older = copy.deepcopy(order)
    older["version"] -= 1
    older["meta"]["event_id"] = str(uuid.uuid4())
    older["customer"] = "stale"
    bus.send("bizbus.sales.order.v1", newer)
    bus.send("bizbus.sales.order.v1", older)
    # bad records: an empty business key, bytes that do not decode
    bad = copy.deepcopy(samples["bizbus.md.material.v1"])
    bad["code"], bad["meta"]["event_id"] = "", str(uuid.uuid4())
    bus.send("bizbus.md.material.v1", bad, key="M-EMPTY")
    bus.send("bizbus.md.material.v1", {"meta": {}}, key="M-GARBAGE", raw=b"\x07garbage")
    bus.flush()
    total = len(samples) + 4

    name = f"rep-{uuid.uuid4().hex[:6]}"
    first = bus.runner(DSN, name, schema, ledger)
    run_until(first, total)
    first.close()
    assert first.stats.applied == len(samples) + 2 and first.stats.dead_lettered == 2

    for n, rec in samples.items():
        if n != "bizbus.sales.order.v1":
            assert_landed(conn, schema, n, rec)
    assert_landed(conn, schema, "bizbus.sales.order.v1", newer)  # the newest version; the older did not win
    assert conn.execute(f'SELECT count(*) FROM "{schema}".sales_order_history').fetchone()[0] == 3
    assert conn.execute(f'SELECT count(*) FROM "{schema}".sales_order_line').fetchone()[0] == 1
    tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                         (schema,))}  # fmt: skip
    assert {"sales_order", "sales_order_line", "sales_order_history", "finance_voucher_line", "md_material",
            "inventory_level", "oa_payment_freeze"} <= tables  # fmt: skip
    letters = bus.dead_letters(2)
    assert sorted(bytes(d["key"]) for d in letters) == [b"M-EMPTY", b"M-GARBAGE"]
    assert {d["error_class"] for d in letters} == {"PERMANENT", "POISON"}

    before = {t: conn.execute(f'SELECT count(*) FROM "{schema}"."{t}"').fetchone()[0] for t in sorted(tables)}
    replay = bus.runner(DSN, name, schema, ledger)  # a replay of the whole log (as after lost offsets)
    replay._consumer.unsubscribe()
    replay._consumer.assign([TopicPartition(t, 0, 0) for t in bus.topic.values()])
    run_until(replay, total)
    replay.close()
    assert replay.stats.applied == 0 and replay.stats.duplicates == len(samples) + 2
    after = {t: conn.execute(f'SELECT count(*) FROM "{schema}"."{t}"').fetchone()[0] for t in sorted(tables)}
    assert after == before
    assert_landed(conn, schema, "bizbus.sales.order.v1", newer)


def wait_for(what, timeout: float = 60, why=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out {why()}"
        time.sleep(0.1)


def test_a_new_nullable_field_adds_a_column_while_running(embedded_broker, registry, pg) -> None:
    """The ALTER waits at most ddl_lock_timeout for a report's open transaction (readers queue behind it no
    longer than that), gives up, and is tried again until it gets the lock; then old rows read NULL."""
    conn, schema, ledger = pg
    entry = next(e for e in CATALOGUE if e["name"] == "bizbus.md.material.v1")
    bus = Bus(embedded_broker.bootstrap_servers, registry.url, [entry])
    old = catalog.sample("bizbus.md.Material")
    bus.send(entry["name"], old)
    bus.flush()
    runner = bus.runner(DSN, f"rep-{uuid.uuid4().hex[:6]}", schema, ledger)
    runner.writer.lock_timeout_ms = 300
    task = TaskRuntime(runner.name, TaskSpec(0), runner, retry_min=0.2, retry_max=0.5)
    task.start()
    reader = psycopg.connect(DSN, autocommit=False)
    try:
        wait_for(lambda: runner.stats.applied == 1)
        node = conn.execute(f"SELECT pg_relation_filenode('{schema}.md_material')").fetchone()
        assert len(fetch(reader, schema, "md_material")) == 1  # a long report: its transaction stays open

        v2 = catalog.load("bizbus.md.Material")
        v2["fields"].append({"name": "color", "type": ["null", "string"], "default": None})
        encode = bus.serde.encoder(f"{bus.topic[entry['name']]}-value", v2)
        new = catalog.sample("bizbus.md.Material")
        new.update(code="M-NEW", color="红", version=1)
        new["meta"]["event_id"] = str(uuid.uuid4())
        bus.producer.produce(bus.topic[entry["name"]], key=b"M-NEW", value=encode(new))
        bus.flush()
        wait_for(lambda: task.retrying is not None)  # the ALTER gave up: the report's lock is still there
        assert "readers' locks" in task.retrying
        other = psycopg.connect(DSN, autocommit=True)
        started = time.monotonic()
        assert len(fetch(other, schema, "md_material")) == 1  # other readers are not stuck behind the ALTER
        assert time.monotonic() - started < 1.0
        other.close()
        assert runner.stats.applied == 1
        reader.commit()  # the report ends
        wait_for(lambda: runner.stats.applied == 2)
    finally:
        task.stop()
        task.join(20)
        runner.close()
        reader.close()
    assert task.error is None
    rows = {r["code"]: r for r in fetch(conn, schema, "md_material")}
    assert rows[old["code"]]["color"] is None and rows["M-NEW"]["color"] == "红"
    assert fetch(conn, schema, "md_material_history", "WHERE code = 'M-NEW'")[0]["color"] == "红"
    assert conn.execute(f"SELECT pg_relation_filenode('{schema}.md_material')").fetchone() == node  # no rewrite
    assert runner.writer.ddl_statements == 3 + 2  # two tables and an index at first, then the two ALTERs


def test_an_incompatible_change_parks_its_topic_and_the_others_go_on(embedded_broker, registry, pg,
                                                                     monkeypatch) -> None:  # fmt: skip
    from bizbus.connectors.sinks.reporting import connector

    monkeypatch.setattr(connector, "UNPARK_EVERY", 0.2)
    conn, schema, ledger = pg
    entries = [e for e in CATALOGUE if e["name"] in ("bizbus.md.material.v1", "bizbus.inventory.level.v1")]
    bus = Bus(embedded_broker.bootstrap_servers, registry.url, entries)
    conn.execute(f'CREATE SCHEMA "{schema}"')  # a table someone made by hand: standard_cost is no bigint
    conn.execute(f'CREATE TABLE "{schema}".md_material (code text PRIMARY KEY, standard_cost bigint)')
    materials = []
    for i in range(3):
        rec = catalog.sample("bizbus.md.Material")
        rec.update(code=f"M-{i}", version=1)
        rec["meta"]["event_id"] = f"m-{i}"
        materials.append(rec)
        bus.send("bizbus.md.material.v1", rec, key=rec["code"])
        level = catalog.sample("bizbus.inventory.InventoryLevel")
        level.update(material=f"M-{i}")
        level["meta"]["event_id"] = f"l-{i}"
        bus.send("bizbus.inventory.level.v1", level, key=f"W/M-{i}")
    bus.flush()
    runner = bus.runner(DSN, f"rep-{uuid.uuid4().hex[:6]}", schema, ledger)
    task = TaskRuntime(runner.name, TaskSpec(0), runner, retry_min=0.2, retry_max=0.5)
    task.start()
    try:
        wait_for(lambda: runner.stats.applied == 6)
        assert runner.stats.dead_lettered == 0 and runner.writer.parked == 3
        assert len(fetch(conn, schema, "inventory_level")) == 3  # the other topic went on
        parked = fetch(conn, schema, "_parked_events", "ORDER BY kafka_offset")
        assert [p["event_id"] for p in parked] == ["m-0", "m-1", "m-2"]
        assert "standard_cost is bigint" in parked[0]["reason"] and "numeric(18,6)" in parked[0]["reason"]
        assert fetch(conn, schema, "md_material") == []

        conn.execute(f'ALTER TABLE "{schema}".md_material ALTER COLUMN standard_cost TYPE numeric(18,6)')  # the fix
        newer = copy.deepcopy(materials[0])
        newer.update(version=2, name="newer")
        newer["meta"]["event_id"] = "m-0-v2"
        bus.send("bizbus.md.material.v1", newer, key="M-0")  # the next batch writes the parked ones first
        bus.flush()
        wait_for(lambda: len(fetch(conn, schema, "md_material")) == 3 and runner.stats.applied == 7, 30,
                 lambda: (runner.stats, task.retrying, task.error, fetch(conn, schema, "_parked_events")))
    finally:
        task.stop()
        task.join(20)
        runner.close()
    assert task.error is None
    assert fetch(conn, schema, "_parked_events") == []
    for rec in [newer, *materials[1:]]:
        assert_landed(conn, schema, "bizbus.md.material.v1", rec)
    assert len(fetch(conn, schema, "md_material_history")) == 4
    assert bus.dead_letters(0) == []


def test_terminated_and_stopped_database_loses_nothing_and_writes_nothing_twice(embedded_broker, registry) -> None:
    """Versions 1-5 of 120 orders and 80 stock levels while every connection of the sink is terminated again
    and again, then versions 6-7 while the server is stopped for 4 s: all there once, the newest current."""
    entries = [e for e in CATALOGUE if e["name"] in ("bizbus.sales.order.v1", "bizbus.inventory.level.v1")]
    bus = Bus(embedded_broker.bootstrap_servers, registry.url, entries, partitions=3)
    orders, levels = 120, 80
    last: dict[str, dict[str, Any]] = {}

    def produce(versions: range) -> int:
        n = 0
        for version in versions:
            for i in range(orders):
                rec = catalog.sample("bizbus.sales.SalesOrder")
                rec.update(order_no=f"SO-{i}", version=version)
                rec["meta"]["event_id"] = f"so-{i}-{version}"
                rec["lines"] = [dict(rec["lines"][0], line_no=j + 1) for j in range(1 + (i + version) % 4)]
                bus.send("bizbus.sales.order.v1", rec, key=f"SO-{i}")
                last[f"SO-{i}"] = rec
                n += 1
            for i in range(levels):
                rec = catalog.sample("bizbus.inventory.InventoryLevel")
                rec.update(material=f"M-{i}")
                rec["on_hand"] = rec["on_hand"] + version
                rec["meta"]["event_id"] = f"lv-{i}-{version}"
                bus.send("bizbus.inventory.level.v1", rec, key=f"{rec['warehouse']}/M-{i}")
                last[f"M-{i}"] = rec
                n += 1
        bus.flush()
        return n

    n = produce(range(1, 6))
    with private_postgres() as server:

        def applied() -> int:
            try:
                with server.connect() as c:
                    return int(c.execute("SELECT count(*) FROM bizbus_ledger.applied_effects").fetchone()[0])
            except psycopg.Error:
                return -1

        runner = bus.runner(server.dsn(), "rep-chaos", "reporting", "bizbus_ledger", batch_size=5)
        task = TaskRuntime("rep-chaos", TaskSpec(0), runner, retry_min=0.05, retry_max=1.0)  # as a worker runs it
        task.start()
        kills = []
        try:
            wait_for(lambda: runner.stats.applied > 0)
            while applied() < n and len(kills) < 12:
                kills.append(server.terminate("bizbus%"))  # mid-stream: every connection of the sink
                time.sleep(0.1)
            wait_for(lambda: applied() >= n, 120)
            with server.down(seconds=4):
                n += produce(range(6, 8))
                wait_for(lambda: runner.stats.outages > 0 or task.retrying is not None, 30)
                assert runner.stats.dead_lettered == 0
            wait_for(lambda: applied() >= n, 120)
        finally:
            task.stop()
            task.join(30)
            runner.close()
        assert task.error is None and runner.stats.dead_lettered == 0
        with server.connect() as conn:
            assert conn.execute("SELECT count(*) FROM bizbus_ledger.applied_effects").fetchone()[0] == n
            assert conn.execute("SELECT count(*), count(DISTINCT event_id) FROM reporting.sales_order_history"
                                ).fetchone() == (orders * 7, orders * 7)  # fmt: skip
            assert conn.execute("SELECT count(*) FROM reporting.inventory_level_history").fetchone()[0] == levels * 7
            for i in range(orders):
                assert_landed(conn, "reporting", "bizbus.sales.order.v1", last[f"SO-{i}"])
            for i in range(levels):
                assert_landed(conn, "reporting", "bizbus.inventory.level.v1", last[f"M-{i}"])
            lines = conn.execute("SELECT count(*) FROM reporting.sales_order_line").fetchone()[0]
        assert lines == sum(len(last[f"SO-{i}"]["lines"]) for i in range(orders))
        print(f"\nreporting chaos: {n} records, terminations {kills}, outages {runner.stats.outages}, "
              f"duplicates absorbed {runner.stats.duplicates}, dead letters {runner.stats.dead_lettered}")
        assert sum(1 for k in kills if k) >= 3, kills
