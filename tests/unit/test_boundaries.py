"""The layout's boundaries, read statically from the import statements (``ast``; nothing is imported).

Every ``.py`` file under bizbus/, connectors/, streams/ and schemas/ belongs to one part:

* ``core``: the modules directly in bizbus/ (settings, errors, failures, serde, catalogue, ...)
* ``host``, ``cli``, ``devstack``, ``docgen``: bizbus/host, bizbus/cli (and bizbus/__main__.py), ...
* ``connectors.runtime``: connectors/runtime (and the package's __init__)
* ``streams.runtime``: streams/runtime (and the package's __init__)
* ``vendors``: connectors/sources, connectors/sinks, connectors/monitors (one folder per system)
* ``flows``: every other folder or module of streams/ (one folder per flow)
* ``core`` also holds schemas/ except its registry (installed as ``bizbus.schemas``: the canonical Avro schemas,
  their loader and compatibility checks, which the catalogue and the serde are built on)
* ``registry``: schemas/registry (the embedded schema registry, a server of its own)

``ALLOWED`` says which parts each part may import; every import statement counts (module level, inside a
function, under ``TYPE_CHECKING``). A component named by a string ("module:Class", ``BUILTIN``, an entry
point) is not an import: the host loads it by name, so the runtime never names a vendor or a flow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("bizbus", "connectors", "streams", "schemas")  # installed as bizbus, bizbus.connectors, ...
RUNTIME = ("core", "host", "connectors.runtime", "streams.runtime")
CORE_FORBIDDEN = ("host", "cli", "devstack", "docgen", "connectors.runtime", "streams.runtime", "vendors", "flows")

# The allowed direction, bottom up: core (with the schemas); the registry and the host (runs components, serves HTTP); the connector
# runtime (builds on the host's Component); the flows runtime (Faust; may reuse connector runtime helpers);
# vendors and flows (each on its runtime, never on each other); the dev stack (`bizbus up` around the host,
# the embedded broker and registry, the Tryton demo with the Tryton sink's client); the doc generators; the CLI.
_BASE = {"core"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "registry": set(_BASE),
    "host": set(_BASE),
    "connectors.runtime": _BASE | {"host"},
    "streams.runtime": _BASE | {"host", "connectors.runtime"},
    "vendors": _BASE | {"host", "connectors.runtime"},
    "flows": _BASE | {"host", "connectors.runtime", "streams.runtime"},
    "devstack": _BASE | {"host", "connectors.runtime", "vendors"},
    "docgen": _BASE | {"host", "connectors.runtime", "streams.runtime"},
    "cli": _BASE | {"host", "connectors.runtime", "streams.runtime", "vendors", "flows", "devstack", "docgen"},
}
# Known exceptions, each with its reason; the test fails when one no longer occurs (then delete it here).
KNOWN: dict[tuple[str, str], str] = {}


def part_of_file(rel: Path) -> str | None:
    """The part a source file (relative to the repository root) belongs to."""
    p = rel.parts
    if p[0] == "bizbus":
        if len(p) == 2:
            return "cli" if p[1] == "__main__.py" else "core"
        return p[1] if p[1] in ("host", "cli", "devstack", "docgen") else None
    if p[0] == "connectors":
        return "connectors.runtime" if len(p) == 2 or p[1] == "runtime" else "vendors"
    if p[0] == "streams":
        return "streams.runtime" if len(p) == 2 and p[1] == "__init__.py" or p[1] == "runtime" else "flows"
    if p[0] == "schemas":
        return "registry" if len(p) > 2 and p[1] == "registry" else "core"
    return None


def part_of_module(name: str) -> str | None:
    """The part an imported dotted name belongs to (None: not bizbus). ``connectors.x`` is read as
    ``bizbus.connectors.x`` (the repository root is on sys.path in the tests)."""
    parts = name.split(".")
    if parts[0] in ("connectors", "streams", "schemas"):
        parts = ["bizbus", *parts]
    if parts[0] != "bizbus":
        return None
    head = parts[1] if len(parts) > 1 else ""
    if head in ("host", "cli", "devstack", "docgen"):
        return head
    if head == "__main__":
        return "cli"
    if head == "connectors":
        return "connectors.runtime" if len(parts) == 2 or parts[2] == "runtime" else "vendors"
    if head == "streams":
        return "streams.runtime" if len(parts) == 2 or parts[2] == "runtime" else "flows"
    if head == "schemas":
        return "registry" if len(parts) > 2 and parts[2] == "registry" else "core"
    return "core"


def _imported(tree: ast.AST, rel: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import; ``from a import b`` gives ``a.b`` (b may be a module)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package, as installed
                package = list(rel.parts[:-1])
                package = package[: len(package) - (node.level - 1)]
                if package and package[0] != "bizbus":
                    package = ["bizbus", *package]
                base = ".".join([*package, *([node.module] if node.module else [])])
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def import_edges(root: Path) -> dict[tuple[str, str], list[str]]:
    """Part -> imported part, with ``file:line name`` of each import statement behind the edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root)
            src = part_of_file(rel)
            if src is None:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, name in _imported(tree, rel):
                dst = part_of_module(name)
                if dst is not None and dst != src:
                    edges.setdefault((src, dst), []).append(f"{rel}:{line} {name}")
    return edges


def violations(edges: dict[tuple[str, str], list[str]]) -> list[str]:
    """Every import that goes against ``ALLOWED`` (known exceptions aside)."""
    out = []
    for (src, dst), where in sorted(edges.items()):
        if dst not in ALLOWED.get(src, set()) and (src, dst) not in KNOWN:
            out += [f"{src} must not import {dst}: {w}" for w in where]
    return out


def cycles(edges: dict[tuple[str, str], list[str]]) -> list[list[str]]:
    """The import cycles between parts (each as the list of parts on it), known exceptions aside."""
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        if (src, dst) not in KNOWN:
            graph.setdefault(src, set()).add(dst)
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle once: from its smallest part
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


@pytest.fixture(scope="module")
def edges() -> dict[tuple[str, str], list[str]]:
    return import_edges(ROOT)


def test_every_part_has_a_rule() -> None:
    parts = {part_of_file(p.relative_to(ROOT)) for f in FOLDERS for p in (ROOT / f).rglob("*.py")} - {None}
    assert parts <= set(ALLOWED), f"files of no known part: {parts - set(ALLOWED)}"


def test_runtime_imports_no_vendor_and_no_flow(edges) -> None:
    """bizbus core, the host, connectors/runtime and streams/runtime name no vendor and no flow module."""
    bad = [w for (src, dst), where in edges.items() if src in RUNTIME and dst in ("vendors", "flows") for w in where]
    assert not bad, "the runtime imports vendor or flow code:\n" + "\n".join(bad)


def test_core_imports_no_other_part(edges) -> None:
    bad = [w for (src, dst), where in edges.items() if src == "core" and dst in CORE_FORBIDDEN for w in where]
    assert not bad, "bizbus core imports a higher part:\n" + "\n".join(bad)


def test_imports_follow_the_allowed_direction(edges) -> None:
    problems = violations(edges)
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_parts(edges) -> None:
    assert not cycles(edges), f"import cycles between parts: {cycles(edges)}"


def test_known_exceptions_still_occur(edges) -> None:
    gone = [pair for pair in KNOWN if pair not in edges]
    assert not gone, f"no longer imported, delete from KNOWN: {gone}"


def test_the_allowed_direction_has_no_cycle() -> None:
    """ALLOWED itself is a layering: following it can never make a cycle."""
    assert not cycles({(src, dst): [] for src, dsts in ALLOWED.items() for dst in dsts})


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_a_runtime_module_importing_a_vendor_is_reported(tmp_path: Path) -> None:
    """The checker on a small tree with deliberate violations: each one is reported with file and line."""
    _write(tmp_path, "bizbus/settings.py", "import os\n")
    _write(tmp_path, "connectors/runtime/source.py",
           "from bizbus.host.components import Component\n"
           "SPEC = 'bizbus.connectors.sources.jira.spec:SPEC'  # a string: not an import\n"
           "def load():\n    from bizbus.connectors.sources.jira.webhook import JiraWebhook\n")  # fmt: skip
    _write(tmp_path, "connectors/sources/jira/webhook.py", "from bizbus.connectors.runtime.source import x\n")
    _write(tmp_path, "bizbus/host/runner.py", "from ..streams import f2_labor_cost\n")
    _write(tmp_path, "bizbus/catalogue.py", "if False:\n    from bizbus.docgen.refdocs import render\n")
    found = import_edges(tmp_path)
    problems = violations(found)
    assert problems == [
        "connectors.runtime must not import vendors: connectors/runtime/source.py:4 "
        "bizbus.connectors.sources.jira.webhook.JiraWebhook",
        "core must not import docgen: bizbus/catalogue.py:2 bizbus.docgen.refdocs.render",
        "host must not import flows: bizbus/host/runner.py:1 bizbus.streams.f2_labor_cost",
    ]
    assert cycles(found) == [["connectors.runtime", "vendors", "connectors.runtime"]]


def test_a_cycle_through_three_parts_is_found(tmp_path: Path) -> None:
    _write(tmp_path, "bizbus/host/a.py", "import bizbus.devstack.b\n")
    _write(tmp_path, "bizbus/devstack/b.py", "from bizbus.connectors.sinks.x import c\n")
    _write(tmp_path, "connectors/sinks/x/c.py", "from bizbus.host import a\n")
    assert cycles(import_edges(tmp_path)) == [["devstack", "vendors", "host", "devstack"]]
