"""A contract fake of Jira Cloud (REST v3, the parts a timesheet integration reads) and a sender of Jira's
signed webhooks, built from Atlassian's published documentation.

REST (basic auth ``email:api_token``; anything else -> 401)::

    POST /rest/api/3/search/jql        {"jql", "fields", "maxResults", "nextPageToken"} -> {"issues", "nextPageToken"?,
                                       "isLast"}; token paging; only requested fields (default: id only);
                                       unbounded JQL -> 400. Understands ``updated >=|>|<=|< "yyyy/MM/dd[ HH:mm]"``,
                                       ``project = KEY`` joined by AND, ``ORDER BY updated|key ASC|DESC``; JQL
                                       dates are read in the API user's time zone (``user_timezone``).
    GET|POST /rest/api/{2,3}/search    -> 410 Gone (removed, CHANGE-2046)
    GET  /rest/api/3/worklog/updated?since=ms  ChangedWorklogs {"values": [{"worklogId", "updatedTime",
    GET  /rest/api/3/worklog/deleted?since=ms  "properties"}], "since", "until", "self", "nextPage"?, "lastPage"};
                                       ``since`` inclusive, oldest first, <= ``worklog_page_size`` per page, and
                                       nothing changed during the last ``hide_recent_seconds`` (documented: 60 s)
    POST /rest/api/3/worklog/list      {"ids": [...]} (<= 1000, else 400) -> worklogs (comment in ADF)
    GET  /rest/api/3/issue/{idOrKey}?fields=a,b   -> the issue or 404 {"errorMessages": [...]}

``throttle_next(n, retry_after)`` answers the next n REST calls with 429 + Retry-After. Every answered call is
in ``requests``. ``JiraWebhookSender(url, secret)`` posts the documented webhook bodies with
``X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>``, ``X-Atlassian-Webhook-Identifier`` and, on a
redelivery, the same identifier plus ``X-Atlassian-Webhook-Retry``; ``build(...)`` makes one without sending.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

import httpx

__all__ = ["JiraCloudFake", "JiraWebhookSender", "SeenRequest", "WebhookRequest", "jira_time"]

SITE = "https://your-domain.atlassian.net"
REMOVED = ("The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. A full migration "
           "guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046")  # fmt: skip
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def jira_time(value: datetime, zone: Any = None) -> str:
    """Jira's format: ``2026-11-02T09:00:00.000+0800``."""
    v = value.astimezone(zone) if zone is not None else value
    return f"{v:%Y-%m-%dT%H:%M:%S}.{v.microsecond // 1000:03d}{v:%z}"


def _ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


def _user(account_id: str, name: str | None = None) -> dict[str, Any]:
    return {"self": f"{SITE}/rest/api/2/user?accountId={account_id}", "accountId": account_id,
            "avatarUrls": {s: f"https://avatar-management.example/{account_id}/{s}" for s in
                           ("48x48", "24x24", "16x16", "32x32")},
            "displayName": name or f"User {account_id[-4:]}", "active": True, "timeZone": "Asia/Shanghai",
            "accountType": "atlassian"}  # fmt: skip


def adf(text: str) -> dict[str, Any]:
    """A plain text as an Atlassian Document (how REST v3 returns worklog comments)."""
    return {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": line}]} for line in text.split("\n")]}  # fmt: skip


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int


@dataclass
class _Worklog:
    id: str
    issue_id: str
    author: str
    seconds: int
    started: str  # kept as given, in its own offset
    comment: str | None
    created: datetime
    updated: datetime


@dataclass
class _Issue:
    id: str
    key: str
    project: str
    summary: str
    status: str
    assignee: str | None
    created: datetime
    updated: datetime
    extra: dict[str, Any] = field(default_factory=dict)


class JiraCloudFake:
    """In-memory Jira site on 127.0.0.1 (context manager). Times are rendered in ``user_timezone``."""

    def __init__(self, email: str = "bizbus-bot@example.com", token: str = "api-token", *, page_size: int = 50,
                 worklog_page_size: int = 1000, hide_recent_seconds: float = 60, user_timezone: str = "UTC") -> None:  # fmt: skip
        self.email, self.token = email, token
        self.page_size, self.worklog_page_size, self.hide_recent_seconds = (
            page_size,
            worklog_page_size,
            hide_recent_seconds,
        )
        self.zone = ZoneInfo(user_timezone)
        self.lock = threading.RLock()
        self.projects: dict[str, dict[str, Any]] = {}  # key -> webhook/REST representation
        self.issues: dict[str, _Issue] = {}
        self.worklogs: dict[str, _Worklog] = {}
        self.deleted: dict[str, datetime] = {}  # worklog id -> when
        self.requests: list[SeenRequest] = []
        self._throttle: list[float] = []
        self._ids = itertools.count(10000)
        self._issue_numbers: dict[str, itertools.count[int]] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> JiraCloudFake:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="jira-fake", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @staticmethod
    def now() -> datetime:
        n = datetime.now(UTC)
        return n.replace(microsecond=n.microsecond // 1000 * 1000)

    # -- data the test sets ------------------------------------------------------------------------

    def add_project(self, key: str, name: str, lead: str = "5b10a2844c20165700ede21g") -> dict[str, Any]:
        with self.lock:
            pid = next(self._ids)
            self.projects[key] = {
                "self": f"{SITE}/rest/api/2/project/{pid}", "id": pid, "key": key, "name": name,
                "avatarUrls": {"48x48": f"{SITE}/secure/projectavatar?pid={pid}&avatarId=10400"},
                "projectLead": _user(lead), "assigneeType": "admin.assignee.type.unassigned"}  # fmt: skip
            self._issue_numbers[key] = itertools.count(1)
            return copy.deepcopy(self.projects[key])

    def add_issue(self, project: str, summary: str, *, status: str = "To Do", assignee: str | None = None,
                  at: datetime | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
        with self.lock:
            when = at or self.now()
            iid = str(next(self._ids))
            key = f"{project}-{next(self._issue_numbers.setdefault(project, itertools.count(1)))}"
            self.issues[iid] = _Issue(iid, key, project, summary, status, assignee, when, when, dict(extra))
            return self.issue_json(iid)

    def update_issue(self, issue_id: str, *, at: datetime | None = None, **changes: Any) -> dict[str, Any]:
        with self.lock:
            issue = self.issues[issue_id]
            for k, v in changes.items():
                if hasattr(issue, k) and k not in ("id", "key", "created", "updated", "extra"):
                    setattr(issue, k, v)
                else:
                    issue.extra[k] = v
            issue.updated = at or self.now()
            return self.issue_json(issue_id)

    def add_worklog(self, issue_id: str, author: str, seconds: int, started: str, comment: str | None = None,
                    at: datetime | None = None) -> dict[str, Any]:  # fmt: skip
        with self.lock:
            when = at or self.now()
            wid = str(next(self._ids))
            self.worklogs[wid] = _Worklog(wid, issue_id, author, seconds, started, comment, when, when)
            self._touch(issue_id, when)
            return self.worklog_json(wid)

    def _touch(self, issue_id: str, when: datetime) -> None:
        """Logging work changes the issue's time tracking, so also the issue's ``updated``."""
        if issue_id in self.issues:
            self.issues[issue_id].updated = max(self.issues[issue_id].updated, when)

    def update_worklog(
        self, worklog_id: str, *, at: datetime | None = None, **changes: Any
    ) -> dict[str, Any]:
        with self.lock:
            w = self.worklogs[worklog_id]
            for k, v in changes.items():
                setattr(w, k, v)
            w.updated = at or self.now()
            self._touch(w.issue_id, w.updated)
            return self.worklog_json(worklog_id)

    def delete_worklog(self, worklog_id: str, at: datetime | None = None) -> dict[str, Any]:
        """Remove it; returns the last representation (what a worklog_deleted webhook carries)."""
        with self.lock:
            last = self.worklog_json(worklog_id)
            del self.worklogs[worklog_id]
            self.deleted[worklog_id] = at or self.now()
            self._touch(last["issueId"], self.deleted[worklog_id])
            return last

    def throttle_next(self, n: int = 1, retry_after: float = 1) -> None:
        with self.lock:
            self._throttle.extend([retry_after] * n)

    def seen(self, method: str, path_prefix: str) -> list[SeenRequest]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # -- representations ---------------------------------------------------------------------------

    def issue_json(self, issue_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        """The issue as REST / webhooks show it (``fields`` None: all of them)."""
        i = self.issues[issue_id]
        project = self.projects.get(i.project, {"id": 0, "key": i.project, "name": i.project})
        all_fields: dict[str, Any] = {
            "summary": i.summary, "created": jira_time(i.created, self.zone), "updated": jira_time(i.updated, self.zone),
            "status": {"self": f"{SITE}/rest/api/2/status/1", "description": "", "name": i.status, "id": "1",
                       "statusCategory": {"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"}},
            "project": {"self": project.get("self", ""), "id": str(project["id"]), "key": project["key"],
                        "name": project["name"], "projectTypeKey": "software", "simplified": False},
            "assignee": _user(i.assignee) if i.assignee else None,
            "issuetype": {"id": "10001", "name": "Task", "subtask": False},
            "duedate": None, "timeoriginalestimate": None, "resolutiondate": None, **i.extra,
        }  # fmt: skip
        if fields is not None and not {"*all", "*navigable"} & set(fields):
            all_fields = {k: v for k, v in all_fields.items() if k in fields}
        return {"expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
                "id": i.id, "self": f"{SITE}/rest/api/3/issue/{i.id}", "key": i.key, "fields": all_fields}  # fmt: skip

    def worklog_json(self, worklog_id: str, v3: bool = False) -> dict[str, Any]:
        """A worklog: REST v3 gives the comment as ADF, webhooks (v2 shape) as plain text."""
        w = self.worklogs[worklog_id]
        out: dict[str, Any] = {
            "self": f"{SITE}/rest/api/{3 if v3 else 2}/issue/{w.issue_id}/worklog/{w.id}",
            "author": _user(w.author), "updateAuthor": _user(w.author),
            "created": jira_time(w.created, self.zone), "updated": jira_time(w.updated, self.zone),
            "started": w.started, "timeSpent": _spent(w.seconds), "timeSpentSeconds": w.seconds,
            "id": w.id, "issueId": w.issue_id}  # fmt: skip
        if w.comment is not None:
            out["comment"] = adf(w.comment) if v3 else w.comment
        return out

    # -- the REST side (called on server threads) ---------------------------------------------------

    def answer(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
               body: Any) -> tuple[int, dict[str, str], Any]:  # fmt: skip
        with self.lock:
            status, extra, out = self._route(method, path, query, headers, body)
            self.requests.append(SeenRequest(method, path, query, body, status))
            return status, extra, out

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
               body: Any) -> tuple[int, dict[str, str], Any]:  # fmt: skip
        expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        if not hmac.compare_digest(headers.get("authorization", ""), expected):
            return 401, {"WWW-Authenticate": 'Basic realm="protected-by-api-token"'}, _errors(
                "Client must be authenticated to access this resource.")  # fmt: skip
        if self._throttle:
            retry_after = self._throttle.pop(0)
            return 429, {"Retry-After": str(int(retry_after)), "X-RateLimit-Reason": "jira-burst-based"}, _errors(
                "Rate limit exceeded.")  # fmt: skip
        if re.fullmatch(r"/rest/api/[23]/search/?", path):
            return 410, {}, _errors(REMOVED)
        if path == "/rest/api/3/search/jql" and method == "POST":
            return self._search(body if isinstance(body, dict) else {})
        if path in ("/rest/api/3/worklog/updated", "/rest/api/3/worklog/deleted") and method == "GET":
            return self._changed(path, query)
        if path == "/rest/api/3/worklog/list" and method == "POST":
            ids = body.get("ids") if isinstance(body, dict) else None
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                return 400, {}, _errors("ids: must be a list of worklog ids")
            if len(ids) > 1000:
                return 400, {}, _errors("The number of worklog ids must not exceed 1000.")
            return 200, {}, [self.worklog_json(str(i), v3=True) for i in ids if str(i) in self.worklogs]
        m = re.fullmatch(r"/rest/api/3/issue/([^/]+)", path)
        if m and method == "GET":
            ref = unquote(m.group(1))
            found = next((i for i in self.issues.values() if ref in (i.id, i.key)), None)
            if found is None:
                return 404, {}, _errors("Issue does not exist or you do not have permission to see it.")
            fields = ",".join(query.get("fields", ["*all"])).split(",")
            return 200, {}, self.issue_json(found.id, fields)
        return 404, {}, _errors(f"No resource for {method} {path}")

    def _search(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        jql = str(body.get("jql") or "")
        try:
            match, order = _parse_jql(jql, self.zone)
        except ValueError as exc:
            return 400, {}, _errors(str(exc))
        found = [i for i in self.issues.values() if match(i)]
        found.sort(key=order[0], reverse=order[1])
        offset = 0
        token = body.get("nextPageToken")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(str(token)))
                assert state["q"] == hashlib.sha1(jql.encode()).hexdigest()
                offset = int(state["o"])
            except (ValueError, KeyError, AssertionError):
                return 400, {}, _errors("The provided next page token is invalid or expired.")
        size = min(int(body.get("maxResults") or 50), self.page_size, 5000)
        page = found[offset : offset + size]
        fields = body.get("fields") or ["id"]
        out: dict[str, Any] = {"issues": [self.issue_json(i.id, list(fields)) for i in page]}
        if offset + size < len(found):
            nxt = {"q": hashlib.sha1(jql.encode()).hexdigest(), "o": offset + size}
            out["nextPageToken"] = base64.urlsafe_b64encode(json.dumps(nxt).encode()).decode()
            out["isLast"] = False
        else:
            out["isLast"] = True
        return 200, {}, out

    def _changed(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        try:
            since = int(query.get("since", ["0"])[0])
        except ValueError:
            return 400, {}, _errors("since: must be a unix timestamp in milliseconds")
        newest = _ms(datetime.now(UTC)) - int(self.hide_recent_seconds * 1000)
        if path.endswith("updated"):
            items = [(_ms(w.updated), int(w.id)) for w in self.worklogs.values()]
        else:
            items = [(_ms(t), int(wid)) for wid, t in self.deleted.items()]
        items = sorted(i for i in items if since <= i[0] <= newest)
        page = items[: self.worklog_page_size]
        while len(page) < len(items) and items[len(page)][0] == page[-1][0]:  # keep one ms on one page
            page.append(items[len(page)])
        until = page[-1][0] if page else since
        out: dict[str, Any] = {
            "values": [{"worklogId": wid, "updatedTime": t, "properties": []} for t, wid in page],
            "since": page[0][0] if page else since, "until": until, "self": f"{SITE}{path}?since={since}",
            "lastPage": len(page) == len(items)}  # fmt: skip
        if not out["lastPage"]:
            out["nextPage"] = f"{SITE}{path}?since={until}"
        return 200, {}, out


def _spent(seconds: int) -> str:
    h, m = divmod(seconds // 60, 60)
    return " ".join(p for p in (f"{h}h" if h else "", f"{m}m" if m else "") if p) or "0m"


def _errors(*messages: str) -> dict[str, Any]:
    return {"errorMessages": list(messages), "errors": {}}


_CLAUSE = re.compile(r'^\s*(updated|project)\s*(>=|<=|=|>|<)\s*("([^"]*)"|[A-Za-z0-9_-]+)\s*$', re.IGNORECASE)


def _parse_jql(jql: str, zone: Any) -> tuple[Any, tuple[Any, bool]]:
    text = jql.strip()
    order: tuple[Any, bool] = (lambda i: (i.updated, int(i.id)), False)
    m = re.search(r"\s+ORDER\s+BY\s+(\w+)(?:\s+(ASC|DESC))?\s*$", text, re.IGNORECASE)
    if m:
        text = text[: m.start()]
        fld, desc = m.group(1).lower(), (m.group(2) or "ASC").upper() == "DESC"
        if fld not in ("updated", "key", "created"):
            raise ValueError(f"Error in the JQL Query: ordering by {fld!r} is not supported by this fake.")
        keyf = {"updated": lambda i: (i.updated, int(i.id)), "created": lambda i: (i.created, int(i.id)),
                "key": lambda i: (i.project, int(i.key.rsplit("-", 1)[1]))}[fld]  # fmt: skip
        order = (keyf, desc)
    if not text.strip():
        raise ValueError(
            "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."
        )
    tests = []
    for part in re.split(r"\s+AND\s+", text, flags=re.IGNORECASE):
        c = _CLAUSE.match(part)
        if not c:
            raise ValueError(f"Error in the JQL Query: cannot parse {part.strip()!r}.")
        fld, op, value = c.group(1).lower(), c.group(2), c.group(4) if c.group(4) is not None else c.group(3)
        if fld == "project":
            if op != "=":
                raise ValueError("Error in the JQL Query: only project = KEY is supported by this fake.")
            tests.append(lambda i, v=value: i.project == v)
            continue
        try:
            fmt = "%Y/%m/%d %H:%M" if " " in value.strip() else "%Y/%m/%d"
            when = datetime.strptime(value.strip().replace("-", "/"), fmt).replace(tzinfo=zone)
        except ValueError:
            raise ValueError(f"Error in the JQL Query: date value '{value}' for field 'updated' is invalid. Valid "
                             "formats include: 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd'.") from None  # fmt: skip
        cmp = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
               "<": lambda a, b: a < b, "=": lambda a, b: a == b}[op]  # fmt: skip
        tests.append(lambda i, w=when, f=cmp: f(i.updated, w))
    return (lambda i: all(t(i) for t in tests)), order


def _handler(jira: JiraCloudFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._send(400, {}, _errors("Unexpected character in the request body."))
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, out = jira.answer(self.command, parts.path, parse_qs(parts.query), headers, body)
            self._send(status, extra, out)

        def _send(self, status: int, extra: dict[str, str], out: Any) -> None:
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler


# -- webhooks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookRequest:
    """One webhook delivery as Jira would POST it (``body`` is what the signature covers)."""

    event: str
    body: bytes
    headers: dict[str, str]

    @property
    def identifier(self) -> str:
        return self.headers["X-Atlassian-Webhook-Identifier"]

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


ISSUE_EVENT_TYPES = {"jira:issue_created": "issue_created", "jira:issue_updated": "issue_generic",
                     "jira:issue_deleted": "issue_deleted"}  # fmt: skip


class JiraWebhookSender:
    """Posts Jira webhook bodies to ``url`` signed with ``secret`` (an admin webhook with a secret)."""

    def __init__(self, url: str, secret: str | bytes, user: str = "557058:f58131cb-b67d-43c7-b30d-6b58d40bd077",
                 timeout: float = 10) -> None:  # fmt: skip
        self.url, self.timeout = url, timeout
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.user = _user(user, "Automation Bot")
        self.sent: list[WebhookRequest] = []
        self._retries: dict[str, int] = {}

    def signature(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()

    def build(self, event: str, *, timestamp: int | None = None, identifier: str | None = None,
              **objects: Any) -> WebhookRequest:  # fmt: skip
        """The documented body: ``timestamp``, ``webhookEvent``, for issue events ``issue_event_type_name``,
        ``user`` (and ``changelog`` on updates), then the object (``issue`` / ``worklog`` / ``project``)."""
        body: dict[str, Any] = {"timestamp": timestamp if timestamp is not None else _ms(datetime.now(UTC)),
                                "webhookEvent": event}  # fmt: skip
        if event in ISSUE_EVENT_TYPES:
            body["issue_event_type_name"] = ISSUE_EVENT_TYPES[event]
            body["user"] = self.user
        for name, obj in objects.items():
            if obj is not None:
                body[name] = obj
        raw = json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Hub-Signature": self.signature(raw),
                   "X-Atlassian-Webhook-Identifier": identifier or str(uuid.uuid4()),
                   "X-Atlassian-Webhook-Flow": "Primary", "User-Agent": "Atlassian Webhook HTTP Client"}  # fmt: skip
        return WebhookRequest(event, raw, headers)

    def send(self, request: WebhookRequest, *, signature: str | None = None) -> httpx.Response:
        """POST it; ``signature`` overrides X-Hub-Signature ("" drops the header)."""
        headers = dict(request.headers)
        if signature is not None:
            headers.pop("X-Hub-Signature")
            if signature:
                headers["X-Hub-Signature"] = signature
        self.sent.append(request)
        return httpx.post(self.url, content=request.body, headers=headers, timeout=self.timeout)

    def redeliver(self, request: WebhookRequest) -> httpx.Response:
        """Jira's retry: the same body and identifier, plus ``X-Atlassian-Webhook-Retry: <n>``."""
        n = self._retries[request.identifier] = self._retries.get(request.identifier, 0) + 1
        again = WebhookRequest(
            request.event, request.body, {**request.headers, "X-Atlassian-Webhook-Retry": str(n)}
        )
        return self.send(again)

    def _post(self, event: str, timestamp: int | None, **objects: Any) -> httpx.Response:
        return self.send(self.build(event, timestamp=timestamp, **objects))

    # one method per event bizbus takes; each returns the httpx.Response
    def project_created(self, project: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        return self._post("project_created", timestamp, project=project)

    def project_updated(self, project: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        return self._post("project_updated", timestamp, project=project)

    def project_archived(self, project: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        return self._post("project_archived", timestamp, project={**project, "archived": True})

    def project_soft_deleted(self, project: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        return self._post("project_soft_deleted", timestamp, project=project)

    def project_deleted(self, project: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        return self._post("project_deleted", timestamp, project=project)

    def issue_created(self, issue: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        return self._post("jira:issue_created", timestamp, issue=issue)

    def issue_updated(self, issue: dict[str, Any], changelog: dict[str, Any] | None = None,
                      timestamp: int | None = None) -> httpx.Response:  # fmt: skip
        return self._post("jira:issue_updated", timestamp, issue=issue,
                          changelog=changelog or {"id": str(uuid.uuid4().int % 10**6), "items": []})  # fmt: skip

    def issue_deleted(self, issue: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        return self._post("jira:issue_deleted", timestamp, issue=issue)

    def worklog_created(self, worklog: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        return self._post("worklog_created", timestamp, worklog=worklog)

    def worklog_updated(self, worklog: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        return self._post("worklog_updated", timestamp, worklog=worklog)

    def worklog_deleted(self, worklog: dict[str, Any], timestamp: int | None = None) -> httpx.Response:
        return self._post("worklog_deleted", timestamp, worklog=worklog)
