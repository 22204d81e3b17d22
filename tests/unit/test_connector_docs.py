"""The "connect your real X" pages (docs/connectors/*.md): one per system, and every pipeline example in them
is valid for the pipeline loader, so a renamed or removed config field shows up as a failing test, not as a
reader's first error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bizbus.errors import ConfigError
from bizbus.host.components import BUILTIN, ComponentSpec, load_spec
from bizbus.host.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "connectors"
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def yaml_blocks(text: str) -> list[str]:
    return YAML_BLOCK.findall(text)


def examples() -> list[tuple[str, int, str]]:
    return [(page.name, i, block) for page in sorted(PAGES.glob("*.md"))
            for i, block in enumerate(yaml_blocks(page.read_text(encoding="utf-8")))]  # fmt: skip


def builtin_specs() -> list[ComponentSpec]:
    return [load_spec(item) if isinstance(item, str) else item for item in BUILTIN]


def test_every_system_has_a_page_with_an_example_of_its_component() -> None:
    """A component whose spec names a page under docs/connectors/ has that page, with a pipeline example of it;
    every page there belongs to a component."""
    paged = {s.docs: s.name for s in builtin_specs() if s.docs.startswith("docs/connectors/")}
    assert {"docs/connectors/jira.md", "docs/connectors/tryton.md", "docs/connectors/pg_outbox.md"} <= set(paged)
    assert {f"docs/connectors/{p.name}" for p in PAGES.glob("*.md")} == set(paged), "a page without a component"
    for page, ctype in paged.items():
        path = ROOT / page
        assert path.exists(), f"{page} is missing"
        blocks = yaml_blocks(path.read_text(encoding="utf-8"))
        assert blocks, f"{page} has no ```yaml pipeline example"
        assert any(uses(b, ctype) for b in blocks), f"no example in {page} uses type {ctype}"


def uses(text: str, ctype: str) -> bool:
    return re.search(rf"^\s*type:\s*{re.escape(ctype)}\s*$", text, re.M) is not None


@pytest.mark.parametrize("spec", builtin_specs(), ids=lambda s: s.name)
def test_every_component_states_its_guarantee_and_points_to_an_example(spec: ComponentSpec, tmp_path: Path) -> None:
    """The README's table lists every source and sink with its delivery guarantee and a configuration example:
    the example is a pipeline (or a page holding one) that the loader accepts and that uses the type."""
    assert len(spec.guarantee) > 10, f"{spec.name}: no delivery guarantee in its spec"
    assert spec.example, f"{spec.name}: no configuration example in its spec"
    path = ROOT / spec.example
    assert path.is_file(), f"{spec.name}: example {spec.example} does not exist"
    text = path.read_text(encoding="utf-8")
    blocks = [text] if path.suffix in (".yaml", ".yml") else yaml_blocks(text)
    using = [b for b in blocks if uses(b, spec.name)]
    assert using, f"{spec.name}: {spec.example} holds no pipeline using type {spec.name}"
    target = tmp_path / "example.yaml"
    target.write_text(using[0], encoding="utf-8")
    try:
        load_pipeline(target)
    except ConfigError as exc:
        pytest.fail(f"{spec.name}: the example in {spec.example} is refused:\n{exc}")


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
