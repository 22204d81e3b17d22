"""Jira's documented webhook payloads -> the exact canonical values, and the pure helpers behind them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from bizbus.connectors.sources.jira.mapping import (
    MappingError,
    adf_text,
    format_jql_time,
    hours,
    issue_key,
    parse_time,
    project_changed,
    task_changed,
    timesheet_entry,
    to_ms,
    worklog_facts,
)
from bizbus.schemas import catalog
from fastavro import parse_schema
from fastavro.validation import validate

from bizbus import lineage

SAMPLES = Path(__file__).parents[1] / "contract" / "samples" / "jira"
SHANGHAI = ZoneInfo("Asia/Shanghai")
LEAD = "5b10a2844c20165700ede21g"
WORKER = "712020:2a9b3c4d-5e6f-4a1b-9c8d-7e6f5a4b3c2d"


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def valid(schema_name: str, value: dict[str, Any]) -> bool:
    return validate(value, parse_schema(catalog.load(schema_name)), raise_errors=True)


def project(name: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("completion_events", ("project_archived",))
    return project_changed(sample(name), company="C100", zone=SHANGHAI, **kw)


def test_project_events_map_to_project_changed() -> None:
    created = project("project_created")
    assert {k: v for k, v in created.items() if k != "meta"} == {
        "op": "CREATED", "project": "BIZ", "name": "Tower A construction", "company": "C100", "source_status": None,
        "manager": LEAD, "customer": None, "cost_center": None, "planned_start": None, "planned_end": None,
        "actual_end": None, "budget_amount": None, "currency": None, "version": 1793494800000}  # fmt: skip
    assert created["meta"]["event_id"] == lineage.event_id("jira", "project", 10000, "1793494800000:CREATED")
    assert created["meta"]["correlation_id"] == "BIZ" and created["meta"]["source_system"] == "jira"
    assert created["meta"]["occurred_at"] == datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
    assert valid("bizbus.pm.ProjectChanged", created)

    updated = project("project_updated")
    assert (updated["op"], updated["name"], updated["version"]) == ("UPDATED", "Tower A construction (phase 1)",
                                                                     1793859165321)  # fmt: skip

    archived = project("project_archived")  # 2026-12-20 17:30 UTC is already the 21st in Shanghai
    assert (archived["op"], archived["actual_end"], archived["version"]) == ("COMPLETED", date(2026, 12, 21),
                                                                             1797787800000)  # fmt: skip
    assert valid("bizbus.pm.ProjectChanged", archived)
    assert project("project_archived", completion_events=())["op"] == "UPDATED"
    in_utc = project_changed(
        sample("project_archived"), company="C100", zone=UTC, completion_events=["project_archived"]
    )
    assert in_utc["actual_end"] == date(2026, 12, 20)
    deleted = {**sample("project_created"), "webhookEvent": "project_deleted"}
    assert project_changed(deleted, company="C", zone=UTC, completion_events=())["op"] == "DELETED"
    assert project_changed({**deleted, "webhookEvent": "project_soft_deleted"}, company="C", zone=UTC,
                           completion_events=())["op"] == "DELETED"  # fmt: skip


def test_issue_payloads_map_to_task_changed() -> None:
    body = sample("issue_updated")
    v = task_changed(body["issue"], op="UPDATED", version=1793581262500, project="BIZ",
                     occurred=parse_time(body["issue"]["fields"]["updated"]))  # fmt: skip
    assert {k: x for k, x in v.items() if k != "meta"} == {
        "op": "UPDATED", "task": "BIZ-7", "project": "BIZ", "parent_task": "BIZ-5", "title": "Pour foundation slab",
        "status": "In Progress", "assignee": WORKER, "estimated_hours": Decimal("10.00"), "due_date": date(2026, 11, 20),
        "completed_at": None, "version": 1793581262500}  # fmt: skip
    assert v["meta"]["event_id"] == lineage.event_id("jira", "issue", "10042", 1793581262500)
    assert valid("bizbus.pm.TaskChanged", v)
    gone = task_changed(
        body["issue"], op="DELETED", version=1796090400000, project="BIZ", occurred=datetime.now(UTC)
    )
    assert gone["meta"]["event_id"] == lineage.event_id("jira", "issue", "10042", "deleted")


def test_worklog_payload_maps_to_timesheet_entry_with_its_own_offset_date() -> None:
    wl = sample("worklog_created")["worklog"]
    facts = worklog_facts(wl, "BIZ", "BIZ-7")
    value = timesheet_entry(
        wl["id"], facts, op="CREATED", version=1793701200123, occurred=parse_time(wl["updated"])
    )
    assert {k: x for k, x in value.items() if k != "meta"} == {
        "op": "CREATED", "worklog_id": "10100", "project": "BIZ", "task": "BIZ-7", "employee": WORKER,
        "work_date": date(2026, 11, 3),  # 00:30 +0800: the 2nd in UTC, the 3rd where the work was done
        "hours": Decimal("7.50"), "billable": True, "description": "Formwork and rebar check", "version": 1793701200123}  # fmt: skip
    assert value["meta"]["event_id"] == lineage.event_id("jira", "worklog", "10100", 1793701200123)
    assert value["meta"]["occurred_at"] == datetime(2026, 11, 3, 10, 20, 0, 123000, tzinfo=UTC)
    assert valid("bizbus.pm.TimesheetEntry", value)
    assert worklog_facts(sample("worklog_updated")["worklog"], "BIZ", "BIZ-7").hours == Decimal("2.78")


@pytest.mark.parametrize(("seconds", "expected"), [(3600, "1.00"), (10000, "2.78"), (18, "0.01"), (17, "0.00"),
                                                   (5400, "1.50"), (0, "0.00"), ("900", "0.25")])  # fmt: skip
def test_hours_are_exact_decimals_rounded_half_up(seconds: Any, expected: str) -> None:
    assert hours(seconds) == Decimal(expected) and hours(seconds).as_tuple().exponent == -2


def test_times_and_keys() -> None:
    t = parse_time("2026-11-02T09:00:00.000+0800")
    assert t.date() == date(2026, 11, 2) and to_ms(t) == 1793581200000
    assert to_ms(parse_time("2026-11-02T01:00:00.000Z")) == 1793581200000
    assert format_jql_time(t, ZoneInfo("UTC")) == "2026/11/02 01:00"
    assert format_jql_time(parse_time("2026-11-02T09:00:59.999+0800"), SHANGHAI) == "2026/11/02 09:00"
    assert issue_key("10042", 5) == "issue:10042@5" and issue_key("10042", None) == "issue:10042@deleted"
    for bad in ("", None, "yesterday", "2026-11-02T09:00:00"):
        with pytest.raises(MappingError):
            parse_time(bad)


def test_comment_text_from_plain_string_or_atlassian_document() -> None:
    assert adf_text("  Formwork  ") == "Formwork"
    assert adf_text(None) is None and adf_text("") is None and adf_text(42) is None
    doc = {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "Formwork "}, {"type": "text", "text": "done"}]},
        {"type": "paragraph", "content": [{"type": "mention", "attrs": {"id": "x", "text": "@Li Wei"}},
                                          {"type": "hardBreak"}, {"type": "text", "text": "checked"}]},
        {"type": "bulletList", "content": [{"type": "listItem", "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "rebar"}]}]}]}]}  # fmt: skip
    assert adf_text(doc) == "Formwork done\n@Li Wei\nchecked\nrebar"


def test_a_worklog_without_author_or_start_is_a_mapping_error() -> None:
    wl = sample("worklog_created")["worklog"]
    for missing in ("author", "started"):
        with pytest.raises(MappingError, match=missing):
            worklog_facts({k: v for k, v in wl.items() if k != missing}, "BIZ", None)
