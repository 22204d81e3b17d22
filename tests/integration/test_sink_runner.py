"""The sink loop end to end on the embedded broker and a real PostgreSQL target without a unique key:
every good record applied once, a poison record and a permanently failing one dead-lettered, a replay
of the whole topic applies nothing twice."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import psycopg
import pytest
from bizbus.connectors.runtime.sink import SinkRecord, SinkRunner, SinkWriter, WriteResult
from bizbus.connectors.sinks.postgres.connector import PgTableWriter
from bizbus.schemas import catalog
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import lineage
from bizbus.deadletters import DeadLetterWriter
from bizbus.failures import Permanent, RetryPolicy
from bizbus.serde import AvroSerde

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg():
    try:
        conn = psycopg.connect(DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable ({exc}); start it with "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")  # fmt: skip
    suffix = uuid.uuid4().hex[:8]
    table, ledger = f"target_{suffix}", f"ledger_{suffix}"
    conn.execute(f"CREATE TABLE {table} (effect_id text, project text, hours numeric(9,2))")  # no unique key
    yield conn, table, ledger
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"DROP SCHEMA IF EXISTS {ledger} CASCADE")
    conn.close()


def _row(r: SinkRecord) -> dict:
    if r.value["project"] == "BAD":
        raise Permanent("unknown project BAD", reason="unknown_master_data")
    return {"effect_id": r.effect_id, "project": r.value["project"], "hours": r.value["hours"]}


def _run_until(runner: SinkRunner, consumed: int, timeout: float = 60) -> None:
    stop = threading.Event()
    t = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while runner.stats.consumed < consumed and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join(10)
    assert runner.stats.consumed >= consumed, f"consumed {runner.stats.consumed} of {consumed}"


def test_sink_applies_once_and_dead_letters_bad_records(embedded_broker, registry, pg) -> None:
    conn, table, ledger_schema = pg
    conf = {"bootstrap.servers": embedded_broker.bootstrap_servers}
    topic, dlq_topic = f"bizbus.test.ts-{uuid.uuid4().hex[:6]}.v1", f"bizbus.test.dlq-{uuid.uuid4().hex[:6]}.v1"
    admin = AdminClient(conf)
    for t in (topic, dlq_topic):
        admin.create_topics([NewTopic(t, 3, 1)])[t].result(20)
    serde = AvroSerde({"url": registry.url})
    encode = serde.encoder(f"{topic}-value", catalog.load("bizbus.pm.TimesheetEntry"))
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all"})
    n = 300
    for i in range(n):
        rec = catalog.sample("bizbus.pm.TimesheetEntry")
        rec["meta"]["event_id"] = lineage.event_id("test", topic, i)
        rec["project"] = "BAD" if i == 17 else f"P-{i % 7}"
        rec["hours"] = Decimal("1.25")
        producer.produce(topic, key=rec["project"].encode(), value=encode(rec), headers=lineage.headers(rec["meta"]))
    producer.produce(topic, key=b"x", value=b"\x07garbage")  # poison
    assert producer.flush(20) == 0

    def runner(group: str) -> SinkRunner:
        r = SinkRunner(group, [topic], conf, serde, PgTableWriter(DSN, group, table, _row, ledger_schema=ledger_schema),
                       DeadLetterWriter(conf, serde, topic=dlq_topic), RetryPolicy(max_attempts=2, initial_delay=0.01),
                       batch_size=64)  # fmt: skip
        r.setup()
        return r

    first = runner(f"pg-{uuid.uuid4().hex[:6]}")
    _run_until(first, n + 1)
    first.close()
    count, distinct, total = conn.execute(f"SELECT count(*), count(DISTINCT effect_id), sum(hours) FROM {table}").fetchone()
    assert (count, distinct) == (n - 1, n - 1)
    assert total == Decimal("1.25") * (n - 1)
    assert first.stats.dead_lettered == 2 and first.stats.applied == n - 1

    # a second consumer group (as after a lost offset commit) replays everything: the ledger absorbs it
    replay = SinkRunner(first.name, [topic], {**conf, "group.id": "ignored"}, serde,
                        PgTableWriter(DSN, first.name, table, _row, ledger_schema=ledger_schema),
                        DeadLetterWriter(conf, serde, topic=dlq_topic), RetryPolicy(max_attempts=2, initial_delay=0.01))  # fmt: skip
    replay.setup()
    replay._consumer.unsubscribe()
    from confluent_kafka import TopicPartition

    replay._consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    _run_until(replay, n + 1)
    replay.close()
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == n - 1
    assert replay.stats.applied == 0 and replay.stats.duplicates == n - 1


class _BatchHostileWriter(SinkWriter):
    """A target that times out on any batch of more than one record and refuses one record outright."""

    def __init__(self) -> None:
        self.rows: list[str] = []

    def plan(self, records: list[SinkRecord]) -> list:
        return []

    def write(self, records: list[SinkRecord]) -> WriteResult:
        if len(records) > 1:
            raise TimeoutError("target timed out on a batch")
        r = records[0]
        if r.value["project"] == "BAD":
            raise Permanent("unknown project BAD")
        if r.effect_id in self.rows:
            return WriteResult(duplicates=1)
        self.rows.append(r.effect_id)
        return WriteResult(applied=1)


def test_batch_failure_past_the_budget_is_isolated_per_record(embedded_broker, registry) -> None:
    conf = {"bootstrap.servers": embedded_broker.bootstrap_servers}
    topic, dlq_topic = f"bizbus.test.iso-{uuid.uuid4().hex[:6]}.v1", f"bizbus.test.isodlq-{uuid.uuid4().hex[:6]}.v1"
    admin = AdminClient(conf)
    for t in (topic, dlq_topic):
        admin.create_topics([NewTopic(t, 1, 1)])[t].result(20)
    serde = AvroSerde({"url": registry.url})
    encode = serde.encoder(f"{topic}-value", catalog.load("bizbus.pm.TimesheetEntry"))
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all"})
    for i in range(20):
        rec = catalog.sample("bizbus.pm.TimesheetEntry")
        rec["meta"]["event_id"] = lineage.event_id("iso", topic, i)
        rec["project"] = "BAD" if i == 5 else "P-1"
        producer.produce(topic, value=encode(rec))
    assert producer.flush(20) == 0
    writer = _BatchHostileWriter()
    runner = SinkRunner(f"iso-{uuid.uuid4().hex[:6]}", [topic], conf, serde, writer,
                        DeadLetterWriter(conf, serde, topic=dlq_topic), RetryPolicy(max_attempts=2, initial_delay=0.01))  # fmt: skip
    runner.setup()
    _run_until(runner, 20)
    runner.close()
    assert len(writer.rows) == 19 and len(set(writer.rows)) == 19  # nothing lost, nothing twice
    assert lineage.event_id("iso", topic, 5) not in writer.rows
    assert runner.stats.dead_lettered == 1 and runner.stats.applied == 19
