"""A contract fake of a REST API that creates business records (orders, bills) for sink tests.

It behaves like the targets bizbus writes to (see shared/reference/target-apis.md) in the ways that
matter for exactly-once: it does NOT dedupe by external reference on its own, so a double create shows
up in ``creates``; it honours an ``Idempotency-Key`` header like Stripe-style APIs do; it can be slow,
throttle (429 + Retry-After), fail (5xx) and refuse credentials (401). It runs in-process on a
background thread on a free loopback port::

    with RecordsApi(token="t", required_fields=("employee",)) as api:
        api.fail_next(500, n=2)
        ...  # point the sink at api.url
        assert api.count_by_ref() == {...}

Routes: ``POST <path>`` create, ``GET <path>?external_ref=X`` lookup (``{"items": [...]}``),
``GET /__admin/creates`` every accepted create (for checks from another process).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["RecordsApi", "SeenRequest"]


@dataclass(frozen=True)
class SeenRequest:
    """One request the fake answered, for assertions (headers with lower-case names)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int
    at: float  # time.monotonic() when the answer was decided


@dataclass
class _Failure:
    status: int
    left: int
    retry_after: float | None


@dataclass
class _State:
    """Everything the handler threads share; guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    objects: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # key -> (body json, object)
    failures: list[_Failure] = field(default_factory=list)
    requests: list[SeenRequest] = field(default_factory=list)
    bucket: float = 0.0
    bucket_at: float = 0.0


class RecordsApi:
    """The fake API; knobs (``latency``, ``rate_limit_per_second``, ``fail_next``) may change any time."""

    def __init__(
        self,
        token: str | None = None,
        required_fields: Iterable[str] = (),
        path: str = "/api/orders",
        id_prefix: str = "ORD-",
    ) -> None:
        self.token = token
        self.required_fields = tuple(required_fields)
        self.path = path
        self.id_prefix = id_prefix
        self.latency = 0.0  # seconds every request waits before it is answered
        self.rate_limit_per_second: float | None = None  # creates per second, burst of the same size
        self.unavailable_until: float | None = None  # time.monotonic() until which every request gets 503
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> RecordsApi:
        """Listen on a free port of 127.0.0.1 and serve on a daemon thread."""
        api = self

        class Handler(_Handler):
            owner = api

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="records-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> RecordsApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        if self._server is None:
            raise RuntimeError("RecordsApi is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- knobs and accounting ----------------------------------------------------------------------

    def fail_next(self, status: int, n: int = 1, retry_after: float | None = None) -> None:
        """The next ``n`` POSTs get ``status`` (with Retry-After if given) and create nothing."""
        with self._state.lock:
            self._state.failures.append(_Failure(status, n, retry_after))

    def unavailable_for(self, seconds: float) -> None:
        """Every request (create and lookup) answers 503 without Retry-After for the next ``seconds``."""
        self.unavailable_until = time.monotonic() + seconds

    def create_directly(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object as if a request had done it (e.g. by a process that then crashed)."""
        with self._state.lock:
            return self._create(body)

    @property
    def creates(self) -> list[dict[str, Any]]:
        """Every accepted create, in order (a copy)."""
        with self._state.lock:
            return [dict(o) for o in self._state.objects]

    @property
    def requests(self) -> list[SeenRequest]:
        """Every answered request, in order (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    def count_by_ref(self) -> Counter[str]:
        """How many objects carry each external_ref: exactly once means every count is 1."""
        return Counter(str(o.get("external_ref")) for o in self.creates)

    # -- behaviour (called by handler threads) -----------------------------------------------------

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        obj = {"id": f"{self.id_prefix}{len(self._state.objects) + 1}", **body}
        self._state.objects.append(obj)
        return obj

    def _throttled(self, now: float) -> float | None:
        """Token bucket: None if a create may go ahead now, else the seconds until it could."""
        rate = self.rate_limit_per_second
        if not rate:
            return None
        st = self._state
        st.bucket = min(rate, st.bucket + (now - st.bucket_at) * rate) if st.bucket_at else rate
        st.bucket_at = now
        if st.bucket >= 1:
            st.bucket -= 1
            return None
        return (1 - st.bucket) / rate

    def _post(self, headers: dict[str, str], body: Any, now: float) -> tuple[int, dict[str, str], Any]:
        st = self._state
        if st.failures:
            failure = st.failures[0]
            failure.left -= 1
            if failure.left <= 0:
                st.failures.pop(0)
            extra = {"Retry-After": _seconds(failure.retry_after)} if failure.retry_after is not None else {}
            return failure.status, extra, _error("injected", f"injected failure {failure.status}")
        wait = self._throttled(now)
        if wait is not None:
            return 429, {"Retry-After": _seconds(wait)}, _error("rate_limited", "too many requests")
        if not isinstance(body, dict):
            return 400, {}, _error("invalid", "the body must be a JSON object")
        ref = body.get("external_ref")
        if not isinstance(ref, str) or not ref:
            return 400, {}, _error("invalid", "external_ref is required and must be a non-empty string")
        missing = [f for f in self.required_fields if body.get(f) is None]
        if missing:
            return 400, {}, _error("invalid", f"{', '.join(missing)} is required")
        key = headers.get("idempotency-key")
        if key:
            canonical = json.dumps(body, sort_keys=True)
            seen = st.keys.get(key)
            if seen is not None:
                if seen[0] != canonical:
                    return 422, {}, _error("idempotency_mismatch", "Idempotency-Key reused with another body")
                return 200, {"Idempotent-Replayed": "true"}, seen[1]
            obj = self._create(body)
            st.keys[key] = (canonical, obj)
            return 201, {}, obj
        return 201, {}, self._create(body)

    def _handle(
        self, method: str, target: str, headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, str], Any]:
        """Decide the answer to one request and record it (under the lock: requests are serialised)."""
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        with self._state.lock:
            now = time.monotonic()
            if parts.path == "/__admin/creates" and method == "GET":
                status, extra, doc = 200, {}, {"creates": [dict(o) for o in self._state.objects]}
            elif self.unavailable_until is not None and now < self.unavailable_until:
                status, extra, doc = 503, {}, _error("unavailable", "down for maintenance")
            elif parts.path != self.path:
                status, extra, doc = 404, {}, _error("not_found", f"no route {parts.path}")
            elif self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
                status, extra, doc = 401, {}, _error("unauthorized", "missing or invalid bearer token")
            elif method == "POST":
                status, extra, doc = self._post(headers, body, now)
            elif method == "GET":
                refs = query.get("external_ref")
                items = [o for o in self._state.objects if refs is None or o.get("external_ref") in refs]
                status, extra, doc = 200, {}, {"items": [dict(o) for o in items]}
            else:
                status, extra, doc = 405, {}, _error("method_not_allowed", f"{method} is not supported")
            self._state.requests.append(SeenRequest(method, parts.path, query, headers, body, status, now))
        return status, extra, doc


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _seconds(value: float) -> str:
    """Retry-After as whole seconds (the header's delay-seconds form), at least 1."""
    return str(max(1, math.ceil(value)))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout) closed the socket: expected here, not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Parses HTTP and hands over to ``owner``; keep-alive so a client reuses its connection."""

    protocol_version = "HTTP/1.1"
    owner: RecordsApi

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.owner.latency:
            time.sleep(self.owner.latency)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError  # marker: a body that is not JSON
        headers = {k.lower(): v for k, v in self.headers.items()}
        if body is ValueError:
            status, extra, doc = 400, {}, _error("invalid", "the body is not JSON")
        else:
            status, extra, doc = self.owner._handle(method, self.path, headers, body)
        out = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self) -> None:  # noqa: N802 - the name BaseHTTPRequestHandler dispatches to
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        """Silence the default per-request line on stderr."""
