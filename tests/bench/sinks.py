"""Exactly-once sink throughput vs the same writes done raw, without any bus.

(a) ``pg-table`` sink (a ``bizbus worker`` process; ledger row + target row in one transaction per batch)
    over records already on a topic, vs psycopg ``executemany`` of the same rows in transactions of the
    same batch size. Both rates come from the rows' own ``applied_at`` (``clock_timestamp()``) column,
    first to last row, so worker start-up and consumer-group join are not counted (the wall time with
    them is in the details). The baseline decodes the same Avro bytes (from memory, no broker) too.
(b) TODO: the ``tryton`` sink posting vouchers vs the same moves created and posted raw with batched
    JSON-RPC ``create`` + ``post`` calls (TrytonRpc) is not measured yet.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
from confluent_kafka import Producer

from tests.bench.cdc import create_topics, private_catalogue, stack_of, wait_until
from tests.bench.core import BenchContext, BenchResult
from tests.chaos.harness import Worker, timesheet_payload, write_pipeline

NAME = "sinks"
BATCH = 500  # the pg-table default batch_size
SCHEMA_NAME = "bizbus.pm.TimesheetEntry"


def timesheet_records(n: int, source: str) -> list[dict[str, Any]]:
    """``n`` canonical TimesheetEntry records with distinct event ids."""
    from datetime import UTC, datetime

    from bizbus.schemas import catalog

    from bizbus import lineage
    from bizbus.jsonavro import from_json

    schema = catalog.load(SCHEMA_NAME)
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        payload = timesheet_payload(i)
        m = lineage.meta(event_id=lineage.event_id(source, "worklog", payload["worklog_id"], 1),
                         correlation_id=payload["project"], source_system="bench", occurred_at=now)  # fmt: skip
        out.append(from_json(schema, {**payload, "meta": {**m, "occurred_at": now.isoformat()}}))
    return out


def produce_all(ctx: BenchContext, topic: str, encoded: list[tuple[bytes, bytes]]) -> None:
    p = Producer({"bootstrap.servers": ctx.bootstrap, "linger.ms": 20, "batch.num.messages": 10_000})
    for key, value in encoded:
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if p.flush(60) != 0:
        raise RuntimeError(f"records for {topic} not acknowledged by the broker")


def span_of(conn: psycopg.Connection[Any], table: str) -> tuple[int, float]:
    n, span = conn.execute(
        f"SELECT count(*), extract(epoch FROM max(applied_at) - min(applied_at)) FROM {table}"
    ).fetchone()
    conn.commit()
    return int(n), float(span or 0.0)


def pg_table(ctx: BenchContext) -> BenchResult:
    from bizbus.schemas import catalog

    from bizbus.serde import AvroSerde

    n = ctx.size(100_000, minimum=500)
    tag = uuid.uuid4().hex[:8]
    schema, topic, connector = f"bench_sink_{tag}", f"bizbus.bench.sink-{tag}.v1", f"bench-sink-{tag}"
    topics_file = private_catalogue(ctx.workdir, [topic])
    create_topics(ctx.bootstrap, [topic])
    serde = AvroSerde({"url": ctx.registry_url})
    encode = serde.encoder(f"{topic}-value", catalog.load(SCHEMA_NAME))
    ctx.progress(f"sinks: producing {n} TimesheetEntry records to {topic}")
    records = timesheet_records(n, f"bench-{tag}")
    encoded = [(r["project"].encode(), encode(r)) for r in records]
    del records
    produce_all(ctx, topic, encoded)

    conn = psycopg.connect(ctx.pg_dsn)
    worker: Worker | None = None
    cols = "effect_id text, worklog_id text, hours numeric(9,2), applied_at timestamptz NOT NULL DEFAULT clock_timestamp()"
    try:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.bus ({cols})")
        conn.execute(f"CREATE TABLE {schema}.raw ({cols})")
        conn.commit()

        ctx.progress(f"sinks: baseline, {n} rows decoded and written with executemany (batches of {BATCH})")
        t0 = time.monotonic()
        with psycopg.connect(ctx.pg_dsn) as raw:
            for start in range(0, n, BATCH):
                rows = []
                for _key, value in encoded[start : start + BATCH]:
                    v = serde.decode(value)
                    rows.append((str(v["meta"]["event_id"]), v["worklog_id"], v["hours"]))
                with raw.transaction(), raw.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {schema}.raw (effect_id, worklog_id, hours) VALUES (%s, %s, %s)", rows
                    )
        base_wall = time.monotonic() - t0
        base_n, base_span = span_of(conn, f"{schema}.raw")

        ctx.progress(f"sinks: pg-table sink worker over {n} records")
        pipeline = write_pipeline(ctx.workdir / f"sink-{tag}.yaml", [
            {"name": connector, "type": "pg-table",
             "config": {"topics": [topic], "dsn": ctx.pg_dsn, "table": f"{schema}.bus", "batch_size": BATCH,
                        "columns": {"effect_id": "$effect_id", "worklog_id": "worklog_id", "hours": "hours"}}},
        ])  # fmt: skip
        worker = Worker(connector, stack_of(ctx), pipeline, env={"BIZBUS_TOPICS_FILE": str(topics_file)})
        t0 = time.monotonic()
        worker.start()
        wait_until(lambda: span_of(conn, f"{schema}.bus")[0] >= n, 60 + n / 200, f"{n} rows in the target",
                   [worker])  # fmt: skip
        wall = time.monotonic() - t0
        worker.stop()
        bus_n, span = span_of(conn, f"{schema}.bus")
        dupes = conn.execute(f"SELECT count(*) - count(DISTINCT effect_id) FROM {schema}.bus").fetchone()[0]
        conn.commit()
    finally:
        if worker is not None:
            worker.stop()
        conn.rollback()
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute("DELETE FROM bizbus_ledger.applied_effects WHERE connector = %s", (connector,))
        conn.execute("DELETE FROM bizbus_ledger.offsets WHERE connector = %s", (connector,))
        conn.commit()
        conn.close()
    rate = bus_n / span if span else 0.0
    base_rate = base_n / base_span if base_span else 0.0
    return BenchResult(
        benchmark=NAME, metric="pg-table sink with ledger, rows/s (1 worker)", figure=round(rate, 1),
        baseline=round(base_rate, 1),
        baseline_what=f"psycopg executemany INSERT of the same rows, one transaction per {BATCH}, "
        "Avro decode of the same bytes included (from memory, no broker, no ledger)",
        unit="rows/s", higher_is_better=True, target="ratio >= 0.8",
        details={
            "records": n, "batch_size": BATCH, "rows_written": bus_n, "duplicate_rows": int(dupes),
            "baseline_rows": base_n, "seconds_first_to_last_row": round(span, 2),
            "baseline_seconds_first_to_last_row": round(base_span, 2),
            "worker_wall_seconds_incl_startup_and_group_join": round(wall, 2),
            "baseline_wall_seconds": round(base_wall, 2),
            "measured": "rows / (max - min applied_at = clock_timestamp() at insert) on each table",
        },
    )  # fmt: skip


def run(ctx: BenchContext) -> list[BenchResult]:
    ctx.progress("sinks: the Tryton part (vouchers vs raw JSON-RPC create+post) is not written yet")
    return [pg_table(ctx)]
