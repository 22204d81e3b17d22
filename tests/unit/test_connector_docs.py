"""The "connect your real X" pages (docs/connectors/*.md): one per system, and every pipeline example in them
is valid for the pipeline loader, so a renamed or removed config field shows up as a failing test, not as a
reader's first error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bizbus.errors import ConfigError
from bizbus.host.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "connectors"
SYSTEMS = {"jira": "jira", "redmine": "redmine", "dingtalk": "dingtalk", "feishu": "feishu",
           "tryton": "tryton", "pg_outbox": "pg-outbox"}  # page -> the component type it connects  # fmt: skip
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def yaml_blocks(text: str) -> list[str]:
    return YAML_BLOCK.findall(text)


def examples() -> list[tuple[str, int, str]]:
    return [(page.name, i, block) for page in sorted(PAGES.glob("*.md"))
            for i, block in enumerate(yaml_blocks(page.read_text(encoding="utf-8")))]  # fmt: skip


def test_every_system_has_a_page_with_an_example_of_its_component() -> None:
    for page, ctype in SYSTEMS.items():
        path = PAGES / f"{page}.md"
        assert path.exists(), f"docs/connectors/{page}.md is missing"
        blocks = yaml_blocks(path.read_text(encoding="utf-8"))
        assert blocks, f"docs/connectors/{page}.md has no ```yaml pipeline example"
        assert any(re.search(rf"^\s*type:\s*{re.escape(ctype)}\s*$", b, re.M) for b in blocks), (
            f"no example in docs/connectors/{page}.md uses type {ctype}"
        )


@pytest.mark.parametrize(("page", "index", "block"), examples(), ids=lambda v: str(v)[:24])
def test_pipeline_example_is_valid(page: str, index: int, block: str, tmp_path: Path) -> None:
    path = tmp_path / f"{page}-{index}.yaml"
    path.write_text(block, encoding="utf-8")
    try:
        pipeline = load_pipeline(path)
    except ConfigError as exc:
        pytest.fail(f"docs/connectors/{page}, yaml example {index + 1}:\n{exc}")
    assert pipeline.components, f"docs/connectors/{page}, yaml example {index + 1} names no component"


def test_an_example_with_a_misspelt_field_fails(tmp_path: Path) -> None:
    """The check above can fail: the Jira page's example with one key misspelt is refused, with the line."""
    block = yaml_blocks((PAGES / "jira.md").read_text(encoding="utf-8"))[0]
    assert "secret_env:" in block
    path = tmp_path / "broken.yaml"
    path.write_text(block.replace("secret_env:", "secret_envv:", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match="secret_envv"):
        load_pipeline(path)


def test_the_pages_point_nowhere_outside_the_repository() -> None:
    for page in sorted(PAGES.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text and "DESIGN.md" not in text, f"{page.name} points outside the repository"
