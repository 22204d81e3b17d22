"""Exactly-once sink throughput vs the same writes done raw, without any bus.

(a) ``pg-table`` sink (a ``bizbus worker`` process; ledger rows + target rows in one transaction per batch)
    over records on a topic, vs psycopg ``executemany`` of the same rows in transactions of the same batch
    size. Both rates come from the rows' own ``applied_at`` (``clock_timestamp()``) column, first to last
    row, so worker start-up and consumer-group join are not counted (the wall times with them are in the
    details). The baseline decodes the same Avro bytes (from memory, no broker) too. The sink writes its
    rows with COPY (and overlaps a batch's write with the next batch's decode), so the details also give
    the same rows COPYed raw, the fastest way by hand, and the ratio to that.
(b) ``tryton`` sink (a ``bizbus worker`` process) posting F2-style labor vouchers (two lines, the debit on a
    cost center, so with an analytic line) from a topic into a real Tryton 8.2 (trytond on SQLite, the
    seeded test template), vs the same moves created and posted raw: per batch of the sink's default size
    one JSON-RPC ``model.account.move.create`` with all the moves and one ``post`` of their ids (TrytonRpc),
    with the Avro decode of the same bytes, no broker, no existence check. Each side has its own fresh copy
    of the template served by its own trytond. Both rates come from Tryton's own timestamps: the moves of
    one create call share a ``create_date``, so a batch's cycle (reads, create, post) runs from its
    create_date to the next batch's; rate = moves of all batches but the last / (last create_date - first),
    so start-up and group join are not counted. The template is built once per run (~40 s) unless
    BIZBUS_TRYTON_TEMPLATE names a prebuilt one (``python -m tests.tryton_env build DIR``).

The machine is shared, so the load drifts during a run: with four batches or more the records are split in
two rounds, measured raw, sink, sink, raw (each sink round a fresh worker over the records produced for
it), and each rate is the items of both rounds over their summed seconds; the details show each round's
ratio. The workers' progress is watched through their consumer group's committed offsets on the broker,
once a second, so the watching takes no CPU from the target being measured.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.bench.cdc import create_topics, private_catalogue, stack_of
from tests.bench.core import BenchContext, BenchResult, produce
from tests.chaos.harness import ROOT, Worker, timesheet_payload, write_pipeline

NAME = "sinks"
BATCH = 500  # the pg-table default batch_size
# Private ledgers: each pg-table sink of the benchmarks (here, latency, recovery) keeps its ledger in a
# schema of its own, bench_ledger_<tag>, dropped at the end, so no benchmark writes into the dead tuples
# another one left: autovacuum is off on this machine's PostgreSQL, and the shared bizbus_ledger had kept
# every row deleted by earlier benchmarks and test runs. (This is hygiene; it did not change the ratio.)
SCHEMA_NAME = "bizbus.pm.TimesheetEntry"


def timesheet_records(n: int, source: str) -> list[dict[str, Any]]:
    """``n`` canonical TimesheetEntry records with distinct event ids."""
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
        produce(p, topic, value, key, wait=0.1)
        p.poll(0)
    if p.flush(60) != 0:
        raise RuntimeError(f"records for {topic} not acknowledged by the broker")


def span_of(
    conn: psycopg.Connection[Any], table: str, since: datetime | None = None
) -> tuple[int, float, Any]:
    """(rows, seconds from their first to their last ``applied_at``, the last one) of the rows of ``table``
    applied after ``since`` (all rows when None)."""
    n, span, last = conn.execute(
        f"SELECT count(*), extract(epoch FROM max(applied_at) - min(applied_at)), max(applied_at) FROM {table}"
        " WHERE applied_at > %s", (since or datetime(1970, 1, 1, tzinfo=UTC),)
    ).fetchone()  # fmt: skip
    conn.commit()
    return int(n), float(span or 0.0), last


def rounds_of(n: int, batch: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each round: two when there are at least four batches, else one."""
    if n < 4 * batch:
        return [(0, n)]
    half = (n // 2 // batch) * batch
    return [(0, half), (half, n)]


def interleave(rounds: int, raw: Any, sink: Any) -> None:
    """raw(i) and sink(i) for each round, in the order raw, sink, sink, raw, ...: a load that drifts over
    the run (the machine is shared) then weighs on both sides alike."""
    for i in range(rounds):
        for side in (raw, sink) if i % 2 == 0 else (sink, raw):
            side(i)


def decoded_rows(serde: Any, encoded: list[tuple[bytes, bytes]]) -> list[tuple[Any, ...]]:
    rows = []
    for _key, value in encoded:
        v = serde.decode(value)
        rows.append((str(v["meta"]["event_id"]), v["worklog_id"], v["hours"]))
    return rows


def pg_table(ctx: BenchContext) -> BenchResult:
    from bizbus.schemas import catalog

    from bizbus.serde import AvroSerde

    n = ctx.size(80_000, minimum=500)
    tag = uuid.uuid4().hex[:8]
    schema, topic, connector = f"bench_sink_{tag}", f"bizbus.bench.sink-{tag}.v1", f"bench-sink-{tag}"
    ledger = f"bench_ledger_{tag}"  # private ledger, see above
    topics_file = private_catalogue(ctx.workdir, [topic])
    create_topics(ctx.bootstrap, [topic])
    serde = AvroSerde({"url": ctx.registry_url})
    encode = serde.encoder(f"{topic}-value", catalog.load(SCHEMA_NAME))
    records = timesheet_records(n, f"bench-{tag}")
    encoded = [(r["project"].encode(), encode(r)) for r in records]
    del records
    rounds = rounds_of(n, BATCH)

    conn = psycopg.connect(ctx.pg_dsn)
    cols = "effect_id text, worklog_id text, hours numeric(9,2), applied_at timestamptz NOT NULL DEFAULT clock_timestamp()"
    pipeline = write_pipeline(ctx.workdir / f"sink-{tag}.yaml", [
        {"name": connector, "type": "pg-table",
         "config": {"topics": [topic], "dsn": ctx.pg_dsn, "table": f"{schema}.bus", "batch_size": BATCH,
                    "ledger_schema": ledger,
                    "columns": {"effect_id": "$effect_id", "worklog_id": "worklog_id", "hours": "hours"}}},
    ])  # fmt: skip
    worker = Worker(connector, stack_of(ctx), pipeline, env={"BIZBUS_TOPICS_FILE": str(topics_file)})
    raw_side: list[tuple[int, float, float]] = []  # per round: rows, seconds first to last row, wall seconds
    bus_side: list[tuple[int, float, float]] = []
    last: dict[str, Any] = {"raw": None, "bus": None}

    def raw(i: int) -> None:
        lo, hi = rounds[i]
        ctx.progress(
            f"sinks: baseline round {i + 1}, {hi - lo} rows decoded + executemany (batches of {BATCH})"
        )
        t0 = time.monotonic()
        with psycopg.connect(ctx.pg_dsn) as db:
            for start in range(lo, hi, BATCH):
                rows = decoded_rows(serde, encoded[start : min(start + BATCH, hi)])
                with db.transaction(), db.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {schema}.raw (effect_id, worklog_id, hours) VALUES (%s, %s, %s)", rows
                    )
        wall = time.monotonic() - t0
        got, span, last["raw"] = span_of(conn, f"{schema}.raw", last["raw"])
        raw_side.append((got, span, wall))

    def sink(i: int) -> None:
        lo, hi = rounds[i]
        produce_all(ctx, topic, encoded[lo:hi])
        ctx.progress(f"sinks: pg-table sink round {i + 1}, a worker over {hi - lo} records")
        t0 = time.monotonic()
        worker.start()
        wait_committed(ctx.bootstrap, f"bizbus-sink-{connector}", topic, hi, 60 + (hi - lo) / 200, worker)
        wall = time.monotonic() - t0
        worker.stop()
        got, span, last["bus"] = span_of(conn, f"{schema}.bus", last["bus"])
        bus_side.append((got, span, wall))

    try:
        conn.execute(f"CREATE SCHEMA {schema}")
        for table in ("bus", "raw", "raw_copy"):
            conn.execute(f"CREATE TABLE {schema}.{table} ({cols})")
        conn.commit()
        interleave(len(rounds), raw, sink)
        # the sink writes its rows with COPY: raw COPY is shown too (details), the faster way to do it by hand
        with psycopg.connect(ctx.pg_dsn) as db:
            for start in range(0, n, BATCH):
                rows = decoded_rows(serde, encoded[start : start + BATCH])
                with (
                    db.transaction(),
                    db.cursor() as cur,
                    cur.copy(f"COPY {schema}.raw_copy (effect_id, worklog_id, hours) FROM STDIN") as copy,
                ):
                    for row in rows:
                        copy.write_row(row)
        copy_n, copy_span, _ = span_of(conn, f"{schema}.raw_copy")
        bus_n = _count(conn, f"SELECT count(*) FROM {schema}.bus")
        dupes = _count(conn, f"SELECT count(*) - count(DISTINCT effect_id) FROM {schema}.bus")
    finally:
        worker.stop()
        conn.rollback()
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"DROP SCHEMA IF EXISTS {ledger} CASCADE")
        conn.commit()
        conn.close()
    rate, base_rate = rate_of(bus_side), rate_of(raw_side)
    copy_rate = copy_n / copy_span if copy_span else 0.0
    return BenchResult(
        benchmark=NAME, metric="pg-table sink with ledger, rows/s (1 worker)", figure=round(rate, 1),
        baseline=round(base_rate, 1),
        baseline_what=f"psycopg executemany INSERT of the same rows, one transaction per {BATCH}, "
        "Avro decode of the same bytes included (from memory, no broker, no ledger)",
        unit="rows/s", higher_is_better=True, target="ratio >= 0.8",
        details={
            "records": n, "batch_size": BATCH, "rounds": len(rounds), "rows_written": bus_n,
            "duplicate_rows": dupes, "baseline_rows": sum(r[0] for r in raw_side),
            "seconds_first_to_last_row_per_round": [round(r[1], 2) for r in bus_side],
            "baseline_seconds_first_to_last_row_per_round": [round(r[1], 2) for r in raw_side],
            "ratio_per_round": [round((b[0] / b[1]) / (r[0] / r[1]), 3) if b[1] and r[1] and r[0] else 0.0
                                for b, r in zip(bus_side, raw_side, strict=True)],
            "worker_wall_seconds_incl_startup_and_group_join": [round(r[2], 2) for r in bus_side],
            "baseline_wall_seconds": [round(r[2], 2) for r in raw_side],
            "raw_copy_rows_per_s": round(copy_rate, 1),
            "ratio_to_raw_copy": round(rate / copy_rate, 3) if copy_rate else 0.0,
            "sink_writes_rows_with": "COPY (+ the ledger's INSERT ... unnest and one offsets upsert per batch)",
            "measured": "rows / (max - min applied_at = clock_timestamp() at insert), summed over the rounds, "
            "on each table",
        },
    )  # fmt: skip


def rate_of(side: list[tuple[int, float, float]]) -> float:
    """Items per second over all rounds of one side: their items / the sum of their measured seconds."""
    seconds = sum(r[1] for r in side)
    return sum(r[0] for r in side) / seconds if seconds else 0.0


def _count(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    conn.commit()
    return int(row[0]) if row else 0


# -- (b) the Tryton sink --------------------------------------------------------------------------------

VOUCHER_SCHEMA = "bizbus.finance.Voucher"
MOVE = "model.account.move"
COST_CENTER = "CC-BENCH"


def voucher_records(n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` balanced labor vouchers as F2 publishes them: debit 6601 on a cost center, credit 2211."""
    from bizbus.schemas import catalog

    from bizbus import lineage

    base = catalog.sample(VOUCHER_SCHEMA)
    out = []
    for i in range(n):
        no = f"LAB-B{tag}-{i:06d}-1"
        amount = Decimal(f"{100 + i % 97}.25")
        out.append({**base, "meta": lineage.meta(lineage.event_id("bench", "voucher", no), f"P{i % 7}", "bench",
                                                 trace={"flow": "F2"}),
                    "voucher_no": no, "posting_date": date(2026, 3, 14), "currency": "CNY", "reversal_of": None,
                    "description": f"labor cost {no}",
                    "lines": [{"line_no": 1, "account_code": "6601", "cost_center": COST_CENTER, "project": f"P{i % 7}",
                               "debit": amount, "credit": Decimal("0.00"), "description": "labor cost"},
                              {"line_no": 2, "account_code": "2211", "cost_center": None, "project": None,
                               "debit": Decimal("0.00"), "credit": amount, "description": "accrued payroll"}]})  # fmt: skip
    return out


def voucher_catalogue(workdir: Path, topic: str) -> Path:
    """deploy/topics.yaml plus ``topic`` shaped like bizbus.finance.voucher.v1 (for BIZBUS_TOPICS_FILE)."""
    doc = yaml.safe_load((ROOT / "deploy" / "topics.yaml").read_text())
    base = next(t for t in doc["topics"] if t["name"] == "bizbus.finance.voucher.v1")
    spec = {k: v for k, v in base.items() if k != "config"}
    doc["topics"].append({**spec, "name": topic, "description": "benchmark topic (tests/bench)"})
    path = workdir / f"topics-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return path


def tryton_template(ctx: BenchContext) -> Path:
    """The seeded template database: BIZBUS_TRYTON_TEMPLATE if set, else built into the work folder."""
    from bizbus.devstack.tryton_demo import TEMPLATE_ENV, build_template, trytond_missing

    reason = trytond_missing()
    if reason:
        raise RuntimeError(f"the Tryton part needs trytond: {reason}")
    prebuilt = os.environ.get(TEMPLATE_ENV)
    if prebuilt:
        return Path(prebuilt)
    ctx.progress("sinks: building the Tryton template database (about 40 s; BIZBUS_TRYTON_TEMPLATE skips it)")
    return build_template(ctx.workdir / "tryton-template", log=lambda _line: None)


def serve_copy(template: Path, folder: Path) -> Any:
    """A fresh copy of ``template`` served by its own trytond, with the bench's cost center in it."""
    from bizbus.connectors.sinks.tryton import mapping as m
    from bizbus.schemas import catalog

    from bizbus.devstack.tryton_demo import start_tryton_server

    folder.mkdir(parents=True)
    shutil.copyfile(template, folder / "bench.sqlite")
    server = start_tryton_server(folder, "bench")
    try:
        rpc = server.rpc
        (root,) = rpc.call(m.ANALYTIC, "search", [("code", "=", "CC"), ("type", "=", "root")], 0, None, None)
        cc = {**catalog.sample("bizbus.md.CostCenter"), "code": COST_CENTER, "name": "Bench cost center",
              "parent_code": None, "active": True, "version": 1}  # fmt: skip
        rpc.call(m.ANALYTIC, "create", [m.cost_center_values(cc, root, root)])
    except BaseException:
        server.stop()
        raise
    return server


def cycles(server: Any, prefix: str) -> tuple[int, int, float]:
    """(posted moves whose bizbus_ref starts with ``prefix``, moves of the complete cycles, their seconds).

    The moves of one ``create`` call share their ``create_date`` (Tryton's transaction time), so each
    distinct one starts a batch; a cycle is a batch's reads, create and post up to the next batch's create.
    The last batch has no next create and is left out of the rate (its post has no end time in Tryton)."""
    rows = server.rpc.call(MOVE, "search_read", [("bizbus_ref", "like", f"{prefix}%"), ("state", "=", "posted")],
                           0, None, None, ["create_date"])  # fmt: skip
    starts = sorted({r["create_date"] for r in rows})
    if len(starts) < 2:
        return len(rows), 0, 0.0
    done = sum(1 for r in rows if r["create_date"] < starts[-1])
    return len(rows), done, (starts[-1] - starts[0]).total_seconds()


def wait_committed(bootstrap: str, group: str, topic: str, n: int, timeout: float, worker: Worker) -> None:
    """Until ``group`` committed ``n`` records of ``topic``: asks the broker once a second with one client
    (polling Tryton, or a new client four times a second, would take CPU from the side being measured)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in c.list_topics(topic, 10).topics[topic].partitions]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10)) >= n:
                return
            if not worker.alive():
                raise RuntimeError(
                    f"worker {worker.name} exited before {n} records were committed\n{worker.logs()}"
                )
            time.sleep(1.0)
    finally:
        c.close()
    raise RuntimeError(
        f"timed out after {timeout:.0f}s waiting for {n} records of {topic} committed\n{worker.logs()}"
    )


def raw_moves(server: Any, serde: Any, encoded: list[tuple[bytes, bytes]], batch: int) -> None:
    """The baseline: decode, then per batch one ``create`` of all its moves and one ``post`` of their ids."""
    from bizbus.connectors.sinks.tryton import mapping as m

    rpc = server.rpc
    company = rpc.context["company"]
    (journal,) = rpc.call("model.account.journal", "search", [("code", "=", "MISC")], 0, None, None)
    accounts = {r["code"]: int(r["id"]) for r in rpc.call(
        "model.account.account", "search_read", [("code", "in", ["6601", "2211"]), ("company", "=", company)],
        0, None, None, ["code"])}  # fmt: skip
    analytic = {
        COST_CENTER: int(rpc.call(m.ANALYTIC, "search", [("bizbus_ref", "=", COST_CENTER)], 0, None, None)[0])
    }
    for start in range(0, len(encoded), batch):
        values = [m.move_values(serde.decode(value), journal, accounts, analytic)
                  for _key, value in encoded[start : start + batch]]  # fmt: skip
        ids = rpc.call(MOVE, "create", values)
        rpc.call(MOVE, "post", ids)


def tryton(ctx: BenchContext) -> BenchResult:
    from bizbus.connectors.sinks.tryton.config import TrytonSinkConfig
    from bizbus.schemas import catalog

    from bizbus.devstack.tryton_demo import ADMIN_PASSWORD, PASSWORD_ENV
    from bizbus.serde import AvroSerde

    batch = int(TrytonSinkConfig.model_fields["batch_size"].default)
    n = ctx.size(1200, minimum=2 * batch)
    template = tryton_template(ctx)
    tag = uuid.uuid4().hex[:8]
    topic, connector = f"bizbus.bench.vouchers-{tag}.v1", f"bench-tryton-{tag}"
    topics_file = voucher_catalogue(ctx.workdir, topic)
    create_topics(ctx.bootstrap, [topic])
    serde = AvroSerde({"url": ctx.registry_url})
    encode = serde.encoder(f"{topic}-value", catalog.load(VOUCHER_SCHEMA))
    rounds = rounds_of(n, batch)

    def encoded(side: str, i: int) -> list[tuple[bytes, bytes]]:
        lo, hi = rounds[i]
        return [(v["voucher_no"].encode(), encode(v)) for v in voucher_records(hi - lo, f"{tag}{side}{i}")]

    raw_side: list[tuple[int, float, float]] = []  # per round: moves of complete cycles, their seconds, wall
    bus_side: list[tuple[int, float, float]] = []
    posted = {"raw": 0, "bus": 0}
    servers: list[Any] = []
    worker: Worker | None = None
    try:
        ctx.progress("sinks: two fresh copies of the Tryton template, each served by its own trytond")
        raw_server = serve_copy(template, ctx.workdir / f"tryton-raw-{tag}")
        servers.append(raw_server)
        bus_server = serve_copy(template, ctx.workdir / f"tryton-bus-{tag}")
        servers.append(bus_server)
        pipeline = write_pipeline(ctx.workdir / f"tryton-{tag}.yaml", [
            {"name": connector, "type": "tryton",
             "config": {"topics": [topic], "url": bus_server.url, "password_env": PASSWORD_ENV}},
        ])  # fmt: skip
        worker = Worker(connector, stack_of(ctx), pipeline,
                        env={"BIZBUS_TOPICS_FILE": str(topics_file), PASSWORD_ENV: ADMIN_PASSWORD})  # fmt: skip

        def raw(i: int) -> None:
            lo, hi = rounds[i]
            ctx.progress(f"sinks: Tryton baseline round {i + 1}, {hi - lo} moves created + posted with JSON-RPC "
                         f"(batches of {batch})")  # fmt: skip
            t0 = time.monotonic()
            raw_moves(raw_server, serde, encoded("r", i), batch)
            wall = time.monotonic() - t0
            got, done, span = cycles(raw_server, f"LAB-B{tag}r{i}-")
            posted["raw"] += got
            raw_side.append((done, span, wall))

        def sink(i: int) -> None:
            assert worker is not None
            lo, hi = rounds[i]
            produce_all(ctx, topic, encoded("b", i))
            ctx.progress(f"sinks: tryton sink round {i + 1}, a worker over {hi - lo} vouchers")
            t0 = time.monotonic()
            worker.start()
            wait_committed(ctx.bootstrap, f"bizbus-sink-{connector}", topic, hi, 120 + (hi - lo) / 10, worker)
            wall = time.monotonic() - t0
            worker.stop()
            got, done, span = cycles(bus_server, f"LAB-B{tag}b{i}-")
            posted["bus"] += got
            bus_side.append((done, span, wall))

        interleave(len(rounds), raw, sink)
        refs = int(bus_server.rpc.call(MOVE, "search_count", [("bizbus_ref", "like", f"LAB-B{tag}b%")]))
    finally:
        if worker is not None:
            worker.stop()
        for server in servers:
            server.stop()
    rate, base_rate = rate_of(bus_side), rate_of(raw_side)
    return BenchResult(
        benchmark=NAME, metric="tryton sink, vouchers posted/s (1 worker)", figure=round(rate, 1),
        baseline=round(base_rate, 1),
        baseline_what=f"JSON-RPC account.move create of {batch} moves per call + post of their ids (TrytonRpc), "
        "Avro decode of the same bytes included (from memory, no broker, no existence check)",
        unit="moves/s", higher_is_better=True, target="ratio >= 0.8",
        details={
            "vouchers": n, "batch_size": batch, "rounds": len(rounds), "moves_posted": posted["bus"],
            "moves_with_ref": refs, "baseline_moves_posted": posted["raw"],
            "moves_in_complete_cycles_per_round": [r[0] for r in bus_side],
            "seconds_first_to_last_create_per_round": [round(r[1], 2) for r in bus_side],
            "baseline_seconds_first_to_last_create_per_round": [round(r[1], 2) for r in raw_side],
            "ratio_per_round": [round((b[0] / b[1]) / (r[0] / r[1]), 3) if b[1] and r[1] and r[0] else 0.0
                                for b, r in zip(bus_side, raw_side, strict=True)],
            "worker_wall_seconds_incl_startup_and_group_join": [round(r[2], 2) for r in bus_side],
            "baseline_wall_seconds": [round(r[2], 2) for r in raw_side],
            "tryton": "trytond 8.2 on SQLite (the test template), one fresh copy and server per side",
            "measured": "moves of all batches but the last of a round / (that batch's create_date - the first's), "
            "summed over the rounds, on each side",
        },
    )  # fmt: skip


def run(ctx: BenchContext) -> list[BenchResult]:
    return [pg_table(ctx), tryton(ctx)]
