"""Proof by violence for an API target: outbox rows -> pg-outbox source -> broker -> http-api sink -> the
contract fake of a records API, which does NOT de-duplicate by itself and records every create it
accepted. Sink and source workers are SIGKILLed at random moments; sink workers also kill themselves right
after the API accepted a create and before the ledger recorded it (crash point ``http-api.after-create``),
and the API throws 500s and 429s now and then. Every entry must have been created exactly once.
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
    crash_count,
    create_outbox_table,
    private_stack,
    start_application,
    wait_for,
    write_pipeline,
)
from tests.fakes.records_api import RecordsApi

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TOPIC = "bizbus.pm.timesheet.v1"
EVENTS = 5000
KILLS_EACH = 3


@pytest.fixture
def db(postgres):
    conn = postgres
    schema = f"hchaos_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    yield conn, schema
    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    prefix = schema.replace("_", "-") + "%"
    conn.execute("DELETE FROM bizbus_state.source_cursors WHERE connector LIKE %s", (prefix,))
    for table in ("applied_effects", "offsets", "http_intents"):
        conn.execute(f"DELETE FROM bizbus_ledger.{table} WHERE connector LIKE %s", (prefix,))


def test_api_target_exactly_once_under_sigkill(db, tmp_path: Path) -> None:
    conn, schema = db
    rng = random.Random(int(time.time()))
    src, sink = f"{schema.replace('_', '-')}-src", f"{schema.replace('_', '-')}-sink"
    with RecordsApi(token="chaos-token", required_fields=("employee", "hours")) as api, \
            private_stack(tmp_path, {TOPIC: 6, "bizbus.ops.dead-letter.v1": 1}) as stack:  # fmt: skip
        pipeline = write_pipeline(tmp_path / "pipeline.yaml", [
            {"name": src, "type": "pg-outbox",
             "config": {"dsn": DSN, "table": f"{schema}.outbox", "source_system": "chaos", "topics": [TOPIC]}},
            {"name": sink, "type": "http-api",
             "config": {"topics": [TOPIC], "base_url": api.url, "create_path": "/api/orders",
                        "lookup_path": "/api/orders", "dedupe": "lookup", "token_env": "CHAOS_API_TOKEN",
                        "body": {"worklog": "worklog_id", "employee": "employee", "hours": "hours"},
                        "batch_size": 100, "retry": {"initial_delay": 0.05, "max_delay": 1.0}}},
        ])  # fmt: skip
        create_outbox_table(conn, schema)
        log = tmp_path / "crashes.log"
        crash_first = {"BIZBUS_CRASHPOINTS": "http-api.after-create:@150", "BIZBUS_CRASHPOINT_LOG": str(log)}
        workers = [
            Worker(f"{src}#1", stack, pipeline, {"BIZBUS_CRASHPOINTS": "source.after-send:0.03", "BIZBUS_CRASHPOINT_LOG": str(log)}),
            Worker(f"{sink}#1", stack, pipeline, {"CHAOS_API_TOKEN": "chaos-token", **crash_first}),
            Worker(f"{sink}#2", stack, pipeline, {"CHAOS_API_TOKEN": "chaos-token"}),
        ]  # fmt: skip
        for w in workers:
            w.start()
        t0 = time.monotonic()
        _, written = start_application(DSN, schema, TOPIC, EVENTS)
        # the worst moment first, deterministically: sink#1 kills itself right after its 150th accepted create,
        # before its ledger commit; its restart must find those objects by lookup instead of creating again
        wait_for(
            lambda: crash_count(log).get("http-api.after-create", 0) >= 1, 120, "the after-create crash", []
        )
        workers[1].env = {"CHAOS_API_TOKEN": "chaos-token"}
        workers[1].start()

        def weather() -> bool:  # the target has bad moments too
            if rng.random() < 0.3:
                api.fail_next(rng.choice([500, 503, 429]), n=rng.randint(1, 3), retry_after=0.2)
            return written.is_set()

        chaos(workers, KILLS_EACH, until=weather, rng=rng)
        created = lambda: len(api.count_by_ref())  # noqa: E731
        wait_for(lambda: created() >= EVENTS, 300, f"{EVENTS} distinct creates at the API", workers)
        time.sleep(3)  # a late duplicate would land now
        for w in workers:
            w.stop()
        elapsed = time.monotonic() - t0

        by_ref = api.count_by_ref()
        creates = len(api.creates)
        twice = sum(1 for n in by_ref.values() if n > 1)
        worklogs = {c["worklog"] for c in api.creates}
        missing = len({f"W{n:06d}" for n in range(EVENTS)} - worklogs)
        crashes = crash_count(log)
        lookups = sum(1 for r in api.requests if r.method == "GET")
        refused = sum(1 for r in api.requests if r.status >= 429)
        kills = {w.name: w.kills for w in workers}
        print(f"\nchaos http-api: expected={EVENTS} creates={creates} distinct={len(by_ref)} duplicated={twice} "
              f"missing={missing} sigkills={sum(kills.values())} {kills} crash-points={crashes} "
              f"lookups={lookups} refused-by-api={refused} in {elapsed:.0f}s")  # fmt: skip
        assert sum(w.kills for w in workers if w.connector == src) >= KILLS_EACH
        assert sum(w.kills for w in workers if w.connector == sink) >= KILLS_EACH
        assert crashes.get("http-api.after-create", 0) >= 1, (
            "no crash between 'accepted' and 'ledger written'"
        )
        assert (creates, len(by_ref), twice, missing) == (EVENTS, EVENTS, 0, 0)
        assert lookups >= crashes["http-api.after-create"]  # each in-doubt create was resolved by asking
