"""Pure Jira -> canonical mapping: times, versions, entity keys, and the three canonical records.

Jira writes times as ``2026-11-02T09:00:00.000+0800`` (its own offset, ms precision) and webhook
``timestamp`` as epoch ms. Entity keys are the same whether a webhook or the backfill brings a change:
``worklog:<id>@<updated ms>``, ``worklog:<id>@deleted``, ``issue:<id>@<updated ms>``, ``issue:<id>@deleted``,
``project:<id>@<timestamp>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from bizbus import lineage

SYSTEM = "jira"
PROJECT_TOPIC = "bizbus.pm.project.v1"
TASK_TOPIC = "bizbus.pm.task.v1"
TIMESHEET_TOPIC = "bizbus.pm.timesheet.v1"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")
MAX_HOURS = Decimal("9999999.99")  # the largest decimal(9, 2)

ISSUE_EVENTS = {
    "jira:issue_created": "CREATED",
    "jira:issue_updated": "UPDATED",
    "jira:issue_deleted": "DELETED",
}
WORKLOG_EVENTS = {"worklog_created": "CREATED", "worklog_updated": "UPDATED", "worklog_deleted": "DELETED"}
PROJECT_EVENTS = {"project_created": "CREATED", "project_updated": "UPDATED", "project_archived": "UPDATED",
                  "project_soft_deleted": "DELETED", "project_deleted": "DELETED"}  # fmt: skip

# inbox kinds the backfill stores (webhook rows use "jira:<webhookEvent without jira: prefix>")
KIND_ISSUE_BACKFILL = "jira:issue_backfill"
KIND_WORKLOG_BACKFILL = "jira:worklog_backfill"
KIND_WORKLOG_DELETED_BACKFILL = "jira:worklog_deleted_backfill"


class MappingError(ValueError):
    """A payload lacks what the mapping needs (the caller decides: 400 in the webhook, dead letter later)."""


# -- times -----------------------------------------------------------------------------------------


def parse_time(text: Any, what: str = "time") -> datetime:
    """Jira's ``2026-11-02T09:00:00.000+0800`` (or RFC 3339) as an aware datetime in its own offset."""
    if not isinstance(text, str) or not text:
        raise MappingError(f"{what} is missing")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MappingError(f"{what} {text!r} is not a Jira date-time") from None
    if value.tzinfo is None:
        raise MappingError(f"{what} {text!r} has no UTC offset")
    return value


def to_ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    try:
        return EPOCH + timedelta(milliseconds=int(ms))
    except OverflowError:
        raise MappingError(f"epoch milliseconds {str(ms)[:40]} are out of range") from None


def timestamp_ms(payload: Mapping[str, Any]) -> int:
    ts = payload.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, int | float | str):
        raise MappingError("timestamp is missing")
    try:
        return int(ts)
    except ValueError:
        raise MappingError(f"timestamp {ts!r} is not epoch milliseconds") from None


def format_jql_time(value: datetime, zone: tzinfo) -> str:
    """JQL date literal ``yyyy/MM/dd HH:mm`` in the zone Jira reads it in, floored to the minute."""
    return value.astimezone(zone).strftime("%Y/%m/%d %H:%M")


def hours(seconds: Any) -> Decimal:
    """timeSpentSeconds / 3600 rounded half-up to 2 places; ``MappingError`` for what is not a number of
    seconds from 0 to ``MAX_HOURS`` hours (canonical hours are decimal(9, 2))."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | str):
        raise MappingError("timeSpentSeconds is missing")
    try:
        value = Decimal(str(seconds))
    except (InvalidOperation, ValueError):
        value = Decimal("NaN")
    if not value.is_finite():
        raise MappingError(f"timeSpentSeconds {str(seconds)[:40]!r} is not a number of seconds")
    try:
        value = (value / Decimal(3600)).quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than the context's precision: far out of range
        value = MAX_HOURS + 1
    if not 0 <= value <= MAX_HOURS:
        raise MappingError(f"timeSpentSeconds {str(seconds)[:40]} is out of range (0 to {MAX_HOURS} hours)")
    return value


def adf_text(comment: Any) -> str | None:
    """A worklog comment as plain text: a v2 string as is, a v3 Atlassian Document's text nodes joined."""
    if comment is None:
        return None
    if isinstance(comment, str):
        return comment.strip() or None
    if not isinstance(comment, Mapping):
        return None
    blocks = [_inline(b) for b in comment.get("content") or [] if isinstance(b, Mapping)]
    text = "\n".join(b for b in blocks if b).strip()
    return text or None


def _inline(node: Mapping[str, Any]) -> str:
    kind = node.get("type")
    if kind == "text":
        return str(node.get("text", ""))
    if kind == "hardBreak":
        return "\n"
    if kind in ("mention", "emoji", "status", "date"):
        attrs = node.get("attrs") or {}
        return str(attrs.get("text") or attrs.get("shortName") or "")
    parts = [_inline(c) for c in node.get("content") or [] if isinstance(c, Mapping)]
    joiner = "" if kind in ("paragraph", "heading") else "\n"
    return joiner.join(p for p in parts if p)


# -- versions and entity keys ----------------------------------------------------------------------


def issue_version(issue: Mapping[str, Any], fallback_ms: int | None = None) -> int:
    """``fields.updated`` as epoch ms, else the webhook timestamp."""
    updated = (issue.get("fields") or {}).get("updated")
    if updated:
        return to_ms(parse_time(updated, "issue fields.updated"))
    if fallback_ms is None:
        raise MappingError("issue fields.updated is missing")
    return fallback_ms


def worklog_version(worklog: Mapping[str, Any], fallback_ms: int | None = None) -> int:
    if worklog.get("updated"):
        return to_ms(parse_time(worklog["updated"], "worklog updated"))
    if fallback_ms is None:
        raise MappingError("worklog updated is missing")
    return fallback_ms


def issue_key(issue_id: Any, version: int | None) -> str:
    return f"issue:{issue_id}@{'deleted' if version is None else version}"


def worklog_key(worklog_id: Any, version: int | None) -> str:
    return f"worklog:{worklog_id}@{'deleted' if version is None else version}"


def project_key(project_id: Any, timestamp: int) -> str:
    return f"project:{project_id}@{timestamp}"


def need(mapping: Any, key: str, what: str) -> Any:
    if not isinstance(mapping, Mapping) or mapping.get(key) in (None, ""):
        raise MappingError(f"{what} lacks {key!r}")
    return mapping[key]


# -- canonical records -----------------------------------------------------------------------------


def _meta(entity: str, ident: Any, version: Any, correlation: str, occurred: datetime,
          trace: Mapping[str, str] | None) -> dict[str, Any]:  # fmt: skip
    return lineage.meta(event_id=lineage.event_id(SYSTEM, entity, ident, version), correlation_id=correlation,
                        source_system=SYSTEM, occurred_at=occurred, trace=dict(trace or {}))  # fmt: skip


def project_op(event: str, completion_events: Iterable[str]) -> str:
    if event in completion_events:
        return "COMPLETED"
    try:
        return PROJECT_EVENTS[event]
    except KeyError:
        raise MappingError(f"{event!r} is not a project event") from None


def project_changed(payload: Mapping[str, Any], *, company: str, zone: tzinfo, completion_events: Iterable[str],
                    trace: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """A project webhook body -> ``bizbus.pm.ProjectChanged`` (manager = the lead's raw accountId)."""
    event = str(payload.get("webhookEvent"))
    op = project_op(event, tuple(completion_events))
    ts = timestamp_ms(payload)
    project = need(payload, "project", "body")
    key = str(need(project, "key", "project"))
    occurred = from_ms(ts)
    lead = project.get("projectLead") or {}
    return {
        "meta": _meta("project", project.get("id", key), f"{ts}:{op}", key, occurred, trace),
        "op": op, "project": key, "name": str(project.get("name") or key), "company": company,
        "source_status": None, "manager": lead.get("accountId") if isinstance(lead, Mapping) else None,
        "customer": None, "cost_center": None, "planned_start": None, "planned_end": None,
        "actual_end": occurred.astimezone(zone).date() if op == "COMPLETED" else None,
        "budget_amount": None, "currency": None, "version": ts,
    }  # fmt: skip


def issue_project(issue: Mapping[str, Any]) -> str | None:
    project = (issue.get("fields") or {}).get("project")
    return str(project["key"]) if isinstance(project, Mapping) and project.get("key") else None


def task_changed(issue: Mapping[str, Any], *, op: str, version: int, project: str, occurred: datetime,
                 trace: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """An issue (webhook or search result) -> ``bizbus.pm.TaskChanged``."""
    key = str(need(issue, "key", "issue"))
    fields = issue.get("fields") or {}
    status, assignee, parent = fields.get("status"), fields.get("assignee"), fields.get("parent")
    estimate, due, resolved = (
        fields.get("timeoriginalestimate"),
        fields.get("duedate"),
        fields.get("resolutiondate"),
    )
    return {
        "meta": _meta("issue", need(issue, "id", "issue"), "deleted" if op == "DELETED" else version, project,
                      occurred, trace),
        "op": op, "task": key, "project": project,
        "parent_task": parent.get("key") if isinstance(parent, Mapping) else None,
        "title": str(fields.get("summary") or key),
        "status": status.get("name") if isinstance(status, Mapping) else None,
        "assignee": assignee.get("accountId") if isinstance(assignee, Mapping) else None,
        "estimated_hours": hours(estimate) if isinstance(estimate, int | float) and estimate >= 0 else None,
        "due_date": date.fromisoformat(due) if isinstance(due, str) and due else None,
        "completed_at": parse_time(resolved, "resolutiondate") if resolved else None,
        "version": version,
    }  # fmt: skip


@dataclass(frozen=True)
class WorklogFacts:
    """What a TimesheetEntry needs besides the project; also remembered for a later bare deletion."""

    project: str
    task: str | None
    employee: str
    work_date: date
    hours: Decimal
    description: str | None = None


def worklog_facts(worklog: Mapping[str, Any], project: str, task: str | None) -> WorklogFacts:
    author = need(worklog, "author", "worklog")
    started = parse_time(need(worklog, "started", "worklog"), "worklog started")
    return WorklogFacts(project=project, task=task, employee=str(need(author, "accountId", "worklog author")),
                        work_date=started.date(), hours=hours(worklog.get("timeSpentSeconds")),
                        description=adf_text(worklog.get("comment")))  # fmt: skip


def timesheet_entry(worklog_id: Any, facts: WorklogFacts, *, op: str, version: int, occurred: datetime,
                    trace: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """-> ``bizbus.pm.TimesheetEntry``; a deletion's event id does not depend on when it was seen."""
    return {
        "meta": _meta("worklog", worklog_id, "deleted" if op == "DELETED" else version, facts.project, occurred,
                      trace),
        "op": op, "worklog_id": str(worklog_id), "project": facts.project, "task": facts.task,
        "employee": facts.employee, "work_date": facts.work_date, "hours": facts.hours, "billable": True,
        "description": facts.description, "version": version,
    }  # fmt: skip
