"""Inbox rows (webhook bodies and backfill finds) -> canonical events.

A worklog names its issue only by id and can arrive before that issue: the project comes from the
issue map (filled by issue rows), else from ``GET /rest/api/3/issue/{id}?fields=project`` — which is
why this happens here and not in the webhook handler. 404 -> dead letter (unknown_issue), 401/403 ->
Fatal, 429/5xx -> the row is tried again later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bizbus.connectors.runtime.inbox import Converter, Event, InboxRow

from bizbus.failures import Permanent

from .config import JiraConfig
from .mapping import (
    ISSUE_EVENTS,
    KIND_ISSUE_BACKFILL,
    KIND_WORKLOG_BACKFILL,
    KIND_WORKLOG_DELETED_BACKFILL,
    PROJECT_TOPIC,
    TASK_TOPIC,
    TIMESHEET_TOPIC,
    MappingError,
    WorklogFacts,
    adf_text,
    from_ms,
    hours,
    issue_project,
    issue_version,
    need,
    parse_time,
    project_changed,
    task_changed,
    timesheet_entry,
    timestamp_ms,
    worklog_facts,
    worklog_version,
)
from .state import IssueRef, MemoryState

log = logging.getLogger(__name__)


class JiraConverter(Converter):
    """``state``: a ``MemoryState`` / ``PgState``; ``api``: anything with ``issue(id, fields)`` (a JiraApi)."""

    def __init__(self, config: JiraConfig, connector: str, state: MemoryState, api: Any) -> None:
        self.config, self.connector, self.state, self.api = config, connector, state, api
        self.trace = {"connector": connector}
        self.lookups = 0  # issue API reads (for tests and logs)

    def setup(self) -> None:
        self.state.setup()
        if hasattr(self.api, "open"):
            self.api.open()

    def flush(self) -> None:
        """The issue map and worklog facts of this batch, in one transaction (see state.py)."""
        self.state.flush()

    def discard(self) -> None:
        self.state.discard()

    def close(self) -> None:
        if hasattr(self.api, "close"):
            self.api.close()
        self.state.close()

    def convert(self, row: InboxRow) -> list[Event]:
        try:
            return self._convert(row.kind, row.payload)
        except MappingError as exc:
            raise Permanent(f"{row.kind}: {exc}", reason="mapping") from None

    def _convert(self, kind: str, p: Mapping[str, Any]) -> list[Event]:
        event = kind.removeprefix("jira:")
        if kind in ISSUE_EVENTS or kind == KIND_ISSUE_BACKFILL:
            return [self._task(kind, p)]
        if event in ("worklog_created", "worklog_updated") or kind == KIND_WORKLOG_BACKFILL:
            return [self._worklog(event, p)]
        if event == "worklog_deleted" or kind == KIND_WORKLOG_DELETED_BACKFILL:
            return [self._worklog_deleted(p)]
        if event.startswith("project_"):
            value = project_changed(p, company=self.config.company, zone=self.config.zone,
                                    completion_events=self.config.completion_events, trace=self.trace)  # fmt: skip
            return [Event(PROJECT_TOPIC, value["project"], value)]
        raise Permanent(
            f"inbox kind {kind!r} is not a Jira change this connector knows", reason="unknown_kind"
        )

    # -- issues ------------------------------------------------------------------------------------

    def _task(self, kind: str, p: Mapping[str, Any]) -> Event:
        issue = need(p, "issue", "payload")
        ident = str(need(issue, "id", "issue"))
        ts = timestamp_ms(p) if "timestamp" in p else None
        project = issue_project(issue) or self._issue_ref(ident).project
        self.state.remember_issue(ident, IssueRef(str(need(issue, "key", "issue")), project))
        if kind == "jira:issue_deleted":
            op, version = "DELETED", ts if ts is not None else issue_version(issue)
        else:
            version = issue_version(issue, ts)
            op = ISSUE_EVENTS.get(kind) or _backfill_op(issue.get("fields") or {})
        value = task_changed(issue, op=op, version=version, project=project, occurred=from_ms(version),
                             trace=self.trace)  # fmt: skip
        return Event(TASK_TOPIC, project, value)

    def _issue_ref(self, issue_id: str) -> IssueRef:
        ref = self.state.issue(issue_id)
        if ref is not None:
            return ref
        self.lookups += 1
        answer = self.api.issue(issue_id, "project")  # 404 -> Permanent unknown_issue, 401/403 -> Fatal
        project = issue_project(answer)
        if not project or not answer.get("key"):
            raise Permanent(f"Jira issue {issue_id} answered without key or project", reason="unknown_issue")
        ref = IssueRef(str(answer["key"]), project)
        self.state.remember_issue(issue_id, ref)
        log.info("jira %s: issue %s is %s in project %s (read from the API)", self.connector, issue_id, ref.key,
                 ref.project)  # fmt: skip
        return ref

    # -- worklogs ----------------------------------------------------------------------------------

    def _worklog(self, event: str, p: Mapping[str, Any]) -> Event:
        worklog = need(p, "worklog", "payload")
        ident = str(need(worklog, "id", "worklog"))
        ref = self._issue_ref(str(need(worklog, "issueId", "worklog")))
        ts = timestamp_ms(p) if "timestamp" in p else None
        version = worklog_version(worklog, ts)
        if event == "worklog_created":
            op = "CREATED"
        elif event == "worklog_updated":
            op = "UPDATED"
        else:
            op = (
                "CREATED"
                if worklog.get("created") and worklog.get("created") == worklog.get("updated")
                else "UPDATED"
            )
        facts = worklog_facts(worklog, ref.project, ref.key)
        self.state.remember_worklog(ident, facts)
        occurred = (
            parse_time(worklog["updated"], "worklog updated") if worklog.get("updated") else from_ms(version)
        )
        value = timesheet_entry(ident, facts, op=op, version=version, occurred=occurred, trace=self.trace)
        return Event(TIMESHEET_TOPIC, ref.project, value)

    def _worklog_deleted(self, p: Mapping[str, Any]) -> Event:
        if "deleted" in p:  # the backfill: only an id and the deletion time
            gone = need(p, "deleted", "payload")
            ident, version, worklog = (
                str(need(gone, "worklogId", "deleted worklog")),
                int(gone["updatedTime"]),
                {},
            )
        else:
            worklog = need(p, "worklog", "payload")
            ident, version = str(need(worklog, "id", "worklog")), timestamp_ms(p)
        facts = self._deleted_facts(ident, worklog)
        value = timesheet_entry(ident, facts, op="DELETED", version=version, occurred=from_ms(version),
                                trace=self.trace)  # fmt: skip
        return Event(TIMESHEET_TOPIC, facts.project, value)

    def _deleted_facts(self, ident: str, worklog: Mapping[str, Any]) -> WorklogFacts:
        """The payload's own facts first, then what was remembered for the worklog; hours default to 0."""
        known = self.state.worklog(ident)
        if known is not None:
            project, task = known.project, known.task
        elif worklog.get("issueId"):
            ref = self._issue_ref(str(worklog["issueId"]))
            project, task = ref.project, ref.key
        else:
            raise Permanent(f"worklog {ident} was deleted but bizbus never saw it (no project, employee or day"
                            " to reverse)", reason="unknown_worklog")  # fmt: skip
        author = worklog.get("author") if isinstance(worklog.get("author"), Mapping) else {}
        employee = author.get("accountId") or (known.employee if known else None)
        work_date = parse_time(worklog["started"], "worklog started").date() if worklog.get("started") else (
            known.work_date if known else None)  # fmt: skip
        if not employee or work_date is None:
            raise Permanent(
                f"worklog {ident} was deleted; its author or start is unknown", reason="unknown_worklog"
            )
        seconds = worklog.get("timeSpentSeconds")
        spent = hours(seconds) if seconds is not None else (known.hours if known else Decimal("0.00"))
        return WorklogFacts(project=project, task=task, employee=str(employee), work_date=work_date, hours=spent,
                            description=adf_text(worklog.get("comment")))  # fmt: skip


def _backfill_op(fields: Mapping[str, Any]) -> str:
    created, updated = fields.get("created"), fields.get("updated")
    return "CREATED" if created and created == updated else "UPDATED"
