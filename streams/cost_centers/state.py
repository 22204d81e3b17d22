"""The project state F1 keeps in the ``projects`` table, which F2, F4 and F8 read.

The table holds :func:`~bizbus.streams.runtime.statecodec.dumps_state` of :meth:`ProjectState.to_state`:
the same dict, keys in the same order, as before this model existed, so states stored by a running
deployment load unchanged and new ones are the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

Interval = dict[str, Any]  # {"code", "valid_from", "valid_to"}: see bizbus.streams.runtime.crosswalk


@dataclass(frozen=True)
class ProjectState:
    """A project as F1 last handled it: its master data, its dated cost-center crosswalk (``intervals``,
    oldest first), when it was closed (F8), and the outputs recorded for ``version`` (re-sent as they
    were when that version comes again)."""

    project: str
    version: int
    op: str
    name: str
    company: str
    manager: str | None = None
    source_system: str | None = None
    budget: Decimal | None = None
    currency: str | None = None
    intervals: tuple[Interval, ...] = ()
    closed_at: datetime | None = None
    closed_on: date | None = None
    closed_op: str | None = None
    outputs: tuple[dict[str, Any], ...] = ()

    def to_state(self) -> dict[str, Any]:
        """The dict the ``projects`` table stores (key order matters: it is the stored bytes' order)."""
        return {
            "project": self.project,
            "version": self.version,
            "op": self.op,
            "name": self.name,
            "company": self.company,
            "manager": self.manager,
            "source_system": self.source_system,
            "budget": self.budget,
            "currency": self.currency,
            "intervals": list(self.intervals),
            "closed_at": self.closed_at,
            "closed_on": self.closed_on,
            "closed_op": self.closed_op,
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> ProjectState:
        """A stored state (any version bizbus wrote) as the model."""
        return cls(
            project=data["project"],
            version=int(data["version"]),
            op=data["op"],
            name=data["name"],
            company=data["company"],
            manager=data.get("manager"),
            source_system=data.get("source_system"),
            budget=data.get("budget"),
            currency=data.get("currency"),
            intervals=tuple(data.get("intervals") or ()),
            closed_at=data.get("closed_at"),
            closed_on=data.get("closed_on"),
            closed_op=data.get("closed_op"),
            outputs=tuple(data.get("outputs") or ()),
        )
