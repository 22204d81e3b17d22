"""F2's per-project labor-cost roll-up over the ``project-costs`` table (budget alerts)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.labor_cost.logic import BudgetAlert, booked_in, roll_up
from bizbus.streams.runtime.tables import StateTable


class ProjectCosts:
    """F2's per-project labor-cost roll-up (budget alerts) at constant cost per worklog.

    :func:`~bizbus.streams.labor_cost.logic.roll_up` keeps every worklog's amount in one project state;
    stored like that, each timesheet re-encoded (and re-sent to the changelog) a state that grows with the project: 228 records/s at 20,000
    worklogs on 12 projects. Here the table holds ``<project>`` → ``{"total", "over"}`` and
    ``<project>␟<worklog>`` → ``{"amount"}``, and ``roll_up`` decides on a two-entry view (this worklog's
    amount and the rest of the total), so the rule (idempotent per worklog, alert once per crossing) stays
    in :mod:`~bizbus.streams.labor_cost.logic`. A state in the old one-value form is split on first use."""

    SEP = "\x1f"
    REST = "\x1f"  # the view's entry for all other worklogs (no worklog id is a lone unit separator)

    def __init__(self, table: StateTable[dict[str, Any]]) -> None:
        self.table = table

    def update(self, project_key: str, project: ProjectState | None, worklog_id: str,
               voucher: dict[str, Any] | None, percent: float,
               previous: dict[str, Any] | None | object = ...) -> BudgetAlert | None:  # fmt: skip
        """``previous``: the worklog's state before this record, when the caller has it (the F2 agent
        does). Its voucher is the amount booked so far, so no ``<project>␟<worklog>`` entry is read or
        written: one state and one changelog record less per timesheet. A worklog seen before on another
        project books here as new (as with the entries, which are per project)."""
        head = self.table.get(project_key) or {}
        if "worklogs" in head:
            head = self._split(project_key, head)
        total = Decimal(head.get("total") or "0")
        wkey = f"{project_key}{self.SEP}{worklog_id}"
        if previous is ...:
            old = (self.table.get(wkey) or {}).get("amount")
        else:
            old = booked_in(previous, project_key)
            wkey = ""  # nothing to keep per worklog
        amounts = {self.REST: str(total - Decimal(old))} if old is not None else {self.REST: str(total)}
        if old is not None:
            amounts[worklog_id] = old
        new, alert = roll_up({"worklogs": amounts, "over": bool(head.get("over"))}, project, project_key,
                             worklog_id, voucher, percent)  # fmt: skip
        booked = sum((Decimal(v) for v in new["worklogs"].values()), Decimal(0))
        amount = new["worklogs"].get(worklog_id)
        if amount != old and wkey:
            self.table.set(wkey, {"amount": amount})
        self.table.set(project_key, {"total": str(booked), "over": new["over"]})
        return alert

    def _split(self, project_key: str, legacy: dict[str, Any]) -> dict[str, Any]:
        amounts: dict[str, str] = legacy.get("worklogs") or {}
        for wid, amount in amounts.items():
            self.table.set(f"{project_key}{self.SEP}{wid}", {"amount": amount})
        head = {"total": str(sum((Decimal(v) for v in amounts.values()), Decimal(0))), "over": bool(legacy.get("over"))}
        self.table.set(project_key, head)
        return head
