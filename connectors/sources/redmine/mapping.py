"""Redmine values -> canonical events (pure): ProjectChanged, TaskChanged, TimesheetEntry, and the entity keys
the poller names changes by (``project:<id>@<updated_on>``, ``time_entry:<id>@deleted`` ...)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from bizbus.connectors.runtime.inbox import Event

from bizbus import lineage

SYSTEM = "redmine"
PROJECT_TOPIC, TASK_TOPIC, TIMESHEET_TOPIC = "bizbus.pm.project.v1", "bizbus.pm.task.v1", "bizbus.pm.timesheet.v1"
KIND_PROJECT, KIND_ISSUE = "redmine:project", "redmine:issue"
KIND_TIME_ENTRY, KIND_TIME_ENTRY_DELETED = "redmine:time_entry", "redmine:time_entry_deleted"
ACTIVE, CLOSED, ARCHIVED = 1, 5, 9
PROJECT_STATUS = {ACTIVE: "active", CLOSED: "closed", ARCHIVED: "archived"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RANK = {KIND_PROJECT: 0, KIND_ISSUE: 1, KIND_TIME_ENTRY: 2, KIND_TIME_ENTRY_DELETED: 3}


def parse_time(value: Any) -> datetime:
    """An aware UTC datetime from Redmine's ISO 8601 (``2026-11-02T08:00:00Z``; naive = UTC)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"not an ISO timestamp: {value!r}")
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def iso(dt: datetime) -> str:
    """``2026-11-02T08:00:00Z`` (Redmine's own form; the form entity keys and filters use)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_ms(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def hours2(value: Any) -> Decimal:
    """Redmine's float hours as an exact 2-place decimal (from the float's text: 1.1 -> 1.10)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"hours is not a number: {value!r}")
    return Decimal(str(value)).quantize(Decimal("0.01"), ROUND_HALF_UP)


def entity_key(resource: str, rid: Any, updated_on: str, status_change: tuple[int, int] | None = None) -> str:
    key = f"{resource}:{int(rid)}@{iso(parse_time(updated_on))}"
    return key + (f"#status{status_change[0]}@{status_change[1]}" if status_change else "")


def _ref_id(obj: Mapping[str, Any], field: str) -> str | None:
    ref = obj.get(field)
    return str(ref["id"]) if isinstance(ref, Mapping) and ref.get("id") is not None else None


def _meta(entity: str, rid: Any, version: Any, project: str, at: datetime) -> dict[str, Any]:
    return lineage.meta(event_id=lineage.event_id(SYSTEM, entity, int(rid), version), correlation_id=project,
                        source_system=SYSTEM, occurred_at=at, trace={f"redmine_{entity}_id": str(rid)})  # fmt: skip


def project_event(payload: Mapping[str, Any], company: str, tz: ZoneInfo) -> Event:
    """ProjectChanged (key = identifier): COMPLETED when closed (5) or archived (9), else CREATED the first
    time the poller saw the project, UPDATED after."""
    p = payload["project"]
    status = int(p.get("status") or ACTIVE)
    version = int(payload.get("version_ms") or epoch_ms(parse_time(p["updated_on"])))
    at = from_ms(version)
    done = status in (CLOSED, ARCHIVED)
    op = "COMPLETED" if done else ("CREATED" if payload.get("first") else "UPDATED")
    ident = str(p["identifier"])
    value = {
        "meta": _meta("project", p["id"], version, ident, at), "op": op, "project": ident, "name": str(p["name"]),
        "company": company, "source_status": PROJECT_STATUS.get(status, str(status)), "manager": None,
        "customer": None, "cost_center": None, "planned_start": None, "planned_end": None,
        "actual_end": at.astimezone(tz).date() if done else None, "budget_amount": None, "currency": None,
        "version": version,
    }  # fmt: skip
    return Event(PROJECT_TOPIC, ident, value)


def task_event(payload: Mapping[str, Any], project: str) -> Event:
    """TaskChanged (key = project identifier; task = the issue id)."""
    i = payload["issue"]
    at = parse_time(i["updated_on"])
    version = epoch_ms(at)
    status = i.get("status") if isinstance(i.get("status"), Mapping) else {}
    closed_on = i.get("closed_on")
    completed = parse_time(closed_on) if closed_on and status.get("is_closed", True) else None
    estimate = i.get("estimated_hours")
    due = i.get("due_date")
    value = {
        "meta": _meta("issue", i["id"], version, project, at),
        "op": "CREATED" if payload.get("first") else "UPDATED", "task": str(int(i["id"])), "project": project,
        "parent_task": _ref_id(i, "parent"),
        "title": str(i["subject"]), "status": status.get("name"), "assignee": _ref_id(i, "assigned_to"),
        "estimated_hours": None if estimate is None else hours2(estimate),
        "due_date": date.fromisoformat(due) if due else None, "completed_at": completed, "version": version,
    }  # fmt: skip
    return Event(TASK_TOPIC, project, value)


def timesheet_event(payload: Mapping[str, Any], project: str, deleted: bool = False) -> Event:
    """TimesheetEntry (key = project identifier; worklog_id = the time entry id). A deletion carries the
    last known values, version = when the poller found it gone."""
    t = payload["time_entry"]
    if deleted:
        version = int(payload["detected_ms"])
        at, op, eid_version = from_ms(version), "DELETED", "DELETED"
    else:
        at = parse_time(t["updated_on"])
        version = epoch_ms(at)
        op, eid_version = ("CREATED" if payload.get("first") else "UPDATED"), version
    employee = _ref_id(t, "user")
    if employee is None:
        raise ValueError(f"time entry {t.get('id')} names no user")
    value = {
        "meta": _meta("time_entry", t["id"], eid_version, project, at), "op": op, "worklog_id": str(int(t["id"])),
        "project": project, "task": _ref_id(t, "issue"), "employee": employee,
        "work_date": date.fromisoformat(str(t["spent_on"])), "hours": hours2(t["hours"]), "billable": True,
        "description": t.get("comments"), "version": version,
    }  # fmt: skip
    return Event(TIMESHEET_TOPIC, project, value)
