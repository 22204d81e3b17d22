"""Probe of the embedded broker alone: plain produce -> consume latency at a fixed rate, per 10-s window,
and the broker's CPU, for a few client settings. It shows how Tansu's memory engine slows down as a
partition fills (a fetch scans the partition's stored batches) and what a second consumer or a longer
producer linger does to that.

    python -m tests.bench.broker_growth [--seconds 40] [--rate 1000]

Each setting runs on a fresh 6-partition topic of one private Tansu (tests/chaos/harness.private_stack):
one consumer (fetch wait 10 ms) and an idempotent producer (acks=all, linger 5 ms), as the latency
benchmark's baseline; then two consumers; then linger 50 ms. One JSON line per setting:
``p99_ms_per_10s`` (p99 of the records sent in each 10-s window) and ``broker_cpu_percent`` (Tansu's
user + system CPU over the run, % of one core; -1 if its process was not found). Compare runs of the same machine only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.bench.cdc import create_topics
from tests.bench.core import process_cpu
from tests.bench.latency import by_window, produce_consume
from tests.bench.processor import broker_pid
from tests.chaos.harness import private_stack

SETTINGS: tuple[dict[str, int], ...] = (
    {"consumers": 1, "linger_ms": 5},
    {"consumers": 2, "linger_ms": 5},
    {"consumers": 1, "linger_ms": 50},
)


def run_setting(bootstrap: str, broker: int | None, seconds: float, rate: int, consumers: int,
                linger_ms: int) -> dict[str, Any]:  # fmt: skip
    """One setting on a fresh topic; the first consumer's latencies are kept, the others only fetch."""
    topic = f"bizbus.bench.growth-{uuid.uuid4().hex[:8]}.v1"
    create_topics(bootstrap, [topic])
    marks: dict[str, tuple[float, float]] = {}

    def window(edge: str) -> None:
        marks[edge] = (process_cpu(broker) if broker else 0.0, time.monotonic())

    timed, _sent = produce_consume(bootstrap, topic, rate, seconds, consumers, linger_ms, window)
    (cpu0, t0), (cpu1, t1) = marks["start"], marks["end"]
    cpu = ((cpu1 - cpu0) / (t1 - t0) * 100) if broker else -1
    return {"consumers": consumers, "linger_ms": linger_ms, "rate": rate, "seconds": seconds,
            "records": len(timed), "p99_ms_per_10s": by_window(timed, 10.0),
            "broker_cpu_percent": round(cpu)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=40.0, help="per setting (default 40)")
    ap.add_argument("--rate", type=int, default=1000, help="records/s offered (default 1000)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bizbus-growth-") as d, private_stack(Path(d), {}) as st:
        pid = broker_pid(st.bootstrap)
        for setting in SETTINGS:
            print(json.dumps(run_setting(st.bootstrap, pid, args.seconds, args.rate, **setting)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
