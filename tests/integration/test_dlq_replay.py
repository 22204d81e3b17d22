"""Dead letters as a workflow, end to end: a pg-table sink whose target refuses some records (a CHECK
constraint) dead-letters them through a real SinkRunner; the operator lists and inspects them, drops the
constraint, previews the replay, replays, and replays again. Every refused record lands exactly once;
a dry run writes nothing; a poison record is reported, never crashes the replay.

Runs on the session's embedded broker with a test-local dead-letter topic (`--topic`), its own
registry, and its own PostgreSQL schema and ledger schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from bizbus.connectors.runtime.sink import SinkRunner
from bizbus.schemas import catalog
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import lineage
from bizbus.catalogue import load_catalogue
from bizbus.deadletters import DeadLetterWriter, dead_letter
from bizbus.failures import Permanent, RetryPolicy
from bizbus.host.components import RuntimeContext
from bizbus.host.pipeline import load_pipeline
from bizbus.serde import AvroSerde
from bizbus.settings import load_settings

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BAD = (2, 5, 9)  # records whose hours break the target's CHECK constraint at first
N = 12


@pytest.fixture
def pg(postgres):
    conn = postgres
    suffix = uuid.uuid4().hex[:8]
    schema, ledger = f"dlqr_{suffix}", f"dlqr_ledger_{suffix}"
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"""CREATE TABLE {schema}.entries (effect_id text, worklog_id text, hours numeric(9,2),
                     CONSTRAINT hours_small CHECK (hours < 5))""")  # no unique key: duplicates would show
    yield conn, suffix, schema, ledger
    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.execute(f"DROP SCHEMA IF EXISTS {ledger} CASCADE")


class Env:
    """The world of one test: topics, pipeline, and the `bizbus dlq` command pointed at them."""

    def __init__(
        self, broker: str, registry_url: str, tmp: Path, suffix: str, schema: str, ledger: str
    ) -> None:
        self.conf = {"bootstrap.servers": broker}
        self.topic, self.dlq = f"bizbus.test.dlqr-{suffix}.v1", f"bizbus.test.dlqr-dlq-{suffix}.v1"
        self.sink, self.src, self.gone = f"dlqr-{suffix}-sink", f"dlqr-{suffix}-src", f"dlqr-{suffix}-gone"
        self.pipeline = tmp / "pipeline.yaml"
        self.pipeline.write_text(yaml.safe_dump({"version": 1, "name": "dlqr", "flows": [], "connectors": [
            {"name": self.src, "type": "sample-events", "config": {"topic": "bizbus.pm.timesheet.v1"}},
            {"name": self.sink, "type": "pg-table", "config": {
                "topics": [self.topic], "dsn": DSN, "table": f"{schema}.entries", "ledger_schema": ledger,
                "columns": {"effect_id": "$effect_id", "worklog_id": "worklog_id", "hours": "hours"},
                "retry": {"max_attempts": 2, "initial_delay": 0.01}}},
        ]}))  # fmt: skip
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker, "SCHEMA_REGISTRY_URL": registry_url,
                    "BIZBUS_PIPELINE_FILE": str(self.pipeline)}  # fmt: skip
        self.settings = load_settings(
            kafka_bootstrap_servers=broker, schema_registry_url=registry_url, pipeline_file=self.pipeline
        )
        self.serde = AvroSerde(self.settings.registry_config())

    def dlq_cmd(self, *args: str) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "bizbus", "dlq", *args, "--topic", self.dlq],
                           capture_output=True, text=True, env=self.env, timeout=180)  # fmt: skip
        assert "Traceback" not in p.stderr + p.stdout, p.stderr
        return p

    def coords(self, partition: int, offset: int) -> str:
        return f"{self.topic}[{partition}]@{offset}"


def _produce(env: Env) -> tuple[dict[int, tuple[int, int]], dict[int, bytes], tuple[int, int]]:
    """N timesheet entries (BAD ones with hours the target refuses) and one poison record; returns the
    coordinates and encoded bytes per entry and the poison record's coordinates."""
    encode = env.serde.encoder(f"{env.topic}-value", catalog.load("bizbus.pm.TimesheetEntry"))
    producer = Producer({**env.conf, "enable.idempotence": True, "acks": "all"})
    coords: dict[Any, tuple[int, int]] = {}
    raw: dict[int, bytes] = {}

    def delivered(i: Any) -> Any:
        return lambda err, msg: coords.__setitem__(i, (msg.partition(), msg.offset()))

    for i in range(N):
        rec = catalog.sample("bizbus.pm.TimesheetEntry")
        rec["meta"]["event_id"] = lineage.event_id("dlqr", env.topic, i)
        rec["worklog_id"] = f"W{i:04d}"
        rec["hours"] = Decimal("7.50") if i in BAD else Decimal("1.25")
        raw[i] = encode(rec)
        producer.produce(env.topic, key=rec["worklog_id"].encode(), value=raw[i],
                         headers=lineage.headers(rec["meta"]), on_delivery=delivered(i))  # fmt: skip
    producer.produce(env.topic, key=b"poison", value=b"\x07garbage", on_delivery=delivered("poison"))
    assert producer.flush(30) == 0 and len(coords) == N + 1
    return coords, raw, coords["poison"]


def _dead_letter_with_the_sink(env: Env) -> SinkRunner:
    """The pipeline's own pg-table writer behind a real SinkRunner, dead-lettering to the test topic."""
    pl = load_pipeline(env.pipeline)
    cc = next(c for c in pl.components if c.name == env.sink)
    ctx = RuntimeContext(env.settings, load_catalogue(env.settings.topics_file), env.serde)
    writer = cc.type.load()(cc.name, cc.config, ctx).writer()  # type: ignore[attr-defined]
    runner = SinkRunner(env.sink, [env.topic], env.conf, env.serde, writer,
                        DeadLetterWriter(env.conf, env.serde, topic=env.dlq),
                        RetryPolicy(max_attempts=2, initial_delay=0.01), batch_size=64)  # fmt: skip
    runner.setup()
    stop = threading.Event()
    t = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 90
    while runner.stats.consumed < N + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join(15)
    runner.close()
    return runner


def _more_dead_letters(env: Env, coords: dict[int, tuple[int, int]], raw: dict[int, bytes]) -> None:
    """A source's dead letter, one of a connector no longer in the pipeline, and the same dead letter as
    BAD[0] sent again with a later failed_at (what a crash before the offset commit produces)."""
    w = DeadLetterWriter(env.conf, env.serde, topic=env.dlq)
    w.setup()
    common: dict[str, Any] = dict(key=None, value=raw[0], headers=None, timestamp_ms=None, attempts=1)
    w.send(dead_letter(connector=env.src, topic="bizbus.pm.timesheet.v1", partition=0, offset=3,
                       error=Permanent("outbox row has no project"), **common))  # fmt: skip
    w.send(dead_letter(connector=env.gone, topic=env.topic, partition=0, offset=99,
                       error=Permanent("retired target"), **common))  # fmt: skip
    p, o = coords[BAD[0]]
    w.send(dead_letter(connector=env.sink, topic=env.topic, partition=p, offset=o, key=b"W", value=raw[BAD[0]],
                       headers=None, timestamp_ms=None, error=Permanent("the re-sent copy"), attempts=2))  # fmt: skip
    w.flush()
    w.close()


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_list_show_and_replay_dead_letters(embedded_broker, registry, pg, tmp_path: Path) -> None:
    conn, suffix, schema, ledger = pg
    env = Env(embedded_broker.bootstrap_servers, registry.url, tmp_path, suffix, schema, ledger)
    admin = AdminClient(env.conf)  # keep a reference: a collected client fails its futures
    for t in (env.topic, env.dlq):
        admin.create_topics([NewTopic(t, 2, 1)])[t].result(20)

    def rows() -> int:
        return conn.execute(f"SELECT count(*) FROM {schema}.entries").fetchone()[0]

    def ledger_rows() -> int:
        q = f"SELECT count(*) FROM {ledger}.applied_effects WHERE connector = %s"
        return conn.execute(q, (env.sink,)).fetchone()[0]

    coords, raw, poison = _produce(env)
    runner = _dead_letter_with_the_sink(env)
    assert runner.stats.consumed == N + 1 and runner.stats.dead_lettered == len(BAD) + 1
    assert rows() == ledger_rows() == N - len(BAD)
    _more_dead_letters(env, coords, raw)

    # list: the sink's dead letters with their coordinates; the re-sent copy is shown once
    p = env.dlq_cmd("list", "--connector", env.sink)
    assert p.returncode == 0, p.stderr
    assert len(_lines_with(p.stdout, env.sink)) == len(BAD) + 2  # records + summary line
    for i in BAD:
        assert env.coords(*coords[i]) in p.stdout
    assert env.coords(*poison) in p.stdout
    assert f"{len(BAD) + 1} dead letters — {env.sink}: PERMANENT {len(BAD)}, POISON 1" in p.stdout
    assert "the re-sent copy" not in p.stdout

    every = [json.loads(line) for line in env.dlq_cmd("list", "--json").stdout.splitlines()]
    assert sorted(d["connector"] for d in every) == sorted([env.sink] * 4 + [env.src, env.gone])
    by_coords = {(d["source_partition"], d["source_offset"]): d for d in every if d["connector"] == env.sink}
    bad_id, poison_id = by_coords[coords[BAD[0]]]["id"], by_coords[poison]["id"]
    assert by_coords[coords[BAD[0]]]["attempts"] == 1  # the first copy was kept

    # filters narrow the set; a bad filter is a clean error
    p = env.dlq_cmd("list", "--filter", f"topic={env.topic}", "--filter", "error_class=poison", "--json")
    assert [json.loads(line)["id"] for line in p.stdout.splitlines()] == [poison_id]
    p = env.dlq_cmd("list", "--connector", "nobody-here")
    assert p.returncode == 0 and "no dead letters" in p.stdout
    p = env.dlq_cmd("list", "--filter", "partition=1")
    assert p.returncode == 2 and "unknown filter key 'partition'" in p.stderr and "error_class" in p.stderr

    # show: every field, the value decoded; a poison record shown raw
    p = env.dlq_cmd("show", bad_id[:10])
    assert p.returncode == 0, p.stderr
    assert bad_id in p.stdout and env.coords(*coords[BAD[0]]) in p.stdout and "PERMANENT" in p.stdout
    assert (
        "hours_small" in p.stdout
        and f'"worklog_id": "W{BAD[0]:04d}"' in p.stdout
        and '"hours": "7.50"' in p.stdout
    )
    assert f"event_id: {lineage.event_id('dlqr', env.topic, BAD[0])}" in p.stdout
    p = env.dlq_cmd("show", poison_id)
    assert p.returncode == 0, p.stderr
    assert (
        "value (undecodable" in p.stdout
        and "\\x07garbage" in p.stdout
        and "07 67 61 72 62 61 67 65" in p.stdout
    )
    p = env.dlq_cmd("show", "zzzz")
    assert p.returncode == 2 and "no dead letter" in p.stderr

    # before the fix, a replay fails record by record and writes nothing
    permanent = ("--connector", env.sink, "--filter", "error_class=PERMANENT")
    p = env.dlq_cmd("replay", *permanent)
    assert p.returncode == 1, p.stdout + p.stderr
    assert len(_lines_with(p.stdout, "failed: permanent (db_constraint)")) == len(BAD)
    assert rows() == ledger_rows() == N - len(BAD)

    conn.execute(f"ALTER TABLE {schema}.entries DROP CONSTRAINT hours_small")  # the operator's fix

    p = env.dlq_cmd("replay", "--dry-run", *permanent)
    assert p.returncode == 0, p.stdout + p.stderr
    planned = _lines_with(p.stdout, "would create: ")
    assert len(planned) == len(BAD) and all(f"INSERT INTO {schema}.entries" in line for line in planned)
    for i in BAD:
        assert env.coords(*coords[i]) in p.stdout
    assert rows() == ledger_rows() == N - len(BAD)  # a dry run writes nothing

    p = env.dlq_cmd("replay", *permanent)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(_lines_with(p.stdout, "  applied: effect ")) == len(BAD)
    assert rows() == ledger_rows() == N
    got = conn.execute(f"SELECT worklog_id, count(*) FROM {schema}.entries GROUP BY 1").fetchall()
    assert dict(got) == {f"W{i:04d}": 1 for i in range(N)}

    p = env.dlq_cmd("replay", *permanent)  # again: the ledger absorbs every one
    assert p.returncode == 0, p.stdout + p.stderr
    assert (
        len(_lines_with(p.stdout, "already applied: effect ")) == len(BAD)
        and "  applied: effect " not in p.stdout
    )
    assert rows() == ledger_rows() == N

    # everything: skipped sources and unknown connectors, a poison record reported, exit 1
    p = env.dlq_cmd("replay")
    assert p.returncode == 1, p.stdout + p.stderr
    assert _lines_with(p.stdout, f"skipped: {env.src} is a source; fix the record at the source")
    assert _lines_with(p.stdout, f"skipped: connector {env.gone} is not in {env.pipeline}")
    assert len(_lines_with(p.stdout, "undecodable: magic byte 7")) == 1 and poison_id[:8] in p.stdout
    assert len(_lines_with(p.stdout, "already applied: effect ")) == len(BAD)
    assert "6 dead letter(s)" in p.stdout
    assert rows() == ledger_rows() == N

    p = env.dlq_cmd("replay", "--dry-run")  # a preview of the same: nothing failed to plan, exit 0
    assert p.returncode == 0 and len(_lines_with(p.stdout, "would skip: already applied")) == len(BAD)
