"""F8: a completed (or closed, or deleted) project closes its cost center; no labor posts after that.

The close itself is part of the project agent (F1's :func:`~bizbus.streams.cost_centers.logic.apply_project`
calls :func:`close_fields`): the CostCenter record goes out again with ``active`` false and ``valid_to``
the actual end (or the day of the event), and the project's state records when it was completed
(``meta.occurred_at`` of the first closing event). F2 asks :func:`labor_after_close` for each timesheet
entry: one that happened after the completion is refused (dead letter ``cost_center_closed``); one that
happened before still posts, whichever of the two topics is consumed first.

Decided here: a CREATED or UPDATED after a close reopens the project (the cost center is active again and
the completion time is cleared), because the flow follows ``active = op in (CREATED, UPDATED)``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.runtime.crosswalk import cost_center_on
from bizbus.streams.runtime.results import Reject

CLOSING_OPS = ("COMPLETED", "CLOSED", "DELETED")
OPEN_OPS = ("CREATED", "UPDATED")


def close_fields(record: dict[str, Any], state: ProjectState | None, day: date) -> dict[str, Any]:
    """Closing part of a project's new state and CostCenter record for ``record`` (a ProjectChanged).

    Returns ``{"active", "valid_to", "closed_at", "closed_on", "closed_op"}``.
    """
    if record["op"] in OPEN_OPS:
        return {"active": True, "valid_to": None, "closed_at": None, "closed_on": None, "closed_op": None}
    valid_to = record.get("actual_end") or day
    if state is not None and state.closed_at is not None:  # already closed: keep the first completion time
        return {"active": False, "valid_to": valid_to, "closed_at": state.closed_at,
                "closed_on": state.closed_on or valid_to, "closed_op": state.closed_op}  # fmt: skip
    return {"active": False, "valid_to": valid_to, "closed_at": record["meta"]["occurred_at"],
            "closed_on": valid_to, "closed_op": record["op"]}  # fmt: skip


def labor_after_close(entry: dict[str, Any], project: ProjectState) -> Reject | None:
    """A Reject when the timesheet ``entry`` happened after its project was completed, else None."""
    closed_at: datetime | None = project.closed_at
    if closed_at is None:
        return None
    happened: datetime = entry["meta"]["occurred_at"]
    if happened <= closed_at:
        return None
    code = cost_center_on(list(project.intervals), entry["work_date"]) or "?"
    what = {"COMPLETED": "completed", "CLOSED": "closed", "DELETED": "deleted"}.get(project.closed_op or "", "closed")
    return Reject(
        "cost_center_closed",
        f"project {entry['project']} (cost center {code}) was {what} on {project.closed_on} "
        f"(at {closed_at.isoformat()}); worklog {entry['worklog_id']} version {entry['version']} changed at "
        f"{happened.isoformat()}, after that, and cannot post",
    )
