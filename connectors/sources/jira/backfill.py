"""The pull side: find what no webhook delivered (Jira webhooks are best-effort).

Every poll reads, from the watermark minus ``overlap_minutes``:
1. issues: ``updated >= "<yyyy/MM/dd HH:mm>" ORDER BY updated ASC`` via ``POST /rest/api/3/search/jql``
   (``nextPageToken`` until none);
2. worklogs: ``GET /rest/api/3/worklog/updated?since=<ms>`` (pages of <= 1000, ``until`` / ``lastPage``)
   then ``POST /rest/api/3/worklog/list`` in chunks of <= 1000 ids;
3. deletions: ``GET /rest/api/3/worklog/deleted?since=<ms>``.
Only changes older than ``settle_seconds`` are taken (a webhook in flight is not a gap), and the
watermark ``{"issues": iso, "worklogs_ms": int, "deleted_ms": int}`` moves only to what was taken. The
entity keys equal the webhook's for the same version, so the inbox drops what a webhook already brought.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bizbus.connectors.runtime.cursor import Position
from bizbus.connectors.runtime.inbox import Backfill, Delivery, PollResult

from .api import WORKLOG_LIST_MAX, JiraApi
from .config import JiraConfig
from .mapping import (
    KIND_ISSUE_BACKFILL,
    KIND_WORKLOG_BACKFILL,
    KIND_WORKLOG_DELETED_BACKFILL,
    MappingError,
    format_jql_time,
    from_ms,
    issue_key,
    issue_version,
    parse_time,
    to_ms,
    worklog_key,
    worklog_version,
)

log = logging.getLogger(__name__)

ISSUE_FIELDS = ("summary", "status", "project", "updated", "created", "assignee", "parent", "duedate",
                "timeoriginalestimate", "resolutiondate")  # fmt: skip
MAX_PAGES = 10_000  # a guard against a vendor that never says "last page"


@dataclass(frozen=True)
class Watermark:
    issues: datetime
    worklogs_ms: int
    deleted_ms: int

    @classmethod
    def of(cls, position: Position | None, start: datetime) -> Watermark:
        """The stored watermark; a part it lacks (none stored yet) starts at ``start``."""
        pos, ms = position or {}, to_ms(start)
        issues = parse_time(pos["issues"], "watermark issues") if pos.get("issues") else start
        return cls(issues, int(pos.get("worklogs_ms", ms)), int(pos.get("deleted_ms", ms)))

    def position(self) -> dict[str, Any]:
        return {"issues": self.issues.isoformat(timespec="milliseconds"), "worklogs_ms": self.worklogs_ms,
                "deleted_ms": self.deleted_ms}  # fmt: skip


def issues_jql(since: datetime, overlap: timedelta, zone: Any) -> str:
    return f'updated >= "{format_jql_time(since - overlap, zone)}" ORDER BY updated ASC'


class JiraBackfill(Backfill):
    def __init__(self, config: JiraConfig, connector: str, api: JiraApi,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.config, self.connector, self.api, self.clock = config, connector, api, clock

    def setup(self) -> None:
        self.api.open()

    def close(self) -> None:
        self.api.close()

    def _start(self, now: datetime) -> datetime:
        if self.config.start is None:
            return now
        return datetime.combine(self.config.start, datetime.min.time(), tzinfo=self.config.zone)

    def poll(self, watermark: Position | None) -> PollResult:
        now_ms = int(self.clock() * 1000)
        cutoff = now_ms - int(self.config.settle_seconds * 1000)
        wm = Watermark.of(watermark, self._start(from_ms(now_ms)))
        out: list[Delivery] = []
        issues = self._issues(wm.issues, cutoff, out)
        worklogs = self._worklogs(wm.worklogs_ms, cutoff, out)
        deleted = self._deleted(wm.deleted_ms, cutoff, out)
        new = Watermark(issues, worklogs, deleted)
        log.info(
            "jira backfill %s: %d change(s) found; watermark %s", self.connector, len(out), new.position()
        )
        return PollResult(tuple(out), new.position())

    # -- 1. issues ---------------------------------------------------------------------------------

    def _issues(self, since: datetime, cutoff: int, out: list[Delivery]) -> datetime:
        jql = issues_jql(since, timedelta(minutes=self.config.overlap_minutes), self.config.jql_zone)
        newest, token, page = since, None, 0
        while page < MAX_PAGES:
            page += 1
            answer = self.api.search_jql(jql, ISSUE_FIELDS, self.config.page_size, token)
            issues = answer.get("issues") or []
            log.info(
                "jira backfill %s: JQL page %d: %d issue(s) (%s)", self.connector, page, len(issues), jql
            )
            for issue in issues:
                try:
                    version = issue_version(issue)
                except MappingError as exc:
                    log.warning(
                        "jira backfill %s: issue %s skipped: %s", self.connector, issue.get("key"), exc
                    )
                    continue
                if version > cutoff:  # not settled yet (ordered by updated: the rest is newer)
                    return newest
                out.append(Delivery(f"poll:{issue_key(issue['id'], version)}", KIND_ISSUE_BACKFILL,
                                    {"issue": issue}, issue_key(issue["id"], version)))  # fmt: skip
                newest = max(newest, parse_time(issue["fields"]["updated"]))
            token = answer.get("nextPageToken")
            if not token or answer.get("isLast") is True:
                break
        return newest

    # -- 2. worklogs -------------------------------------------------------------------------------

    def _changed(self, read: Callable[[int], Mapping[str, Any]], since: int, cutoff: int,
                 what: str) -> Iterator[tuple[str, int]]:  # fmt: skip
        """(worklog id, updatedTime) of a ChangedWorklogs listing, oldest first, settled ones only."""
        page = 0
        while page < MAX_PAGES:
            page += 1
            answer = read(since)
            values = answer.get("values") or []
            log.info("jira backfill %s: %s worklogs page %d since %d: %d", self.connector, what, page, since,
                     len(values))  # fmt: skip
            for v in values:
                if int(v["updatedTime"]) > cutoff:
                    return
                yield str(v["worklogId"]), int(v["updatedTime"])
            until = answer.get("until")
            if answer.get("lastPage", True) or until is None or int(until) <= since:
                return
            since = int(until)

    def _worklogs(self, since: int, cutoff: int, out: list[Delivery]) -> int:
        start = max(0, since - self.config.overlap_minutes * 60_000)
        # a next page starts at the previous page's `until`: the same worklog can be listed twice
        changed = list(dict(self._changed(self.api.worklogs_updated, start, cutoff, "updated")).items())
        newest = since
        for i in range(0, len(changed), WORKLOG_LIST_MAX):
            chunk = changed[i : i + WORKLOG_LIST_MAX]
            found = {str(w.get("id")): w for w in self.api.worklogs([c[0] for c in chunk])}
            log.info("jira backfill %s: worklog list: %d of %d read", self.connector, len(found), len(chunk))
            for ident, updated_time in chunk:
                worklog = found.get(ident)
                if worklog is None:  # deleted meanwhile or not visible: the deleted list says which
                    continue
                try:
                    version = worklog_version(worklog)
                except MappingError as exc:
                    log.warning("jira backfill %s: worklog %s skipped: %s", self.connector, ident, exc)
                    continue
                if version > cutoff:  # changed again since the listing: the next poll takes it
                    continue
                key = worklog_key(ident, version)
                out.append(Delivery(f"poll:{key}", KIND_WORKLOG_BACKFILL, {"worklog": worklog}, key))
                newest = max(newest, updated_time)
        return newest

    # -- 3. deletions ------------------------------------------------------------------------------

    def _deleted(self, since: int, cutoff: int, out: list[Delivery]) -> int:
        start = max(0, since - self.config.overlap_minutes * 60_000)
        newest = since
        for ident, deleted_at in dict(
            self._changed(self.api.worklogs_deleted, start, cutoff, "deleted")
        ).items():
            key = worklog_key(ident, None)
            out.append(Delivery(f"poll:{key}", KIND_WORKLOG_DELETED_BACKFILL,
                                {"deleted": {"worklogId": ident, "updatedTime": deleted_at}}, key))  # fmt: skip
            newest = max(newest, deleted_at)
        return newest
