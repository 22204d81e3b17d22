"""Recovery: a PostgreSQL table sink worker (``bizbus worker --only NAME``, pg-table with the ledger) is
SIGKILLed in the middle of a steady stream and restarted at once.

Measured: seconds from the SIGKILL to the first NEW row in the target after the restart (the restart is
immediate, as an orchestrator would do it; the figure is process start + consumer-group join + ledger
seek + the first batch), and the records re-delivered to the restarted worker that were already applied
(the sink's ``bizbus_idempotent_hits_total`` on the restarted process's /metrics). Baselines from the same
run: the cold start of a fresh worker to its first applied row (process start to first row while the
stream already flows); the replay is compared with the sink's batch size, which bounds it (the sink commits
offsets after each batch and seeks to the ledger's offsets on assignment).

The stream goes to a topic of this run only (a catalogue file of the run adds it), so no earlier records
are in the way; the target table has no unique constraint, so a duplicate would show as a second row.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from bizbus.schemas import catalog
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import lineage
from bizbus.devstack.procs import free_port
from bizbus.serde import AvroSerde
from tests.bench.cdc import stack_of
from tests.bench.core import BenchContext, BenchResult
from tests.chaos.harness import Worker

NAME = "recovery"
ROOT = Path(__file__).resolve().parents[2]
BATCH = 500  # the sink's batch_size
RATE = 1000  # records/s offered while the worker is killed and restarted


class Stream(threading.Thread):
    """Produces TimesheetEntry records at ``rate`` per second until stopped; ``sent`` counts them."""

    def __init__(self, bootstrap: str, topic: str, encode: Any, rate: int, tag: str) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.topic, self.encode, self.rate, self.tag = topic, encode, rate, tag
        self.sent = 0
        self.halt = threading.Event()

    def run(self) -> None:
        t0, tick = time.monotonic(), 0.02
        while not self.halt.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.sent < due:
                n = self.sent
                wid = f"{self.tag}-{n:07d}"
                rec = {"meta": lineage.meta(lineage.event_id("bench", "worklog", wid, 1), f"P{n % 9}", "bench",
                                            datetime.now(UTC)),
                       "op": "CREATED", "worklog_id": wid, "project": f"P{n % 9}", "task": None, "employee": "E0001",
                       "work_date": date(2026, 3, 2), "hours": Decimal(f"{1 + n % 8}.25"), "billable": True,
                       "description": None, "version": 1}  # fmt: skip
                self.producer.produce(self.topic, key=rec["project"].encode(), value=self.encode(rec))
                self.sent += 1
            self.producer.poll(0)
            time.sleep(tick)
        self.producer.flush(30)

    def stop(self) -> None:
        self.halt.set()
        self.join(60)


@dataclass
class SinkWorker(Worker):
    """The chaos harness's ``bizbus worker --only NAME`` process, with a fresh /metrics port per start."""

    port: int = 0

    def start(self) -> None:
        self.port = free_port()
        self.env = {**self.env, "BIZBUS_ADMIN_PORT": str(self.port)}
        super().start()

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"sink worker exited with {self.proc.returncode}:\n{self.logs()}")

    def idempotent_hits(self) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        pattern = (
            rf'^bizbus_idempotent_hits_total\{{[^}}]*component="{re.escape(self.name)}"[^}}]*\}} ([0-9.e+]+)$'
        )
        found = re.search(pattern, text, re.MULTILINE)
        if found is None:
            raise RuntimeError(
                f"no bizbus_idempotent_hits_total for {self.name} on /metrics of the sink worker"
            )
        return float(found.group(1))


def wait_rows(
    conn: psycopg.Connection, table: str, above: int, timeout: float, worker: SinkWorker
) -> tuple[float, int]:
    """Poll until the target holds more than ``above`` rows; (monotonic time seen, rows)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        if rows > above:
            return time.monotonic(), rows
        worker.check()
        time.sleep(0.01)
    raise TimeoutError(f"the target did not grow past {above} rows in {timeout:.0f} s\n{worker.logs()}")


def run(ctx: BenchContext) -> list[BenchResult]:
    tag = uuid.uuid4().hex[:8]
    schema, name = f"bench_rec_{tag}", f"bench-rec-{tag}"
    topic = f"bizbus.bench.recovery-{tag}.v1"
    steady = max(2.0, 8.0 * ctx.scale)  # seconds of steady flow before the kill and after the restart

    cat = yaml.safe_load((ROOT / "deploy" / "topics.yaml").read_text())
    spec = next(t for t in cat["topics"] if t["name"] == "bizbus.pm.timesheet.v1")
    cat["topics"].append({**spec, "name": topic, "partitions": 3, "description": "recovery benchmark stream"})
    topics_file = ctx.workdir / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(cat, allow_unicode=True))
    table = f"{schema}.entries"
    pipeline = ctx.workdir / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"version": 1, "name": "bench-recovery", "flows": [], "connectors": [
        {"name": name, "type": "pg-table", "config": {
            "topics": [topic], "dsn": ctx.pg_dsn, "table": table, "batch_size": BATCH,
            "ledger_schema": f"bench_ledger_{tag}",  # private ledger: see tests/bench/sinks.py
            "columns": {"effect_id": "$effect_id", "worklog_id": "worklog_id", "hours": "hours"}}}]}))  # fmt: skip

    admin = AdminClient({"bootstrap.servers": ctx.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        f.result(15)
    serde = AvroSerde({"url": ctx.registry_url})
    encode = serde.encoder(f"{topic}-value", catalog.load(spec["value_schema"]))

    conn = psycopg.connect(ctx.pg_dsn, autocommit=True)
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"CREATE TABLE {table} (effect_id text, worklog_id text, hours numeric(9,2))")
    stream = Stream(ctx.bootstrap, topic, encode, RATE, tag)
    worker = SinkWorker(name, stack_of(ctx), pipeline, env={"BIZBUS_TOPICS_FILE": str(topics_file)})
    try:
        stream.start()
        time.sleep(1.0)  # the stream flows before the worker starts
        t_cold = time.monotonic()
        worker.start()
        t_first, _ = wait_rows(conn, table, 0, 120, worker)
        cold = t_first - t_cold
        ctx.progress(f"cold start to first applied row: {cold:.2f} s")
        time.sleep(steady)

        t_kill = time.monotonic()
        worker.kill()
        at_kill = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        worker.start()
        t_new, _ = wait_rows(conn, table, at_kill, 120, worker)
        recovery = t_new - t_kill
        ctx.progress(f"SIGKILL at {at_kill:,} rows; first new row {recovery:.2f} s after the kill")

        time.sleep(steady)
        stream.stop()
        sent = stream.sent
        deadline = time.monotonic() + 120
        rows = 0
        while time.monotonic() < deadline:
            rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            if rows >= sent:
                break
            worker.check()
            time.sleep(0.2)
        time.sleep(1.0)  # a late duplicate would land now
        rows, distinct = conn.execute(f"SELECT count(*), count(DISTINCT worklog_id) FROM {table}").fetchone()  # type: ignore[misc]
        replayed = worker.idempotent_hits()
        ctx.progress(
            f"sent {sent:,}, rows {rows:,} ({distinct:,} distinct), re-delivered after restart {replayed:.0f}"
        )
        if distinct != sent or rows != distinct:
            raise RuntimeError(
                f"target holds {rows} rows ({distinct} distinct) for {sent} records sent\n{worker.logs()}"
            )
    finally:
        if stream.is_alive():
            stream.stop()
        worker.stop()
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"DROP SCHEMA IF EXISTS bench_ledger_{tag} CASCADE")
        conn.close()
    details = {"rows_at_kill": at_kill, "records_sent": sent, "rows": rows, "offered_rate": RATE,
               "batch_size": BATCH, "steady_seconds": steady}  # fmt: skip
    return [
        BenchResult(NAME, "s from SIGKILL to first new row after restart", recovery, cold,
                    "cold start of a fresh sink worker to its first applied row", "s", higher_is_better=False,
                    target="", details=details),
        BenchResult(NAME, "records re-delivered after restart", replayed, BATCH,
                    "the sink's batch size (the bound)", "records", higher_is_better=False,
                    target=f"<= batch size ({BATCH})", details={**details, "met": replayed <= BATCH}),
    ]  # fmt: skip
