"""Generated reference docs are current; every package folder is installed."""

from __future__ import annotations

import tomllib

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
