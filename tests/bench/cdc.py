"""CDC throughput: PostgreSQL changes -> topic, the ``pg-outbox`` source (a ``bizbus worker`` process) vs a
bare loop reading the same outbox rows by id and producing them with confluent-kafka.

Both sides do the same per-row work: read a batch by id, JSON -> canonical record (meta, event id),
Avro encode (Confluent wire format), produce with idempotence and acks=all, flush per batch. Both
rates come from the produced records' timestamps on their topics (first to last), so neither includes
process start-up. Each side writes to a private catalogue topic of its own (TimesheetEntry schema), so
nothing else in the run reads or adds to it.

Logical decoding (pgoutput / wal2json) is not measured: this PostgreSQL runs ``wal_level=replica`` and
changing it needs a server restart; bizbus's change capture is the transactional outbox anyway.

Also holds small helpers the other benchmarks of this folder share (private catalogue, topic reads).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.bench.core import BenchContext, BenchResult
from tests.chaos.harness import ROOT, Stack, Worker, timesheet_payload, write_pipeline

NAME = "cdc"
BATCH = 500  # rows per read, both sides (the pg-outbox default)
PARTITIONS = 6
SCHEMA_NAME = "bizbus.pm.TimesheetEntry"


# -- helpers shared with the other benchmark modules ------------------------------------------------


def private_catalogue(workdir: Path, topics: list[str], partitions: int = PARTITIONS) -> Path:
    """deploy/topics.yaml plus ``topics`` (TimesheetEntry values), written to ``workdir``; for
    BIZBUS_TOPICS_FILE so the benchmark's workers may use topics nobody else writes to."""
    doc = yaml.safe_load((ROOT / "deploy" / "topics.yaml").read_text())
    base = next(t for t in doc["topics"] if t["name"] == "bizbus.pm.timesheet.v1")
    known = {t["name"] for t in doc["topics"]}
    for name in topics:
        if name not in known:
            doc["topics"].append({**base, "name": name, "partitions": partitions,
                                  "description": "benchmark topic (tests/bench)"})  # fmt: skip
    path = workdir / f"topics-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return path


def create_topics(bootstrap: str, topics: list[str], partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    for topic, f in futures.items():
        try:
            f.result(20)
        except Exception as exc:  # noqa: BLE001 - an existing topic is fine
            if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"cannot create topic {topic}: {exc}") from None


def topic_timestamps(
    bootstrap: str, topic: str, expected: int, timeout: float = 120, idle: float = 5.0
) -> list[int]:
    """Create-time timestamps (ms) of the records of ``topic`` (all partitions from 0), read until
    ``expected`` are in or ``idle`` seconds bring nothing new."""
    parts = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-read"}).list_topics(topic, 10)
    n_parts = len(parts.topics[topic].partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-read-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})  # fmt: skip
    c.assign([TopicPartition(topic, p, 0) for p in range(n_parts)])
    out: list[int] = []
    deadline, last = time.monotonic() + timeout, time.monotonic()
    try:
        while len(out) < expected and time.monotonic() < deadline and time.monotonic() - last < idle:
            msgs = [m for m in c.consume(5000, 0.5) if m.error() is None]
            if msgs:
                out.extend(m.timestamp()[1] for m in msgs)
                last = time.monotonic()
    finally:
        c.close()
    return out


def rate_from(start_ms: float, timestamps: list[int]) -> tuple[float, float]:
    """(records/s, seconds) from ``start_ms`` to the last record's timestamp."""
    span = (max(timestamps) - start_ms) / 1000 if timestamps else 0.0
    return (len(timestamps) / span if span > 0 else 0.0), span


def lease_taken_ms(worker: Worker) -> float:
    """When the worker's latest run took the capture lease (its JSON log line), in ms since the epoch."""
    log = (worker.stack.workdir / f"{worker.name}.{worker.starts}.log").read_text(errors="replace")
    for line in log.splitlines():
        if "capture lease taken" in line and line.startswith("{"):
            return dt.datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00")).timestamp() * 1000
    raise RuntimeError(f"no 'capture lease taken' in the worker's log:\n{log[-3000:]}")


def stack_of(ctx: BenchContext) -> Stack:
    return Stack(ctx.bootstrap, ctx.registry_url, ctx.workdir)


def rate_of(timestamps: list[int]) -> tuple[float, float]:
    """(records/s, seconds) from the first to the last timestamp (ms)."""
    span = (max(timestamps) - min(timestamps)) / 1000 if timestamps else 0.0
    return (len(timestamps) / span if span > 0 else 0.0), span


def wait_until(cond: Any, timeout: float, what: str, workers: list[Worker] = ()) -> None:  # type: ignore[assignment]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for w in workers:
            if not w.alive():
                raise RuntimeError(f"worker {w.name} exited while waiting for {what}\n{w.logs()}")
        time.sleep(0.25)
    raise RuntimeError(
        f"timed out after {timeout:.0f}s waiting for {what}\n" + "\n".join(w.logs() for w in workers)
    )


# -- the benchmark ------------------------------------------------------------------------------------


def fill_outbox(conn: psycopg.Connection[Any], table: str, topic: str, n: int) -> None:
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} (topic, entity_key, version, payload) FROM STDIN") as cp,
    ):
        for i in range(n):
            cp.write_row((topic, f"W{i:07d}", 1, json.dumps(timesheet_payload(i))))
    conn.commit()


def bare_loop(ctx: BenchContext, table: str, topic: str) -> int:
    """The baseline: SELECT by id in batches, JSON -> Avro, produce, flush per batch."""
    from bizbus.schemas import catalog

    from bizbus import lineage
    from bizbus.jsonavro import from_json
    from bizbus.serde import AvroSerde

    schema = catalog.load(SCHEMA_NAME)
    encode = AvroSerde({"url": ctx.registry_url}).encoder(f"{topic}-value", schema)
    producer = Producer({"bootstrap.servers": ctx.bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5})  # fmt: skip
    after, sent = 0, 0
    with psycopg.connect(ctx.pg_dsn, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                f"SELECT id, topic, entity_key, version, payload, correlation_id, created_at FROM {table}"
                " WHERE id > %s ORDER BY id LIMIT %s",
                (after, BATCH),
            ).fetchall()
            if not rows:
                break
            for rid, _topic, key, version, payload, corr, created_at in rows:
                eid = lineage.event_id("bench", topic, key, version if version is not None else rid)
                m = lineage.meta(event_id=eid, correlation_id=corr or str(key), source_system="bench",
                                 occurred_at=created_at)  # fmt: skip
                value = from_json(schema, {**payload, "meta": {**m, "occurred_at": created_at.isoformat()}})
                producer.produce(
                    topic, key=str(key).encode(), value=encode(value), headers=lineage.headers(value["meta"])
                )
                producer.poll(0)
            if producer.flush(30) != 0:
                raise RuntimeError("baseline producer: records not acknowledged")
            sent += len(rows)
            after = rows[-1][0]
    return sent


def run(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.size(120_000, minimum=500)
    tag = uuid.uuid4().hex[:8]
    schema = f"bench_cdc_{tag}"
    src_topic, base_topic = f"bizbus.bench.cdc-{tag}.v1", f"bizbus.bench.cdc-raw-{tag}.v1"
    connector = f"bench-cdc-{tag}"
    topics_file = private_catalogue(ctx.workdir, [src_topic, base_topic])
    create_topics(ctx.bootstrap, [src_topic, base_topic])
    conn = psycopg.connect(ctx.pg_dsn)
    worker: Worker | None = None
    try:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"""CREATE TABLE {schema}.outbox (id bigserial PRIMARY KEY, topic text NOT NULL,
            entity_key text NOT NULL, version bigint NULL, payload jsonb NOT NULL, correlation_id text NULL,
            created_at timestamptz NOT NULL DEFAULT now())""")
        conn.commit()
        ctx.progress(f"cdc: writing {n} outbox rows")
        fill_outbox(conn, f"{schema}.outbox", src_topic, n)
        conn.execute(f"ANALYZE {schema}.outbox")
        conn.commit()

        ctx.progress(f"cdc: baseline bare loop over {n} rows")
        t0 = time.monotonic()
        sent = bare_loop(ctx, f"{schema}.outbox", base_topic)
        base_wall = time.monotonic() - t0
        base_ts = topic_timestamps(ctx.bootstrap, base_topic, sent)
        base_rate, base_span = rate_of(base_ts)

        ctx.progress(f"cdc: pg-outbox source worker over {n} rows")
        pipeline = write_pipeline(ctx.workdir / f"cdc-{tag}.yaml", [
            {"name": connector, "type": "pg-outbox",
             "config": {"dsn": ctx.pg_dsn, "table": f"{schema}.outbox", "create_table": False,
                        "source_system": "bench", "topics": [src_topic], "batch_size": BATCH,
                        "state_dsn": ctx.pg_dsn}},
        ])  # fmt: skip
        worker = Worker(connector, stack_of(ctx), pipeline, env={"BIZBUS_TOPICS_FILE": str(topics_file)})
        t0 = time.monotonic()
        worker.start()
        last_id = conn.execute(f"SELECT max(id) FROM {schema}.outbox").fetchone()[0]
        conn.commit()

        def done() -> bool:
            row = conn.execute(
                "SELECT (cursor->>'id')::bigint FROM bizbus_state.source_cursors WHERE connector = %s",
                (connector,),
            ).fetchone()
            conn.commit()
            return bool(row) and row[0] is not None and row[0] >= last_id

        wait_until(done, 60 + n / 500, "the pg-outbox cursor to reach the last row", [worker])
        wall = time.monotonic() - t0
        worker.stop()
        ts = topic_timestamps(ctx.bootstrap, src_topic, n)
        rate, span = rate_of(ts)
    finally:
        if worker is not None:
            worker.stop()
        conn.rollback()
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (connector,))
        conn.commit()
        conn.close()
    return [
        BenchResult(
            benchmark=NAME,
            metric="outbox rows -> topic, records/s (pg-outbox worker)",
            figure=round(rate, 1),
            baseline=round(base_rate, 1),
            baseline_what="bare loop in one process: SELECT by id in batches of 500, JSON -> Avro, "
            "confluent-kafka produce (idempotent, acks=all, linger 5 ms), flush per batch",
            unit="records/s",
            higher_is_better=True,
            target="ratio >= 0.8",
            details={
                "rows": n,
                "batch_size": BATCH,
                "partitions": PARTITIONS,
                "records_on_topic": len(ts),
                "baseline_records_on_topic": len(base_ts),
                "seconds_first_to_last_record": round(span, 2),
                "baseline_seconds_first_to_last": round(base_span, 2),
                "worker_wall_seconds_incl_startup": round(wall, 2),
                "baseline_wall_seconds": round(base_wall, 2),
                "measured": "records / (last - first produce timestamp on the topic), each side on its own topic; "
                "JSON -> Avro encode included on both sides, the pg-outbox side also keeps its lease and stores "
                "its cursor per batch",
                "logical_decoding": "not measured: this PostgreSQL runs wal_level=replica (logical decoding "
                "needs wal_level=logical and a server restart); bizbus captures changes with the "
                "transactional outbox (pg-outbox: polling by id with a gap guard)",
            },
        )  # fmt: skip
    ]
