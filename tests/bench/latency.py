"""End-to-end latency: a signed Jira webhook in -> ``jira`` source (inbox -> converter -> Avro) ->
bizbus.pm.timesheet.v1 -> ``pg-table`` sink -> a PostgreSQL row, at a fixed offered rate.

Each worklog webhook carries its send time (epoch seconds) in the worklog comment, which the sink maps
to a column; the row's ``applied_at`` is ``clock_timestamp()`` at insert (inside the sink's transaction,
a few ms before its commit). Latency = applied_at - send time, same machine clock. Source and sink run
as ``bizbus worker`` processes; the sender is this process (one asyncio loop, open loop: each request is
built, signed and written at its due time on a pool of keep-alive connections, see http_sender.py; the
threads + httpx sender it replaced could not offer more than ~1,100/s). The time is also split into stages:
webhook -> inbox (the inbox row's ``received_at``: the transaction that stored the delivery) -> produced (the
Kafka record's CreateTime, set by the source's produce call; read after the run, see ``CreateTimes``) -> row
(the sink's ``applied_at``).
Baseline at the same rate: plain confluent-kafka produce -> consume on a fresh private topic (send time
in the value, consumer in another thread); at the target rate (1,000/s) it runs as long as the measurement.

The embedded broker (Tansu 0.6, memory engine) gets slower as a partition fills: a fetch scans the
partition's stored batches, so its CPU and the produce -> consume latency grow with every batch written.
Measured with plain clients (``python -m tests.bench.broker_growth``) at 1,000 records/s, linger 5 ms,
fetch wait 10 ms, 6 partitions, p99 per 10-s window over 40 s (2026-12-06): one consumer 22, 76, 135, 317 ms (Tansu 92 % of a core); two consumers 64,
114, 164, 244 ms (157 %); linger 50 ms 58, 59, 58, 61 ms (18 %); a fresh topic starts fast again. A 10-s baseline
therefore understated the broker's share of a 60-s run, and a live tap consumer slowed the run it timed.

The sink starts at the topic's end (its group's committed offsets are seeded with the high watermarks), so
records other benchmarks left on bizbus.pm.timesheet.v1 are not replayed into the measurement.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.bench.cdc import create_topics, stack_of, wait_until
from tests.bench.core import BenchContext, BenchResult, percentiles
from tests.bench.http_sender import PacedSender
from tests.chaos.harness import Worker, write_pipeline
from tests.fakes.jira_api import JiraCloudFake, JiraWebhookSender

NAME = "latency"
RATES = (1000, 5000)
TARGET_RATE = 1000  # the issue's target: p99 < 250 ms here
# The sink, set for latency (its defaults are set for throughput): consume() waits for a full batch (500) or
# batch_timeout_seconds, so with the default 0.2 s each record at 1,000/s waited 0-200 ms there; and the
# embedded broker (Tansu) holds a fetch for the consumer's whole fetch.wait.max.ms (librdkafka default 500)
# even when records arrive meanwhile (measured, plain consumer polling one record at a time at 1,000/s:
# p50 132 ms with the default, 7 ms with 10 ms). Together: sink stage p50 ~230 ms, p99 ~480 ms.
SINK_BATCH_TIMEOUT = 0.02
SINK_CLIENT_CONFIG = "fetch.wait.max.ms=10\n"  # BIZBUS_KAFKA_CLIENT_CONFIG_FILE of the sink worker
TOPIC = "bizbus.pm.timesheet.v1"
SOURCE_TOPICS = ("bizbus.pm.project.v1", "bizbus.pm.task.v1", TOPIC)
SECRET_ENV, TOKEN_ENV = "BENCH_JIRA_SECRET", "BENCH_JIRA_TOKEN"
AUTHOR = "557058:0f3a9e1c-bench-author"


def paced(rate: int, seconds: float, threads: int, send: Callable[[int], bool]) -> dict[str, Any]:
    """Call ``send(seq)`` ``rate`` times a second for ``seconds`` from ``threads`` threads, each on its own
    schedule (a late thread sends at once; after ``seconds`` + 1 s it stops); returns offered/achieved
    figures."""
    total = int(rate * seconds)
    ok, failed, lag = [0] * threads, [0] * threads, [0.0] * threads
    t0 = time.monotonic() + 0.2
    stop_at = t0 + seconds + 1.0  # what could not be sent in time is not offered (reported as not sent)

    def loop(i: int) -> None:
        for seq in range(i, total, threads):
            due = t0 + seq / rate
            now = time.monotonic()
            if now > stop_at:
                return
            if due > now:
                time.sleep(due - now)
            else:
                lag[i] = max(lag[i], now - due)
            if send(seq):
                ok[i] += 1
            else:
                failed[i] += 1

    ts = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - t0
    return {"offered_rate": rate, "planned": total, "sent_ok": sum(ok), "failed": sum(failed),
            "achieved_rate": round(sum(ok) / elapsed, 1), "send_seconds": round(elapsed, 2),
            "sender_threads": threads, "max_schedule_lag_ms": round(max(lag) * 1000, 1),
            "not_sent_in_time": total - sum(ok) - sum(failed)}  # fmt: skip


def broker_baseline(
    ctx: BenchContext, rate: int, seconds: float, topic: str
) -> tuple[dict[str, float], dict[str, Any]]:
    """Plain confluent-kafka produce -> consume latency at ``rate`` (send time in the value)."""
    timed, sent = produce_consume(ctx.bootstrap, topic, rate, seconds)
    return percentiles([ms for _, ms in timed]), sent


def produce_consume(bootstrap: str, topic: str, rate: int, seconds: float, consumers: int = 1,
                    linger_ms: int = 5, window: Callable[[str], None] | None = None,
                    ) -> tuple[list[tuple[float, float]], dict[str, Any]]:  # fmt: skip
    """Produce at ``rate`` for ``seconds`` (idempotent, acks=all, send time in the value) while ``consumers``
    plain consumers (own groups, fetch wait 10 ms, from the topic's end) fetch it; (send time, latency ms)
    of each record the first consumer got, and the sender's report. ``window("start")`` is called just
    before the first send, ``window("end")`` once every record arrived (or 30 s after the last send)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "acks": "all",
                         "enable.idempotence": True})  # fmt: skip
    group = uuid.uuid4().hex[:6]
    members = []
    for i in range(consumers):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-lat-{group}-{i}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 10})  # fmt: skip
        parts = c.list_topics(topic, 10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
                  for p in parts])  # fmt: skip
        c.consume(10, 1.0)  # let the fetchers start
        members.append(c)
    timed: list[tuple[float, float]] = []
    stop = threading.Event()

    def consume(c: Consumer, keep: bool) -> None:
        while not stop.is_set():
            m = c.poll(0.1)  # one at a time: consume(n, t) would wait for n records or t seconds
            if keep and m is not None and m.error() is None:
                sent_at = float(m.value())
                timed.append((sent_at, (time.time() - sent_at) * 1000))

    threads = [threading.Thread(target=consume, args=(c, i == 0), daemon=True) for i, c in enumerate(members)]
    for t in threads:
        t.start()
    lock = threading.Lock()

    def send(seq: int) -> bool:
        with lock:
            producer.produce(topic, key=str(seq % 64).encode(), value=repr(time.time()).encode())
            producer.poll(0)
        return True

    if window is not None:
        window("start")
    sent = paced(rate, seconds, 1, send)
    producer.flush(30)
    deadline = time.monotonic() + 30
    while len(timed) < sent["sent_ok"] and time.monotonic() < deadline:
        time.sleep(0.1)
    if window is not None:
        window("end")
    stop.set()
    for t in threads:
        t.join(5)
    for c in members:
        c.close()
    return timed, sent


def run(ctx: BenchContext) -> list[BenchResult]:
    seconds = ctx.size(60, minimum=3)
    short_base = min(seconds, ctx.size(10, minimum=3))
    tag = uuid.uuid4().hex[:8]
    src, sink = f"bench-jira-{tag}", f"bench-lat-{tag}"
    schema, raw_topic = f"bench_lat_{tag}", f"bizbus.bench.latency-raw-{tag}.v1"
    secret = uuid.uuid4().hex
    create_topics(ctx.bootstrap, [*SOURCE_TOPICS, *(f"{raw_topic}-{rate}" for rate in RATES)])
    conn = psycopg.connect(ctx.pg_dsn, autocommit=True)
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"""CREATE TABLE {schema}.entries (effect_id text, worklog_id text, sent text, part int,
                     kafka_offset bigint, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())""")
    ledger = f"bench_ledger_{tag}"
    seed_offsets(ctx, conn, sink, ledger)
    port = free_port()
    pipeline = write_pipeline(ctx.workdir / f"latency-{tag}.yaml", [
        {"name": src, "type": "jira", "config": {
            "base_url": "http://127.0.0.1:9", "email": "bench@example.com", "token_env": TOKEN_ENV,
            "secret_env": SECRET_ENV, "company": "Bench Co", "backfill": False, "state_dsn": ctx.pg_dsn}},
        {"name": sink, "type": "pg-table", "config": {
            "topics": [TOPIC], "dsn": ctx.pg_dsn, "table": f"{schema}.entries",
            "batch_timeout_seconds": SINK_BATCH_TIMEOUT,
            "ledger_schema": ledger,  # private ledger: see tests/bench/sinks.py
            "columns": {"effect_id": "$effect_id", "worklog_id": "worklog_id", "sent": "description",
                        "part": "$partition", "kafka_offset": "$offset"}}},
    ])  # fmt: skip
    env = {SECRET_ENV: secret, TOKEN_ENV: "unused-token"}
    client_config = ctx.workdir / f"sink-client-{tag}.properties"
    client_config.write_text(SINK_CLIENT_CONFIG)
    admin = free_port()
    workers = [Worker(src, stack_of(ctx), pipeline, env={**env, "BIZBUS_HTTP_PORT": str(port),
                                                         "BIZBUS_ADMIN_PORT": str(admin)}),
               Worker(sink, stack_of(ctx), pipeline, env={**env, "BIZBUS_KAFKA_CLIENT_CONFIG_FILE": str(client_config)})]  # fmt: skip
    results: list[BenchResult] = []
    try:
        for w in workers:
            w.start()
        wait_until(
            lambda: answers(f"http://127.0.0.1:{admin}/readyz"), 60, "the jira worker's HTTP server", workers
        )
        url = f"http://127.0.0.1:{port}/webhooks/{src}"
        hook = Hooks(url, secret)
        hook.setup()

        def rows(prefix: str) -> int:
            return conn.execute(
                f"SELECT count(*) FROM {schema}.entries WHERE sent LIKE %s", (prefix + "%",)
            ).fetchone()[0]

        ctx.progress("latency: warming up source and sink")
        warm = hook.paced("warm", 50, 2)
        wait_until(lambda: rows("lat:warm:") >= warm["sent_ok"], 90, "the warm-up rows", workers)
        for rate in RATES:
            ctx.progress(f"latency: {rate} webhooks/s for {seconds}s")
            marks = CreateTimes(ctx.bootstrap, TOPIC)
            sent = hook.paced(str(rate), rate, seconds)
            prefix = f"lat:{rate}:"
            try:
                wait_until(
                    lambda prefix=prefix, n=sent["sent_ok"]: rows(prefix) >= n,
                    60 + n_over(sent),
                    f"{sent['sent_ok']} rows",
                    workers,
                )
                drained = True
            except RuntimeError:
                drained = False
            timed = conn.execute(
                f"SELECT split_part(sent, ':', 3)::float8, (extract(epoch FROM applied_at) - split_part(sent, ':', 3)::float8) * 1000"
                f" FROM {schema}.entries WHERE sent LIKE %s", (prefix + "%",)).fetchall()  # fmt: skip
            lat = [ms for _, ms in timed]
            bus = percentiles(lat)
            from_due = percentiles([r[0] for r in conn.execute(
                f"SELECT (extract(epoch FROM applied_at) - split_part(sent, ':', 4)::float8) * 1000"
                f" FROM {schema}.entries WHERE sent LIKE %s", (prefix + "%",)).fetchall()])  # fmt: skip
            split = stages(conn, schema, src, prefix, marks.read())
            # the embedded broker's fetches slow down as a partition's stored batches grow (see the module
            # docstring), so at the target rate the baseline runs as long as the measurement, on a fresh topic
            base_seconds = seconds if rate == TARGET_RATE else short_base
            ctx.progress(f"latency: broker baseline at {rate}/s for {base_seconds}s")
            base, base_sent = broker_baseline(ctx, rate, base_seconds, f"{raw_topic}-{rate}")
            results.append(BenchResult(
                benchmark=NAME, metric=f"p99 ms at {rate} rec/s (webhook -> PostgreSQL row)",
                figure=bus.get("p99", 0.0), baseline=base.get("p99", 0.0),
                baseline_what="broker alone: confluent-kafka produce -> consume p99 at the same offered rate "
                "(idempotent, acks=all, linger 5 ms; consumer in another thread, fetch wait 10 ms, polling one "
                "record at a time)",
                unit="ms", higher_is_better=False,
                target="p99 < 250 ms at 1000 rec/s" if rate == TARGET_RATE else "(none at 5000 rec/s; reported)",
                details={
                    "latency_ms": bus, "latency_from_due_ms": from_due, "baseline_latency_ms": base, **split,
                    "p99_ms_per_10s": by_window(timed, 10.0),
                    "sender": sent,
                    "baseline_sender": base_sent,
                    "seconds": seconds, "baseline_seconds": base_seconds, "rows_applied": len(lat),
                    "all_rows_applied": drained,
                    "note": "one sender (asyncio, open loop, keep-alive connection pool; each request signed "
                    "like Jira) on the same 2 cores as the broker, PostgreSQL and both workers; sender.answer_ms "
                    "is the endpoint's answer time, sender.schedule_lag_ms how late the sender was (it waits for a free "
                    "connection when all 256 are busy; latency_from_due_ms counts that wait too)",
                    "sink_config": f"pg-table: batch_size 500 (default), batch_timeout_seconds {SINK_BATCH_TIMEOUT}"
                    f" (default 0.2); client config {SINK_CLIENT_CONFIG.strip()} (librdkafka default 500)",
                    "source_config": "jira inbox defaults: batch_size 200; worker idle wait 50 ms",
                },
            ))  # fmt: skip
    finally:
        for w in workers:
            w.stop()
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        for table in ("inbox", "jira_issues", "jira_worklogs"):
            conn.execute(f'DROP TABLE IF EXISTS bizbus_state."{table}_{src.replace("-", "_")}"')
        conn.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (src,))
        conn.execute(f"DROP SCHEMA IF EXISTS {ledger} CASCADE")
        conn.close()
    return results


def by_window(timed: list[tuple[float, float]], width: float) -> list[float]:
    """p99 latency (ms) of the webhooks sent in each ``width``-second window of the run, in order: whether
    the figure is steady or made by a few bad moments."""
    if not timed:
        return []
    t0 = min(t for t, _ in timed)
    windows: dict[int, list[float]] = {}
    for t, ms in timed:
        windows.setdefault(int((t - t0) // width), []).append(ms)
    return [percentiles(windows[k]).get("p99", 0.0) for k in sorted(windows)]


def n_over(sent: dict[str, Any]) -> float:
    return sent["sent_ok"] / 500


class Hooks:
    """Builds signed worklog_created webhooks (as Jira signs them: JiraWebhookSender) and posts them paced."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.sender = JiraWebhookSender(url, secret)
        self.jira = JiraCloudFake()

    def setup(self) -> None:
        """The project and issue first, so worklogs find their project without a Jira API call."""
        self.jira.add_project("BENCH", "Latency benchmark")
        self.issue = self.jira.add_issue("BENCH", "Benchmark issue")
        req = self.sender.build("jira:issue_created", issue=self.issue)
        r = httpx.post(self.url, content=req.body, headers=req.headers, timeout=30)
        if r.status_code >= 300:
            raise RuntimeError(f"issue_created webhook answered {r.status_code}: {r.text[:200]}")
        self.template = self.jira.worklog_json(
            self.jira.add_worklog(self.issue["id"], AUTHOR, 3600, "2026-11-02T09:00:00.000+0800", "x")["id"]
        )

    def build(self, run: str, seq: int, due: float) -> tuple[bytes, dict[str, str]]:
        """One worklog_created body carrying its send time (now) and when it was due, signed; called right
        before the write."""
        sent = time.time()
        wl = {**self.template, "id": f"{run}{seq:08d}".replace("warm", "9"),
              "comment": f"lat:{run}:{sent!r}:{due!r}"}  # fmt: skip
        req = self.sender.build("worklog_created", worklog=wl)
        return req.body, req.headers

    def paced(self, run: str, rate: int, seconds: float) -> dict[str, Any]:
        return PacedSender(self.url, lambda seq, due: self.build(run, seq, due)).run(rate, seconds)


class CreateTimes:
    """Each record's CreateTime (set by the source's produce call), read after the run: the high watermarks
    are noted when the run starts, and ``read()`` fetches from there once the rows are in. Not a live tap:
    a second consumer fetching every 10 ms during the run doubled the embedded broker's fetch work and its
    CPU (Tansu's memory engine scans a partition's stored batches per fetch; measured with one vs two plain
    consumers at 1,000/s, see the module docstring), so the observer would have slowed what it observed."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-marks-{uuid.uuid4().hex[:6]}"})
        try:
            parts = c.list_topics(topic, 10).topics[topic].partitions
            self.start = {p: c.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts}
        finally:
            c.close()

    def read(self, timeout: float = 60.0) -> dict[tuple[int, int], float]:
        """(partition, offset) -> CreateTime (epoch seconds) of every record written since the start."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bench-marks-{uuid.uuid4().hex[:6]}",
                      "enable.auto.commit": False})  # fmt: skip
        out: dict[tuple[int, int], float] = {}
        try:
            end = {p: c.get_watermark_offsets(TopicPartition(self.topic, p), 10)[1] for p in self.start}
            c.assign([TopicPartition(self.topic, p, o) for p, o in self.start.items()])
            want = sum(max(0, end[p] - self.start[p]) for p in self.start)
            deadline = time.monotonic() + timeout
            while len(out) < want and time.monotonic() < deadline:
                for m in c.consume(5000, 0.5):
                    if m.error() is None and m.offset() < end[m.partition()]:
                        out[(m.partition(), m.offset())] = m.timestamp()[1] / 1000
        finally:
            c.close()
        return out


def stages(conn: psycopg.Connection[Any], schema: str, source: str, prefix: str,
           created: dict[tuple[int, int], float]) -> dict[str, Any]:  # fmt: skip
    """Where the time went, per stage (ms): webhook -> inbox -> produced -> row."""
    inbox = f'bizbus_state."inbox_{source.replace("-", "_")}"'
    got = conn.execute(
        f"SELECT split_part(e.sent, ':', 3)::float8, extract(epoch FROM i.received_at)::float8, e.part,"
        f" e.kafka_offset, extract(epoch FROM e.applied_at)::float8"
        f" FROM {schema}.entries e JOIN {inbox} i ON i.payload->'worklog'->>'comment' = e.sent"
        f" WHERE e.sent LIKE %s", (prefix + "%",)).fetchall()  # fmt: skip
    split: dict[str, list[float]] = {"webhook_to_inbox_ms": [], "inbox_to_produced_ms": [],
                                     "produced_to_row_ms": []}  # fmt: skip
    for sent, received, part, offset, applied in got:
        split["webhook_to_inbox_ms"].append((received - sent) * 1000)
        if (part, offset) in created:
            produced = created[(part, offset)]
            split["inbox_to_produced_ms"].append((produced - received) * 1000)
            split["produced_to_row_ms"].append((applied - produced) * 1000)
    return {k: percentiles(v) for k, v in split.items()}


def seed_offsets(ctx: BenchContext, conn: psycopg.Connection[Any], connector: str, ledger_schema: str) -> None:
    """Start the sink at the end of TOPIC: its group's committed Kafka offsets = the current high watermarks (the
    sink starts at Kafka's committed offset; a ledger position it cannot verify it would not trust)."""
    from bizbus.connectors.runtime.ledger import PgLedger

    ledger = PgLedger(ctx.pg_dsn, connector, ledger_schema)
    ledger.setup()
    ledger.close()
    c = Consumer({"bootstrap.servers": ctx.bootstrap, "group.id": f"bizbus-sink-{connector}",
                  "enable.auto.commit": False})  # fmt: skip
    try:
        ends = [TopicPartition(TOPIC, p, c.get_watermark_offsets(TopicPartition(TOPIC, p), 10)[1])
                for p in c.list_topics(TOPIC, 10).topics[TOPIC].partitions]  # fmt: skip
        c.commit(offsets=ends, asynchronous=False)
    finally:
        c.close()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def free_port() -> int:
    from bizbus.devstack.procs import free_port as fp

    return fp()
