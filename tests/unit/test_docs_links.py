"""The hand-written pages (README.md, README.zh-CN.md, docs/*.md, docs/connectors/*.md) stay inside the
repository and their links lead somewhere; the README keeps what tools and CI rely on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bizbus.errors import ConfigError
from bizbus.host.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
GENERATED = {ROOT / "docs" / "reference.md", ROOT / "docs" / "topics.md"}
PAGES = sorted({ROOT / "README.md", ROOT / "README.zh-CN.md", *(ROOT / "docs").rglob("*.md")} - GENERATED)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def broken_links(page: Path, text: str) -> list[str]:
    """Relative links of ``text`` (a page at ``page``) whose target is not a file or folder of the repository."""
    bad = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # https:, mailto:, an anchor on the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            bad.append(target)
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_lead_to_files_of_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert broken_links(page, text) == []
    assert "../shared" not in text and "DESIGN.md" not in text, "the docs must not point outside the repository"


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page = ROOT / "docs" / "architecture.md"
    assert broken_links(page, "see [x](extending.md) and [y](no-such-page.md) and [z](../../outside.md)") == [
        "no-such-page.md", "../../outside.md"]  # fmt: skip


def test_the_readme_keeps_the_ci_command_and_the_generated_table_markers() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci and "make test" in readme.split("\n## ", 1)[0], "the README opens with CI's command"
    begin, end = readme.find("<!-- components:begin -->"), readme.find("<!-- components:end -->")
    assert 0 < begin < end and readme.count("<!-- components:begin -->") == 1
    table = readme[begin:end]
    assert "| `jira` |" in table or "`jira`" in table


def test_the_chinese_quick_start_example_is_a_valid_pipeline(tmp_path: Path) -> None:
    blocks = re.findall(r"^```yaml\n(.*?)^```", (ROOT / "README.zh-CN.md").read_text(encoding="utf-8"), re.S | re.M)
    assert blocks
    for i, block in enumerate(blocks):
        path = tmp_path / f"zh-{i}.yaml"
        path.write_text(block, encoding="utf-8")
        try:
            load_pipeline(path)
        except ConfigError as exc:
            pytest.fail(f"README.zh-CN.md yaml example {i + 1}:\n{exc}")
