"""F1: a project created or changed in a PM tool opens (or updates) its cost center in the ERP.

Every processed ProjectChanged sends the project's CostCenter record (key = code) with the current
name, manager and company, and keeps the project's state in the ``projects`` table: status, company,
name, the dated cost-center crosswalk and, when completed (F8), the completion time. F2 and F4 read that
table. An UPDATED for a project never seen creates it ("create on first sight").

The cost center code is the record's ``cost_center`` or the mapping's ``code_pattern``. When the code
of a project changes, a new crosswalk interval starts on the day of the change (the old one is closed the
day before) and both IdCrosswalk records go out. Decided here: the first interval (and the CostCenter's
``valid_from``) starts on ``planned_start`` or the day of the first event and does not move afterwards;
a change of code leaves the old cost center as it is (it may be shared), only its crosswalk interval ends.
"""

from __future__ import annotations

from typing import Any

from bizbus.streams.cost_centers import close as f8
from bizbus.streams.cost_centers.config import CostCenterMapping
from bizbus.streams.cost_centers.state import Interval, ProjectState
from bizbus.streams.runtime.crosswalk import start_interval
from bizbus.streams.runtime.results import Output, Result, derived_meta, local_date, versions_gate

FLOW = "cost-centers"
PROJECT_TOPIC = "bizbus.pm.project.v1"
COST_CENTER_TOPIC = "bizbus.md.cost-center.v1"
CROSSWALK_TOPIC = "bizbus.md.id-crosswalk.v1"


def crosswalk_key(
    entity_type: str, source_system: str, source_id: str, target_system: str, valid_from: Any
) -> str:
    """Key of an IdCrosswalk record: the schema's key fields incl. valid_from, so every dated interval
    survives compaction."""
    return f"{entity_type}/{source_system}/{source_id}/{target_system}/{valid_from.isoformat()}"


def _crosswalk(record: dict[str, Any], interval: Interval, role: str, m: CostCenterMapping) -> Output:
    src = record["meta"]
    value = {
        "meta": derived_meta(src, role, record["project"], FLOW),
        "entity_type": "project",
        "source_system": src["source_system"],
        "source_id": record["project"],
        "target_system": m.target_system,
        "target_id": interval["code"],
        "target_entity_type": "cost_center",
        "valid_from": interval["valid_from"],
        "valid_to": interval.get("valid_to"),
        "version": record["version"],
    }
    key = crosswalk_key(
        "project", src["source_system"], record["project"], m.target_system, interval["valid_from"]
    )
    return Output(CROSSWALK_TOPIC, key, value)


def apply_project(
    record: dict[str, Any], state: ProjectState | None, m: CostCenterMapping, emit: bool = True
) -> Result:
    """Handle one ProjectChanged against the project's last ``state``; the new state is
    :meth:`ProjectState.to_state`.

    With ``emit`` False only the state is kept (a worker that runs F2 or F4 without F1 still needs it).
    """
    gate = versions_gate(state.version, state.outputs, record["version"]) if state is not None else None
    if gate is not None:
        return gate
    src = record["meta"]
    day = local_date(src["occurred_at"], m.timezone)
    code = record.get("cost_center") or m.code_pattern.format(
        project=record["project"], company=record["company"]
    )
    intervals: list[Interval] = list(state.intervals) if state is not None else []
    crosswalks: list[Output] = []
    if not intervals:
        intervals, _ = start_interval([], code, record.get("planned_start") or day)
        crosswalks.append(_crosswalk(record, intervals[-1], "crosswalk", m))
    else:
        intervals, closed = start_interval(intervals, code, day)
        if closed is not None:
            crosswalks.append(_crosswalk(record, closed, "crosswalk-close", m))
        if closed is not None or intervals[-1] != (state.intervals[-1] if state is not None else None):
            crosswalks.append(_crosswalk(record, intervals[-1], "crosswalk", m))
    close = f8.close_fields(record, state, day)
    cost_center = {
        "meta": derived_meta(src, "cost-center", record["project"], FLOW),
        "code": code,
        "name": m.name_pattern.format(
            project=record["project"], name=record["name"], company=record["company"]
        ),
        "company": record["company"],
        "parent_code": m.parent_code,
        "project": record["project"],
        "manager": record.get("manager"),
        "valid_from": intervals[-1]["valid_from"],
        "valid_to": close["valid_to"],
        "active": close["active"],
        "version": record["version"],
    }
    outputs = (Output(COST_CENTER_TOPIC, code, cost_center), *crosswalks) if emit else ()
    new_state = ProjectState(
        project=record["project"],
        version=record["version"],
        op=record["op"],
        name=record["name"],
        company=record["company"],
        manager=record.get("manager"),
        source_system=src["source_system"],
        budget=record.get("budget_amount"),
        currency=record.get("currency"),
        intervals=tuple(intervals),
        closed_at=close["closed_at"],
        closed_on=close["closed_on"],
        closed_op=close["closed_op"],
        outputs=tuple(o.to_state() for o in outputs),
    )
    return Result("emitted" if outputs else "ignored", outputs, new_state.to_state())
