"""What every benchmark shares: the run context (broker, registry, PostgreSQL, a work folder, the size) and
the result record written to ``bench/results.json``.

A benchmark module exposes ``NAME`` (short id, e.g. ``processor``) and
``run(ctx: BenchContext) -> list[BenchResult]``. It measures its figure AND its baseline in the same
run (same machine, same broker), so only the ratio is compared across runs; absolute numbers drift.
Progress goes through ``ctx.progress(text)``. Sizes scale with ``ctx.scale`` (1.0 = the default
``make bench``; the tiny smoke run in ``make test`` uses a small scale) — use ``ctx.size(n)``.
"""

from __future__ import annotations

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
