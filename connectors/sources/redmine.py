"""``redmine``: Redmine projects, issues and time entries, polled (flows F1, F2, F8).

    RedminePoller (every poll_interval_seconds, lease "backfill"):
      GET /projects.json?status=1|5|9                   every project (few): changes + id -> identifier
      GET /issues.json?status_id=*&updated_on=>=T&sort=updated_on,id           changed issues (also closed)
      GET /time_entries.json?updated_on=>=T&sort=updated_on,id   changed entries, where the server filters
      GET /time_entries.json?from=<today - reconcile_days>       the reconcile window: changes + deletions
      GET /time_entries/<id>.json                       a seen id missing from the window: 404 = deleted
    inbox row ──► RedmineConverter: ProjectChanged / TaskChanged / TimesheetEntry (GET /projects/<id>.json
                                    only when a project's identifier is not known yet)

Released Redmine (5, the Debian package) has no webhooks, so the connector only polls. It is tested
against a contract fake (tests/fakes/redmine_api.py) because Redmine cannot be installed here: the Debian
package's post-install step runs Bundler against the Ruby gem registry, which is unreachable.

Published contract followed (redmine.org wiki Rest_api, Rest_Projects, Rest_Issues, Rest_TimeEntries):
* key in the ``X-Redmine-API-Key`` header; 401 without / with a wrong key, 403 when the REST web service is
  disabled or the user may not read; 404 unknown; 422 ``{"errors": [...]}`` for a filter Redmine refuses.
* lists answer ``{<things>: [...], total_count, offset, limit}``, paged by ``offset``/``limit`` (at most
  100). Pages are read with a small overlap and deduplicated, so a row that moves up while we page (an
  update or delete before it) is not skipped.
* ``/issues.json`` without ``status_id=*`` returns open issues only; ``updated_on=>=2026-11-01T00:00:00Z``
  (URL-encoded) filters by change time. ``/projects.json`` returns active projects unless ``status`` asks
  for more (1 active, 5 closed, 9 archived). Times are ISO 8601 UTC, ``spent_on`` a date, ``hours`` a float.

What Redmine does not document, and how the connector copes:
* ``/time_entries.json`` has no ``updated_on`` filter in Redmine's own query (it filters by ``spent_on``,
  ``from``/``to``); unknown filters are ignored. The connector sends it anyway and checks the answer: the
  first entry older than asked shows the server ignores it, and the connector then relies on the reconcile
  window alone (edits of entries booked more than ``reconcile_days`` ago are then not seen).
* closing, reopening and unarchiving a project (``Project#close``, ``#reopen``, ``#unarchive``) use
  ``update_all``, which leaves ``updated_on`` alone: the poller keeps each project's last status and reports a status that changed
  without a new ``updated_on`` as a change of its own (version = when the poller saw it).
* deleted time entries simply vanish; ids seen in the window are kept in ``<state_schema>.redmine_entries_
  <connector>`` and a missing one is confirmed with ``GET /time_entries/<id>.json`` (404) before it is
  reported as ``time_entry:<id>@deleted``.

Entity keys: ``project:<id>@<updated_on>`` (plus ``#status<n>@<ms>`` for a status-only change),
``issue:<id>@<updated_on>``, ``time_entry:<id>@<updated_on>``, ``time_entry:<id>@deleted``. Op CREATED is
decided when the poller first sees an id (the state table keeps that first key, so a re-poll of the same
version says CREATED again) and travels in the inbox row.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import psycopg
from bizbus.connectors.runtime.cursor import Position
from bizbus.connectors.runtime.inbox import (
    Backfill,
    Converter,
    Delivery,
    Event,
    InboxConfig,
    InboxConnector,
    InboxRow,
    PollResult,
    WebhookHandler,
)
from bizbus.connectors.runtime.pgconn import alive, close_quietly, connect
from psycopg import sql
from pydantic import Field, field_validator

from bizbus import lineage
from bizbus.errors import ConfigError
from bizbus.failures import (
    BackOff,
    ConnectorError,
    Fatal,
    Permanent,
    Retryable,
    classify_http_status,
    parse_retry_after,
)
from bizbus.logs import register_secret

log = logging.getLogger(__name__)

SYSTEM = "redmine"
PROJECT_TOPIC, TASK_TOPIC, TIMESHEET_TOPIC = "bizbus.pm.project.v1", "bizbus.pm.task.v1", "bizbus.pm.timesheet.v1"
KIND_PROJECT, KIND_ISSUE = "redmine:project", "redmine:issue"
KIND_TIME_ENTRY, KIND_TIME_ENTRY_DELETED = "redmine:time_entry", "redmine:time_entry_deleted"
ACTIVE, CLOSED, ARCHIVED = 1, 5, 9
PROJECT_STATUS = {ACTIVE: "active", CLOSED: "closed", ARCHIVED: "archived"}
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RANK = {KIND_PROJECT: 0, KIND_ISSUE: 1, KIND_TIME_ENTRY: 2, KIND_TIME_ENTRY_DELETED: 3}

# -- values (pure) -----------------------------------------------------------------------------------


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


# -- the Redmine API client ----------------------------------------------------------------------------


class RedmineClient:
    """GETs against the REST API with the key header; answers mapped onto the connector error taxonomy."""

    def __init__(self, base_url: str, api_key: str, api_key_env: str, timeout: float,
                 label: str = "redmine") -> None:  # fmt: skip
        self.base_url, self._key, self.api_key_env = base_url.rstrip("/"), api_key, api_key_env
        self.timeout, self.label = timeout, label
        self._http: httpx.Client | None = None

    def setup(self) -> None:
        if self._http is None:
            headers = {"X-Redmine-API-Key": self._key, "Accept": "application/json"}
            self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout, headers=headers)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def get(self, path: str, params: Mapping[str, Any] | None = None,
            allow: tuple[int, ...] = ()) -> tuple[int, Any]:  # fmt: skip
        """(status, JSON body) of a GET; statuses in ``allow`` come back as (status, None), others raise."""
        self.setup()
        assert self._http is not None
        resp = self._http.get(path, params=dict(params or {}))
        if resp.status_code in allow:
            return resp.status_code, None
        if resp.status_code != 200:
            raise self._failure(resp, path)
        try:
            return 200, resp.json()
        except ValueError:
            raise Retryable(f"Redmine answered GET {path} with a body that is not JSON",
                            reason="vendor_error") from None  # fmt: skip

    def pages(self, path: str, key: str, params: Mapping[str, Any],
              page_size: int) -> Iterator[list[dict[str, Any]]]:  # fmt: skip
        """Every page of a list. Steps overlap by a tenth of a page, so rows moving up are not skipped."""
        offset = 0
        while True:
            _, body = self.get(path, {**params, "offset": offset, "limit": page_size})
            items = body.get(key) if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise Retryable(f"Redmine answered GET {path} without a {key!r} list", reason="vendor_error")
            total = int(body.get("total_count", offset + len(items)))
            log.info("%s: GET %s offset %d: %d of %d", self.label, path, offset, len(items), total)
            yield [x for x in items if isinstance(x, dict)]
            if not items or offset + len(items) >= total:
                return
            offset += max(1, len(items) - len(items) // 10)

    def _failure(self, resp: httpx.Response, path: str) -> ConnectorError:
        status = resp.status_code
        where = f"Redmine {self.base_url} GET {path}"
        if status == 401:
            return Fatal(f"{where}: HTTP 401, the API key was refused; put a valid key of a Redmine user in "
                         f"environment variable {self.api_key_env}", reason="auth")  # fmt: skip
        if status == 403:
            return Fatal(f"{where}: HTTP 403; enable the REST web service (Administration > Settings > API) "
                         f"and let the user of the key in {self.api_key_env} view the data",
                         reason="forbidden")  # fmt: skip
        if status == 404:
            return Fatal(f"{where}: HTTP 404; is base_url the Redmine root?", reason="not_found")
        if status == 422:
            try:
                errors = resp.json().get("errors")
            except (ValueError, AttributeError):
                errors = resp.text[:200]
            return Fatal(f"{where}: HTTP 422, Redmine refused the query: {errors}", reason="bad_query")
        if status == 429:
            return BackOff(f"{where}: HTTP 429", retry_after=parse_retry_after(resp.headers.get("retry-after")),
                           reason="rate_limited")  # fmt: skip
        if status >= 500:
            return Retryable(f"{where}: HTTP {status}", reason="http_5xx")
        return classify_http_status(status, resp.headers, resp.text[:200]) or Retryable(f"{where}: HTTP {status}")


# -- what the poller remembers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    first_key: str  # entity key of the first sighting (that version is CREATED)
    last_version: str  # updated_on last seen
    status: int | None = None  # projects
    identifier: str | None = None  # projects
    spent_on: date | None = None  # time entries
    last: dict[str, Any] | None = None  # time entries: {"time_entry": ..., "project_identifier": ...}
    status_changed_ms: int | None = None  # projects: status changed without updated_on, seen at
    deleted_ms: int | None = None  # time entries: found deleted at


class RedmineState:
    """``<schema>.redmine_entries_<connector>``: ids seen (first key, last version) and, for time entries,
    the last values (a deletion event repeats them); written only by the poller (under the lease)."""

    COLUMNS = ("first_key", "last_version", "status", "identifier", "spent_on", "last", "status_changed_ms",
               "deleted_ms")  # fmt: skip

    def __init__(self, dsn: str, schema: str, connector: str) -> None:
        self.dsn, self.schema, self.connector = dsn, schema, connector
        self.name = "redmine_entries_" + connector.replace("-", "_")
        self.table = sql.Identifier(schema, self.name)
        self._conn: psycopg.Connection[Any] | None = None

    def setup(self) -> None:
        conn = self.conn()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('bizbus redmine ddl'))")
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute(sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (kind text NOT NULL, id bigint NOT NULL,
                   first_key text NOT NULL, last_version text NOT NULL, status int NULL, identifier text NULL,
                   spent_on date NULL, last jsonb NULL, status_changed_ms bigint NULL, deleted_ms bigint NULL,
                   seen_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (kind, id))"""
            ).format(self.table))  # fmt: skip
            note = f"bizbus redmine connector {self.connector}: ids seen, for CREATED/UPDATED and deletions"
            conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(self.table, sql.Literal(note)))

    def conn(self) -> psycopg.Connection[Any]:
        if not alive(self._conn):
            close_quietly(self._conn)
            self._conn = connect(self.dsn, f"redmine {self.connector}")
        return self._conn

    def transaction(self) -> AbstractContextManager[Any]:
        return self.conn().transaction()

    def rows(self, kind: str, ids: list[int] | None = None, spent_from: date | None = None) -> dict[int, Seen]:
        """Rows of ``kind`` by id, or the time entries spent on or after ``spent_from``."""
        cols = sql.SQL(", ").join(map(sql.Identifier, ("id", *self.COLUMNS)))
        if ids is not None:
            where, args = sql.SQL("kind = %s AND id = ANY(%s)"), (kind, ids)
        else:
            where, args = sql.SQL("kind = %s AND spent_on >= %s"), (kind, spent_from)
        found = self.conn().execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(cols, self.table, where), args)
        return {int(r[0]): Seen(*r[1:]) for r in found.fetchall()}

    def put(self, kind: str, rid: int, seen: Seen, old: Seen | None = None) -> None:
        """Insert or update a row (nothing to do when it equals ``old``, the row as read)."""
        if seen == old:
            return
        values = [getattr(seen, c) for c in self.COLUMNS]
        values[5] = None if seen.last is None else json.dumps(seen.last, ensure_ascii=False)
        cols = sql.SQL(", ").join(map(sql.Identifier, self.COLUMNS))
        updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                                     for c in self.COLUMNS[1:])  # first_key stays  # fmt: skip
        query = sql.SQL("INSERT INTO {} (kind, id, {}) VALUES (%s, %s{}) ON CONFLICT (kind, id) DO UPDATE SET {}, "
                        "seen_at = now()").format(self.table, cols, sql.SQL(", %s" * len(values)), updates)  # fmt: skip
        self.conn().execute(query, (kind, rid, *values))

    def identifiers(self) -> dict[int, str]:
        """Project id -> identifier of every project seen."""
        found = self.conn().execute(sql.SQL("SELECT id, identifier FROM {} WHERE kind = 'project' AND identifier "
                                            "IS NOT NULL").format(self.table))  # fmt: skip
        return {int(r[0]): str(r[1]) for r in found.fetchall()}

    def prune_deleted(self, before: date) -> None:
        self.conn().execute(sql.SQL("DELETE FROM {} WHERE kind = 'time_entry' AND deleted_ms IS NOT NULL "
                                    "AND spent_on < %s").format(self.table), (before,))  # fmt: skip

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -- the poller ---------------------------------------------------------------------------------------


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


# -- the converter ------------------------------------------------------------------------------------


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


# -- the connector ------------------------------------------------------------------------------------


class RedmineConfig(InboxConfig):
    """Configuration of the ``redmine`` source (the API key only as the name of an environment variable)."""

    base_url: str = Field(pattern=r"^https?://", description="Redmine root URL",
                          examples=["https://redmine.example.com"])  # fmt: skip
    api_key_env: str = Field(pattern=ENV_NAME, examples=["REDMINE_API_KEY"],
                             description="environment variable holding the REST API key "
                             "(My account > API access key)")  # fmt: skip
    company: str = Field(min_length=1, description="company code the Redmine projects belong to", examples=["C01"])
    timezone: str = Field(default="Asia/Shanghai", examples=["Asia/Shanghai"],
                          description="IANA time zone of the business dates (actual_end, the reconcile window)")  # fmt: skip
    start: date | None = Field(default=None, examples=["2026-11-01"],
                               description="the first poll reads changes since this day (00:00 in timezone) and time "
                               "entries booked since then; none: everything")  # fmt: skip
    overlap_seconds: float = Field(default=120, ge=0, le=86_400, examples=[120],
                                   description="each poll re-reads this much before the watermark (clock skew, "
                                   "transactions committing late); repeats are dropped by entity key")  # fmt: skip
    reconcile_days: int = Field(default=31, ge=1, le=3660, examples=[31],
                                description="time entries spent in the last N days are listed every poll to find "
                                "deleted ones (and edits, where Redmine cannot filter them by updated_on)")  # fmt: skip
    page_size: int = Field(default=100, ge=1, le=100, examples=[100],
                           description="rows per page (Redmine caps at 100)")  # fmt: skip
    timeout_seconds: float = Field(default=30, gt=0, le=300, examples=[30], description="timeout of each API call")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Asia/Shanghai)") from None
        return value


class RedmineSource(InboxConnector):
    """Redmine (poll only) -> inbox -> ProjectChanged, TaskChanged, TimesheetEntry."""

    Config = RedmineConfig
    config: RedmineConfig
    takes_webhooks = False

    def topics(self) -> tuple[str, ...]:
        return (PROJECT_TOPIC, TASK_TOPIC, TIMESHEET_TOPIC)

    def setup(self) -> None:
        key = os.environ.get(self.config.api_key_env)
        if not key:
            raise ConfigError(f"redmine connector {self.name}: environment variable {self.config.api_key_env} "
                              "(the Redmine API key) is not set")  # fmt: skip
        self._api_key = key
        register_secret(key)  # masked in every log line from now on, whatever the variable is called
        super().setup()

    def _client(self) -> RedmineClient:
        c = self.config
        return RedmineClient(c.base_url, self._api_key, c.api_key_env, c.timeout_seconds, f"redmine {self.name}")

    def handler(self) -> WebhookHandler | None:
        return None

    def converter(self) -> Converter:
        return RedmineConverter(self._client(), self.config.company, ZoneInfo(self.config.timezone))

    def backfill(self) -> Backfill:
        c = self.config
        return RedminePoller(self.name, self._client(), RedmineState(c.state_dsn, c.state_schema, self.name), c)


__all__ = ["RedmineClient", "RedmineConfig", "RedmineConverter", "RedminePoller", "RedmineSource", "RedmineState",
           "Seen", "entity_key", "hours2", "iso", "parse_time", "project_event", "task_event", "timesheet_event"]  # fmt: skip
