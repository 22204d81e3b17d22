"""F8: completion closes the cost center; labor after completion is refused, labor before still posts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from bizbus.streams.cost_centers.close import labor_after_close
from bizbus.streams.cost_centers.config import CostCenterMapping
from bizbus.streams.cost_centers.logic import apply_project
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.labor_cost.config import LaborCostMapping
from bizbus.streams.labor_cost.logic import post_labor
from bizbus.streams.runtime.results import Reject, Result

from bizbus import lineage

M1 = CostCenterMapping()
M2 = LaborCostMapping()
CREATED_AT = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)
DONE_AT = datetime(2026, 6, 30, 9, 0, tzinfo=UTC)


def project(op: str, version: int, at: datetime, actual_end: date | None = None) -> dict[str, Any]:
    return {"meta": lineage.meta(lineage.event_id("jira", "project", "PRJ-1", version), "PRJ-1", "jira", at),
            "op": op, "project": "PRJ-1", "name": "张江", "company": "SH01", "source_status": None, "manager": None,
            "customer": None, "cost_center": None, "planned_start": None, "planned_end": None,
            "actual_end": actual_end, "budget_amount": None, "currency": None, "version": version}  # fmt: skip


def entry(at: datetime, worklog: str = "W1") -> dict[str, Any]:
    return {"meta": lineage.meta(lineage.event_id("jira", "worklog", worklog, 1), "PRJ-1", "jira", at),
            "op": "CREATED", "worklog_id": worklog, "project": "PRJ-1", "task": None, "employee": "E1",
            "work_date": date(2026, 6, 29), "hours": Decimal("2.00"), "billable": True, "description": None,
            "version": 1}  # fmt: skip


def apply(record: dict[str, Any], state: dict[str, Any] | ProjectState | None) -> Result:
    """F1 on ``record`` against ``state`` (the dict a result stores, or the typed state)."""
    typed = ProjectState.from_state(state) if isinstance(state, dict) else state
    return apply_project(record, typed, M1)


def opened(result: Result) -> ProjectState:
    """The project state a result stores, as the projects table gives it to F2 and F8."""
    assert result.state is not None
    return ProjectState.from_state(result.state)


def closed_state() -> ProjectState:
    state = apply(project("CREATED", 1, CREATED_AT), None).state
    return opened(apply(project("COMPLETED", 2, DONE_AT, actual_end=date(2026, 6, 30)), state))


def test_completed_closes_the_cost_center_and_records_the_completion_time() -> None:
    state = apply(project("CREATED", 1, CREATED_AT), None).state
    res = apply(project("COMPLETED", 2, DONE_AT, actual_end=date(2026, 6, 28)), state)
    cc = res.outputs[0]
    assert [o.key for o in res.outputs] == ["CC-PRJ-1"]  # same key: it follows the create in order
    assert (cc.value["active"], cc.value["valid_to"], cc.value["valid_from"]) == (
        False,
        date(2026, 6, 28),
        date(2026, 3, 1),
    )
    assert cc.value["meta"]["event_id"] == lineage.derived_id(
        lineage.event_id("jira", "project", "PRJ-1", 2), "cost-center"
    )
    assert (res.state["closed_at"], res.state["closed_on"], res.state["closed_op"]) == (
        DONE_AT,
        date(2026, 6, 28),
        "COMPLETED",
    )


def test_without_actual_end_valid_to_is_the_event_day_in_the_time_zone() -> None:
    late = datetime(2026, 6, 30, 18, 0, tzinfo=UTC)  # 1 July in Shanghai
    res = apply(project("CLOSED", 2, late), None)
    assert res.outputs[0].value["valid_to"] == date(2026, 7, 1) and res.outputs[0].value["active"] is False


def test_closed_after_completed_keeps_the_first_completion_time() -> None:
    state = closed_state()
    res = apply(project("CLOSED", 3, datetime(2026, 7, 5, tzinfo=UTC)), state)
    assert res.state["closed_at"] == DONE_AT and res.state["closed_op"] == "COMPLETED"


def test_updated_after_completion_reopens() -> None:
    res = apply(project("UPDATED", 3, datetime(2026, 7, 5, tzinfo=UTC)), closed_state())
    assert res.outputs[0].value["active"] is True and res.outputs[0].value["valid_to"] is None
    assert res.state["closed_at"] is None


def test_labor_after_completion_is_refused_naming_project_cost_center_and_date() -> None:
    refused = labor_after_close(entry(datetime(2026, 6, 30, 9, 0, 1, tzinfo=UTC)), closed_state())
    assert isinstance(refused, Reject) and refused.reason == "cost_center_closed"
    assert "PRJ-1" in refused.message and "CC-PRJ-1" in refused.message and "2026-06-30" in refused.message


def test_labor_at_or_before_completion_is_accepted() -> None:
    assert labor_after_close(entry(DONE_AT), closed_state()) is None
    assert labor_after_close(entry(datetime(2026, 6, 29, tzinfo=UTC)), closed_state()) is None


def employees(code: str) -> dict[str, Any] | None:
    return {"code": code, "rates": [{"valid_from": date(2026, 1, 1), "valid_to": None, "rate": Decimal("100"),
                                     "currency": "CNY", "version": 1}]}  # fmt: skip


def test_labor_before_completion_posts_whichever_topic_is_consumed_first() -> None:
    before = entry(datetime(2026, 6, 29, 10, 0, tzinfo=UTC))
    open_state = opened(apply(project("CREATED", 1, CREATED_AT), None))
    consumed_first = post_labor(before, None, {"PRJ-1": open_state}.get, employees, M2)
    consumed_after_close = post_labor(before, None, {"PRJ-1": closed_state()}.get, employees, M2)
    assert isinstance(consumed_first, Result) and isinstance(consumed_after_close, Result)
    assert consumed_first.outputs == consumed_after_close.outputs  # the same voucher either way
    assert consumed_first.outputs[0].value["lines"][0]["debit"] == Decimal("200.00")


def test_labor_after_completion_dead_letters_in_f2() -> None:
    after = entry(datetime(2026, 7, 1, tzinfo=UTC))
    verdict = post_labor(after, None, {"PRJ-1": closed_state()}.get, employees, M2)
    assert isinstance(verdict, Reject) and verdict.reason == "cost_center_closed"
