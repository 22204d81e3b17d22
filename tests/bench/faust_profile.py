"""Standalone throughput probe of the F2 labor-cost flow on Faust (``bizbus flows run``), with an optional
py-spy profile of the worker.

    python -m tests.bench.faust_profile --records 50000 [--workers 2] [--profile] [--keep]

It starts a private Tansu broker and schema registry (tests/chaos/harness.private_stack), creates the
catalogue topics and registers the schemas, seeds master data (projects with a cost center on the project
topic, the employees' hourly rates in the F2 mapping file, as tests/e2e/erp_scenario.py does), produces
``--records`` timesheet entries BEFORE any worker runs, then starts ``--workers`` ``bizbus flows run``
processes and counts the vouchers on the voucher topic. The rate is records / (time of the last voucher -
time of the first one), so the worker's start-up and the table recovery are not part of it.

``--profile`` attaches ``py-spy record`` (raw collapsed stacks) to the first worker while it works and
prints the functions with the most samples (own and inclusive). The figures depend on the machine; compare
runs of the same machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from bizbus.schemas import catalog
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bizbus import lineage
from bizbus.catalogue import apply, load_catalogue
from bizbus.devstack.stack import register_schemas
from bizbus.serde import AvroSerde
from tests.bench.core import process_cpu, produce
from tests.chaos.harness import ROOT, Stack, Worker, private_stack

TIMESHEET_TOPIC = "bizbus.pm.timesheet.v1"
PROJECT_TOPIC = "bizbus.pm.project.v1"
VOUCHER_TOPIC = "bizbus.finance.voucher.v1"
PROJECTS = 12  # timesheets are keyed by project: enough keys to fill every partition
EMPLOYEES = 7
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class FlowRun:
    """What one measured run saw."""

    records: int
    vouchers: int
    workers: int
    seconds: float  # first voucher -> last voucher
    startup_seconds: float  # worker start -> first voucher
    cpu_ms_per_record: float | None = None  # the workers' CPU time per voucher after the first

    @property
    def rate(self) -> float:
        return self.vouchers / self.seconds if self.seconds > 0 else 0.0


def project_record(code: str) -> dict[str, Any]:
    return {"meta": lineage.meta(lineage.event_id("jira", "project", code, 1), code, "jira", T0), "op": "CREATED",
            "project": code, "name": f"Bench {code}", "company": "SH01", "source_status": None, "manager": "E0",
            "customer": None, "cost_center": f"CC-{code}", "planned_start": date(2026, 1, 5), "planned_end": None,
            "actual_end": None, "budget_amount": None, "currency": None, "version": 1}  # fmt: skip


def timesheet_record(n: int) -> dict[str, Any]:
    wid, prj = f"BW{n:08d}", f"BP{n % PROJECTS:02d}"
    return {"meta": lineage.meta(lineage.event_id("jira", "worklog", wid, 1), prj, "jira", T0), "op": "CREATED",
            "worklog_id": wid, "project": prj, "task": None, "employee": f"BE{n % EMPLOYEES}",
            "work_date": date(2026, 3, 2), "hours": Decimal(f"{1 + n % 8}.25"), "billable": True,
            "description": None, "version": 1}  # fmt: skip


def prepare(stack: Stack, records: int, flow_config: dict[str, Any] | None = None) -> Path:
    """Topics, schemas, master data and ``records`` timesheets on ``stack``; returns the pipeline file."""
    conf = {"bootstrap.servers": stack.bootstrap}
    cat = load_catalogue(ROOT / "deploy" / "topics.yaml")
    apply(AdminClient(conf), cat)
    serde = AvroSerde({"url": stack.registry_url})
    register_schemas(serde, cat)
    f2 = yaml.safe_load((ROOT / "streams" / "labor_cost" / "f2_labor_cost.yaml").read_text())
    f2["rates"] = [
        {"employee": f"BE{e}", "rate": f"{100 + e}.50", "valid_from": "2026-01-01"} for e in range(EMPLOYEES)
    ]
    mapping = stack.workdir / "f2.yaml"
    mapping.write_text(yaml.safe_dump(f2, allow_unicode=True))
    pipeline = stack.workdir / "pipeline.yaml"
    config = {"mapping": str(mapping), "master_data_grace_seconds": 30, **(flow_config or {})}
    pipeline.write_text(yaml.safe_dump({"version": 1, "name": "bench", "connectors": [],
                                        "flows": [{"name": "labor-cost", "type": "labor-cost", "config": config}]}))  # fmt: skip
    producer = Producer(
        {**conf, "linger.ms": 20, "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000}
    )
    enc = serde.encoder(f"{PROJECT_TOPIC}-value", catalog.load("bizbus.pm.ProjectChanged"))
    for p in range(PROJECTS):
        rec = project_record(f"BP{p:02d}")
        producer.produce(
            PROJECT_TOPIC, key=rec["project"].encode(), value=enc(rec), headers=lineage.headers(rec["meta"])
        )
    enc = serde.encoder(f"{TIMESHEET_TOPIC}-value", catalog.load("bizbus.pm.TimesheetEntry"))
    for n in range(records):
        rec = timesheet_record(n)
        value = enc(rec)
        produce(producer, TIMESHEET_TOPIC, value, rec["project"].encode(), lineage.headers(rec["meta"]))
        producer.poll(0)
    assert producer.flush(60) == 0, "timesheets not delivered"
    return pipeline


def count_until(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float,
                started: float, on_first: Any = None) -> tuple[int, float | None, float | None]:  # fmt: skip
    """Read ``topic`` from the start until ``expected`` records or ``timeout``; (count, first, last) times.
    ``on_first(count)`` runs when the first records arrive."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 20})  # fmt: skip
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    n, first, last = 0, None, None
    try:
        while n < expected and time.monotonic() - started < timeout:
            msgs = [m for m in c.consume(5000, 0.1) if m.error() is None]
            if msgs:
                now = time.monotonic()
                if first is None and on_first is not None:
                    on_first(len(msgs))
                first = first or now
                n += len(msgs)
                last = now
    finally:
        c.close()
    return n, first, last


def start_profiler(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                             "--duration", str(int(seconds)), "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def summarize(raw: Path, top: int = 30) -> str:
    """Own and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  for f in stack.split(";")]  # fmt: skip
        total += k
        own[frames[-1]] += k
        for f in set(frames):
            incl[f] += k
    if not total:
        return "no samples"
    out = [f"{total} samples; own time:"]
    out += [f"  {100 * k / total:5.1f}%  {f}" for f, k in own.most_common(top)]
    out.append("inclusive:")
    out += [f"  {100 * k / total:5.1f}%  {f}" for f, k in incl.most_common(top)]
    return "\n".join(out)


def measure(stack: Stack, pipeline: Path, records: int, workers: int = 1, profile: bool = False,
            timeout: float = 900.0, env: dict[str, str] | None = None) -> FlowRun:  # fmt: skip
    """Start ``workers`` flow workers on the prepared stack and time the vouchers."""
    procs = [Worker(f"flows#{i}", stack, pipeline, env=dict(env or {}),
                    command=["flows", "run", "--pipeline", str(pipeline)]) for i in range(workers)]  # fmt: skip
    spy = None
    cpu_ms = None  # the workers' CPU milliseconds per record: less sensitive to a busy machine than records/s
    started = time.monotonic()
    for w in procs:
        w.start()
    try:
        if profile:
            assert procs[0].proc is not None
            spy = start_profiler(procs[0].proc.pid, stack.workdir / "pyspy.txt", 60)
        pids = [w.proc.pid for w in procs if w.proc is not None]
        cpu0: dict[str, float] = {}

        def on_first(count: int) -> None:
            cpu0.update(cpu=sum(process_cpu(pid) for pid in pids), count=count)

        n, first, last = count_until(stack.bootstrap, VOUCHER_TOPIC, 6, records, timeout, started, on_first)
        if cpu0 and n > cpu0["count"]:
            used = sum(process_cpu(pid) for pid in pids) - cpu0["cpu"]
            cpu_ms = round(1000 * used / (n - cpu0["count"]), 3)
    finally:
        for w in procs:
            w.stop()
        if spy is not None:
            spy.wait(120)
    if n < records:
        raise SystemExit(
            f"only {n} of {records} vouchers after {timeout:.0f} s\n" + "\n".join(w.logs() for w in procs)
        )
    assert first is not None and last is not None
    return FlowRun(records, n, workers, last - first, first - started, cpu_ms)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="py-spy the first worker (60 s at most)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, profile)")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the workers (repeatable)")
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    work = Path(tempfile.mkdtemp(prefix="faust-profile-"))
    try:
        with private_stack(work, {}) as stack:
            t = time.monotonic()
            pipeline = prepare(stack, args.records)
            print(f"prepared {args.records} timesheets in {time.monotonic() - t:.1f} s", file=sys.stderr)
            run = measure(stack, pipeline, args.records, args.workers, args.profile, env=env)
        print(json.dumps({"records": run.records, "vouchers": run.vouchers, "workers": run.workers,
                          "seconds": round(run.seconds, 2), "startup_seconds": round(run.startup_seconds, 2),
                          "records_per_second": round(run.rate), "worker_cpu_ms_per_record": run.cpu_ms_per_record}))  # fmt: skip
        if args.profile and (work / "pyspy.txt").exists():
            print(summarize(work / "pyspy.txt"))
    finally:
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("BIZBUS_LOG_FORMAT", "json")
    raise SystemExit(main())
