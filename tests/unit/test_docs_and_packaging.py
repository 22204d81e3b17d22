"""Generated reference docs are current; every package folder is installed."""

from __future__ import annotations

import tomllib

from bizbus.catalogue import load_catalogue
from bizbus.refdocs import REFERENCE, render
from bizbus.settings import PROJECT_ROOT


def test_reference_docs_are_current() -> None:
    expected = render(load_catalogue(PROJECT_ROOT / "deploy" / "topics.yaml"))
    assert REFERENCE.read_text(encoding="utf-8") == expected, "docs/reference.md is stale: run `bizbus docs`"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """A sub-package missing from [tool.setuptools] packages would vanish from a non-editable install."""
    conf = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = set()
    for dist_name, folder in conf["package-dir"].items():
        root = PROJECT_ROOT / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((dist_name, *rel)))
    assert found == listed, f"missing: {found - listed}, stale: {listed - found}"
