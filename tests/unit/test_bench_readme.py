"""README.md's benchmark results come from the committed bench/results.json (``python -m tests.bench
--readme`` writes them); a test fails when the two disagree."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.__main__ import README_BEGIN, README_END, markdown, readme_block, update_readme

ROOT = Path(__file__).resolve().parents[2]


def test_readme_results_are_those_of_the_committed_run() -> None:
    doc = json.loads((ROOT / "bench" / "results.json").read_text())
    block = readme_block((ROOT / "README.md").read_text())
    assert block is not None, f"README.md lacks the {README_BEGIN} ... {README_END} block"
    assert block == markdown(doc), "README.md's results are stale: run `.venv/bin/python -m tests.bench --readme`"


def test_update_writes_the_block_and_reports_a_change(tmp_path: Path) -> None:
    doc = json.loads((ROOT / "bench" / "results.json").read_text())
    doc["results"][0]["figure"] = 123456.0
    results = tmp_path / "results.json"
    results.write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_BEGIN}\nold\n{README_END}\nrest\n")
    assert update_readme(readme, results) is True
    text = readme.read_text()
    assert "123,456" in text and "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert update_readme(readme, results) is False
