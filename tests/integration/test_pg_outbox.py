"""The pg-outbox source against real PostgreSQL and the embedded broker: deterministic ids, bad rows to the
dead-letter topic with their coordinates while the next rows flow, a durable cursor, a shard lease that
a standby takes over, and id gaps left by running or rolled-back transactions."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest
from bizbus.connectors.runtime.source import SourceTask
from bizbus.connectors.sources.pg_outbox.config import PgOutboxConfig
from bizbus.connectors.sources.pg_outbox.connector import PgOutboxReader, create_outbox
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import lineage
from bizbus.catalogue import Catalogue, TopicSpec
from bizbus.deadletters import DeadLetterWriter
from bizbus.kafka import read_until_quiet
from bizbus.serde import AvroSerde

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def env(embedded_broker, registry, postgres):
    conn = postgres
    sfx = uuid.uuid4().hex[:8]
    topic, dlq_topic, schema = f"bizbus.t{sfx}.timesheet.v1", f"bizbus.t{sfx}.dead-letter.v1", f"outbox_{sfx}"
    conf = {"bootstrap.servers": embedded_broker.bootstrap_servers}
    admin = AdminClient(conf)
    for f in admin.create_topics([NewTopic(topic, 1, 1), NewTopic(dlq_topic, 1, 1)]).values():
        f.result(20)
    cat = Catalogue(topics=(TopicSpec(name=topic, description="test timesheets", owner="t", key="worklog",
                                      value_schema="bizbus.pm.TimesheetEntry", partitions=1),))  # fmt: skip
    cfg = PgOutboxConfig(dsn=DSN, table=f"{schema}.outbox", source_system="erp", gap_grace_seconds=0.2)
    create_outbox(conn, cfg.table)
    serde = AvroSerde({"url": registry.url})
    yield {"conn": conn, "conf": conf, "topic": topic, "dlq": dlq_topic, "cat": cat, "cfg": cfg, "serde": serde,
           "connector": f"outbox-{sfx}", "admin": admin}  # fmt: skip
    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (f"outbox-{sfx}",))


def task(e) -> SourceTask:
    t = SourceTask(e["connector"], e["cfg"].table, PgOutboxReader(e["connector"], e["cfg"], e["cat"]), e["conf"],
                   e["serde"], e["cat"], DeadLetterWriter(e["conf"], e["serde"], topic=e["dlq"]), DSN)  # fmt: skip
    t.setup()
    return t


def insert(conn, table: str, topic: str, n: int, **over) -> int:
    payload = {"op": "CREATED", "worklog_id": f"W{n}", "project": "P1", "task": None, "employee": "E1",
               "work_date": "2026-11-23", "hours": "7.50", "billable": True, "description": "d", "version": 1}  # fmt: skip
    payload.update(over.pop("payload", {}))
    row = conn.execute(
        f"INSERT INTO {table} (topic, entity_key, version, payload) VALUES (%s, %s, %s, %s) RETURNING id",
        (over.get("to", topic), f"W{n}", 1, json.dumps(payload) if not isinstance(payload, str) else payload),
    ).fetchone()
    return row[0]


def consume(conf, topic: str, serde: AvroSerde, expect: int, timeout: float = 30) -> list:
    c = Consumer({**conf, "group.id": f"r-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out = list(read_until_quiet(c, 0, limit=expect, timeout=timeout, batch=100))
    time.sleep(0.5)
    out += [m for m in c.consume(100, 0.5) if m.error() is None]  # nothing extra may arrive
    c.close()
    return [(m, serde.decode(m.value())) for m in out]


def test_rows_become_events_and_bad_rows_become_dead_letters(env) -> None:
    conn, table, topic = env["conn"], env["cfg"].table, env["topic"]
    ids = [insert(conn, table, topic, 1)]
    ids.append(insert(conn, table, topic, 2, to="bizbus.nope.thing.v1"))  # unknown topic
    ids.append(insert(conn, table, topic, 3, payload={"hours": "seven"}))  # schema mismatch
    ids.append(insert(conn, table, topic, 4))  # the next good row still flows
    t = task(env)
    try:
        assert t.step() == 4
        assert t.step() == 0
    finally:
        t.close()
    events = consume(env["conf"], topic, env["serde"], 2)
    assert [v["worklog_id"] for _, v in events] == ["W1", "W4"]
    m, v = events[0]
    assert v["meta"]["event_id"] == lineage.event_id("erp", topic, "W1", 1)
    assert v["meta"]["source_system"] == "erp" and str(v["hours"]) == "7.50"
    assert dict(m.headers())["event_id"].decode() == v["meta"]["event_id"] and m.key() == b"W1"
    dead = consume(env["conf"], env["dlq"], env["serde"], 2)
    got = {d["source_offset"]: d for _, d in dead}
    assert set(got) == {ids[1], ids[2]}
    assert got[ids[1]]["source_topic"] == f"pg:{table}" and got[ids[1]]["error_class"] == "PERMANENT"
    assert "unknown topic" in got[ids[1]]["error_message"] and got[ids[1]]["error_type"].endswith(
        "unknown_topic"
    )
    assert (
        "hours" in got[ids[2]]["error_message"]
        and json.loads(got[ids[2]]["value"])["payload"]["hours"] == "seven"
    )
    stored = conn.execute(
        "SELECT cursor FROM bizbus_state.source_cursors WHERE connector = %s", (env["connector"],)
    ).fetchone()
    assert stored[0] == {"id": ids[-1]}


def test_cursor_survives_a_restart_and_a_standby_takes_the_lease_over(env) -> None:
    conn, table, topic = env["conn"], env["cfg"].table, env["topic"]
    for n in range(3):
        insert(conn, table, topic, n)
    first, second = task(env), task(env)
    try:
        assert first.step() == 3
        assert second.step() == 0 and not second.lease.held  # standby: the shard is leased
        insert(conn, table, topic, 3)
        # the owner's session dies (as when its process is SIGKILLed): the lease frees at once
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                     (f"bizbus lease {env['connector']}/{table}",))  # fmt: skip
        deadline = time.monotonic() + 10
        moved = 0
        while not moved and time.monotonic() < deadline:
            moved = second.step()
            time.sleep(0.1)
        assert moved == 1 and second.stats.takeovers == 1  # resumed after the stored cursor, not from 0
    finally:
        first.close()
        second.close()
    assert [v["worklog_id"] for _, v in consume(env["conf"], topic, env["serde"], 4)] == [
        "W0",
        "W1",
        "W2",
        "W3",
    ]


def test_a_gap_from_a_running_transaction_holds_the_cursor_until_it_commits(env) -> None:
    conn, table, topic = env["conn"], env["cfg"].table, env["topic"]
    insert(conn, table, topic, 1)
    slow = psycopg.connect(DSN)  # takes the next id, commits late
    insert(slow, table, topic, 2)
    insert(conn, table, topic, 3)  # commits first
    rollback = psycopg.connect(DSN)  # takes an id and rolls back: a permanent gap
    t = task(env)
    try:
        assert t.step() == 1  # W1 only: W3 waits behind the gap of the running transaction
        time.sleep(0.5)
        for _ in range(3):
            t.step()
            time.sleep(0.3)
        assert t.position == {"id": 1}
        slow.commit()
        assert t.step() == 2  # W2 then W3, in order
        insert(rollback, table, topic, 4)
        rollback.rollback()
        insert(conn, table, topic, 5)
        deadline, moved = time.monotonic() + 10, 0
        while not moved and time.monotonic() < deadline:  # after the grace, the gap is jumped
            moved = t.step()
            time.sleep(0.2)
        assert moved == 1
    finally:
        t.close()
        slow.close()
        rollback.close()
    assert [v["worklog_id"] for _, v in consume(env["conf"], topic, env["serde"], 4)] == [
        "W1",
        "W2",
        "W3",
        "W5",
    ]


def test_a_task_that_lost_its_lease_cannot_move_the_cursor(env) -> None:
    conn, table, topic = env["conn"], env["cfg"].table, env["topic"]
    insert(conn, table, topic, 0)
    first, second = task(env), task(env)
    try:
        assert first.step() == 1
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                     (f"bizbus lease {env['connector']}/{table}",))  # fmt: skip
        deadline = time.monotonic() + 10
        while not second.lease.held and time.monotonic() < deadline:
            second.step()
            time.sleep(0.1)
        insert(conn, table, topic, 1)
        assert second.step() == 1
        insert(conn, table, topic, 2)
        # the fenced task still reads and sends (harmless: same event ids) but its cursor write fails
        first.position = {"id": 0}
        assert first.step() == 3
        assert not first.lease.held and first.position is None
        stored = conn.execute("SELECT cursor FROM bizbus_state.source_cursors WHERE connector = %s",
                              (env["connector"],)).fetchone()[0]  # fmt: skip
        assert stored == second.position == {"id": 2}  # the fenced write of {"id": 3} did not land
        assert first.step() == 0  # standby now: the lease is held by the other task
    finally:
        first.close()
        second.close()
    events = consume(env["conf"], topic, env["serde"], 5)
    ids = {v["worklog_id"]: v["meta"]["event_id"] for _, v in events}
    assert set(ids) == {"W0", "W1", "W2"}  # nothing lost
    for _, v in events:  # re-sent copies carry the same event id, so sinks drop them
        assert v["meta"]["event_id"] == ids[v["worklog_id"]]
