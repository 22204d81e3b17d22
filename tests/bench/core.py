"""What every benchmark shares: the run context (broker, registry, PostgreSQL, a work folder, the size) and
the result record written to ``bench/results.json``.

A benchmark module exposes ``NAME`` (short id, e.g. ``processor``) and
``run(ctx: BenchContext) -> list[BenchResult]``. It measures its figure AND its baseline in the same
run (same machine, same broker), so only the ratio is compared across runs; absolute numbers drift.
Progress goes through ``ctx.progress(text)``. Sizes scale with ``ctx.scale`` (1.0 = the default
``make bench``; the tiny smoke run in ``make test`` uses a small scale) — use ``ctx.size(n)``.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class BenchContext:
    bootstrap: str  # Kafka bootstrap servers (embedded Tansu unless KAFKA_BOOTSTRAP_SERVERS is set)
    registry_url: str
    workdir: Path  # a fresh folder for this run (logs, pipeline files)
    scale: float = 1.0
    pg_dsn: str = DSN
    progress: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr, flush=True))

    def size(self, n: int, minimum: int = 10) -> int:
        """``n`` scaled to this run, at least ``minimum``."""
        return max(minimum, int(n * self.scale))


@dataclass(frozen=True)
class BenchResult:
    """One measured figure with its same-run baseline.

    ``higher_is_better`` says how to read the ratio: figure / baseline for throughputs (True),
    baseline / figure for latencies and times (False), so that a ratio of 1.0 means "as good as the
    baseline" either way. ``target`` is the ratio (or, for latencies, the figure) the issue asks for."""

    benchmark: str  # module NAME
    metric: str  # e.g. "records/s (1 worker)", "p99 ms at 1000 rec/s"
    figure: float
    baseline: float
    baseline_what: str  # what the baseline is, in words
    unit: str
    higher_is_better: bool = True
    target: str = ""  # e.g. "ratio >= 0.30", "p99 < 250 ms"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.figure / self.baseline if self.baseline else 0.0
        return self.baseline / self.figure if self.figure else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


def percentiles(values: list[float]) -> dict[str, float]:
    """count, p50, p99, p99.9, max and mean of ``values`` (rounded to 0.01)."""
    if not values:
        return {"count": 0}
    s = sorted(values)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 2)

    return {"count": len(s), "p50": q(0.50), "p99": q(0.99), "p99.9": q(0.999), "max": round(s[-1], 2),
            "mean": round(statistics.fmean(s), 2)}  # fmt: skip


def produce(producer: Any, topic: str, value: bytes, key: bytes | None = None,
            headers: list[tuple[str, bytes]] | None = None, wait: float = 0.05) -> None:  # fmt: skip
    """``producer.produce``, waiting for deliveries while librdkafka's local queue is full (a load
    generator fills it faster than the broker acknowledges)."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:
            producer.poll(wait)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat ((0, 0) elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / 100.0, sum(ticks) / 100.0


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process used so far (0 when it is gone or not on Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    after = stat[stat.rindex(")") + 2 :].split()
    return (int(after[11]) + int(after[12])) / 100.0  # utime, stime in clock ticks (100/s)


@dataclass
class CpuWindow:
    """CPU use between :meth:`start` and :meth:`stop`: how busy the machine was (0..1 of all cores) and the
    CPU seconds of given processes: tells a figure limited by the machine from one limited by the code."""

    pids: dict[str, int]
    started: tuple[float, float, dict[str, float]] | None = None
    figures: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.started = (*machine_cpu(), {n: process_cpu(p) for n, p in self.pids.items()})

    def stop(self) -> dict[str, float]:
        if self.started is None:
            return {}
        busy0, total0, procs0 = self.started
        busy1, total1 = machine_cpu()
        out = {"machine_busy_fraction": round((busy1 - busy0) / (total1 - total0), 3) if total1 > total0 else 0.0}
        wall = (total1 - total0) / max(1, os.cpu_count() or 1)
        for name, pid in self.pids.items():
            used = process_cpu(pid) - procs0.get(name, 0.0)
            out[f"{name}_cores"] = round(used / wall, 2) if wall > 0 else 0.0
        self.figures = out
        return out
