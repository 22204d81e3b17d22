"""Issue 18, the sink side: a sink never seeks past records it has not seen, and a target that is down is
waited for while a record that is bad is set aside. Real parts: a private embedded broker that the tests
restart (memory only: it comes back with empty topics, as after a restart of ``bizbus up``), the session
broker, a real PostgreSQL target with its ledger, and the records-API fake returning 503.

A topic deleted and re-created under a running consumer is simulated by a broker restart here: on Tansu,
librdkafka 2.16 crashes (SIGSEGV in its metadata cache) when a topic a consumer fetches from is deleted.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from bizbus.connectors.runtime.sink import SinkRecord, SinkRunner, SinkWriter, WriteResult
from bizbus.connectors.sinks.http_api.connector import HttpApiWriter
from bizbus.connectors.sinks.postgres.connector import PgTableWriter
from bizbus.connectors.sinks.postgres.mapping import column_mapper
from bizbus.schemas import catalog
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import lineage, metrics
from bizbus.deadletters import DeadLetterWriter
from bizbus.devstack.broker import EmbeddedBroker
from bizbus.devstack.procs import free_port
from bizbus.failures import Permanent, Retryable, RetryPolicy
from bizbus.serde import AvroSerde
from tests.fakes.records_api import RecordsApi
from tests.integration.test_http_api_sink import TOKEN, TOKEN_ENV, Kafka, _config

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "bizbus.pm.TimesheetEntry"
COLUMNS = {"effect_id": "$effect_id", "worklog_id": "worklog_id", "hours": "hours"}
MAX_POLL_MS = 10_000  # the outages below last longer than this
OUTAGE = 16.0
SHORT_BUDGET = RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=1.0, max_elapsed=3.0)


@pytest.fixture
def schema(postgres: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh schema holding the target table ``rows`` and the ledger tables, dropped afterwards."""
    name = f"sinkrec_{uuid.uuid4().hex[:8]}"
    postgres.execute(f"CREATE SCHEMA {name}")
    postgres.execute(f"CREATE TABLE {name}.rows (effect_id text, worklog_id text, hours numeric(9,2))")
    yield name
    postgres.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """An embedded broker of this test only (it gets restarted)."""
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


def restart(broker: EmbeddedBroker) -> None:
    """Stop the broker and start a new one on the same port: every topic and committed offset is gone."""
    broker.stop()
    broker.start()


class Bus:
    """A topic on a broker, a producer of timesheet records, and pg-table runners sharing one ledger."""

    def __init__(self, bootstrap: str, registry_url: str, schema: str, **kafka: Any) -> None:
        self.conf = {"bootstrap.servers": bootstrap}
        self.kafka = {**self.conf, **kafka}
        self.serde = AvroSerde({"url": registry_url})
        self.schema = schema
        self.topic = f"bizbus.test.sinkrec-{uuid.uuid4().hex[:8]}.v1"
        self.dlq = f"bizbus.test.sinkrec-dlq-{uuid.uuid4().hex[:8]}.v1"
        self.name = f"sinkrec-{uuid.uuid4().hex[:8]}"
        self.create_topics()

    def create_topics(self, dlq: bool = True) -> None:
        admin = AdminClient(self.conf)
        for t in (self.topic, self.dlq) if dlq else (self.topic,):
            admin.create_topics([NewTopic(t, 1, 1)])[t].result(20)

    def committed(self) -> int:
        """The sink group's committed offset of partition 0 (< 0: none)."""
        c = Consumer({**self.conf, "group.id": f"bizbus-sink-{self.name}"})
        try:
            (tp,) = c.committed([TopicPartition(self.topic, 0)], timeout=10)
            return int(tp.offset)
        finally:
            c.close()

    def produce(self, tag: str, n: int, bad: int | None = None) -> list[str]:
        """``n`` records with event ids of ``tag``; the one at index ``bad`` has project BAD."""
        encode = self.serde.encoder(f"{self.topic}-value", catalog.load(SCHEMA))
        producer = Producer({**self.conf, "enable.idempotence": True, "acks": "all"})
        ids = []
        for i in range(n):
            v = catalog.sample(SCHEMA)
            v.update(worklog_id=f"{tag}-{i}", project="BAD" if i == bad else "P1", hours=Decimal("1.50"))
            v["meta"]["event_id"] = lineage.event_id("sink-recovery", self.topic, tag, i)
            ids.append(v["meta"]["event_id"])
            producer.produce(self.topic, key=b"k", value=encode(v))
        assert producer.flush(30) == 0
        return ids

    def runner(self, row: Callable[[SinkRecord], dict[str, Any]] | None = None,
               policy: RetryPolicy = SHORT_BUDGET, writer: Any = None) -> SinkRunner:  # fmt: skip
        writer = writer or PgTableWriter(DSN, self.name, "rows", row or column_mapper(COLUMNS), self.schema,
                                         self.schema)  # fmt: skip
        r = SinkRunner(self.name, [self.topic], self.kafka, self.serde, writer,
                       DeadLetterWriter(self.conf, self.serde, topic=self.dlq), policy, batch_size=50)  # fmt: skip
        r.assignments = 0  # type: ignore[attr-defined]
        on_assign = r._on_assign

        def counted(consumer: Any, partitions: list[Any]) -> None:
            r.assignments += 1  # type: ignore[attr-defined]
            on_assign(consumer, partitions)

        r._on_assign = counted  # type: ignore[method-assign]
        r.setup()
        return r


class Running:
    """A runner's loop on a thread (``run``), stopped with drain on ``stop``."""

    def __init__(self, runner: SinkRunner) -> None:
        self.runner, self.stop_event = runner, threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        try:
            self.runner.run(self.stop_event)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def until(self, cond: Callable[[], bool], what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not cond() and not self.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.errors, f"the sink loop died: {self.errors[0]!r}"
        assert cond(), f"{what} within {timeout} s (stats {self.runner.stats})"

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the sink loop did not stop"
        self.runner.close()
        assert not self.errors, f"the sink loop died: {self.errors[0]!r}"


def rows(conn: psycopg.Connection[Any], schema: str) -> tuple[int, int]:
    row = conn.execute(f"SELECT count(*), count(DISTINCT effect_id) FROM {schema}.rows").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def ledger_offsets(conn: psycopg.Connection[Any], schema: str, name: str) -> dict[int, int]:
    got = conn.execute(f"SELECT partition, next_offset FROM {schema}.offsets WHERE connector = %s", (name,))
    return {int(p): int(o) for p, o in got.fetchall()}


def sample(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


def apply_all(bus: Bus, n: int) -> None:
    """A runner applies the topic's first ``n`` records, then stops (drain, close)."""
    run = Running(bus.runner())
    run.until(lambda: run.runner.stats.applied >= n, f"{n} records applied")
    run.stop()


# -- finding 1: the ledger ahead of the log -----------------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [(30, 10), (20, 35)], ids=["shorter-new-log", "longer-new-log"])
def test_a_new_log_behind_the_ledger_is_read_from_the_beginning_once(
    private_broker, registry, schema, postgres, caplog, before: int, after: int
) -> None:
    bus = Bus(private_broker.bootstrap_servers, registry.url, schema)
    bus.produce("old", before)
    apply_all(bus, before)
    assert ledger_offsets(postgres, schema, bus.name) == {0: before}

    restart(private_broker)  # as after a restart of `bizbus up`: empty topics, no committed offsets
    bus.create_topics()
    bus.produce("new", after)
    resets = sample(metrics.SINK_LOG_RESETS, bus.name, bus.topic)
    caplog.set_level(logging.WARNING, logger="bizbus.connectors.runtime.sink")
    run = Running(bus.runner())
    try:
        run.until(lambda: run.runner.stats.applied >= after, f"all {after} new records applied")
        time.sleep(1)  # anything more would show now
    finally:
        run.stop()
    assert rows(postgres, schema) == (before + after, before + after)  # each new one once, none skipped
    assert run.runner.stats.applied == after and run.runner.stats.log_resets == 1
    assert sample(metrics.SINK_LOG_RESETS, bus.name, bus.topic) == resets + 1
    assert any("is not the log the ledger knew" in r.getMessage() for r in caplog.records)
    assert ledger_offsets(postgres, schema, bus.name) == {0: after}  # repaired: a later start seeks right


def test_a_broker_restart_under_a_running_sink_skips_nothing(
    private_broker, registry, schema, postgres
) -> None:
    bus = Bus(private_broker.bootstrap_servers, registry.url, schema)
    bus.produce("before", 40)
    run = Running(bus.runner())
    try:
        run.until(lambda: run.runner.stats.applied >= 40, "the records before the restart applied")
        restart(private_broker)
        bus.create_topics()
        bus.produce("after", 15)  # offsets 0..14 of the new log: all behind the sink's position (40)
        run.until(
            lambda: rows(postgres, schema)[0] >= 55, "the records after the restart applied", timeout=120
        )
        time.sleep(1)
    finally:
        run.stop()
    assert rows(postgres, schema) == (55, 55)
    assert run.runner.stats.log_resets >= 1 and run.runner.stats.dead_lettered == 0


def test_a_restart_on_the_same_log_re_delivers_nothing(embedded_broker, registry, schema, postgres) -> None:
    bus = Bus(embedded_broker.bootstrap_servers, registry.url, schema)
    bus.produce("first", 40)
    apply_all(bus, 40)
    bus.produce("second", 10)
    hits = sample(metrics.IDEMPOTENT_HITS, bus.name)
    run = Running(bus.runner())
    try:
        run.until(lambda: run.runner.stats.applied >= 10, "the 10 new records applied")
        time.sleep(1)
    finally:
        run.stop()
    stats = run.runner.stats
    assert (stats.verified, stats.log_resets) == (1, 0)  # the ledger's last record found where it was
    assert (stats.consumed, stats.applied, stats.duplicates) == (10, 10, 0)  # nothing re-delivered
    assert sample(metrics.IDEMPOTENT_HITS, bus.name) == hits
    assert rows(postgres, schema) == (50, 50) and ledger_offsets(postgres, schema, bus.name) == {0: 50}


def test_a_topic_deleted_and_re_created_under_a_running_sink_skips_nothing(
    real_kafka: str, registry, schema, postgres
) -> None:
    """Real Apache Kafka only (skipped here with the reason): on Tansu the consumer process crashes."""
    bus = Bus(real_kafka, registry.url, schema)
    bus.produce("before", 30)
    run = Running(bus.runner())
    try:
        run.until(lambda: run.runner.stats.applied >= 30, "the records before the deletion applied")
        AdminClient(bus.conf).delete_topics([bus.topic])[bus.topic].result(30)
        deadline = time.monotonic() + 60
        while True:  # the broker needs a moment before the name can be used again
            try:
                bus.create_topics(dlq=False)
                break
            except KafkaException:
                assert time.monotonic() < deadline, "the topic could not be re-created within 60 s"
                time.sleep(1)
        bus.produce("after", 12)  # offsets 0..11 of the new log: behind the sink's position (30)
        run.until(
            lambda: rows(postgres, schema)[0] >= 42, "the records after the re-creation applied", timeout=120
        )
        time.sleep(1)
    finally:
        run.stop()
    assert rows(postgres, schema) == (42, 42) and run.runner.stats.dead_lettered == 0


def test_a_ledger_without_effect_ids_never_seeks_past_kafka(
    embedded_broker, registry, schema, postgres
) -> None:
    """A ledger from before ``last_effect_id``: setup adds the column; its offsets cannot be checked, so the
    sink starts at Kafka's committed offset (none here: the beginning) and the ledger absorbs the rest."""
    bus = Bus(embedded_broker.bootstrap_servers, registry.url, schema)
    bus.produce("o", 20)
    apply_all(bus, 20)
    postgres.execute(f"ALTER TABLE {schema}.offsets DROP COLUMN last_effect_id")  # as an old ledger
    old, bus.name = bus.name, f"sinkrec-{uuid.uuid4().hex[:8]}"  # a group without committed offsets
    for table in ("applied_effects", "offsets"):
        cols = "connector, effect_id, source_topic, source_partition, source_offset"
        if table == "offsets":
            cols = "connector, topic, partition, next_offset"
        rest = cols.split(", ", 1)[1]
        postgres.execute(f"INSERT INTO {schema}.{table} ({cols}) SELECT %s, {rest} FROM {schema}.{table} "
                         "WHERE connector = %s", (bus.name, old))  # fmt: skip
    bus.produce("n", 5)
    run = Running(bus.runner())  # its setup adds last_effect_id again (NULL in the old rows)
    try:
        run.until(lambda: run.runner.stats.consumed >= 25, "the whole topic read again")
    finally:
        run.stop()
    stats = run.runner.stats
    assert (stats.verified, stats.log_resets, stats.duplicates, stats.applied) == (0, 0, 20, 5)
    assert rows(postgres, schema) == (25, 25)


# -- finding 4: a target that is down is waited for, a bad record is set aside -----------------------------


def _outage(run: Running, bus: Bus, end_outage: Callable[[], None], n: int) -> None:
    """The target is down from the start: wait for the sink to say so, keep it down past max.poll.interval.ms,
    bring it back, and check every record arrived once without a dead letter or a rebalance."""
    started = time.monotonic()
    run.until(lambda: run.runner.problem() is not None, "the sink reports that it waits for the target")
    assert sample(metrics.SINK_PAUSED, bus.name) == 1
    assert "waiting for the target" in (run.runner.problem() or "")
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - started)))
    assert sample(metrics.SINK_PAUSED, bus.name) == 1 and run.runner.stats.dead_lettered == 0
    end_outage()
    run.until(lambda: run.runner.stats.applied >= n, f"all {n} records applied after the outage")
    assert run.runner.problem() is None and sample(metrics.SINK_PAUSED, bus.name) == 0
    assert run.runner.stats.dead_lettered == 0 and run.runner.stats.outages >= 1
    assert run.runner.assignments == 1  # type: ignore[attr-defined] # no rebalance: never evicted


def test_a_missing_table_longer_than_max_poll_interval_is_waited_for(
    embedded_broker, registry, schema, postgres
) -> None:
    bus = Bus(
        embedded_broker.bootstrap_servers, registry.url, schema, **{"max.poll.interval.ms": MAX_POLL_MS}
    )
    bus.produce("w", 120)
    postgres.execute(f"ALTER TABLE {schema}.rows RENAME TO rows_away")  # a migration renamed it
    run = Running(bus.runner())
    try:
        _outage(run, bus, lambda: postgres.execute(f"ALTER TABLE {schema}.rows_away RENAME TO rows"), 120)
    finally:
        run.stop()
    assert rows(postgres, schema) == (120, 120)


def test_an_http_target_answering_503_longer_than_max_poll_interval_is_waited_for(
    embedded_broker, registry, schema, monkeypatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    bus = Bus(
        embedded_broker.bootstrap_servers, registry.url, schema, **{"max.poll.interval.ms": MAX_POLL_MS}
    )
    ids = bus.produce("h", 60)
    with RecordsApi(token=TOKEN) as api:
        api.unavailable_for(3600)
        writer = HttpApiWriter(bus.name, _config(api, schema, bus.topic))
        run = Running(bus.runner(writer=writer))

        def back() -> None:
            api.unavailable_until = None

        try:
            _outage(run, bus, back, 60)
        finally:
            run.stop()
        assert sorted(api.count_by_ref().items()) == sorted((i, 1) for i in ids)


def test_a_stop_while_the_target_is_down_gives_the_batch_up_uncommitted(
    embedded_broker, registry, schema, postgres
) -> None:
    bus = Bus(embedded_broker.bootstrap_servers, registry.url, schema)
    bus.produce("s", 30)
    postgres.execute(f"ALTER TABLE {schema}.rows RENAME TO rows_away")
    run = Running(bus.runner())
    try:
        run.until(lambda: run.runner.problem() is not None, "the sink reports that it waits for the target")
    finally:
        run.stop()  # returns: the waiting batch is abandoned, not waited for
    assert bus.committed() < 0 and run.runner.stats.dead_lettered == 0  # nothing committed, nothing set aside
    assert sample(metrics.SINK_PAUSED, bus.name) == 0
    postgres.execute(f"ALTER TABLE {schema}.rows_away RENAME TO rows")
    apply_all(bus, 30)  # the next owner gets every record
    assert rows(postgres, schema) == (30, 30)


def _bad_project(r: SinkRecord) -> dict[str, Any]:
    if r.value["project"] == "BAD":
        raise Permanent("unknown project BAD", reason="unknown_master_data")
    return column_mapper(COLUMNS)(r)


def test_one_bad_record_among_good_ones_is_dead_lettered_at_once(
    embedded_broker, registry, schema, postgres
) -> None:
    bus = Bus(embedded_broker.bootstrap_servers, registry.url, schema)
    ids = bus.produce("b", 10, bad=4)
    retries = sample(metrics.RETRIES, bus.name, "unknown_master_data")
    patient = RetryPolicy(
        max_attempts=50, initial_delay=30, max_elapsed=3600
    )  # a retry would show as a stall
    run = Running(bus.runner(row=_bad_project, policy=patient))
    try:
        run.until(lambda: run.runner.stats.batches >= 1 and run.runner.stats.consumed >= 10, "the batch settled",
                  timeout=60)  # fmt: skip
    finally:
        run.stop()
    assert run.runner.stats.applied == 9 and run.runner.stats.dead_lettered == 1
    assert rows(postgres, schema) == (9, 9)
    assert postgres.execute(
        f"SELECT count(*) FROM {schema}.rows WHERE effect_id = %s", (ids[4],)
    ).fetchone() == (0,)
    assert sample(metrics.RETRIES, bus.name, "unknown_master_data") == retries
    assert run.runner.problem() is None


class _OneRecordLocked(SinkWriter):
    """A target that applies every record but one, which always fails retryably (a row lock that stays)."""

    def __init__(self, locked: str) -> None:
        self.locked, self.applied = locked, []  # type: ignore[var-annotated]

    def plan(self, records: list[SinkRecord]) -> list[Any]:
        return []

    def write(self, records: list[SinkRecord]) -> WriteResult:
        ok = [r.effect_id for r in records if r.effect_id != self.locked]
        self.applied += ok
        failed = {
            r.effect_id: Retryable("row locked", reason="db_conflict")
            for r in records
            if r.effect_id == self.locked
        }
        return WriteResult(applied=len(ok), failed=failed)  # type: ignore[arg-type]


def test_a_record_failing_retryably_while_the_target_answers_is_dead_lettered_after_its_budget(
    embedded_broker, registry, schema
) -> None:
    kafka = Kafka(embedded_broker.bootstrap_servers, registry.url)
    bus = Bus(embedded_broker.bootstrap_servers, registry.url, schema)
    bus.dlq = kafka.dlq_topic
    ids = bus.produce("l", 10)
    writer = _OneRecordLocked(ids[6])
    run = Running(bus.runner(writer=writer))
    try:
        run.until(lambda: run.runner.stats.dead_lettered >= 1, "the locked record dead-lettered", timeout=60)
    finally:
        run.stop()
    assert sorted(writer.applied) == sorted(i for i in ids if i != ids[6])
    assert run.runner.stats.outages == 0  # the target answered: not an outage
    (letter,) = kafka.dead_letters(1)
    assert letter["error_class"] == "RETRYABLE" and letter["attempts"] == SHORT_BUDGET.max_attempts
