"""docs/benchmarks.md's results come from the committed bench/results.json (``python -m tests.bench --docs``
writes them); a test fails when the two disagree. The README links to that page and holds no figures of
its own."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.__main__ import BENCH_DOC, README_BEGIN, README_END, markdown, readme_block, update_readme

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_page_results_are_those_of_the_committed_run() -> None:
    doc = json.loads((ROOT / "bench" / "results.json").read_text())
    assert BENCH_DOC == ROOT / "docs" / "benchmarks.md"
    block = readme_block(BENCH_DOC.read_text())
    assert block is not None, f"docs/benchmarks.md lacks the {README_BEGIN} ... {README_END} block"
    assert block == markdown(doc), "docs/benchmarks.md's results are stale: run `.venv/bin/python -m tests.bench --docs`"


def test_the_readme_points_to_the_benchmark_page_instead_of_copying_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme_block(readme) is None, "the README must not hold a second copy of the benchmark results"
    assert "docs/benchmarks.md" in readme


def test_a_changed_figure_makes_the_block_differ(tmp_path: Path) -> None:
    """The comparison above can fail: one figure changed in results.json changes the block."""
    doc = json.loads((ROOT / "bench" / "results.json").read_text())
    committed = markdown(doc)
    doc["results"][0]["figure"] = doc["results"][0]["figure"] * 2 + 1
    assert markdown(doc) != committed


def test_update_writes_the_block_and_reports_a_change(tmp_path: Path) -> None:
    doc = json.loads((ROOT / "bench" / "results.json").read_text())
    doc["results"][0]["figure"] = 123456.0
    results = tmp_path / "results.json"
    results.write_text(json.dumps(doc))
    page = tmp_path / "benchmarks.md"
    page.write_text(f"intro\n{README_BEGIN}\nold\n{README_END}\nrest\n")
    assert update_readme(page, results) is True
    text = page.read_text()
    assert "123,456" in text and "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert update_readme(page, results) is False
