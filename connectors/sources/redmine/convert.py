"""Inbox rows of the Redmine source -> canonical events."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from bizbus.connectors.runtime.inbox import Converter, Event, InboxRow

from bizbus.failures import Permanent

from .api import RedmineClient
from .mapping import (
    KIND_ISSUE,
    KIND_PROJECT,
    KIND_TIME_ENTRY,
    KIND_TIME_ENTRY_DELETED,
    project_event,
    task_event,
    timesheet_event,
)


class RedmineConverter(Converter):
    """Inbox rows -> canonical events; reads a project only when its identifier is not in the row."""

    def __init__(self, client: RedmineClient, company: str, tz: ZoneInfo) -> None:
        self.client, self.company, self.tz = client, company, tz
        self._idents: dict[int, str] = {}

    def setup(self) -> None:
        self.client.setup()

    def close(self) -> None:
        self.client.close()

    def convert(self, row: InboxRow) -> list[Event]:
        p = row.payload
        try:
            if row.kind == KIND_PROJECT:
                return [project_event(p, self.company, self.tz)]
            if row.kind == KIND_ISSUE:
                return [task_event(p, self._project(p, p["issue"]))]
            if row.kind in (KIND_TIME_ENTRY, KIND_TIME_ENTRY_DELETED):
                deleted = row.kind == KIND_TIME_ENTRY_DELETED
                return [timesheet_event(p, self._project(p, p["time_entry"]), deleted)]
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise Permanent(f"inbox row {row.id} ({row.kind}): {type(exc).__name__}: {exc}",
                            reason="validation") from exc  # fmt: skip
        return []

    def _project(self, payload: Mapping[str, Any], obj: Mapping[str, Any]) -> str:
        if payload.get("project_identifier"):
            return str(payload["project_identifier"])
        pid = int(obj["project"]["id"])
        if pid not in self._idents:
            code, body = self.client.get(f"/projects/{pid}.json", allow=(403, 404))
            project = body.get("project") if isinstance(body, dict) else None
            if code != 200 or not isinstance(project, dict) or not project.get("identifier"):
                raise Permanent(f"Redmine project {pid} cannot be read (HTTP {code}), so its identifier is unknown",
                                reason="unknown_project")  # fmt: skip
            self._idents[pid] = str(project["identifier"])
        return self._idents[pid]
