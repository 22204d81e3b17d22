"""The sink loop writes one batch while it consumes and decodes the next (connectors/runtime/sink.py), on the embedded
broker and a real PostgreSQL: a batch's offsets are committed only after its write returned, the next
batch never commits first, and ``drain`` / ``close`` finish the batch in flight. Also the ``pg-table``
write path of the whole-batch attempt: ledger ids of any text, one offset statement for all partitions,
target rows by COPY with column defaults and row triggers applied, a value PostgreSQL refuses failing
only its own record."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from bizbus.connectors.runtime.ledger import Effect, PgLedger
from bizbus.connectors.runtime.sink import (
    WRITER_SWITCH_INTERVAL,
    SinkRecord,
    SinkRunner,
    SinkWriter,
    WriteResult,
)
from bizbus.connectors.sinks.postgres.connector import PgTableWriter
from bizbus.connectors.sinks.postgres.mapping import column_mapper
from bizbus.schemas import catalog
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import lineage
from bizbus.deadletters import DeadLetterWriter
from bizbus.serde import AvroSerde

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
FIXTURES = ("embedded_broker", "registry")  # from tests/conftest.py


@pytest.fixture
def pg(postgres: psycopg.Connection[Any]) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """The shared autocommit connection (tests/conftest.py) and a fresh schema name (dropped afterwards)
    for targets and ledgers."""
    schema = f"overlap_{uuid.uuid4().hex[:8]}"
    postgres.execute(f"CREATE SCHEMA {schema}")
    yield postgres, schema
    postgres.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    postgres.execute(f"DROP SCHEMA IF EXISTS {schema}_ledger CASCADE")


def _count(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


# -- the loop: one batch in flight --------------------------------------------------------------------------


class GatedWriter(SinkWriter):
    """A real PgTableWriter whose first ``write`` waits for ``gate``: holds a batch in flight on purpose."""

    def __init__(self, inner: PgTableWriter) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.threads: list[str] = []

    def setup(self) -> None:
        self.inner.setup()

    def write(self, records: list[SinkRecord]) -> WriteResult:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return self.inner.write(records)

    def plan(self, records: list[SinkRecord]) -> list[Any]:
        return self.inner.plan(records)

    def safe_offsets(self) -> dict[tuple[str, int], int]:
        return self.inner.safe_offsets()

    def close(self) -> None:
        self.inner.close()


def _timesheets(n: int, tag: str) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        v = catalog.sample("bizbus.pm.TimesheetEntry")
        v.update(worklog_id=f"W{i}", project=f"P{i % 3}", hours=Decimal(f"{1 + i % 8}.25"))
        v["meta"]["event_id"] = lineage.event_id("overlap-test", tag, i)
        out.append(v)
    return out


class Setup:
    """A one-partition topic with ``n`` timesheet records, a target table and a gated pg-table runner."""

    def __init__(self, broker: Any, registry: Any, pg: tuple[psycopg.Connection[Any], str], n: int) -> None:
        self.conn, schema = pg
        self.tag = uuid.uuid4().hex[:8]
        self.bootstrap = broker.bootstrap_servers
        self.topic, dlq = f"bizbus.test.overlap-{self.tag}.v1", f"bizbus.test.overlap-dlq-{self.tag}.v1"
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for t in (self.topic, dlq):
            admin.create_topics([NewTopic(t, 1, 1)])[t].result(20)
        serde = AvroSerde({"url": registry.url})
        encode = serde.encoder(f"{self.topic}-value", catalog.load("bizbus.pm.TimesheetEntry"))
        producer = Producer({"bootstrap.servers": self.bootstrap})
        for v in _timesheets(n, self.tag):
            producer.produce(self.topic, key=b"k", value=encode(v))
        assert producer.flush(20) == 0
        self.table = f"{schema}.rows"
        self.conn.execute(f"CREATE TABLE {self.table} (effect_id text, worklog_id text, hours numeric(9,2))")
        self.name = f"overlap-{self.tag}"
        row = column_mapper({"effect_id": "$effect_id", "worklog_id": "worklog_id", "hours": "hours"})
        self.writer = GatedWriter(PgTableWriter(DSN, self.name, "rows", row, schema, f"{schema}_ledger"))
        conf = {"bootstrap.servers": self.bootstrap}
        self.runner = SinkRunner(self.name, [self.topic], conf, serde, self.writer,
                                 DeadLetterWriter(conf, serde, topic=dlq), batch_size=10, batch_timeout=2.0)  # fmt: skip
        self.runner.setup()

    def committed(self) -> int:
        """The group's committed offset of the partition, read by another client (0 = none yet)."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bizbus-sink-{self.name}"})
        try:
            (tp,) = c.committed([TopicPartition(self.topic, 0)], timeout=10)
            return max(tp.offset, 0)
        finally:
            c.close()

    def rows(self) -> int:
        return _count(self.conn, f"SELECT count(*) FROM {self.table}")

    def first_batch_in_flight(self) -> int:
        """Step until a batch was consumed (the group join takes a few polls); its write is now held."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = self.runner.step()
            if got:
                assert self.writer.entered.wait(10), "the write of the first batch did not start"
                return got
        raise AssertionError("no record consumed within 60 s")


def until(cond: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cond(), what


def test_next_batch_is_decoded_while_the_write_is_in_flight_and_offsets_follow_each_write(
    embedded_broker, registry, pg
) -> None:
    s = Setup(embedded_broker, registry, pg, 20)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # CPython's default
    try:
        first = s.first_batch_in_flight()
        assert first == 10
        assert s.writer.threads[0] != threading.current_thread().name  # written on the writer thread
        assert sys.getswitchinterval() == WRITER_SWITCH_INTERVAL  # the writer gets the GIL back soon
        assert s.committed() == 0 and s.rows() == 0

        second = threading.Thread(target=s.runner.step, daemon=True)
        second.start()
        until(lambda: s.runner.stats.consumed == 20, "the next batch consumed while the first is in flight")
        time.sleep(0.5)
        assert second.is_alive(), "the step must wait for the batch in flight before it commits anything"
        assert s.committed() == 0 and s.rows() == 0 and s.runner.stats.applied == 0

        s.writer.gate.set()
        second.join(30)
        assert not second.is_alive()
        assert s.committed() == 10  # the first batch only: the second one's write was just started
        assert s.runner.stats.applied == 10

        s.runner.drain()
        assert s.committed() == 20 and s.runner.stats.applied == 20 and s.runner.stats.batches == 2
        assert s.rows() == 20
        assert _count(s.conn, f"SELECT count(DISTINCT effect_id) FROM {s.table}") == 20
    finally:
        sys.setswitchinterval(interval)
        s.writer.gate.set()
        s.runner.close()


def test_close_with_a_write_in_flight_waits_for_it_and_commits_it(embedded_broker, registry, pg) -> None:
    s = Setup(embedded_broker, registry, pg, 10)
    closer = None
    try:
        assert s.first_batch_in_flight() == 10
        closer = threading.Thread(target=s.runner.close, daemon=True)
        closer.start()
        time.sleep(0.5)
        assert closer.is_alive(), "close must wait for the write in flight"
        s.writer.gate.set()
        closer.join(30)
        assert not closer.is_alive()
        assert s.rows() == 10 and s.committed() == 10 and s.runner.stats.applied == 10
    finally:
        s.writer.gate.set()
        if closer is None:
            s.runner.close()


def test_the_next_write_starts_before_the_previous_commit_and_a_refused_commit_commits_nothing_later(
    embedded_broker, registry, pg
) -> None:
    s = Setup(embedded_broker, registry, pg, 20)
    commits: list[tuple[int, int]] = []  # (records in the committed batch, records of the write in flight)

    def refused(msgs: list[Any]) -> None:
        inflight = s.runner._inflight
        commits.append((len(msgs), len(inflight.records) if inflight is not None and inflight.future else 0))
        raise RuntimeError("commit refused")

    try:
        assert s.first_batch_in_flight() == 10
        s.writer.gate.set()
        s.runner._commit = refused  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="commit refused"):
            s.runner.step()  # consumes the second batch, starts its write, then settles the first
        assert commits == [(10, 10)]  # the second write was under way when the first batch was committed
        # the second write was let finish, but nothing past the unsettled first batch is committed
        assert s.runner._inflight is None and s.rows() == 20 and s.committed() == 0
    finally:
        s.writer.gate.set()
        del s.runner._commit
        s.runner.close()


def test_run_returns_with_the_last_batch_written_and_committed(embedded_broker, registry, pg) -> None:
    s = Setup(embedded_broker, registry, pg, 25)
    s.writer.gate.set()
    stop = threading.Event()
    loop = threading.Thread(target=s.runner.run, args=(stop,), daemon=True)
    loop.start()
    try:
        until(lambda: s.runner.stats.consumed == 25, "all records consumed", timeout=60)
        stop.set()
        loop.join(30)
        assert not loop.is_alive()
        # nothing left in flight once run() returned
        assert s.runner.stats.applied == 25 and s.rows() == 25 and s.committed() == 25
    finally:
        stop.set()
        s.runner.close()


# -- the pg-table write path of a whole batch ---------------------------------------------------------------


def test_ledger_ids_of_any_text_over_two_topics_are_recorded_exactly_and_once(pg) -> None:
    conn, schema = pg
    ids = ["plain", 'with "quotes"', "back\\slash", "comma,{brace}", " spaced ", "NULL", "", "汉字"]
    batch = [Effect(e, "t1" if i % 2 else "t2", i % 3, 100 + i, None) for i, e in enumerate(ids)]
    batch.append(Effect("plain", "t2", 0, 200, None))  # the same effect twice in a batch: once
    written: list[str] = []
    ledger = PgLedger(DSN, "ids-test", f"{schema}_ledger")
    ledger.setup()
    try:
        res = ledger.apply_batch(batch, lambda _cur, e: None, transactional_write=True,
                                 write_many=lambda _cur, todo: written.extend(e.effect_id for e in todo))  # fmt: skip
        assert sorted(res.applied) == sorted(ids) and res.duplicates == ["plain"] and not res.failed
        assert sorted(written) == sorted(ids)
        stored = {
            r[0] for r in conn.execute(f"SELECT effect_id FROM {schema}_ledger.applied_effects").fetchall()
        }
        assert stored == set(ids)
        expected = {("t2", 0): 201, ("t1", 1): 108, ("t2", 2): 103, ("t1", 0): 104, ("t2", 1): 105,
                    ("t1", 2): 106}  # fmt: skip
        assert res.offsets == expected and ledger.committed_offsets() == expected

        again = ledger.apply_batch(batch[:4], lambda _cur, e: None, transactional_write=True,
                                   write_many=lambda _cur, todo: written.extend(e.effect_id for e in todo))  # fmt: skip
        assert again.applied == [] and len(again.duplicates) == 4 and len(written) == len(ids)
        assert again.offsets == {k: v for k, v in expected.items() if k in again.offsets}  # never backwards
    finally:
        ledger.close()


def _records(values: list[dict[str, Any]]) -> list[SinkRecord]:
    return [SinkRecord("t", 0, i, None, v, b"", [], None) for i, v in enumerate(values)]


def test_copy_applies_defaults_and_triggers_and_a_refused_value_fails_alone(pg) -> None:
    conn, schema = pg
    conn.execute(f"CREATE TABLE {schema}.rows (effect_id text, hours numeric(9,2), note text,"
                 " made_at timestamptz NOT NULL DEFAULT clock_timestamp())")  # fmt: skip
    conn.execute(f"CREATE FUNCTION {schema}.shout() RETURNS trigger LANGUAGE plpgsql AS"
                 " $$ BEGIN NEW.note := upper(NEW.note); RETURN NEW; END $$")  # fmt: skip
    conn.execute(
        f"CREATE TRIGGER shout BEFORE INSERT ON {schema}.rows FOR EACH ROW EXECUTE FUNCTION {schema}.shout()"
    )
    row = column_mapper({"effect_id": "$effect_id", "hours": "hours", "note": "note"})
    writer = PgTableWriter(DSN, "copy-test", "rows", row, schema, f"{schema}_ledger")
    writer.setup()

    def value(i: int, hours: Any) -> dict[str, Any]:
        return {"meta": {"event_id": f"ev-{i}"}, "hours": hours, "note": f"note {i}\twith tab\\n"}

    try:
        good = writer.write(_records([value(i, Decimal(f"{i}.50")) for i in range(5)]))
        assert (good.applied, good.duplicates, good.failed) == (5, 0, {})
        rows = conn.execute(
            f"SELECT effect_id, hours, note, made_at FROM {schema}.rows ORDER BY effect_id"
        ).fetchall()
        assert [(r[0], r[1], r[2]) for r in rows] == [(f"ev-{i}", Decimal(f"{i}.50"), f"NOTE {i}\tWITH TAB\\N")
                                                      for i in range(5)]  # fmt: skip
        assert all(r[3] is not None for r in rows)

        mixed = [value(i, Decimal("1.00")) for i in range(5, 9)]
        mixed.insert(2, value(99, "not a number"))
        res = writer.write(_records(mixed))
        assert res.applied == 4 and set(res.failed) == {"ev-99"}
        assert res.failed["ev-99"].error_class == "permanent"
        assert _count(conn, f"SELECT count(*) FROM {schema}.rows") == 9
        assert not writer.ledger.is_applied("ev-99") and writer.ledger.applied_count() == 9

        replay = writer.write(_records([value(i, Decimal("1.00")) for i in range(9)]))
        assert (replay.applied, replay.duplicates) == (0, 9)
        assert _count(conn, f"SELECT count(*) FROM {schema}.rows") == 9
    finally:
        writer.close()


def test_a_record_without_a_mapped_field_fails_alone_naming_the_missing_part(pg) -> None:
    conn, schema = pg
    conn.execute(f"CREATE TABLE {schema}.rows (effect_id text, employee text, topic text)")
    row = column_mapper({"effect_id": "$effect_id", "employee": "employee.code", "topic": "$topic"})
    writer = PgTableWriter(DSN, "mapping-test", "rows", row, schema, f"{schema}_ledger")
    writer.setup()
    values: list[dict[str, Any]] = [
        {"meta": {"event_id": f"ev-{i}"}, "employee": {"code": f"E{i}"}} for i in range(3)
    ]
    values.insert(1, {"meta": {"event_id": "ev-none"}, "employee": None})
    values.insert(2, {"meta": {"event_id": "ev-flat"}, "employee": "E9"})
    try:
        res = writer.write(_records(values))
        assert res.applied == 3 and set(res.failed) == {"ev-none", "ev-flat"}
        for err in res.failed.values():
            assert err.error_class == "permanent" and err.reason == "mapping"
            assert "no 'code' in employee" in str(err)
        got = conn.execute(
            f"SELECT effect_id, employee, topic FROM {schema}.rows ORDER BY effect_id"
        ).fetchall()
        assert got == [(f"ev-{i}", f"E{i}", "t") for i in range(3)]
    finally:
        writer.close()
