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
KIND_ORDER = ("source", "sink", "monitor", "flow")


def _anchor(spec: ComponentSpec) -> str:
    """GitHub's anchor of the component's heading in docs/reference.md (### `name` (kind))."""
    heading = f"{spec.name} ({spec.kind})".lower()
    return re.sub(r"[^a-z0-9 _-]", "", heading).replace(" ", "-")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def component_table(specs: Iterable[ComponentSpec]) -> str:
    """A Markdown table: type, kind, summary, delivery guarantee, a configuration example and the page to read before connecting a real one (the
    component's own page when its spec names one, else its config in docs/reference.md); sources first, then
    sinks, monitors and flows, each in the registry's order."""
    rows = ["| type | kind | what it does | delivery guarantee | configuration example | connect a real one |",
            "|------|------|--------------|--------------------|-----------------------|--------------------|"]
    listed = list(specs)
    ordered = sorted(listed, key=lambda s: (KIND_ORDER.index(s.kind) if s.kind in KIND_ORDER else 9, listed.index(s)))
    for s in ordered:
        page = f"[{s.docs}]({s.docs})" if s.docs else f"[docs/reference.md](docs/reference.md#{_anchor(s)})"
        example = f"[{s.example}]({s.example})" if s.example else "—"
        rows.append(f"| `{s.name}` | {s.kind} | {_cell(s.summary)} | {_cell(s.guarantee) or '—'} | {example} | {page} |")
    return "\n".join(rows) + "\n"


def splice(readme: str, table: str) -> str | None:
    """``readme`` with the text between the markers replaced by ``table``; None when it has no markers."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        return None
    return readme[: start + len(BEGIN)] + "\n" + table + readme[end:]
