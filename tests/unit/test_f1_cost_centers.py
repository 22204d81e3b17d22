"""F1: ProjectChanged → CostCenter + dated IdCrosswalk, project state, versions."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from bizbus.schemas import catalog
from bizbus.streams.cost_centers.config import CostCenterMapping
from bizbus.streams.cost_centers.logic import COST_CENTER_TOPIC, CROSSWALK_TOPIC, apply_project
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.runtime.crosswalk import cost_center_on
from bizbus.streams.runtime.results import Result

from bizbus import lineage

M = CostCenterMapping()


def project(version: int = 1, op: str = "CREATED", at: datetime = datetime(2026, 3, 2, 1, 30, tzinfo=UTC),
            **over: Any) -> dict[str, Any]:  # fmt: skip
    rec = {
        "meta": lineage.meta(lineage.event_id("jira", "project", "PRJ-1", version), "PRJ-1", "jira", at),
        "op": op, "project": "PRJ-1", "name": "张江办公楼", "company": "SH01", "source_status": None,
        "manager": "E0007", "customer": None, "cost_center": None, "planned_start": date(2026, 3, 1),
        "planned_end": None, "actual_end": None, "budget_amount": None, "currency": None, "version": version,
    }  # fmt: skip
    rec.update(over)
    return rec


def typed(state: dict[str, Any] | None) -> ProjectState | None:
    """The project state as the projects table gives it to the flows (stored as the dict)."""
    return ProjectState.from_state(state) if state is not None else None


def run(rec: dict[str, Any], state: dict[str, Any] | None = None, m: CostCenterMapping = M) -> Result:
    res = apply_project(rec, typed(state), m)
    assert isinstance(res, Result)
    for out in res.outputs:
        catalog.validate(
            "bizbus.md.CostCenter" if out.topic == COST_CENTER_TOPIC else "bizbus.md.IdCrosswalk", out.value
        )
    return res


def test_created_opens_the_cost_center_and_the_crosswalk() -> None:
    rec = project()
    res = run(rec)
    assert res.outcome == "emitted"
    cc, xw = res.outputs
    assert (cc.topic, cc.key, xw.topic) == (COST_CENTER_TOPIC, "CC-PRJ-1", CROSSWALK_TOPIC)
    assert {k: v for k, v in cc.value.items() if k != "meta"} == {
        "code": "CC-PRJ-1", "name": "PRJ-1 张江办公楼", "company": "SH01", "parent_code": "CC", "project": "PRJ-1",
        "manager": "E0007", "valid_from": date(2026, 3, 1), "valid_to": None, "active": True, "version": 1,
    }  # fmt: skip
    assert cc.value["meta"] == {
        "event_id": lineage.derived_id(rec["meta"]["event_id"], "cost-center"),
        "causation_id": rec["meta"]["event_id"], "correlation_id": "PRJ-1", "source_system": "bizbus",
        "occurred_at": rec["meta"]["occurred_at"], "trace": {"flow": "cost-centers"},
    }  # fmt: skip
    assert xw.key == "project/jira/PRJ-1/erp/2026-03-01"
    assert {k: v for k, v in xw.value.items() if k != "meta"} == {
        "entity_type": "project", "source_system": "jira", "source_id": "PRJ-1", "target_system": "erp",
        "target_id": "CC-PRJ-1", "target_entity_type": "cost_center", "valid_from": date(2026, 3, 1),
        "valid_to": None, "version": 1,
    }  # fmt: skip
    assert res.state["company"] == "SH01" and res.state["closed_at"] is None
    assert cost_center_on(res.state["intervals"], date(2026, 3, 5)) == "CC-PRJ-1"


def test_same_input_twice_gives_identical_outputs() -> None:
    assert run(project()) == run(project())


def test_without_planned_start_valid_from_is_the_event_day_in_the_mapping_time_zone() -> None:
    late_utc = datetime(2026, 3, 1, 17, 0, tzinfo=UTC)  # already 3 March 01:00 in Shanghai
    cc = run(project(planned_start=None, at=late_utc)).outputs[0]
    assert cc.value["valid_from"] == date(2026, 3, 2)


def test_source_cost_center_and_patterns_decide_code_and_name() -> None:
    m = CostCenterMapping(
        code_pattern="{company}-{project}", name_pattern="{name} ({company})", parent_code=None
    )
    cc = run(project(), m=m).outputs[0]
    assert (cc.key, cc.value["name"], cc.value["parent_code"]) == ("SH01-PRJ-1", "张江办公楼 (SH01)", None)
    cc = run(project(cost_center="CC-ENG"), m=m).outputs[0]
    assert cc.key == "CC-ENG"


def test_updated_for_an_unknown_project_creates_it() -> None:
    res = run(project(op="UPDATED", version=4))
    assert res.outcome == "emitted" and res.outputs[0].value["active"] is True
    assert [o.topic for o in res.outputs] == [COST_CENTER_TOPIC, CROSSWALK_TOPIC]


def test_update_carries_new_name_and_manager_without_a_new_crosswalk() -> None:
    first = run(project())
    res = run(project(op="UPDATED", version=2, name="张江办公楼二期", manager="E0009"), first.state)
    assert [o.topic for o in res.outputs] == [COST_CENTER_TOPIC]
    cc = res.outputs[0].value
    assert (cc["name"], cc["manager"], cc["valid_from"], cc["version"]) == (
        "PRJ-1 张江办公楼二期",
        "E0009",
        date(2026, 3, 1),
        2,
    )


def test_a_changed_cost_center_starts_a_new_interval_on_the_change_day() -> None:
    first = run(project(cost_center="CC-OLD"))
    change = project(
        op="UPDATED", version=2, cost_center="CC-NEW", at=datetime(2026, 5, 10, 3, 0, tzinfo=UTC)
    )
    res = run(change, first.state)
    cc, closed, opened = res.outputs
    assert (cc.key, cc.value["valid_from"]) == ("CC-NEW", date(2026, 5, 10))
    assert (closed.key, closed.value["target_id"], closed.value["valid_to"]) == (
        "project/jira/PRJ-1/erp/2026-03-01",
        "CC-OLD",
        date(2026, 5, 9),
    )
    assert (opened.key, opened.value["target_id"], opened.value["valid_to"]) == (
        "project/jira/PRJ-1/erp/2026-05-10",
        "CC-NEW",
        None,
    )
    assert closed.value["meta"]["event_id"] != opened.value["meta"]["event_id"]
    assert cost_center_on(res.state["intervals"], date(2026, 5, 9)) == "CC-OLD"
    assert cost_center_on(res.state["intervals"], date(2026, 5, 10)) == "CC-NEW"


def test_lower_version_is_stale_and_changes_nothing() -> None:
    state = run(project(version=5)).state
    res = apply_project(project(version=4, name="old"), typed(state), M)
    assert res == Result("skipped_stale")


def test_equal_version_re_emits_exactly_what_was_recorded() -> None:
    first = run(project(version=5))
    # master data moved on meanwhile (a new mapping): the re-emit still sends the recorded records
    res = apply_project(project(version=5), typed(first.state), CostCenterMapping(code_pattern="X-{project}"))
    assert res.outcome == "reemitted" and res.state is None
    assert res.outputs == first.outputs


def test_greater_version_is_processed() -> None:
    state = run(project(version=5)).state
    res = run(project(op="UPDATED", version=6, name="新名"), state)
    assert res.outcome == "emitted" and res.state["version"] == 6 and res.state["name"] == "新名"


def test_state_only_mode_keeps_state_and_sends_nothing() -> None:
    res = apply_project(project(), None, M, emit=False)
    assert res.outcome == "ignored" and res.outputs == ()
    assert res.state["outputs"] == [] and res.state["intervals"][0]["code"] == "CC-PRJ-1"
    assert (
        apply_project(project(), typed(res.state), M).outputs == ()
    )  # equal version: nothing recorded, nothing sent


@pytest.mark.parametrize("op", ["CREATED", "UPDATED"])
def test_open_ops_are_active(op: str) -> None:
    assert run(project(op=op)).outputs[0].value["active"] is True
