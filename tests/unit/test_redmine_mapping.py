"""Pure parts of the Redmine connector: timestamps, hours, entity keys, payload -> canonical events, config."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import fastavro
import pytest
from bizbus.connectors.sources.redmine.config import RedmineConfig
from bizbus.connectors.sources.redmine.connector import RedmineSource
from bizbus.connectors.sources.redmine.mapping import (
    entity_key,
    epoch_ms,
    hours2,
    iso,
    parse_time,
    project_event,
    task_event,
    timesheet_event,
)
from bizbus.schemas import catalog
from pydantic import ValidationError

from bizbus.errors import ConfigError

SHANGHAI = ZoneInfo("Asia/Shanghai")


def encodes(schema: str, value: dict[str, Any]) -> None:
    fastavro.schemaless_writer(io.BytesIO(), catalog.parsed(schema), value)


def project(**over: Any) -> dict[str, Any]:
    return {"id": 12, "name": "环线二期", "identifier": "loop-2", "description": "", "homepage": "", "status": 1,
            "is_public": True, "inherit_members": False, "created_on": "2026-11-01T02:00:00Z",
            "updated_on": "2026-11-30T17:30:00Z", **over}  # fmt: skip


def test_timestamps_and_keys() -> None:
    dt = parse_time("2026-11-02T08:00:05Z")
    assert dt == datetime(2026, 11, 2, 8, 0, 5, tzinfo=UTC)
    assert parse_time("2026-11-02T16:00:05+08:00") == dt
    assert parse_time("2026-11-02T08:00:05") == dt  # naive: UTC
    assert iso(dt) == "2026-11-02T08:00:05Z"
    assert epoch_ms(dt) == 1793606405000
    assert entity_key("issue", 7, "2026-11-02T16:00:05+08:00") == "issue:7@2026-11-02T08:00:05Z"
    assert entity_key("project", "3", "2026-11-02T08:00:05Z", (5, 1793606500123)) == (
        "project:3@2026-11-02T08:00:05Z#status5@1793606500123"
    )
    with pytest.raises(ValueError):
        parse_time(None)


@pytest.mark.parametrize(("raw", "exact"), [(1.5, "1.50"), (1.333, "1.33"), (2, "2.00"), (0.1, "0.10"),
                                            (1.005, "1.01"), ("7.25", "7.25")])  # fmt: skip
def test_hours_are_exact_two_place_decimals(raw: Any, exact: str) -> None:
    assert hours2(raw) == Decimal(exact)
    assert str(hours2(raw)) == exact


@pytest.mark.parametrize("raw", [True, None, [1]])
def test_hours_refuse_non_numbers(raw: Any) -> None:
    with pytest.raises(ValueError):
        hours2(raw)


def test_project_first_seen_is_created_then_updated() -> None:
    first = project_event({"project": project(), "first": True}, "C01", SHANGHAI)
    later = project_event({"project": project(), "first": False}, "C01", SHANGHAI)
    assert first.topic == "bizbus.pm.project.v1" and first.key == "loop-2"
    v = first.value
    assert v["op"] == "CREATED" and later.value["op"] == "UPDATED"
    assert (v["project"], v["name"], v["company"], v["source_status"]) == ("loop-2", "环线二期", "C01", "active")
    assert v["version"] == epoch_ms(datetime(2026, 11, 30, 17, 30, tzinfo=UTC)) and v["actual_end"] is None
    assert v["meta"]["source_system"] == "redmine" and v["meta"]["correlation_id"] == "loop-2"
    assert v["meta"]["occurred_at"] == datetime(2026, 11, 30, 17, 30, tzinfo=UTC)
    again = project_event({"project": project(), "first": True}, "C01", SHANGHAI)
    assert again.value["meta"]["event_id"] == v["meta"]["event_id"]  # deterministic
    encodes("bizbus.pm.ProjectChanged", v)


@pytest.mark.parametrize(("status", "name"), [(5, "closed"), (9, "archived")])
def test_closed_or_archived_project_is_completed_on_the_local_day(status: int, name: str) -> None:
    ev = project_event({"project": project(status=status), "first": False}, "C01", SHANGHAI)
    assert ev.value["op"] == "COMPLETED" and ev.value["source_status"] == name
    assert ev.value["actual_end"] == date(2026, 12, 1)  # 17:30 UTC is 01:30 next day in Shanghai
    utc = project_event({"project": project(status=status)}, "C01", ZoneInfo("UTC"))
    assert utc.value["actual_end"] == date(2026, 11, 30)


def test_status_only_change_uses_the_pollers_version() -> None:
    ms = epoch_ms(datetime(2026, 12, 3, 1, 0, tzinfo=UTC))
    ev = project_event({"project": project(status=5), "first": False, "version_ms": ms}, "C01", SHANGHAI)
    assert ev.value["version"] == ms and ev.value["actual_end"] == date(2026, 12, 3)
    plain = project_event({"project": project(status=5), "first": False}, "C01", SHANGHAI)
    assert plain.value["meta"]["event_id"] != ev.value["meta"]["event_id"]


def issue(**over: Any) -> dict[str, Any]:
    return {"id": 4326, "project": {"id": 12, "name": "环线二期"}, "tracker": {"id": 2, "name": "Feature"},
            "status": {"id": 2, "name": "In Progress", "is_closed": False}, "priority": {"id": 4, "name": "Normal"},
            "author": {"id": 1, "name": "Admin"}, "assigned_to": {"id": 7, "name": "Zhang Wei"},
            "parent": {"id": 4300}, "subject": "钢筋下料", "description": "", "start_date": "2026-11-02",
            "due_date": "2026-11-20", "done_ratio": 30, "is_private": False, "estimated_hours": 12.5,
            "total_estimated_hours": 12.5, "created_on": "2026-11-02T01:00:00Z",
            "updated_on": "2026-11-03T09:15:00Z", "closed_on": None, **over}  # fmt: skip


def test_issue_to_task() -> None:
    ev = task_event({"issue": issue(), "first": True}, "loop-2")
    v = ev.value
    assert ev.topic == "bizbus.pm.task.v1" and ev.key == "loop-2"
    assert (v["op"], v["task"], v["project"], v["parent_task"], v["title"], v["status"], v["assignee"]) == (
        "CREATED", "4326", "loop-2", "4300", "钢筋下料", "In Progress", "7")
    assert v["estimated_hours"] == Decimal("12.50") and v["due_date"] == date(2026, 11, 20)
    assert v["completed_at"] is None and v["version"] == epoch_ms(datetime(2026, 11, 3, 9, 15, tzinfo=UTC))
    encodes("bizbus.pm.TaskChanged", v)


def test_closed_issue_has_completed_at_a_reopened_one_not() -> None:
    closed = issue(status={"id": 5, "name": "Closed", "is_closed": True}, closed_on="2026-11-03T09:15:00Z")
    assert task_event({"issue": closed}, "p").value["completed_at"] == datetime(2026, 11, 3, 9, 15, tzinfo=UTC)
    reopened = issue(closed_on="2026-11-03T09:15:00Z")  # Redmine keeps closed_on after a reopen
    assert task_event({"issue": reopened}, "p").value["completed_at"] is None
    bare = issue(assigned_to=None, parent=None, estimated_hours=None, due_date=None)
    v = task_event({"issue": bare, "first": False}, "p").value
    assert (v["op"], v["assignee"], v["parent_task"], v["estimated_hours"], v["due_date"]) == (
        "UPDATED", None, None, None, None)


def entry(**over: Any) -> dict[str, Any]:
    return {"id": 901, "project": {"id": 12, "name": "环线二期"}, "issue": {"id": 4326},
            "user": {"id": 7, "name": "Zhang Wei"}, "activity": {"id": 9, "name": "Development"}, "hours": 3.25,
            "comments": "现场放样", "spent_on": "2026-11-02", "created_on": "2026-11-02T10:00:00Z",
            "updated_on": "2026-11-02T10:00:00Z", **over}  # fmt: skip


def test_time_entry_to_timesheet() -> None:
    ev = timesheet_event({"time_entry": entry(), "first": True}, "loop-2")
    v = ev.value
    assert ev.topic == "bizbus.pm.timesheet.v1" and ev.key == "loop-2"
    assert (v["op"], v["worklog_id"], v["project"], v["task"], v["employee"], v["description"]) == (
        "CREATED", "901", "loop-2", "4326", "7", "现场放样")
    assert v["work_date"] == date(2026, 11, 2) and v["hours"] == Decimal("3.25") and v["billable"] is True
    assert v["version"] == epoch_ms(datetime(2026, 11, 2, 10, tzinfo=UTC))
    encodes("bizbus.pm.TimesheetEntry", v)
    edited = timesheet_event({"time_entry": entry(hours=4, updated_on="2026-11-04T08:00:00Z")}, "loop-2").value
    assert edited["op"] == "UPDATED" and edited["hours"] == Decimal("4.00") and edited["version"] > v["version"]
    assert edited["meta"]["event_id"] != v["meta"]["event_id"]


def test_time_entry_without_issue_and_deletion() -> None:
    no_issue = entry()
    del no_issue["issue"]
    assert timesheet_event({"time_entry": no_issue}, "p").value["task"] is None
    ms = epoch_ms(datetime(2026, 11, 5, tzinfo=UTC))
    gone = timesheet_event({"time_entry": entry(), "detected_ms": ms}, "loop-2", deleted=True).value
    assert gone["op"] == "DELETED" and gone["version"] == ms and gone["hours"] == Decimal("3.25")
    assert gone["meta"]["occurred_at"] == datetime(2026, 11, 5, tzinfo=UTC)
    later = timesheet_event({"time_entry": entry(), "detected_ms": ms + 5000}, "loop-2", deleted=True).value
    assert later["meta"]["event_id"] == gone["meta"]["event_id"]  # one deletion, one id
    encodes("bizbus.pm.TimesheetEntry", gone)
    with pytest.raises(ValueError):
        timesheet_event({"time_entry": entry(user=None)}, "p")


def config(**over: Any) -> RedmineConfig:
    return RedmineConfig.model_validate({"base_url": "https://redmine.example.com", "api_key_env": "REDMINE_KEY",
                                         "company": "C01", **over})  # fmt: skip


def test_config_defaults_and_limits() -> None:
    c = config()
    assert (c.timezone, c.overlap_seconds, c.reconcile_days, c.page_size, c.poll_interval_seconds) == (
        "Asia/Shanghai", 120, 31, 100, 300)
    assert config(start="2026-11-01").start == date(2026, 11, 1)
    for bad in ({"page_size": 101}, {"timezone": "Mars/Olympus"}, {"api_key_env": "not a name"},
                {"api_key": "secret"}, {"base_url": "redmine.example.com"}):  # fmt: skip
        with pytest.raises(ValidationError):
            config(**bad)
    for name, field in RedmineConfig.model_fields.items():
        assert field.description, name


def test_poll_only_connector_needs_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDMINE_KEY_NOT_SET", raising=False)
    src = RedmineSource("redmine-x", config(api_key_env="REDMINE_KEY_NOT_SET"), None)  # type: ignore[arg-type]
    assert src.handler() is None and src.takes_webhooks is False
    assert src.topics() == ("bizbus.pm.project.v1", "bizbus.pm.task.v1", "bizbus.pm.timesheet.v1")
    with pytest.raises(ConfigError, match="REDMINE_KEY_NOT_SET"):
        src.setup()
