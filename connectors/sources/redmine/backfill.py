"""The Redmine poller: every change since the watermark, as inbox deliveries (Redmine has no webhooks)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bizbus.connectors.runtime.cursor import Position
from bizbus.connectors.runtime.inbox import Backfill, Delivery, PollResult

from .api import RedmineClient
from .config import RedmineConfig
from .mapping import (
    ACTIVE,
    KIND_ISSUE,
    KIND_PROJECT,
    KIND_TIME_ENTRY,
    KIND_TIME_ENTRY_DELETED,
    RANK,
    entity_key,
    epoch_ms,
    from_ms,
    iso,
    parse_time,
)
from .state import RedmineState, Seen

log = logging.getLogger(__name__)


class RedminePoller(Backfill):
    """Finds the changes since the watermark ``{"projects"|"issues"|"time_entries": "<max updated_on>"}``."""

    def __init__(self, connector: str, client: RedmineClient, state: RedmineState, config: RedmineConfig) -> None:
        self.connector, self.client, self.state, self.c = connector, client, state, config
        self.tz = ZoneInfo(config.timezone)
        self.time_entry_filter: bool | None = None  # does /time_entries.json honour updated_on? None: unknown

    def setup(self) -> None:
        self.client.setup()
        self.state.setup()

    def close(self) -> None:
        self.client.close()
        self.state.close()

    def poll(self, watermark: Position | None, now: datetime | None = None) -> PollResult:
        now = now or datetime.now(UTC)
        wm = dict(watermark or {})
        self._found: dict[str, tuple[tuple[int, int, int], Delivery]] = {}
        self._marks: dict[str, datetime] = {}
        with self.state.transaction():  # a failed poll leaves the state as it was
            idents = self._projects(self._since(wm, "projects"), now)
            self._issues(self._since(wm, "issues"), idents)
            self._time_entries(self._since(wm, "time_entries"), "time_entries" not in wm, now, idents)
        new_wm = dict(wm)
        for resource, mark in self._marks.items():
            if resource not in wm or mark > parse_time(wm[resource]):
                new_wm[resource] = iso(mark)
        found = [d for _, d in sorted(self._found.values(), key=lambda x: x[0])]
        log.info("redmine %s: poll found %d change(s); watermark %s", self.connector, len(found), new_wm)
        return PollResult(tuple(found), new_wm)

    def _since(self, wm: Mapping[str, Any], resource: str) -> datetime | None:
        if resource in wm:
            return parse_time(wm[resource]) - timedelta(seconds=self.c.overlap_seconds)
        if self.c.start is not None:
            return datetime.combine(self.c.start, time(0), self.tz).astimezone(UTC)
        return None

    def _mark(self, resource: str, at: datetime) -> None:
        if resource not in self._marks or at > self._marks[resource]:
            self._marks[resource] = at

    def _emit(self, kind: str, key: str, at: datetime, rid: int, payload: dict[str, Any]) -> None:
        self._found[key] = ((epoch_ms(at), RANK[kind], rid), Delivery(f"poll:{key}", kind, payload, key))

    def _list(self, path: str, key: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [x for page in self.client.pages(path, key, params, self.c.page_size) for x in page]

    def _projects(self, since: datetime | None, now: datetime) -> dict[int, str]:
        projects = {int(p["id"]): p for p in self._list("/projects.json", "projects", {"status": "1|5|9"})}
        seen = self.state.rows("project", list(projects))
        idents = self.state.identifiers()
        for pid, p in projects.items():
            version, status = iso(parse_time(p["updated_on"])), int(p.get("status") or ACTIVE)
            st = seen.get(pid)
            changed_ms = None
            if st is not None and st.last_version == version:  # Redmine closes/reopens without touching updated_on
                changed_ms = epoch_ms(now) if st.status != status else st.status_changed_ms
            at = max(parse_time(version), from_ms(changed_ms)) if changed_ms else parse_time(version)
            key = entity_key("project", pid, version, (status, changed_ms) if changed_ms else None)
            first_key = st.first_key if st else key
            self.state.put("project", pid, Seen(first_key, version, status, str(p["identifier"]),
                                                 status_changed_ms=changed_ms), st)  # fmt: skip
            idents[pid] = str(p["identifier"])
            self._mark("projects", at)
            if st is None or st.last_version != version or st.status != status or since is None or at >= since:
                self._emit(KIND_PROJECT, key, at, pid, {"project": p, "first": key == first_key,
                                                        "version_ms": epoch_ms(at)})  # fmt: skip
        return idents

    def _issues(self, since: datetime | None, idents: Mapping[int, str]) -> None:
        params = {"status_id": "*", "sort": "updated_on,id"}
        if since is not None:
            params["updated_on"] = ">=" + iso(since)
        issues = {int(i["id"]): i for i in self._list("/issues.json", "issues", params)}
        seen = self.state.rows("issue", list(issues))
        for iid, i in issues.items():
            version = iso(parse_time(i["updated_on"]))
            key, st = entity_key("issue", iid, version), seen.get(iid)
            first_key = st.first_key if st else key
            self.state.put("issue", iid, Seen(first_key, version), st)
            self._mark("issues", parse_time(version))
            if since is None or parse_time(version) >= since:
                pid = int(i["project"]["id"])
                payload = {"issue": i, "first": key == first_key, "project_identifier": idents.get(pid)}
                self._emit(KIND_ISSUE, key, parse_time(version), iid, payload)

    def _time_entries(self, since: datetime | None, first_poll: bool, now: datetime,
                      idents: Mapping[int, str]) -> None:  # fmt: skip
        window = now.astimezone(self.tz).date() - timedelta(days=self.c.reconcile_days)
        if first_poll and self.c.start is not None and self.c.start < window:
            window = self.c.start  # the first poll reads everything booked since start
        entries: dict[int, dict[str, Any]] = {}
        if since is None or self.time_entry_filter is not False:
            for e in self._changed_entries(since):
                entries[int(e["id"])] = e
        in_window: set[int] = set()
        for e in self._list("/time_entries.json", "time_entries", {"from": window.isoformat()}):
            in_window.add(int(e["id"]))
            old = entries.get(int(e["id"]))
            if old is None or parse_time(e["updated_on"]) >= parse_time(old["updated_on"]):
                entries[int(e["id"])] = e
        seen = self.state.rows("time_entry", list(entries))
        for tid, e in entries.items():
            self._entry(tid, e, seen.get(tid), since, idents)
        for tid, st in self.state.rows("time_entry", None, window).items():
            if tid in in_window or tid in entries:
                continue
            if st.deleted_ms is None:
                code, body = self.client.get(f"/time_entries/{tid}.json", allow=(403, 404))
                if code == 403:
                    log.warning("redmine %s: time entry %d is no longer visible (HTTP 403); not reported as deleted",
                                self.connector, tid)  # fmt: skip
                    continue
                if code == 200 and isinstance(body, dict) and isinstance(body.get("time_entry"), dict):
                    self._entry(tid, body["time_entry"], st, since, idents)  # moved out of the window
                    continue
                st = Seen(st.first_key, st.last_version, spent_on=st.spent_on, last=st.last,
                          deleted_ms=epoch_ms(now))  # fmt: skip
                self.state.put("time_entry", tid, st)
                log.info("redmine %s: time entry %d was deleted", self.connector, tid)
            last = st.last or {}
            if st.deleted_ms is not None and isinstance(last.get("time_entry"), dict):
                self._emit(KIND_TIME_ENTRY_DELETED, f"time_entry:{tid}@deleted", from_ms(st.deleted_ms), tid,
                           {**last, "detected_ms": st.deleted_ms})  # fmt: skip
        self.state.prune_deleted(window)

    def _changed_entries(self, since: datetime | None) -> Iterator[dict[str, Any]]:
        params = {"sort": "updated_on,id"} | ({"updated_on": ">=" + iso(since)} if since is not None else {})
        for page in self.client.pages("/time_entries.json", "time_entries", params, self.c.page_size):
            for e in page:
                if since is not None and parse_time(e["updated_on"]) < since - timedelta(seconds=1):
                    if self.time_entry_filter is not False:
                        log.warning("redmine %s: /time_entries.json ignores the updated_on filter (as Redmine's own "
                                    "query does); time entries are read through the %d-day reconcile window only",
                                    self.connector, self.c.reconcile_days)  # fmt: skip
                    self.time_entry_filter = False
                    return
                yield e
        if since is not None:
            self.time_entry_filter = True

    def _entry(self, tid: int, e: dict[str, Any], st: Seen | None, since: datetime | None,
               idents: Mapping[int, str]) -> None:  # fmt: skip
        version = iso(parse_time(e["updated_on"]))
        key = entity_key("time_entry", tid, version)
        first_key = st.first_key if st else key
        ident = idents.get(int(e["project"]["id"])) if isinstance(e.get("project"), Mapping) else None
        last = {"time_entry": e, "project_identifier": ident}
        self.state.put("time_entry", tid, Seen(first_key, version, spent_on=date.fromisoformat(str(e["spent_on"])),
                                               last=last), st)  # fmt: skip
        self._mark("time_entries", parse_time(version))
        if st is None or st.last_version != version or st.deleted_ms is not None or since is None \
                or parse_time(version) >= since:  # fmt: skip
            self._emit(KIND_TIME_ENTRY, key, parse_time(version), tid, {**last, "first": key == first_key})
