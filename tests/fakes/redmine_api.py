"""A contract fake of Redmine's REST API (JSON), built from redmine.org's documentation.

Redmine cannot be installed here (its Debian post-install step needs the Ruby gem registry), so the
``redmine`` connector is tested against this fake. What it follows (wiki Rest_api, Rest_Projects,
Rest_Issues, Rest_TimeEntries; Redmine 5/6 behaviour where the wiki is silent):

* authentication: ``X-Redmine-API-Key`` header, ``key`` query parameter or HTTP Basic with the key as user
  name; none or a wrong one -> 401 with ``WWW-Authenticate: Basic realm="Redmine API"`` and no body.
* ``GET /projects.json`` (``status`` filter, values joined by ``|``; without it active projects only, as
  Redmine's project query), ``GET /projects/<id|identifier>.json`` (archived -> 403, unknown -> 404),
  lists leave out what belongs to an archived project (its time entry read alone -> 403),
  ``GET /issues.json`` (open issues unless ``status_id`` says ``closed``, ``*`` or ids), ``GET
  /time_entries.json`` (``from``/``to``/``spent_on``), ``GET /time_entries/<id>.json``.
* lists: ``{<things>: [...], "total_count", "offset", "limit"}``; ``limit`` defaults to 25 and is capped at
  100; ``sort=col[:desc],col2``. Date-time filters: ``updated_on=>=2026-11-01T00:00:00Z``, ``<=``, ``><a|b``,
  or a day; a value that is not a date -> 422 ``{"errors": ["Updated is not a valid date"]}``.
* ``updated_on`` on ``/time_entries.json``: Redmine's own time entry query has no such filter and ignores
  it. The fake honours it by default (``time_entry_updated_on=True``, as a server or plugin that has it);
  ``False`` behaves like stock Redmine.
* ``close_project``/``archive_project``/``reopen_project`` change the status without touching
  ``updated_on``, as Redmine's ``Project#close``/``#reopen``/``#unarchive`` (``update_all``) do;
  ``update_project(pid, status=5)`` is the same change together with an edit (new ``updated_on``).
* Redmine has no rate limit of its own; ``fail_next(429 | 503, retry_after=...)`` answers as a proxy in
  front of it would. ``requests`` records (path, query) of every call.

    with FakeRedmine(api_key="k") as rm:
        p = rm.add_project("prj-a", "Project A")
        rm.add_time_entry(p["id"], user_id=7, hours=1.5, spent_on="2026-11-02", issue_id=None)
"""

from __future__ import annotations

import base64
import json
import re
import threading
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

USERS = {1: "Redmine Admin", 7: "Zhang Wei", 8: "Li Na"}
TRACKERS = {1: "Bug", 2: "Feature", 3: "Support"}
STATUSES = {1: ("New", False), 2: ("In Progress", False), 3: ("Resolved", False), 5: ("Closed", True),
            6: ("Rejected", True)}  # fmt: skip
ACTIVITIES = {8: "Design", 9: "Development"}
ACTIVE, CLOSED, ARCHIVED = 1, 5, 9


def ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FilterError(ValueError):
    """A filter value Redmine refuses (answered with 422)."""


def _moment(text: str, end: bool) -> datetime:
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return day + timedelta(days=1) - timedelta(seconds=1) if end else day
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(text) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def time_filter(expr: str) -> tuple[datetime, datetime]:
    """A Redmine date-time filter (``>=t``, ``<=t``, ``><a|b``, a day) as an inclusive range."""
    lo, hi = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    if expr.startswith(">="):
        return _moment(expr[2:], False), hi
    if expr.startswith("<="):
        return lo, _moment(expr[2:], True)
    if expr.startswith("><"):
        a, _, b = expr[2:].partition("|")
        return _moment(a, False), _moment(b, True)
    return _moment(expr, False), _moment(expr, True)


class FakeRedmine:
    """In-memory Redmine; mutate with the helpers (thread-safe), read with the HTTP API."""

    def __init__(self, api_key: str = "redmine-test-key", *, time_entry_updated_on: bool = True,
                 clock: datetime | None = None) -> None:  # fmt: skip
        self.api_key, self.time_entry_updated_on = api_key, time_entry_updated_on
        self.projects: dict[int, dict[str, Any]] = {}
        self.issues: dict[int, dict[str, Any]] = {}
        self.time_entries: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._ids = {"project": 0, "issue": 0, "time_entry": 0}
        self._clock = (clock or datetime.now(UTC)).replace(microsecond=0)
        self._failures: list[tuple[int, str | None, str | None]] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> FakeRedmine:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, headers, body = fake.handle(self.path, {k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-redmine", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- data helpers (what a user would do in Redmine) --------------------------------------------------

    def tick(self, when: datetime | str | None = None) -> str:
        """The time of the next change: ``when``, or one second after the previous change."""
        with self.lock:
            if isinstance(when, str):
                when = datetime.fromisoformat(when.replace("Z", "+00:00"))
            self._clock = when.astimezone(UTC) if when else self._clock + timedelta(seconds=1)
            return ts(self._clock)

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def add_project(self, identifier: str, name: str, *, status: int = ACTIVE, description: str = "",
                    parent_id: int | None = None, when: datetime | str | None = None) -> dict[str, Any]:  # fmt: skip
        with self.lock:
            now, pid = self.tick(when), self._next("project")
            p: dict[str, Any] = {"id": pid, "name": name, "identifier": identifier, "description": description,
                                 "homepage": "", "status": status, "is_public": True, "inherit_members": False,
                                 "created_on": now, "updated_on": now}  # fmt: skip
            if parent_id is not None:
                p["parent"] = {"id": parent_id, "name": self.projects[parent_id]["name"]}
            self.projects[pid] = p
            return dict(p)

    def update_project(self, pid: int, *, when: datetime | str | None = None, **fields: Any) -> dict[str, Any]:
        with self.lock:
            self.projects[pid].update(fields, updated_on=self.tick(when))
            return dict(self.projects[pid])

    def _set_status(self, pid: int, status: int) -> None:
        with self.lock:  # Project#close / #archive / #reopen: update_all, updated_on stays
            self.projects[pid]["status"] = status

    def close_project(self, pid: int) -> None:
        self._set_status(pid, CLOSED)

    def archive_project(self, pid: int) -> None:
        self._set_status(pid, ARCHIVED)

    def reopen_project(self, pid: int) -> None:
        self._set_status(pid, ACTIVE)

    def add_issue(self, project_id: int, subject: str, *, status_id: int = 1, tracker_id: int = 2,
                  assigned_to_id: int | None = None, author_id: int = 1, parent_id: int | None = None,
                  estimated_hours: float | None = None, start_date: str | None = None, due_date: str | None = None,
                  when: datetime | str | None = None) -> dict[str, Any]:  # fmt: skip
        with self.lock:
            now, iid = self.tick(when), self._next("issue")
            i: dict[str, Any] = {
                "id": iid, "project": self._ref(project_id), "tracker": {"id": tracker_id, "name": TRACKERS[tracker_id]},
                "status": self._status(status_id), "priority": {"id": 2, "name": "Normal"},
                "author": {"id": author_id, "name": USERS[author_id]}, "subject": subject, "description": "",
                "start_date": start_date, "due_date": due_date, "done_ratio": 0, "is_private": False,
                "estimated_hours": estimated_hours, "total_estimated_hours": estimated_hours, "spent_hours": 0.0,
                "total_spent_hours": 0.0, "created_on": now, "updated_on": now,
                "closed_on": now if STATUSES[status_id][1] else None,
            }  # fmt: skip
            if assigned_to_id is not None:
                i["assigned_to"] = {"id": assigned_to_id, "name": USERS[assigned_to_id]}
            if parent_id is not None:
                i["parent"] = {"id": parent_id}
            self.issues[iid] = i
            return json.loads(json.dumps(i))

    def update_issue(self, iid: int, *, when: datetime | str | None = None, **fields: Any) -> dict[str, Any]:
        with self.lock:
            i, now = self.issues[iid], self.tick(when)
            if "status_id" in fields:
                sid = fields.pop("status_id")
                if STATUSES[sid][1] and not i["status"]["is_closed"]:
                    i["closed_on"] = now
                i["status"] = self._status(sid)
            if "assigned_to_id" in fields:
                uid = fields.pop("assigned_to_id")
                i.pop("assigned_to", None)
                if uid is not None:
                    i["assigned_to"] = {"id": uid, "name": USERS[uid]}
            i.update(fields, updated_on=now)
            return json.loads(json.dumps(i))

    def add_time_entry(self, project_id: int, *, user_id: int, hours: float, spent_on: str | date,
                       issue_id: int | None = None, comments: str = "", activity_id: int = 9,
                       when: datetime | str | None = None) -> dict[str, Any]:  # fmt: skip
        with self.lock:
            now, tid = self.tick(when), self._next("time_entry")
            t: dict[str, Any] = {"id": tid, "project": self._ref(project_id)}
            if issue_id is not None:
                t["issue"] = {"id": issue_id}
            t.update({"user": {"id": user_id, "name": USERS[user_id]},
                      "activity": {"id": activity_id, "name": ACTIVITIES[activity_id]}, "hours": float(hours),
                      "comments": comments, "spent_on": str(spent_on), "created_on": now, "updated_on": now})  # fmt: skip
            self.time_entries[tid] = t
            return json.loads(json.dumps(t))

    def update_time_entry(self, tid: int, *, when: datetime | str | None = None, **fields: Any) -> dict[str, Any]:
        with self.lock:
            t = self.time_entries[tid]
            if "spent_on" in fields:
                fields["spent_on"] = str(fields["spent_on"])
            if "hours" in fields:
                fields["hours"] = float(fields["hours"])
            t.update(fields, updated_on=self.tick(when))
            return json.loads(json.dumps(t))

    def delete_time_entry(self, tid: int) -> None:
        with self.lock:
            del self.time_entries[tid]

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None, path: str | None = None) -> None:
        """Answer the next ``times`` requests (to ``path``, if given) with ``status`` (429 / 5xx from a proxy
        in front of Redmine; Retry-After as given)."""
        with self.lock:
            self._failures += [(status, retry_after, path)] * times

    def _ref(self, pid: int) -> dict[str, Any]:
        return {"id": pid, "name": self.projects[pid]["name"]}

    @staticmethod
    def _status(sid: int) -> dict[str, Any]:
        return {"id": sid, "name": STATUSES[sid][0], "is_closed": STATUSES[sid][1]}

    # -- HTTP ------------------------------------------------------------------------------------------

    def handle(self, raw_path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self.lock:
            self.requests.append((parts.path, query))
            failure = next((f for f in self._failures if f[2] in (None, parts.path)), None)
            if failure is not None:
                self._failures.remove(failure)
                return failure[0], ({"Retry-After": failure[1]} if failure[1] else {}), b""
            if not self._authenticated(headers, query):
                return 401, {"WWW-Authenticate": 'Basic realm="Redmine API"'}, b""
            try:
                status, body = self._route(parts.path, query)
            except FilterError as exc:
                status, body = 422, {"errors": [f"{exc.args[1]} is not a valid date"]}
        if body is None:
            return status, {}, b""
        return status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(body).encode()

    def _authenticated(self, headers: dict[str, str], query: dict[str, str]) -> bool:
        given = headers.get("x-redmine-api-key") or query.get("key")
        auth = headers.get("authorization", "")
        if not given and auth.lower().startswith("basic "):
            try:
                given = base64.b64decode(auth[6:]).decode().partition(":")[0]
            except (ValueError, UnicodeDecodeError):
                given = None
        return given == self.api_key

    def _route(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        if path == "/projects.json":
            wanted = {int(s) for s in q.get("status", "1").split("|") if s.isdigit()}
            return 200, self._page("projects", [p for p in self.projects.values() if p["status"] in wanted], q, "id")
        if m := re.fullmatch(r"/projects/([^/]+)\.json", path):
            found = [p for p in self.projects.values() if str(p["id"]) == m[1] or p["identifier"] == m[1]]
            if not found:
                return 404, None
            return (403, None) if found[0]["status"] == ARCHIVED else (200, {"project": found[0]})
        if path == "/issues.json":
            return 200, self._page("issues", self._issues(q), q, "id:desc")
        if path == "/time_entries.json":
            return 200, self._page("time_entries", self._time_entries(q), q, "spent_on:desc,created_on:desc")
        if m := re.fullmatch(r"/time_entries/(\d+)\.json", path):
            t = self.time_entries.get(int(m[1]))
            if t is None:
                return 404, None
            return (200, {"time_entry": t}) if self._visible_project(t["project"]["id"]) else (403, None)
        return 404, None

    def _visible_project(self, pid: int) -> bool:
        return self.projects[pid]["status"] != ARCHIVED

    def _project_filter(self, rows: list[dict[str, Any]], q: dict[str, str]) -> list[dict[str, Any]]:
        if "project_id" not in q:
            return rows
        ids = {p["id"] for p in self.projects.values() if q["project_id"] in (str(p["id"]), p["identifier"])}
        return [r for r in rows if r["project"]["id"] in ids]

    def _updated(self, rows: list[dict[str, Any]], q: dict[str, str]) -> list[dict[str, Any]]:
        if "updated_on" not in q:
            return rows
        try:
            lo, hi = time_filter(q["updated_on"])
        except FilterError as exc:
            raise FilterError(q["updated_on"], "Updated") from exc
        return [r for r in rows if lo <= datetime.fromisoformat(r["updated_on"].replace("Z", "+00:00")) <= hi]

    def _issues(self, q: dict[str, str]) -> list[dict[str, Any]]:
        rows = [i for i in self.issues.values() if self._visible_project(i["project"]["id"])]
        status = q.get("status_id", "open")
        if status == "open":
            rows = [i for i in rows if not i["status"]["is_closed"]]
        elif status == "closed":
            rows = [i for i in rows if i["status"]["is_closed"]]
        elif status != "*":
            ids = {int(s) for s in status.split("|") if s.isdigit()}
            rows = [i for i in rows if i["status"]["id"] in ids]
        return self._updated(self._project_filter(rows, q), q)

    def _time_entries(self, q: dict[str, str]) -> list[dict[str, Any]]:
        rows = [t for t in self.time_entries.values() if self._visible_project(t["project"]["id"])]
        lo, hi = q.get("from"), q.get("to")
        if "spent_on" in q:
            try:
                a, b = time_filter(q["spent_on"])
            except FilterError as exc:
                raise FilterError(q["spent_on"], "Date") from exc
            lo, hi = a.date().isoformat(), b.date().isoformat()
        for bound in (lo, hi):
            if bound and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", bound):
                raise FilterError(bound, "Date")
        rows = [t for t in rows if (not lo or t["spent_on"] >= lo) and (not hi or t["spent_on"] <= hi)]
        if "user_id" in q:
            rows = [t for t in rows if str(t["user"]["id"]) == q["user_id"]]
        rows = self._project_filter(rows, q)
        return self._updated(rows, q) if self.time_entry_updated_on else rows

    def _page(self, key: str, rows: list[dict[str, Any]], q: dict[str, str], default_sort: str) -> dict[str, Any]:
        sortable = {"id", "updated_on", "created_on", "spent_on", "hours"}
        if key == "time_entries" and not self.time_entry_updated_on:
            sortable.discard("updated_on")  # not a column of Redmine's time entry query: the sort is ignored
        criteria = [c.partition(":") for c in q.get("sort", "").split(",") if c]
        criteria = [(c, d) for c, _, d in criteria if c in sortable] or [
            (c, d) for c, _, d in (x.partition(":") for x in default_sort.split(","))]  # fmt: skip
        for col, direction in reversed(criteria):
            rows = sorted(rows, key=lambda r, col=col: r[col], reverse=direction == "desc")
        try:
            limit = max(1, min(100, int(q.get("limit", 25))))
            offset = max(0, int(q.get("offset", 0)))
        except ValueError:
            limit, offset = 25, 0
        if "page" in q and "offset" not in q and q["page"].isdigit():
            offset = (max(1, int(q["page"])) - 1) * limit
        return {key: json.loads(json.dumps(rows[offset : offset + limit])), "total_count": len(rows),
                "offset": offset, "limit": limit}  # fmt: skip


__all__ = ["ACTIVE", "ARCHIVED", "CLOSED", "FakeRedmine", "time_filter"]
