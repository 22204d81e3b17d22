"""The HTTP API sink end to end: embedded broker + registry, the real SinkRunner and DeadLetterWriter, a
real PostgreSQL ledger, and the records-API contract fake as target. The fake does not dedupe by
external reference, so every double create would show in its accounting."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from bizbus.connectors.runtime.sink import SinkRecord, SinkRunner
from bizbus.connectors.sinks.http_api.config import HttpApiSinkConfig
from bizbus.connectors.sinks.http_api.connector import HttpApiWriter
from bizbus.schemas import catalog
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import ValidationError

from bizbus import lineage
from bizbus.deadletters import DeadLetterWriter
from bizbus.failures import Fatal, RetryPolicy
from bizbus.kafka import read_until_quiet
from bizbus.serde import AvroSerde
from tests.fakes.records_api import RecordsApi

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "bizbus.pm.TimesheetEntry"
TOKEN_ENV = "BIZBUS_TEST_RECORDS_API_TOKEN"
TOKEN = "tok-5f0c2a9e71d84b3c"
BODY = {
    "employee": "employee",
    "project": "project",
    "hours": "hours",
    "work_date": "work_date",
    "occurred_at": "meta.occurred_at",
    "description": "description",
    "source": "meta.trace.connector",
}
FAST_RETRIES = RetryPolicy(max_attempts=6, initial_delay=0.01, max_delay=0.2)


# -- fixtures and helpers -------------------------------------------------------------------------------


@pytest.fixture
def pg() -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """A connection and a fresh ledger schema name, dropped afterwards."""
    try:
        conn = psycopg.connect(DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable ({exc}); start it with "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")  # fmt: skip
    schema = f"ledger_http_{uuid.uuid4().hex[:8]}"
    yield conn, schema
    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.close()


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordsApi]:
    """The fake target, requiring TOKEN, which the sink reads from TOKEN_ENV."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with RecordsApi(token=TOKEN, required_fields=("employee", "hours", "description")) as fake:
        yield fake


class Kafka:
    """Topics, producing, runners and dead letters on the embedded broker for one test."""

    def __init__(self, bootstrap: str, registry_url: str) -> None:
        self.conf = {"bootstrap.servers": bootstrap}
        self.serde = AvroSerde({"url": registry_url})
        self.admin = AdminClient(self.conf)  # keep a reference: a collected client fails its futures
        self.partitions: dict[str, int] = {}
        self.dlq_topic = self.topic(1)

    def topic(self, partitions: int = 1) -> str:
        name = f"bizbus.test.http-{uuid.uuid4().hex[:8]}.v1"
        self.admin.create_topics([NewTopic(name, partitions, 1)])[name].result(20)
        self.partitions[name] = partitions
        return name

    def produce(self, topic: str, values: list[dict[str, Any]]) -> None:
        encode = self.serde.encoder(f"{topic}-value", catalog.load(SCHEMA))
        producer = Producer({**self.conf, "enable.idempotence": True, "acks": "all"})
        for v in values:
            producer.produce(
                topic, key=v["project"].encode(), value=encode(v), headers=lineage.headers(v["meta"])
            )
        assert producer.flush(30) == 0

    def runner(
        self,
        connector: str,
        topic: str,
        writer: HttpApiWriter,
        from_beginning: bool = False,
        policy: RetryPolicy = FAST_RETRIES,
    ) -> SinkRunner:
        r = SinkRunner(connector, [topic], self.conf, self.serde, writer,
                       DeadLetterWriter(self.conf, self.serde, topic=self.dlq_topic), policy, batch_size=64)  # fmt: skip
        r.setup()
        if from_beginning:  # as after lost offset commits: everything is delivered again
            r._consumer.unsubscribe()
            r._consumer.assign([TopicPartition(topic, p, 0) for p in range(self.partitions[topic])])
        return r

    def dead_letters(self, n: int, timeout: float = 30) -> list[dict[str, Any]]:
        consumer = Consumer({**self.conf, "group.id": f"t-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
                             "session.timeout.ms": 6000})  # fmt: skip
        consumer.subscribe([self.dlq_topic])
        try:
            out = [self.serde.decode(m.value()) for m in read_until_quiet(consumer, 0, limit=n, timeout=timeout)]
        finally:
            consumer.close()
        assert len(out) == n, f"{len(out)} dead letter(s) of {n} within {timeout} s"
        return out


@pytest.fixture
def kafka(embedded_broker, registry) -> Kafka:
    return Kafka(embedded_broker.bootstrap_servers, registry.url)


def _value(topic: str, i: int, **changes: Any) -> dict[str, Any]:
    """A TimesheetEntry with a deterministic event id per (topic, i)."""
    rec = catalog.sample(SCHEMA)
    rec["meta"]["event_id"] = lineage.event_id("http-sink-test", topic, i)
    rec["worklog_id"] = str(i)
    rec["project"] = f"P-{i % 3}"
    rec["hours"] = Decimal("1.25")
    rec.update(changes)
    return rec


def _ref(value: dict[str, Any]) -> str:
    return str(value["meta"]["event_id"])


def _config(api: RecordsApi, schema: str, topic: str, **changes: Any) -> HttpApiSinkConfig:
    return HttpApiSinkConfig(topics=(topic,), base_url=api.url, create_path="/api/orders", lookup_path="/api/orders",
                             body=BODY, token_env=TOKEN_ENV, state_dsn=DSN, ledger_schema=schema, **changes)  # fmt: skip


def _run(runner: SinkRunner, until: Callable[[], bool], timeout: float = 120) -> BaseException | None:
    """Run the sink on a thread until ``until()`` or the loop dies; returns what killed it, if anything."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            runner.run(stop)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while not until() and not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()  # run() finishes the batch in hand before it looks at the flag
    t.join(90)
    assert not t.is_alive(), "the sink loop did not stop"
    return errors[0] if errors else None


def _drain(runner: SinkRunner, n: int) -> None:
    error = _run(runner, lambda: runner.stats.consumed >= n)
    if error is not None:
        raise error
    assert runner.stats.consumed >= n, f"consumed {runner.stats.consumed} of {n}"


def _ledger(conn: psycopg.Connection[Any], schema: str, connector: str) -> dict[str, str | None]:
    rows = conn.execute(f"SELECT effect_id, target_ref FROM {schema}.applied_effects WHERE connector = %s",
                        (connector,)).fetchall()  # fmt: skip
    return {str(e): r for e, r in rows}


def _intents(conn: psycopg.Connection[Any], schema: str, connector: str) -> set[str]:
    rows = conn.execute(
        f"SELECT effect_id FROM {schema}.http_intents WHERE connector = %s", (connector,)
    ).fetchall()
    return {str(r[0]) for r in rows}


def _posts(api: RecordsApi) -> list[Any]:
    return [r for r in api.requests if r.method == "POST"]


def _gets(api: RecordsApi) -> list[Any]:
    return [r for r in api.requests if r.method == "GET"]


def _connector() -> str:
    return f"http-{uuid.uuid4().hex[:8]}"


class _LedgerLostOnce(HttpApiWriter):
    """The target accepts the first create, then the ledger transaction is lost (what a crash does)."""

    def setup(self) -> None:
        super().setup()
        real = self.ledger.apply_batch
        self.lost: list[str] = []

        def apply_batch(effects: Any, write: Any) -> Any:
            def write_then_lose(cur: Any, effect: Any) -> Any:
                ref = write(cur, effect)
                if not self.lost:
                    self.lost.append(effect.effect_id)
                    raise psycopg.OperationalError("simulated: connection lost before the ledger commit")
                return ref

            return real(effects, write_then_lose)

        self.ledger.apply_batch = apply_batch  # type: ignore[method-assign]


# -- (a) exactly once and replay ------------------------------------------------------------------------


def test_each_record_creates_once_and_a_replay_creates_nothing(kafka: Kafka, api: RecordsApi, pg) -> None:
    conn, schema = pg
    topic, n, connector = kafka.topic(3), 40, _connector()
    values = [_value(topic, i) for i in range(n)]
    kafka.produce(topic, values)
    cfg = _config(api, schema, topic)

    first = kafka.runner(connector, topic, HttpApiWriter(connector, cfg))
    _drain(first, n)
    first.close()
    assert api.count_by_ref() == Counter({_ref(v): 1 for v in values})
    assert (first.stats.applied, first.stats.duplicates, first.stats.dead_lettered) == (n, 0, 0)
    assert _gets(api) == []  # nothing was in doubt: no lookups
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in _posts(api))
    assert all("idempotency-key" not in r.headers for r in _posts(api))  # lookup mode sends none
    assert _ledger(conn, schema, connector) == {c["external_ref"]: c["id"] for c in api.creates}
    assert _intents(conn, schema, connector) == set()

    sent = next(c for c in api.creates if c["external_ref"] == _ref(values[0]))
    assert sent["hours"] == "1.25"  # money as an exact string, never a float
    assert sent["work_date"] == values[0]["work_date"].isoformat()
    assert sent["occurred_at"] == values[0]["meta"]["occurred_at"].isoformat()
    assert (sent["employee"], sent["source"]) == (
        values[0]["employee"],
        values[0]["meta"]["trace"]["connector"],
    )

    seen = len(api.requests)
    replay = kafka.runner(connector, topic, HttpApiWriter(connector, cfg), from_beginning=True)
    _drain(replay, n)
    replay.close()
    assert len(api.creates) == n and len(api.requests) == seen  # the ledger answered; the API saw nothing
    assert (replay.stats.applied, replay.stats.duplicates) == (0, n)


# -- (b) in-doubt resolution ----------------------------------------------------------------------------

CRASH_SCRIPT = """
import json, sys
from datetime import date
from decimal import Decimal
from bizbus.connectors.runtime.sink import SinkRecord
from bizbus.connectors.sinks.http_api.config import HttpApiSinkConfig
from bizbus.connectors.sinks.http_api.connector import HttpApiWriter

args = json.loads(sys.argv[1])
writer = HttpApiWriter(args["connector"], HttpApiSinkConfig.model_validate(args["config"]))
writer.setup()
records = []
for offset, v in enumerate(args["values"]):
    v["hours"], v["work_date"] = Decimal(v["hours"]), date.fromisoformat(v["work_date"])
    records.append(SinkRecord(args["topic"], 0, offset, None, v, b"", [], None))
writer.write(records)
print("not killed", flush=True)
"""


def test_sigkill_after_create_is_resolved_by_lookup(
    kafka: Kafka, api: RecordsApi, pg, tmp_path: Path
) -> None:
    conn, schema = pg
    topic, connector = kafka.topic(1), _connector()
    values = [_value(topic, i) for i in range(3)]
    cfg = _config(api, schema, topic)
    crash_log = tmp_path / "crashes.log"
    env = {
        **os.environ,
        "BIZBUS_CRASHPOINTS": "http-api.after-create:1",
        "BIZBUS_CRASHPOINT_LOG": str(crash_log),
    }
    args = {"connector": connector, "topic": topic, "config": cfg.model_dump(mode="json"), "values": values}
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, json.dumps(args, default=str)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip

    # killed between "the target accepted" and "the ledger recorded": one object out there, no ledger row
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert crash_log.read_text().split()[0] == "http-api.after-create"
    assert [c["external_ref"] for c in api.creates] == [_ref(values[0])]
    orphan = api.creates[0]["id"]
    assert _ledger(conn, schema, connector) == {}
    assert _intents(conn, schema, connector) == {_ref(v) for v in values}

    kafka.produce(topic, values)  # the same records, as the restarted sink consumes them again
    runner = kafka.runner(connector, topic, HttpApiWriter(connector, cfg))
    _drain(runner, 3)
    runner.close()
    assert api.count_by_ref() == Counter({_ref(v): 1 for v in values})  # no second create
    assert _ledger(conn, schema, connector)[_ref(values[0])] == orphan
    assert sorted(r.query["external_ref"][0] for r in _gets(api)) == sorted(_ref(v) for v in values)
    assert (runner.stats.applied, runner.stats.duplicates) == (2, 1)
    assert _intents(conn, schema, connector) == set()


def test_lost_ledger_commit_is_resolved_by_lookup_on_retry(kafka: Kafka, api: RecordsApi, pg) -> None:
    conn, schema = pg
    topic, n, connector = kafka.topic(1), 5, _connector()
    values = [_value(topic, i) for i in range(n)]
    kafka.produce(topic, values)
    writer = _LedgerLostOnce(connector, _config(api, schema, topic))
    runner = kafka.runner(connector, topic, writer)
    _drain(runner, n)
    runner.close()
    assert len(writer.lost) == 1
    assert api.count_by_ref() == Counter({_ref(v): 1 for v in values})
    assert len(_posts(api)) == n  # the lost one was found, not posted again
    created = {c["external_ref"]: c["id"] for c in api.creates}
    assert _ledger(conn, schema, connector) == created
    assert _ref(values[0]) in {r.query["external_ref"][0] for r in _gets(api)}
    assert runner.stats.dead_lettered == 0 and _intents(conn, schema, connector) == set()


def test_timeout_after_the_target_created_is_resolved_by_lookup(kafka: Kafka, api: RecordsApi, pg) -> None:
    """The client gives up, the target creates anyway: the classic in-doubt create without any crash."""
    conn, schema = pg
    topic, n, connector = kafka.topic(1), 3, _connector()
    values = [_value(topic, i) for i in range(n)]
    kafka.produce(topic, values)
    api.latency = 1.5  # every answer comes after the client's 0.3 s timeout
    done = threading.Event()

    def heal() -> None:  # the target recovers once the first (timed-out) create has landed
        while not api.creates and not done.wait(0.02):
            pass
        api.latency = 0.0

    healer = threading.Thread(target=heal, daemon=True)
    healer.start()
    writer = HttpApiWriter(connector, _config(api, schema, topic, timeout_seconds=0.3))
    runner = kafka.runner(
        connector, topic, writer, policy=RetryPolicy(max_attempts=30, initial_delay=0.05, max_delay=0.2)
    )
    try:
        _drain(runner, n)
    finally:
        done.set()
        healer.join(10)
        runner.close()
    assert api.count_by_ref() == Counter({_ref(v): 1 for v in values})
    assert [p.body["external_ref"] for p in _posts(api)].count(_ref(values[0])) == 1  # found, not re-posted
    assert _ledger(conn, schema, connector) == {c["external_ref"]: c["id"] for c in api.creates}
    assert runner.stats.dead_lettered == 0


# -- (c) idempotency-key mode ---------------------------------------------------------------------------


def test_idempotency_key_mode_lets_the_target_absorb_the_retry(kafka: Kafka, api: RecordsApi, pg) -> None:
    conn, schema = pg
    topic, n, connector = kafka.topic(1), 5, _connector()
    values = [_value(topic, i) for i in range(n)]
    kafka.produce(topic, values)
    writer = _LedgerLostOnce(connector, _config(api, schema, topic, dedupe="idempotency-key"))
    runner = kafka.runner(connector, topic, writer)
    _drain(runner, n)
    runner.close()
    posts = _posts(api)
    assert all(p.headers["idempotency-key"] == p.body["external_ref"] for p in posts)
    assert len(posts) == n + 1 and _gets(api) == []  # the lost one was POSTed again, nothing looked up
    replayed = [p for p in posts if p.status == 200]
    assert [p.body["external_ref"] for p in replayed] == writer.lost
    assert api.count_by_ref() == Counter({_ref(v): 1 for v in values})
    assert _ledger(conn, schema, connector) == {c["external_ref"]: c["id"] for c in api.creates}
    assert (runner.stats.applied, runner.stats.duplicates) == (n - 1, 1)


# -- (d) throttling and server errors -------------------------------------------------------------------


def test_429_waits_for_retry_after_then_applies_once(kafka: Kafka, api: RecordsApi, pg) -> None:
    _, schema = pg
    topic, n, connector = kafka.topic(1), 5, _connector()
    values = [_value(topic, i) for i in range(n)]
    kafka.produce(topic, values)
    api.fail_next(429, 1, retry_after=1)
    runner = kafka.runner(connector, topic, HttpApiWriter(connector, _config(api, schema, topic)))
    _drain(runner, n)
    runner.close()
    assert api.count_by_ref() == Counter({_ref(v): 1 for v in values})
    posts = _posts(api)
    throttled = next(i for i, p in enumerate(posts) if p.status == 429)
    # the policy's own delay is 0.01 s: a gap of a second means Retry-After was honoured
    assert posts[throttled + 1].at - posts[throttled].at >= 0.95
    assert runner.stats.dead_lettered == 0


def test_500_twice_then_success_applies_once(kafka: Kafka, api: RecordsApi, pg) -> None:
    _, schema = pg
    topic, n, connector = kafka.topic(1), 5, _connector()
    values = [_value(topic, i) for i in range(n)]
    kafka.produce(topic, values)
    api.fail_next(500, 2)
    runner = kafka.runner(connector, topic, HttpApiWriter(connector, _config(api, schema, topic)))
    _drain(runner, n)
    runner.close()
    assert api.count_by_ref() == Counter({_ref(v): 1 for v in values})
    assert [p.status for p in _posts(api)] == [500, 500] + [201] * n  # the batch stops at the first 500
    # a 500 leaves the create in doubt: it is looked up before each retry; records never sent are not
    assert [g.query["external_ref"][0] for g in _gets(api)] == [_ref(values[0])] * 2
    assert runner.stats.dead_lettered == 0


# -- (e) per-record refusals are dead-lettered ----------------------------------------------------------


def test_refused_and_unmappable_records_are_dead_lettered_and_the_rest_arrive(
    kafka: Kafka, api: RecordsApi, pg
) -> None:
    _, schema = pg
    topic, n, connector = kafka.topic(1), 6, _connector()
    values = [_value(topic, i) for i in range(n)]
    values[2]["description"] = None  # mapped, but the target requires it: HTTP 400
    values[4]["meta"]["trace"] = {}  # meta.trace.connector does not exist: mapping error
    kafka.produce(topic, values)
    runner = kafka.runner(connector, topic, HttpApiWriter(connector, _config(api, schema, topic)))
    _drain(runner, n)
    runner.close()
    assert api.count_by_ref() == Counter({_ref(values[i]): 1 for i in (0, 1, 3, 5)})
    assert [p.body["external_ref"] for p in _posts(api)].count(_ref(values[2])) == 1  # a 400 is not retried
    assert runner.stats.dead_lettered == 2

    letters = {d["source_offset"]: d for d in kafka.dead_letters(2)}
    assert set(letters) == {2, 4}
    for d in letters.values():
        assert (d["source_topic"], d["source_partition"], d["error_class"]) == (topic, 0, "PERMANENT")
        assert d["connector"] == connector
    assert letters[2]["error_type"] == "Permanent/http_400"
    assert "description is required" in letters[2]["error_message"]
    assert letters[4]["error_type"] == "Permanent/mapping"
    assert "meta.trace.connector" in letters[4]["error_message"]
    assert kafka.serde.decode(letters[2]["value"])["meta"]["event_id"] == _ref(
        values[2]
    )  # the original record


# -- (f) credentials ------------------------------------------------------------------------------------


def test_401_stops_the_sink_without_leaking_the_token(
    kafka: Kafka, api: RecordsApi, pg, monkeypatch, caplog
) -> None:
    _, schema = pg
    wrong = "wrong-tok-9d2e7c41aa03"
    monkeypatch.setenv(TOKEN_ENV, wrong)
    caplog.set_level(logging.DEBUG)
    topic, connector = kafka.topic(1), _connector()
    kafka.produce(topic, [_value(topic, i) for i in range(3)])
    runner = kafka.runner(connector, topic, HttpApiWriter(connector, _config(api, schema, topic)))
    error = _run(runner, lambda: False, timeout=60)
    runner.close()
    assert isinstance(error, Fatal), error
    text = "".join(traceback.format_exception(error))
    assert TOKEN_ENV in str(error) and "401" in str(error)
    assert wrong not in text and wrong not in caplog.text
    posts = _posts(api)
    assert len(posts) == 1 and posts[0].headers["authorization"] == f"Bearer {wrong}"  # sent, never shown
    assert api.creates == [] and runner.stats.dead_lettered == 0  # nothing dead-lettered: nothing would work


def test_missing_token_variable_is_fatal_at_setup(api: RecordsApi, pg, monkeypatch) -> None:
    _, schema = pg
    monkeypatch.delenv(TOKEN_ENV)
    writer = HttpApiWriter(_connector(), _config(api, schema, "t"))
    with pytest.raises(Fatal, match=TOKEN_ENV):
        writer.setup()
    writer.close()


# -- (g) plan -------------------------------------------------------------------------------------------


def _record(topic: str, offset: int, value: dict[str, Any]) -> SinkRecord:
    return SinkRecord(topic, 0, offset, None, value, b"", [], None)


def test_plan_tells_create_from_skip_and_writes_nothing(api: RecordsApi, pg) -> None:
    conn, schema = pg
    topic, connector = "bizbus.test.plan.v1", _connector()
    writer = HttpApiWriter(connector, _config(api, schema, topic))
    writer.setup()
    try:
        applied, at_target, new, unmappable, doubt_absent = (
            _record(topic, i, _value(topic, i)) for i in range(5)
        )
        unmappable.value["meta"]["trace"] = {}
        assert writer.write([applied]).applied == 1
        # a create that reached the target before a crash: an intent, an object, no ledger row
        for r in (at_target, doubt_absent):
            conn.execute(f"INSERT INTO {schema}.http_intents (connector, effect_id) VALUES (%s, %s)",
                         (connector, r.effect_id))  # fmt: skip
        orphan = api.create_directly(writer.body_of(at_target))["id"]
        creates, requests_before = api.creates, len(api.requests)
        ledger_before, intents_before = _ledger(conn, schema, connector), _intents(conn, schema, connector)

        plan = writer.plan([applied, at_target, new, unmappable, doubt_absent])

        assert [(p.effect_id, p.action) for p in plan] == [
            (applied.effect_id, "skip"), (at_target.effect_id, "skip"), (new.effect_id, "create"),
            (unmappable.effect_id, "skip"), (doubt_absent.effect_id, "create"),
        ]  # fmt: skip
        assert plan[0].detail == "already applied (ledger)"
        assert plan[1].detail == f"already at the target as {orphan} (found by lookup)"
        assert plan[2].detail.startswith("POST /api/orders {")
        assert json.loads(plan[2].detail.removeprefix("POST /api/orders ")) == writer.body_of(new)
        assert plan[3].detail.startswith("error: ") and "meta.trace.connector" in plan[3].detail
        # nothing written: no POST, same ledger, same intents
        assert api.creates == creates and all(r.method == "GET" for r in api.requests[requests_before:])
        assert _ledger(conn, schema, connector) == ledger_before
        assert _intents(conn, schema, connector) == intents_before
    finally:
        writer.close()


# -- the fake itself ------------------------------------------------------------------------------------


def test_fake_api_keeps_its_contract() -> None:
    """The fake must refuse what a real target refuses, or the sink tests above prove nothing."""
    with (
        RecordsApi(token="t", required_fields=("employee",)) as fake,
        httpx.Client(base_url=fake.url) as http,
    ):
        auth = {"Authorization": "Bearer t"}
        assert http.post("/api/orders", json={"external_ref": "a", "employee": "E1"}).status_code == 401
        bad = http.post("/api/orders", json={"external_ref": "", "employee": "E1"}, headers=auth)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"
        assert http.post("/api/orders", json={"external_ref": "a"}, headers=auth).status_code == 400
        first = http.post("/api/orders", json={"external_ref": "a", "employee": "E1"}, headers=auth)
        again = http.post("/api/orders", json={"external_ref": "a", "employee": "E1"}, headers=auth)
        assert (first.status_code, again.status_code) == (201, 201)  # no dedupe by external_ref
        keyed = {**auth, "Idempotency-Key": "k1"}
        created = http.post("/api/orders", json={"external_ref": "b", "employee": "E1"}, headers=keyed)
        replay = http.post("/api/orders", json={"external_ref": "b", "employee": "E1"}, headers=keyed)
        assert created.status_code == 201 and replay.status_code == 200
        assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == created.json()
        assert (
            http.post("/api/orders", json={"external_ref": "b", "employee": "E2"}, headers=keyed).status_code
            == 422
        )
        assert fake.count_by_ref() == Counter({"a": 2, "b": 1})
        items = http.get("/api/orders", params={"external_ref": "a"}, headers=auth).json()["items"]
        assert [i["id"] for i in items] == [first.json()["id"], again.json()["id"]]
        assert [c["id"] for c in http.get("/__admin/creates").json()["creates"]] == [
            c["id"] for c in fake.creates
        ]

        fake.fail_next(503, 2, retry_after=7)
        failed = [
            http.post("/api/orders", json={"external_ref": "c", "employee": "E1"}, headers=auth)
            for _ in range(2)
        ]
        assert [(r.status_code, r.headers["Retry-After"]) for r in failed] == [(503, "7"), (503, "7")]
        fake.rate_limit_per_second = 2
        statuses = [
            http.post(
                "/api/orders", json={"external_ref": f"r{i}", "employee": "E1"}, headers=auth
            ).status_code
            for i in range(5)
        ]
        assert statuses[:2] == [201, 201] and 429 in statuses  # a burst of 2, then throttled
        assert len(fake.creates) == 3 + statuses.count(201)


# -- config ---------------------------------------------------------------------------------------------


def _raw_config(**changes: Any) -> dict[str, Any]:
    return {"topics": ["t"], "base_url": "http://127.0.0.1:1", "create_path": "/api/orders",
            "lookup_path": "/api/orders", "body": {"employee": "employee"}, **changes}  # fmt: skip


@pytest.mark.parametrize(
    "dsn", ["postgresql://sink:hunter2@db:5432/bus", "host=db user=sink password=hunter2 dbname=bus"]
)
def test_config_refuses_a_password_in_the_dsn_without_echoing_it(dsn: str) -> None:
    with pytest.raises(ValidationError) as info:
        HttpApiSinkConfig.model_validate(_raw_config(state_dsn=dsn))
    assert "PGPASSWORD" in str(info.value) and "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"token_env": "Bearer abc.def"},  # a token pasted where its variable's name belongs
        {"base_url": "ftp://x"},
        {"base_url": "https://user:pw@erp.example.com"},
        {"create_path": "api/orders"},
        {"topics": []},
        {"body": {"external_ref": "meta.event_id"}},
        {"body": {"a": "x..y"}},
        {"dedupe": "hope"},
        {"token": "abc"},
    ],
)
def test_config_refuses_mistakes(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        HttpApiSinkConfig.model_validate(_raw_config(**changes))


def test_config_defaults_and_frozen() -> None:
    cfg = HttpApiSinkConfig.model_validate(_raw_config())
    assert (cfg.dedupe, cfg.ref_param, cfg.ref_field, cfg.token_env) == (
        "lookup",
        "external_ref",
        "external_ref",
        None,
    )
    with pytest.raises(ValidationError):
        cfg.base_url = "http://elsewhere"  # type: ignore[misc]
    assert all(f.description for f in HttpApiSinkConfig.model_fields.values())
