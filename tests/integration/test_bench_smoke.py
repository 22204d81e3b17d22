"""`make bench` kept from rotting: the runner runs every benchmark once at a tiny size (scale 0.005) on its
own private broker and registry, and each must report figures and same-run baselines. No timing is
asserted: the numbers at this size mean nothing. Takes about a minute and a half.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.__main__ import ORDER, met
from tests.bench.core import BenchResult

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]


def test_every_benchmark_reports_figure_and_baseline(postgres, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    # the runner uses KAFKA_BOOTSTRAP_SERVERS + SCHEMA_REGISTRY_URL when both are set, else its own stack
    proc = subprocess.run([sys.executable, "-m", "tests.bench", "--scale", "0.005", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)  # fmt: skip
    assert out.exists(), proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert doc["failed"] == [], json.dumps(doc["failed"], indent=1)[-6000:]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert doc["scale"] == 0.005
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["versions"]["confluent-kafka"] != "not installed"
    by_bench: dict[str, list[dict]] = {}
    for r in doc["results"]:
        by_bench.setdefault(r["benchmark"], []).append(r)
    assert set(by_bench) == set(ORDER)
    for r in doc["results"]:
        what = f"{r['benchmark']}: {r['metric']}"
        assert r["baseline"] > 0, what
        assert r["baseline_what"], what
        assert r["figure"] >= 0, what
        if r["higher_is_better"]:  # throughputs: something was processed
            assert r["figure"] > 0, what
        assert r["ratio"] >= 0 and r["met"] in (True, False, None), what
    processor = {r["metric"]: r for r in by_bench["processor"]}
    assert processor["F2 flow records/s, 1 worker"]["details"]["records"] >= 500
    for name in ORDER:  # the printed table names every benchmark
        assert name in proc.stdout


def result(
    figure: float, baseline: float, target: str, higher: bool = True, **details: object
) -> BenchResult:
    return BenchResult("x", "m", figure, baseline, "b", "u", higher, target, dict(details))


def test_target_reading() -> None:
    assert met(result(40, 100, "ratio >= 0.30")) is True
    assert met(result(20, 100, "ratio >= 0.30")) is False
    assert met(result(180, 1, "p99 < 250 ms", higher=False)) is True
    assert met(result(300, 1, "p99 < 250 ms", higher=False)) is False
    assert met(result(3, 500, "<= batch size (500)", higher=False, met=True)) is True
    assert met(result(3, 500, "")) is None


def test_the_broker_growth_probe_reports_each_setting() -> None:
    """``python -m tests.bench.broker_growth`` (the figures behind tests/bench/latency.py's note on the
    embedded broker) kept from rotting: every setting delivers every record and reports its windows."""
    proc = subprocess.run([sys.executable, "-m", "tests.bench.broker_growth", "--seconds", "2", "--rate", "100"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(x["consumers"], x["linger_ms"]) for x in lines] == [(1, 5), (2, 5), (1, 50)]
    assert all(x["records"] == 200 and x["p99_ms_per_10s"] and x["broker_cpu_percent"] >= 0 for x in lines)
