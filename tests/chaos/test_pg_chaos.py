"""Proof by violence for a database target: outbox rows in PostgreSQL -> pg-outbox source -> broker ->
pg-table sink -> a PostgreSQL table with NO unique constraint, while source and sink worker processes are
SIGKILLed at random moments and restarted. Every expected row must be in the target exactly once.

Two source workers run at once (one holds the shard lease, the other stands by) and two sink workers
share the consumer group; the source also dies on its own, at random, between "the broker acknowledged"
and "the cursor is stored" (crash point ``source.after-send``), the worst moment for duplicates.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

import pytest

from tests.chaos.harness import (
    Worker,
    chaos,
    count_topic,
    create_outbox_table,
    private_stack,
    start_application,
    wait_for,
    write_pipeline,
)

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TOPIC = "bizbus.pm.timesheet.v1"
EVENTS = 5000
KILLS_EACH = 3  # per connector: >= 6 SIGKILLs in all, plus the crash points


@pytest.fixture
def db(postgres):
    conn = postgres
    schema = f"chaos_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    # deliberately no primary key and no unique constraint: duplicates would show
    conn.execute(f"CREATE TABLE {schema}.entries (effect_id text, worklog_id text, hours numeric(9,2))")
    yield conn, schema
    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    prefix = schema.replace("_", "-") + "%"
    conn.execute("DELETE FROM bizbus_state.source_cursors WHERE connector LIKE %s", (prefix,))
    conn.execute("DELETE FROM bizbus_ledger.applied_effects WHERE connector LIKE %s", (prefix,))
    conn.execute("DELETE FROM bizbus_ledger.offsets WHERE connector LIKE %s", (prefix,))


def test_pg_target_exactly_once_under_sigkill(db, tmp_path: Path) -> None:
    conn, schema = db
    rng = random.Random(int(time.time()))
    with private_stack(tmp_path, {TOPIC: 6, "bizbus.ops.dead-letter.v1": 1}) as stack:
        pipeline = write_pipeline(tmp_path / "pipeline.yaml", [
            {"name": f"{schema.replace('_', '-')}-src", "type": "pg-outbox",
             "config": {"dsn": DSN, "table": f"{schema}.outbox", "source_system": "chaos", "topics": [TOPIC],
                        "batch_size": 200}},
            {"name": f"{schema.replace('_', '-')}-sink", "type": "pg-table",
             "config": {"topics": [TOPIC], "dsn": DSN, "table": f"{schema}.entries", "batch_size": 200,
                        "columns": {"effect_id": "$effect_id", "worklog_id": "worklog_id", "hours": "hours"}}},
        ])  # fmt: skip
        src, sink = f"{schema.replace('_', '-')}-src", f"{schema.replace('_', '-')}-sink"
        create_outbox_table(conn, schema)
        crash = {
            "BIZBUS_CRASHPOINTS": "source.after-send:0.03",
            "BIZBUS_CRASHPOINT_LOG": str(tmp_path / "crashes.log"),
        }
        workers = [Worker(f"{src}#1", stack, pipeline, crash), Worker(f"{src}#2", stack, pipeline, crash),
                   Worker(f"{sink}#1", stack, pipeline), Worker(f"{sink}#2", stack, pipeline)]  # fmt: skip
        for w in workers:
            w.start()

        t0 = time.monotonic()
        _, written = start_application(DSN, schema, TOPIC, EVENTS)

        def target_rows() -> int:
            return conn.execute(f"SELECT count(*) FROM {schema}.entries").fetchone()[0]

        chaos(workers, KILLS_EACH, until=written.is_set, rng=rng)
        wait_for(lambda: target_rows() >= EVENTS, 240, f"{EVENTS} rows in the target", workers)
        time.sleep(3)  # anything late (a duplicate) would land now
        for w in workers:
            w.stop()
        elapsed = time.monotonic() - t0

        total = target_rows()
        distinct = conn.execute(f"SELECT count(DISTINCT worklog_id) FROM {schema}.entries").fetchone()[0]
        twice = conn.execute(
            f"SELECT count(*) FROM (SELECT worklog_id FROM {schema}.entries GROUP BY worklog_id HAVING count(*) > 1) d"
        ).fetchone()[0]
        expected = {f"W{n:06d}" for n in range(EVENTS)}
        present = {r[0] for r in conn.execute(f"SELECT worklog_id FROM {schema}.entries").fetchall()}
        missing = len(expected - present)
        crashes = (
            (tmp_path / "crashes.log").read_text().count("\n") if (tmp_path / "crashes.log").exists() else 0
        )
        kills = {w.name: w.kills for w in workers}
        on_topic = count_topic(stack.bootstrap, TOPIC, 6)
        print(f"\nchaos pg-table: expected={EVENTS} rows={total} distinct={distinct} duplicated={twice} "
              f"missing={missing} sigkills={sum(kills.values())} {kills} crash-points={crashes} "
              f"records-on-topic={on_topic} (re-sent and absorbed by the ledger: {on_topic - EVENTS}) in {elapsed:.0f}s")  # fmt: skip
        assert on_topic >= EVENTS
        if crashes:  # a source killed after the broker's ack and before its cursor write re-sends
            assert on_topic > EVENTS
        assert sum(w.kills for w in workers if w.connector == src) >= KILLS_EACH
        assert sum(w.kills for w in workers if w.connector == sink) >= KILLS_EACH
        assert (total, distinct, twice, missing) == (EVENTS, EVENTS, 0, 0)
        ledger = conn.execute(
            "SELECT count(*) FROM bizbus_ledger.applied_effects WHERE connector = %s", (sink,)
        ).fetchone()[0]
        assert ledger == EVENTS
