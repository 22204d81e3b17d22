"""The README's component table, generated from the component specs (``ComponentSpec``).

``bizbus docs`` rewrites what lies between the markers ``<!-- components:begin -->`` and
``<!-- components:end -->`` in README.md; the rest of the README is written by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bizbus.host.components import ComponentSpec

BEGIN = "<!-- components:begin -->"
END = "<!-- components:end -->"
KIND_ORDER = ("source", "sink", "flow", "monitor")


def _anchor(spec: ComponentSpec) -> str:
    """GitHub's anchor of the component's heading in docs/reference.md (### `name` (kind))."""
    heading = f"{spec.name} ({spec.kind})".lower()
    return re.sub(r"[^a-z0-9 _-]", "", heading).replace(" ", "-")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def component_table(specs: Iterable[ComponentSpec]) -> str:
    """A Markdown table: name, kind, summary and its pages (how to connect the real system, when it has such a
    page, and its config in docs/reference.md); sources first, then sinks, flows, monitors."""
    rows = ["| component | kind | what it does | docs |", "|---|---|---|---|"]
    ordered = sorted(specs, key=lambda s: (KIND_ORDER.index(s.kind) if s.kind in KIND_ORDER else 9, s.name))
    for s in ordered:
        config = f"[config](docs/reference.md#{_anchor(s)})"
        link = f"[connect]({s.docs}) · {config}" if s.docs else config
        rows.append(f"| `{s.name}` | {s.kind} | {_cell(s.summary)} | {link} |")
    return "\n".join(rows) + "\n"


def splice(readme: str, table: str) -> str | None:
    """``readme`` with the text between the markers replaced by ``table``; None when it has no markers."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        return None
    return readme[: start + len(BEGIN)] + "\n" + table + readme[end:]
