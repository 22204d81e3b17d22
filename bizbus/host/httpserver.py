"""bizbus's HTTP endpoints on aiohttp's low-level server, two listeners on one event loop in a thread of its own.

* The **public** listener (``BIZBUS_HTTP_HOST:BIZBUS_HTTP_PORT``) serves only ``/webhooks/NAME[/...]`` and
  ``GET /healthz``: it is the one a vendor (and the internet) reaches.
* The **admin** listener (``BIZBUS_ADMIN_HOST:BIZBUS_ADMIN_PORT``, 127.0.0.1:8089 by default) serves
  ``/healthz``, ``/metrics``, ``/readyz`` (no token: Prometheus and orchestrator probes), and ``GET /connectors``
  and ``POST /connectors/NAME/pause|resume|restart``, which need ``Authorization: Bearer <BIZBUS_ADMIN_TOKEN>``
  (compared in constant time; 401 without or with a wrong one, 403 when no token is configured). Form
  content types are refused (415), so a cross-site browser form cannot trigger a control action either.

Hostile or broken clients cannot hold the port: a request head must arrive within ``BIZBUS_HTTP_HEADER_TIMEOUT``
(then the connection gets 408 and is closed), a body within ``BIZBUS_HTTP_BODY_TIMEOUT`` (408), an idle
keep-alive connection is closed after ``BIZBUS_HTTP_IDLE_TIMEOUT``; beyond ``BIZBUS_HTTP_MAX_CONNECTIONS`` open
connections a new one is answered 503 and closed. Failing to accept (out of file descriptors) is logged.
A webhook's body is limited per connector (``max_body_bytes``; 413) and the connector's ``webhook_gate`` may
refuse the request from its method, query and headers (a missing or bad signature) before any of the body
is read. ``Transfer-Encoding`` together with ``Content-Length``, a bad chunk size and HTTP/1.1 without
``Host`` are answered 400 (a log line, no traceback). Every refusal counts in ``bizbus_http_refused_total``.

Webhooks are the hot path: they are checked on the loop (pure CPU) and stored through the inbox's group
commit (``PgInbox.add_many_async``). Everything that may block (readiness checks, /metrics merging child
registries, pause/resume/restart, a webhook connector without an async entry) runs in a thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hmac
import json
import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST

from bizbus import metrics
from bizbus.errors import PortInUse
from bizbus.host.webhook import HttpRequest, HttpResponse

log = logging.getLogger("bizbus.http")

MAX_BODY = 16 * 1024 * 1024  # a webhook body larger than this is refused with 413 (unless the connector says less)
BACKLOG = 256  # a vendor opening a burst of connections must not have SYNs dropped and retried a second later
BLOCKING_THREADS = 32  # the pool for work that may block (see the module docstring)
JSON = "application/json"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
NO_TOKEN = ("no admin token is configured: set BIZBUS_ADMIN_TOKEN or BIZBUS_ADMIN_TOKEN_FILE (`bizbus up` writes "
            "one into .bizbus/admin.token)")  # fmt: skip
REFUSED = metrics.HTTP_REFUSED


class App(Protocol):
    """What the server calls (``bizbus.host.runner.Health``); ``webhook_async`` and ``webhook_gate`` when present."""

    def webhook(self, name: str, request: HttpRequest) -> HttpResponse: ...
    def connectors(self) -> dict[str, Any]: ...
    def checks(self) -> dict[str, str]: ...
    def metrics(self) -> bytes: ...
    def control(self, name: str, action: str, by: str = ...) -> tuple[int, dict[str, Any]]: ...


@dataclass(frozen=True)
class Limits:
    """Timeouts (seconds) and limits of both listeners; ``from_settings`` reads ``BIZBUS_HTTP_*``."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 1000
    max_body: int = MAX_BODY

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(settings.http_header_timeout, settings.http_body_timeout, settings.http_idle_timeout,
                   settings.http_max_connections)  # fmt: skip


class Refused(Exception):
    """A request answered ``status`` (the connection is closed when the body was not read)."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers or {}


def _error(status: int, message: str, close: bool = False, headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(status=status, body=json.dumps({"error": message}, ensure_ascii=False).encode(),
                        headers={"Content-Type": JSON, **(headers or {})})  # fmt: skip
    if close:
        resp.force_close()
    return resp


def _answer(resp: HttpResponse) -> web.Response:
    return web.Response(status=resp.status, body=resp.body, headers={"Content-Type": resp.content_type})


def bearer_ok(header: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>`` matches (constant-time compare); False without a configured token."""
    if not token or not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def framing_problem(request: web.BaseRequest) -> Refused | None:
    """Why a request's framing is ambiguous or incomplete (400), or its version not HTTP/1.x (505), or None.
    (aiohttp's parser refuses most of these already; this is the check that does not depend on it.)"""
    if request.version[0] != 1:
        return Refused(505, "bad_request", f"HTTP/{request.version[0]}.{request.version[1]} is not supported; "
                                           "use HTTP/1.1")  # fmt: skip
    problem = _ambiguous(request)
    return Refused(400, "bad_request", problem) if problem else None


def _ambiguous(request: web.BaseRequest) -> str | None:
    headers = request.headers
    if "Transfer-Encoding" in headers and "Content-Length" in headers:
        return "Transfer-Encoding together with Content-Length is ambiguous"
    if request.version >= (1, 1) and not headers.get("Host"):
        return "HTTP/1.1 request without Host"
    return None


async def read_body(request: web.BaseRequest, max_body: int, timeout: float) -> bytes:
    """The whole body, at most ``max_body`` bytes, within ``timeout`` seconds; raises ``Refused``."""
    length = request.content_length
    if length is not None and length > max_body:
        raise Refused(413, "body_too_large", f"body of {length} bytes is larger than {max_body} for this endpoint")
    if not request.body_exists:
        return b""
    content = request.content
    if content.is_eof():  # the whole body came with the head (the usual webhook): no wait, no timer
        body = content.read_nowait(-1)
        if len(body) > max_body:
            raise Refused(413, "body_too_large", f"body larger than {max_body} bytes for this endpoint")
        return body
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for this
    parts: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.readany():
                total += len(chunk)
                if total > max_body:
                    raise Refused(413, "body_too_large", f"body larger than {max_body} bytes for this endpoint")
                parts.append(chunk)
    except TimeoutError:
        raise Refused(408, "body_timeout", f"the body did not arrive within {timeout:g} s") from None
    return b"".join(parts)


class _Protocol(RequestHandler):
    """aiohttp's connection handler plus a header timeout and quiet 400s for broken requests."""

    def __init__(self, manager: web.Server, *, listener: str, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.listener, self.header_timeout = listener, header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0

    def data_received(self, data: bytes) -> None:
        idle = self._current_request is None and not self._messages
        before = self._request_count
        super().data_received(data)
        if self._head_timer is not None:
            if self._request_count != self._head_count:
                self._head_timer.cancel()  # the head is complete
                self._head_timer = None
        elif idle and data and self._request_count == before:  # a head began and is not complete yet
            self._head_count = before  # (a head that arrives whole, the usual case, costs no timer)
            self._head_timer = self._loop.call_later(self.header_timeout, self._head_expired)

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._current_request is not None or self._messages or self._request_count != self._head_count:
            return  # the bytes were a body (or a head that has since completed)
        REFUSED.labels(self.listener, "header_timeout").inc()
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:  # fmt: skip
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        REFUSED.labels(self.listener, "bad_request").inc()
        log.warning("http %s: %d for a broken request from %s: %s", self.listener, status, request.remote,
                    (message or str(exc) or "bad request").splitlines()[0][:200])  # fmt: skip
        return _error(status, (message or "bad request").splitlines()[0][:200], close=True)


class _Server(web.Server):
    """aiohttp's low-level server building ``_Protocol`` connections."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], listener: str,
                 limits: Limits) -> None:  # fmt: skip
        super().__init__(handler, access_log=None, keepalive_timeout=limits.idle_timeout, max_field_size=16384,
                         lingering_time=0)  # fmt: skip
        self.listener, self.limits = listener, limits

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, listener=self.listener, header_timeout=self.limits.header_timeout,
                         **self._kwargs)  # fmt: skip


class _Full(asyncio.Protocol):
    """A connection beyond the limit: answer 503, half-close, drop what the client sends, close soon."""

    BODY = b'{"error":"too many open connections, retry later"}'

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                        b"Retry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(self.BODY), self.BODY))  # fmt: skip
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(2.0, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # read and dropped, so closing does not reset the connection before the client read the 503

    def eof_received(self) -> bool:
        self.transport.close()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._timer.cancel()


class HttpServer:
    """The endpoints of one bizbus process. ``__init__`` binds both ports (a port in use fails at once),
    ``start()`` runs the loop on a daemon thread, ``shutdown()`` stops it and closes every connection."""

    def __init__(self, host: str, port: int, app: App, admin: tuple[str, int] | None = None,
                 limits: Limits | None = None, admin_token: str | None = None) -> None:  # fmt: skip
        self.app, self.limits, self.admin_token = app, limits or Limits(), admin_token
        self._socks = {"public": _bind(host, port, "BIZBUS_HTTP_PORT")}
        if admin is not None:
            try:
                self._socks["admin"] = _bind(admin[0], admin[1], "BIZBUS_ADMIN_PORT")
            except PortInUse:
                self._socks["public"].close()
                raise
        self.server_address: tuple[str, int] = self._socks["public"].getsockname()[:2]
        self.admin_address: tuple[str, int] | None = self._socks["admin"].getsockname()[:2] if admin else None
        self._pool = concurrent.futures.ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="http-blocking")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[tuple[web.Server, asyncio.base_events.Server]] = []
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        _check_fd_limit(self.limits.max_connections * len(self._socks))
        self._fds = FdWatch()

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def _run(self) -> None:
        loop = _new_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.set_default_executor(self._pool)
        loop.set_exception_handler(_loop_exception)
        try:
            loop.run_until_complete(self._listen())
            self._started.set()
            loop.run_forever()
        finally:
            self._started.set()
            loop.close()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        handlers = {"public": self._public, "admin": self._admin}
        for name, sock in self._socks.items():
            server = _Server(handlers[name], name, self.limits)
            listening = await loop.create_server(_limited(server, self.limits.max_connections, self._fds),
                                                 sock=sock, backlog=BACKLOG)  # fmt: skip
            self._servers.append((server, listening))
        self._fd_task = loop.create_task(self._fds.watch())

    def connections(self, listener: str = "public") -> int:
        """Open connections of a listener (for tests and diagnostics)."""
        return next((len(srv.connections) for srv, _ in self._servers if getattr(srv, "listener", "") == listener), 0)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, close the open connections (a request being answered is cancelled), stop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("http: shutdown did not finish cleanly: %s", exc)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def server_close(self) -> None:
        """Close the listening sockets (``shutdown`` has done it already when the server ran)."""
        for sock in self._socks.values():
            sock.close()

    async def _stop(self) -> None:
        if getattr(self, "_fd_task", None) is not None:
            self._fd_task.cancel()
        for _, listening in self._servers:
            listening.close()
        for server, _ in self._servers:
            await server.shutdown(1.0)
        asyncio.get_running_loop().stop()

    # the public listener ----------------------------------------------------------------------------

    async def _public(self, request: web.BaseRequest) -> web.StreamResponse:
        problem = framing_problem(request)
        if problem is not None:
            return self._refuse("public", problem, request)
        path, _, qs = request.raw_path.partition("?")
        parts = path.strip("/").split("/", 2)
        if parts[0] == "webhooks" and len(parts) >= 2 and parts[1]:
            try:
                return await self._webhook(request, parts[1], parts[2] if len(parts) > 2 else "", qs)
            except Refused as exc:
                return self._refuse("public", exc, request)
            except Exception as exc:  # logged and answered 500 (the vendor retries), never swallowed
                log.exception("http: %s %s failed: %s", request.method[:20], path[:200], exc)
                return _error(500, "internal error, retry later", close=True)
        if path == "/healthz" and request.method in ("GET", "HEAD"):
            return web.Response(body=b'{"status":"alive"}', headers={"Content-Type": JSON})
        return _error(404, "not found; this listener serves /webhooks/NAME and /healthz (the rest is on the admin "
                           "listener, BIZBUS_ADMIN_PORT)", close=request.body_exists)  # fmt: skip

    async def _webhook(self, request: web.BaseRequest, name: str, subpath: str, qs: str) -> web.StreamResponse:
        query = dict(parse_qsl(qs, keep_blank_values=True))
        items = request.headers.items()
        headers = {k.lower(): v for k, v in items}
        if len(headers) != len(items):  # a repeated header: its values joined by ", " (rare)
            headers = {}
            for key, value in items:
                k = key.lower()
                headers[k] = f"{headers[k]}, {value}" if k in headers else value
        max_body, refusal = self.limits.max_body, None
        gate = getattr(self.app, "webhook_gate", None)
        if gate is not None:
            max_body, refusal = gate(name, request.method, subpath, query, headers)
        if refusal is not None:  # refused from the head alone: the body is never read
            resp = _answer(refusal)
            if request.body_exists:
                resp.force_close()
            return resp
        body = await read_body(request, max_body, self.limits.body_timeout)
        http_request = HttpRequest(request.method, subpath, query, headers, body)
        handle: Callable[[str, HttpRequest], Awaitable[HttpResponse]] | None = getattr(self.app, "webhook_async", None)
        answer = await (handle(name, http_request) if handle is not None
                        else self._blocking(self.app.webhook, name, http_request))  # fmt: skip
        return _answer(answer)

    def _refuse(self, listener: str, exc: Refused, request: web.BaseRequest) -> web.Response:
        REFUSED.labels(listener, exc.reason).inc()
        if exc.status != 401:
            log.warning("http %s: %d for %s %s from %s: %s", listener, exc.status, request.method[:20],
                        request.path[:200], request.remote, exc.message)  # fmt: skip
        return _error(exc.status, exc.message, close=exc.status != 401 or request.body_exists, headers=exc.headers)

    # the admin listener -----------------------------------------------------------------------------

    async def _admin(self, request: web.BaseRequest) -> web.StreamResponse:
        problem = framing_problem(request)
        if problem is not None:
            return self._refuse("admin", problem, request)
        try:
            return await self._admin_route(request)
        except Refused as exc:
            return self._refuse("admin", exc, request)
        except Exception as exc:  # logged and answered 500, never swallowed
            log.exception("http: %s %s failed: %s", request.method[:20], request.path[:200], exc)
            return _error(500, "internal error, retry later", close=True)

    async def _admin_route(self, request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.path, request.method
        if method in ("GET", "HEAD"):
            if path == "/healthz":
                return web.Response(body=b'{"status":"alive"}', headers={"Content-Type": JSON})
            if path == "/metrics":
                return web.Response(body=await self._blocking(self.app.metrics),
                                    headers={"Content-Type": CONTENT_TYPE_LATEST})  # fmt: skip
            if path == "/readyz":
                checks = await self._blocking(self.app.checks)
                ready = all(v == "ok" for v in checks.values())
                answer: dict[str, Any] = {"ready": ready, "checks": checks}
                paused = await self._blocking(self.app.paused) if hasattr(self.app, "paused") else None
                if paused:
                    answer["paused"] = paused  # shown, not a failure (see README)
                return web.Response(status=200 if ready else 503, body=json.dumps(answer).encode(),
                                    headers={"Content-Type": JSON})  # fmt: skip
            if path == "/connectors":
                self._authorize(request)
                return web.Response(body=json.dumps(await self._blocking(self.app.connectors)).encode(),
                                    headers={"Content-Type": JSON})  # fmt: skip
            return _error(404, "not found; try /healthz, /readyz, /metrics, /connectors")
        names = path.strip("/").split("/")
        if method == "POST" and len(names) == 3 and names[0] == "connectors":
            if names[2] not in ("pause", "resume", "restart"):
                return _error(404, "not found; try POST /connectors/NAME/pause, /resume or /restart")
            self._authorize(request)
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type in FORM_TYPES:  # what a cross-site HTML form can send without a preflight
                raise Refused(415, "bad_request", f"{content_type} is not accepted here; send no body")
            by = request.headers.get("X-Bizbus-Actor") or f"admin API from {request.remote}"
            code, answer = await self._blocking(self.app.control, names[1], names[2], by[:200])
            return web.Response(status=code, body=json.dumps(answer).encode(), headers={"Content-Type": JSON})
        if method == "POST":
            return _error(404, "not found; try POST /connectors/NAME/pause, /resume or /restart", close=True)
        return _error(405, f"method {method[:20]} is not supported here", close=True)

    def _authorize(self, request: web.BaseRequest) -> None:
        if not self.admin_token:
            raise Refused(403, "unauthorized", NO_TOKEN)
        if not bearer_ok(request.headers.get("Authorization"), self.admin_token):
            raise Refused(401, "unauthorized", "a bearer token is required: Authorization: Bearer <BIZBUS_ADMIN_TOKEN>",
                          {"WWW-Authenticate": 'Bearer realm="bizbus admin"'})  # fmt: skip

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


class FdWatch:
    """Counts the process's open file descriptors once a second (``/proc/self/fd``). Near the limit new
    connections get 503 while that still works; at the limit ``accept()`` fails, which uvloop (libuv) does
    not report: this says so in a log line (every 30 s while it lasts) and in ``bizbus_http_refused_total``."""

    HEADROOM = 64  # descriptors kept free for Kafka, PostgreSQL, log files and the 503 itself

    def __init__(self) -> None:
        self.limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.short = False
        self._logged = 0.0

    def check(self) -> None:
        try:
            used = len(os.listdir("/proc/self/fd"))
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                return  # not Linux: no count, no early 503 (accept failures still show as resets)
            used = self.limit  # listing needs a descriptor too
        self.short = used >= self.limit - self.HEADROOM
        now = time.monotonic()
        if self.short and now - self._logged >= 30:
            self._logged = now
            log.error("http: %d of %d file descriptors in use: new connections get 503 and, at the limit, are "
                      "reset; raise `ulimit -n` (LimitNOFILE, the container's nofile) or lower "
                      "BIZBUS_HTTP_MAX_CONNECTIONS", used, self.limit)  # fmt: skip
        if used >= self.limit - 2:
            REFUSED.labels("all", "out_of_file_descriptors").inc()

    async def watch(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(1.0)


def _limited(server: web.Server, limit: int, fds: FdWatch) -> Callable[[], asyncio.Protocol]:
    """The protocol factory: aiohttp's handler while fewer than ``limit`` connections are open (and file
    descriptors are not running out), else 503."""
    listener = getattr(server, "listener", "public")

    def factory() -> asyncio.Protocol:
        if len(server.connections) >= limit or fds.short:
            REFUSED.labels(listener, "connection_limit" if not fds.short else "out_of_file_descriptors").inc()
            return _Full()
        return server()

    return factory


def _bind(host: str, port: int, variable: str) -> socket.socket:
    try:
        return socket.create_server((host, port), backlog=BACKLOG)
    except OSError:
        raise PortInUse("bizbus's HTTP server", host, port, variable) from None


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Failures the loop cannot hand to a request, e.g. ``accept()`` out of file descriptors: logged, loud."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.error("http: cannot accept connections: out of file descriptors (limit %d, `ulimit -n`); lower "
                  "BIZBUS_HTTP_MAX_CONNECTIONS or raise the limit: %s", soft, exc)  # fmt: skip
        return
    log.error("http: %s", context.get("message", "event loop error"), exc_info=exc)


def _check_fd_limit(connections: int) -> None:
    """Raise the soft file-descriptor limit towards the hard one when the connection limits need it; warn
    when even the hard limit is too low (the process would fail to accept before the limit answers 503)."""
    need = connections + 256  # the listeners' connections plus Kafka, PostgreSQL, logs ...
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need or soft == resource.RLIM_INFINITY:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < need:
        log.warning("http: the file-descriptor limit (%d) is below what BIZBUS_HTTP_MAX_CONNECTIONS needs (%d); "
                    "raise `ulimit -n` or lower the connection limit", target, need)  # fmt: skip


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve_http(host: str, port: int, app: App, admin: tuple[str, int] | None = None, limits: Limits | None = None,
               admin_token: str | None = None) -> HttpServer:  # fmt: skip
    """Start bizbus's HTTP endpoints on a background thread (raises ``PortInUse`` if a port is taken)."""
    return HttpServer(host, port, app, admin, limits, admin_token).start()


__all__ = ["App", "HttpServer", "Limits", "Refused", "bearer_ok", "framing_problem", "read_body", "serve_http"]
