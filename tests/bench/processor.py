"""Processor throughput: the F2 labor-cost flow (timesheet -> voucher, joined with the project's cost center
and the employee's hourly rate, Avro in and out) as real ``bizbus flows run`` worker processes, against a
raw confluent-kafka loop over the same input in one process (consume -> fastavro decode -> build a
voucher-like record -> encode -> produce, Confluent wire header).

Input: ``ctx.size(200_000)`` TimesheetEntry records on the catalogue's 6-partition timesheet topic, keyed
by one of 60 projects, each encoded properly (no patched template). Master data first: the projects on the
project topic (the flow derives each cost center from it), the employees' rates in the F2 mapping file.

Stages, in this order: the raw baseline; one worker; two workers (two ``flows run`` processes with the same
app id, started together, sharing the 6 partitions and the global master-data tables). Each worker stage runs under a fresh pipeline name, so a fresh Faust app
id (consumer group and table changelogs): it reads the same input from the start. A plain consumer in this
process watches the voucher topic and counts DISTINCT voucher numbers of this run (a rebalance may
re-send some; those are not counted twice). The figure is records/s from the first to the last voucher
seen (the worker's start-up and table recovery are left out; the seconds from process start to the last
voucher are in the details); for two workers, from the moment both logged Faust's "Ready" (both consume) to
the last voucher, counting only the vouchers that came after it. The CPU use of the workers, the broker and
the whole machine in the timed window is in the details (``cpu_in_window``): a machine near 100 % busy
limits the figure, not the code. The baseline is timed from its first consumed record to the producer's
final flush.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import fastavro
import yaml
from bizbus.schemas import catalog
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import lineage
from bizbus.catalogue import apply, load_catalogue
from bizbus.devstack.stack import register_schemas
from bizbus.serde import AvroSerde
from tests.bench.core import BenchContext, BenchResult, CpuWindow, produce

NAME = "processor"
ROOT = Path(__file__).resolve().parents[2]
TIMESHEET = "bizbus.pm.timesheet.v1"
PROJECT = "bizbus.pm.project.v1"
VOUCHER = "bizbus.finance.voucher.v1"
PROJECTS = 60
EMPLOYEES = 13
WORK_DATE = date(2026, 3, 2)
AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CENT = Decimal("0.01")
TARGET = 0.30
STALL = 120.0  # seconds without a new voucher (start-up included): the flow is stuck


class Avro:
    """Fast wire-format encoding with a registered schema id (what AvroSerde.encode does, minus its checks)."""

    def __init__(self, serde: AvroSerde, subject: str, schema_name: str) -> None:
        schema = catalog.load(schema_name)
        self.schema_id = serde.register(subject, schema)
        self.parsed = fastavro.parse_schema(schema)
        self.header = struct.pack(">bI", 0, self.schema_id)

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self.header)
        fastavro.schemaless_writer(buf, self.parsed, record)
        return buf.getvalue()


def _meta(system: str, entity: str, key: str, corr: str) -> dict[str, Any]:
    return lineage.meta(lineage.event_id(system, entity, key, 1), corr, system, AT)


def project_record(code: str) -> dict[str, Any]:
    return {"meta": _meta("bench", "project", code, code), "op": "CREATED", "project": code, "name": f"Bench {code}",
            "company": "SH01", "source_status": None, "manager": "E0001", "customer": None, "cost_center": f"CC-{code}",
            "planned_start": date(2026, 1, 5), "planned_end": None, "actual_end": None, "budget_amount": None,
            "currency": None, "version": 1}  # fmt: skip


def timesheet_record(worklog: str, project: str, n: int) -> dict[str, Any]:
    return {"meta": _meta("bench", "worklog", worklog, project), "op": "CREATED", "worklog_id": worklog,
            "project": project, "task": None, "employee": f"E{n % EMPLOYEES:04d}", "work_date": WORK_DATE,
            "hours": Decimal(f"{1 + n % 8}.25"), "billable": True, "description": None, "version": 1}  # fmt: skip


def seed(ctx: BenchContext, tag: str, n: int) -> dict[int, int]:
    """Topics, schemas, projects and ``n`` timesheets; returns the timesheet offsets where this run starts."""
    conf = {"bootstrap.servers": ctx.bootstrap}
    cat = load_catalogue(ROOT / "deploy" / "topics.yaml")
    admin = AdminClient(conf)
    failed = [s for s in apply(admin, cat) if s.action.startswith("FAILED")]
    if failed:
        raise RuntimeError(f"catalogue topics not created: {failed}")
    serde = AvroSerde({"url": ctx.registry_url})
    register_schemas(serde, cat)
    parts = cat.get(TIMESHEET).partitions
    starts = high_watermarks(ctx.bootstrap, TIMESHEET, parts)
    producer = Producer({**conf, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000,
                         "batch.size": 1_000_000, "compression.type": "none"})  # fmt: skip
    prj = Avro(serde, cat.get(PROJECT).subject, cat.get(PROJECT).value_schema)
    for i in range(PROJECTS):
        rec = project_record(f"BP{tag}{i:02d}")
        producer.produce(
            PROJECT, key=rec["project"].encode(), value=prj.encode(rec), headers=lineage.headers(rec["meta"])
        )
    producer.flush(30)
    ts = Avro(serde, cat.get(TIMESHEET).subject, cat.get(TIMESHEET).value_schema)
    t0 = time.monotonic()
    for i in range(n):
        rec = timesheet_record(f"{tag}{i:07d}", f"BP{tag}{i % PROJECTS:02d}", i)
        produce(producer, TIMESHEET, ts.encode(rec), rec["project"].encode(), lineage.headers(rec["meta"]))
        if i % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} input records were not acknowledged by the broker")
    ctx.progress(f"produced {n:,} timesheet records in {time.monotonic() - t0:.1f} s")
    return starts


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-hw-{uuid.uuid4().hex[:8]}"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)
        }
    finally:
        c.close()


# -- the baseline: a raw confluent-kafka Avro loop --------------------------------------------------------


def broker_pid(bootstrap: str) -> int | None:
    """The pid of the local Tansu serving ``bootstrap`` (None for another broker)."""
    port = bootstrap.split(",")[0].rsplit(":", 1)[-1]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"tansu" in cmd and f":{port} ".encode() in cmd + b" ":
            return int(proc.name)
    return None


def cpu_window(ctx: BenchContext, workers: dict[str, int]) -> CpuWindow:
    pids = dict(workers)
    broker = broker_pid(ctx.bootstrap)
    if broker is not None:
        pids["broker"] = broker
    return CpuWindow(pids)


def raw_loop(ctx: BenchContext, tag: str, n: int, starts: dict[int, int],
             run: int = 1) -> tuple[float, float, dict[str, float]]:  # fmt: skip
    """records/s, seconds and CPU use of consume -> decode -> voucher-like record -> encode -> produce over
    the input (``run``: the how-manieth pass over it, each into its own output topic)."""
    conf = {"bootstrap.servers": ctx.bootstrap}
    out_topic = f"bench.processor.raw-{tag}-{run}"
    admin = AdminClient(conf)  # kept referenced until the futures resolved
    for f in admin.create_topics([NewTopic(out_topic, 6, 1)]).values():
        f.result(15)
    serde = AvroSerde({"url": ctx.registry_url})
    cat = load_catalogue(ROOT / "deploy" / "topics.yaml")
    reader = fastavro.parse_schema(catalog.load(cat.get(TIMESHEET).value_schema))
    out = Avro(serde, cat.get(VOUCHER).subject, cat.get(VOUCHER).value_schema)
    rates = {f"E{i:04d}": Decimal(f"{100 + i}.50") for i in range(EMPLOYEES)}
    consumer = Consumer({**conf, "group.id": f"bench-raw-{tag}-{run}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.assign([TopicPartition(TIMESHEET, p, o) for p, o in starts.items()])
    producer = Producer({**conf, "linger.ms": 10, "queue.buffering.max.messages": 1_000_000})
    done, t0 = 0, 0.0
    cpu = cpu_window(ctx, {"loop": os.getpid()})
    while done < n:
        for m in consumer.consume(2000, 1.0):
            if m.error() is not None or done >= n:
                continue
            if not t0:
                t0 = time.monotonic()
                cpu.start()
            entry = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), reader, None)
            value = voucher_like(entry, rates[entry["employee"]])
            produce(producer, out_topic, out.encode(value), value["voucher_no"].encode(), lineage.headers(value["meta"]))
            done += 1
        producer.poll(0)
    producer.flush(60)
    seconds = time.monotonic() - t0
    used = cpu.stop()
    consumer.close()
    return done / seconds, seconds, used


def voucher_like(entry: dict[str, Any], rate: Decimal) -> dict[str, Any]:
    """What the flow builds from an entry, minus the tables: amount, two lines, derived meta."""
    total = (entry["hours"] * rate).quantize(CENT, rounding=ROUND_HALF_UP)
    src = entry["meta"]
    meta = lineage.meta(lineage.derived_id(src["event_id"], "voucher"), entry["project"], "bizbus",
                        src["occurred_at"], src["event_id"], {"flow": "labor-cost"})  # fmt: skip
    text = f"Labor {entry['employee']} {entry['work_date']}: {entry['hours']} h x {rate} CNY/h"
    zero = Decimal("0.00")
    lines = [{"line_no": 1, "account_code": "6601", "cost_center": f"CC-{entry['project']}", "project": entry["project"],
              "debit": total, "credit": zero, "description": text},
             {"line_no": 2, "account_code": "2211", "cost_center": None, "project": None, "debit": zero,
              "credit": total, "description": text}]  # fmt: skip
    return {"meta": meta, "voucher_no": f"LAB-{entry['worklog_id']}-{entry['version']}", "company": "SH01",
            "voucher_type": "记", "posting_date": entry["work_date"], "currency": "CNY", "exchange_rate": None,
            "lines": lines, "reversal_of": None, "description": text,
            "source_refs": [{"system": src["source_system"], "document_type": "worklog",
                             "document_no": entry["worklog_id"], "line_no": None}]}  # fmt: skip


# -- the flow: `bizbus flows run` workers -----------------------------------------------------------------


class VoucherWatch:
    """Reads the voucher topic from where it ended when created; counts distinct voucher numbers of a run."""

    def __init__(self, bootstrap: str, prefix: bytes) -> None:
        self.prefix = prefix
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False})  # fmt: skip
        self.consumer.assign([TopicPartition(VOUCHER, p, OFFSET_END) for p in range(6)])
        self.drain(1.0)

    def drain(self, idle: float) -> int:
        """Consume until ``idle`` seconds bring nothing; returns how many records went by."""
        seen, last = 0, time.monotonic()
        while time.monotonic() - last < idle:
            msgs = self.consumer.consume(5000, 0.2)
            if msgs:
                seen += len(msgs)
                last = time.monotonic()
        return seen

    def until(
        self, expected: int, timeout: float, alive: Any, tick: Any = None
    ) -> tuple[float, float, int, int]:
        """Wait for ``expected`` distinct vouchers; (first seen, last seen, count at first, records read).
        ``tick(distinct count)`` runs on every poll."""
        keys: set[bytes] = set()
        first = last = 0.0
        at_first = read = 0
        deadline = time.monotonic() + timeout
        moved = time.monotonic()
        while len(keys) < expected:
            now = time.monotonic()
            if now > deadline or now - moved > STALL:
                raise TimeoutError(f"{len(keys):,} of {expected:,} vouchers after {timeout:.0f} s "
                                   f"(none new for {now - moved:.0f} s)")  # fmt: skip
            alive()
            for m in self.consumer.consume(5000, 0.2):
                if m.error() is None and m.key() is not None and m.key().startswith(self.prefix):
                    read += 1
                    keys.add(m.key())
                    moved = time.monotonic()
            if keys and not first:
                first, at_first = time.monotonic(), len(keys)
            if tick is not None:
                tick(len(keys))
        last = time.monotonic()
        return first, last, at_first, read

    def close(self) -> None:
        self.consumer.close()


def write_pipeline(ctx: BenchContext, name: str) -> Path:
    mapping = yaml.safe_load((ROOT / "streams" / "labor_cost" / "f2_labor_cost.yaml").read_text())
    mapping["rates"] = [{"employee": f"E{i:04d}", "rate": f"{100 + i}.50", "valid_from": "2026-01-01"}
                        for i in range(EMPLOYEES)]  # fmt: skip
    mpath = ctx.workdir / f"{name}.f2.yaml"
    mpath.write_text(yaml.safe_dump(mapping, allow_unicode=True))
    doc = {"version": 1, "name": name, "connectors": [],
           "flows": [{"name": "labor-cost", "type": "labor-cost", "config": {"mapping": str(mpath)}}]}  # fmt: skip
    path = ctx.workdir / f"{name}.pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def start_worker(ctx: BenchContext, pipeline: Path, name: str, i: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": ctx.bootstrap, "SCHEMA_REGISTRY_URL": ctx.registry_url,
           "BIZBUS_HTTP_PORT": "0", "BIZBUS_ADMIN_PORT": "0", "BIZBUS_DATA_DIR": str(ctx.workdir / f"data-{name}-{i}"),
           "BIZBUS_LOG_LEVEL": "INFO"}  # fmt: skip
    log = open(ctx.workdir / f"{name}.worker{i}.log", "wb")  # noqa: SIM115 (owned by the child)
    cmd = [sys.executable, "-m", "bizbus", "flows", "run", "--pipeline", str(pipeline)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    log.close()
    return proc


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(40)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def flow_stage(ctx: BenchContext, watch: VoucherWatch, tag: str, n: int, workers: int) -> dict[str, Any]:
    """Run ``workers`` flow processes over the input until every voucher is out; their figures."""
    name = f"bench-{tag.lower()}-{workers}w"
    pipeline = write_pipeline(ctx, name)
    t_start = time.monotonic()
    procs = [start_worker(ctx, pipeline, name, 0)]
    joined: dict[str, float] = {}
    cpu: list[CpuWindow] = []  # started with the timed window

    if workers > 1:
        procs += [start_worker(ctx, pipeline, name, i) for i in range(1, workers)]  # all at once

    def ready(i: int) -> bool:
        return "[^Worker]: Ready" in (ctx.workdir / f"{name}.worker{i}.log").read_text(errors="replace")

    def tick(count: int) -> None:
        """With one worker the window opens at the first voucher; with more, once every worker logged Faust's
        "Ready" (all of them consume; the vouchers before are not counted)."""
        if workers < 2:
            if count > 0 and not cpu:
                cpu.append(cpu_window(ctx, {"worker0": procs[0].pid}))
                cpu[0].start()
            return
        if "ready" not in joined and all(ready(i) for i in range(workers)):
            joined.update(ready=time.monotonic(), count=count)
            cpu.append(cpu_window(ctx, {f"worker{i}": p.pid for i, p in enumerate(procs)}))
            cpu[0].start()

    def alive() -> None:
        for i, p in enumerate(procs):
            if p.poll() is not None:
                log = (ctx.workdir / f"{name}.worker{i}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"flow worker {i} of {name} exited with {p.returncode}:\n{log}")

    try:
        first, last, at_first, read = watch.until(n, timeout=180 + n / 300, alive=alive, tick=tick)
        used = cpu[0].stop() if cpu else {}
    except TimeoutError as exc:
        logs = "\n".join(f"--- worker {i}\n" + (ctx.workdir / f"{name}.worker{i}.log").read_text(errors="replace")[-2000:]
                         for i in range(workers))  # fmt: skip
        raise TimeoutError(f"{name}: {exc}\n{logs}") from None
    finally:
        stop(procs)
    late = watch.drain(2.0)  # anything of this stage still coming (duplicates) is consumed now
    seconds = last - first
    timed = "first to last voucher"
    if seconds > 0 and n > at_first:
        rate = (n - at_first) / seconds
    else:  # a tiny run's vouchers all came in the first poll: time them from the process start instead
        timed = "process start to last voucher (all vouchers came in the first poll)"
        rate = n / max(last - t_start, 1e-3)
    out: dict[str, Any] = {}
    if workers > 1:
        out["all_workers_ready"] = "ready" in joined
        if "ready" in joined and last > joined["ready"] and n - joined["count"] > 0:
            timed = "all workers Ready to last voucher"
            rate = (n - joined["count"]) / (last - joined["ready"])
            out.update(
                vouchers_before_all_ready=int(joined["count"]), window_s=round(last - joined["ready"], 2)
            )
    ctx.progress(f"{workers} worker(s): {rate:,.0f} records/s ({n:,} vouchers, timed {timed}; {seconds:.1f} s from "
                 f"first to last output, {last - t_start:.1f} s from process start; cpu {used})")  # fmt: skip
    # CPU per record: on two cores shared with the broker, a second worker cannot get a whole core
    cores = sum(v for k, v in used.items() if k.startswith("worker"))
    out["worker_cpu_ms_per_record"] = round(1000 * cores / rate, 3) if rate and cores else None
    return {"records_per_s": rate, "timed": timed, "cpu_in_window": used, "first_to_last_s": round(seconds, 2),
            "start_to_last_s": round(last - t_start, 2), "voucher_records_read": read + late,
            "app": f"bizbus-flows-{name}-labor-cost", **out}  # fmt: skip


def run(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.size(200_000, minimum=500)
    tag = uuid.uuid4().hex[:6].upper()
    starts = seed(ctx, tag, n)
    # the raw loop runs before and after the one-worker stage: a machine whose speed drifts over the minutes
    # of the run (it is shared) then weighs on the baseline as on the flow
    passes = []

    def raw_pass(run_no: int) -> None:
        rate, secs, used = raw_loop(ctx, tag, n, starts, run_no)
        ctx.progress(f"raw confluent-kafka Avro loop, pass {run_no}: {rate:,.0f} records/s ({secs:.1f} s; cpu {used})")
        passes.append((rate, secs, used))

    watch = VoucherWatch(ctx.bootstrap, f"LAB-{tag}".encode())
    try:
        raw_pass(1)
        one = flow_stage(ctx, watch, tag, n, 1)
        raw_pass(2)
        two = flow_stage(ctx, watch, tag, n, 2)
    finally:
        watch.close()
    raw_s = sum(p[1] for p in passes)
    raw_rate = len(passes) * n / raw_s
    base = ("raw confluent-kafka loop, 1 process: consume -> fastavro decode -> voucher-like record -> encode -> "
            "produce (two passes, before and after the 1-worker run: all records / all seconds)")
    common = {"records": n, "input_partitions": 6, "baseline_seconds": round(raw_s, 2),
              "baseline_passes_records_per_s": [round(p[0], 1) for p in passes],
              "baseline_cpu": [p[2] for p in passes]}  # fmt: skip
    scaling = two["records_per_s"] / one["records_per_s"]
    return [
        BenchResult(NAME, "F2 flow records/s, 1 worker", one["records_per_s"], raw_rate, base, "records/s",
                    target=f"ratio >= {TARGET}", details={**common, **one}),
        BenchResult(NAME, "F2 flow records/s, 2 workers", two["records_per_s"], raw_rate, base, "records/s",
                    target="", details={**common, **two, "scaling_2w_over_1w": round(scaling, 3)}),
        BenchResult(NAME, "scaling 2 workers / 1 worker", two["records_per_s"], one["records_per_s"],
                    "the same flow with 1 worker process", "records/s", target="ratio >= 1.6 (near-linear)",
                    details={"two_workers": two["records_per_s"], "one_worker": one["records_per_s"], "cores": os.cpu_count()}),
    ]  # fmt: skip
