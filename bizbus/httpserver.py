"""bizbus's HTTP endpoints (webhooks, /healthz, /readyz, /metrics, /connectors, pause/resume) on one asyncio
event loop in a thread of its own.

Webhooks are the hot path: a vendor pushes hundreds or thousands a second over keep-alive connections.
They are parsed and checked on the loop (signature, JSON, the vendor's envelope: pure CPU, microseconds),
and their deliveries go to the inbox's group commit without a thread per connection: the loop hands whole
groups to one inbox writer thread and answers each request when the commit holding its rows is done
(``PgInbox.add_many_async``). The thread-per-connection server this replaces spent about a third of a
core on thread switches and GIL hand-overs at 1,000 webhooks/s, as much as the inbox and converter work.

Everything that may block (readiness checks call the registry and child processes, /metrics merges child
registries, pause/resume joins task threads, a webhook connector without an async entry, a dead letter's
flush) runs in a thread pool, never on the loop.

HTTP/1.1 only as far as bizbus needs it: keep-alive and pipelining (answers in order), ``Content-Length`` and
chunked request bodies, ``Expect: 100-continue``, ``Connection: close`` and HTTP/1.0. Each answer is one
write with TCP_NODELAY (headers and body as two writes met Nagle and the client's delayed ACK: ~40 ms a
request). Broken requests get 400 / 413 / 431 / 501 / 505 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qsl

from prometheus_client import CONTENT_TYPE_LATEST

from bizbus.connectors.inbox import HttpRequest, HttpResponse
from bizbus.errors import PortInUse

log = logging.getLogger("bizbus.http")

MAX_HEAD = 65536  # bytes of request line + headers
MAX_HEADERS = 100
MAX_BODY = 16 * 1024 * 1024  # a webhook body larger than this is refused with 413
BACKLOG = 256  # a vendor opening a burst of connections must not have SYNs dropped and retried a second later
BLOCKING_THREADS = 32  # the pool for work that may block (see the module docstring)
JSON = "application/json"


class App(Protocol):
    """What the server calls (``bizbus.runner.Health``); ``webhook_async`` is used when present."""

    def webhook(self, name: str, request: HttpRequest) -> HttpResponse: ...
    def connectors(self) -> dict[str, Any]: ...
    def checks(self) -> dict[str, str]: ...
    def metrics(self) -> bytes: ...
    def control(self, name: str, action: str) -> tuple[int, dict[str, Any]]: ...


class BadRequest(Exception):
    """A request the server answers with ``status`` and then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Head:
    """A parsed request line and headers (header names lower-case; repeated headers joined by ", ")."""

    __slots__ = ("method", "target", "version", "headers")

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str]) -> None:
        self.method, self.target, self.version, self.headers = method, target, version, headers

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


def parse_head(head: bytes) -> Head:
    """Parse the request line and header lines (``head`` ends with the blank line); raises ``BadRequest``."""
    lines = head.lstrip(b"\r\n").split(b"\r\n")  # a client may send stray CRLFs between requests
    try:
        request_line = lines[0].decode("iso-8859-1")
    except IndexError:
        raise BadRequest(400, "empty request") from None
    words = request_line.split()
    if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
        if len(words) == 3 and words[2].startswith("HTTP/"):
            raise BadRequest(505, f"HTTP version {words[2][:20]!r} is not supported; use HTTP/1.1")
        raise BadRequest(400, f"bad request line {request_line[:80]!r}")
    headers: dict[str, str] = {}
    fields = [line for line in lines[1:] if line]
    if len(fields) > MAX_HEADERS:
        raise BadRequest(431, f"more than {MAX_HEADERS} header lines")
    for line in fields:
        name, colon, value = line.decode("iso-8859-1").partition(":")
        name = name.strip().lower()
        if not colon or not name or " " in name:
            raise BadRequest(400, f"bad header line {line[:80]!r}")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Head(words[0], words[1], words[2], headers)


def body_length(head: Head) -> int | None:
    """The ``Content-Length`` (0 when absent), or None for a chunked body; raises ``BadRequest``."""
    te = head.headers.get("transfer-encoding")
    if te is not None:
        if te.lower() != "chunked":
            raise BadRequest(501, f"transfer-encoding {te[:40]!r} is not supported (chunked is)")
        return None
    raw = head.headers.get("content-length")
    if raw is None:
        return 0
    if not raw.isdigit():  # also refuses "5, 5" (two different lengths would be request smuggling)
        raise BadRequest(400, f"bad Content-Length {raw[:40]!r}")
    n = int(raw)
    if n > MAX_BODY:
        raise BadRequest(413, f"body of {n} bytes is larger than {MAX_BODY}")
    return n


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked request body (trailers are read and dropped)."""
    parts: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadRequest(400, f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise BadRequest(413, f"body larger than {MAX_BODY} bytes")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest(400, "chunk not followed by CRLF")


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


def render(status: int, body: bytes, content_type: str = JSON, close: bool = False) -> bytes:
    """A whole answer (status line, headers, body) as one buffer."""
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status, phrase, http_date(), content_type.encode("latin-1"), len(body),
        b"Connection: close\r\n" if close else b"", body)  # fmt: skip


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode()


class HttpServer:
    """The endpoints of one bizbus process. ``__init__`` binds the port (so a port in use fails at once),
    ``start()`` runs the loop on a daemon thread, ``shutdown()`` stops it and closes every connection."""

    def __init__(self, host: str, port: int, app: App) -> None:
        self.app = app
        try:
            self._sock = socket.create_server((host, port), backlog=BACKLOG)
        except OSError:
            raise PortInUse("bizbus's HTTP server", host, port, "BIZBUS_HTTP_PORT") from None
        self.server_address: tuple[str, int] = self._sock.getsockname()[:2]
        self._pool = concurrent.futures.ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="http-blocking")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

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
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, sock=self._sock, limit=MAX_HEAD)
            )
            self._started.set()
            loop.run_forever()
        finally:
            self._started.set()
            loop.close()

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
        """Close the listening socket (``shutdown`` has done it already when the server ran)."""
        self._sock.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=2)
        asyncio.get_running_loop().stop()

    # one connection ------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        except asyncio.CancelledError:
            pass  # shutdown
        except Exception as exc:  # a bug here must not take the loop down; the connection ends
            log.exception("http: connection failed: %s", exc)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read, answer and write one request; False when the connection is to be closed."""
        try:
            head_bytes = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                writer.write(render(400, _error_body("incomplete request"), close=True))
            return False
        except asyncio.LimitOverrunError:
            writer.write(render(431, _error_body(f"request line and headers exceed {MAX_HEAD} bytes"), close=True))
            return False
        try:
            head = parse_head(head_bytes)
            length = body_length(head)
        except BadRequest as exc:
            writer.write(render(exc.status, _error_body(exc.message), close=True))
            return False
        if head.headers.get("expect", "").lower() == "100-continue" and head.version == "HTTP/1.1":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for this before sending the body
        try:
            body = await read_chunked(reader) if length is None else (
                await reader.readexactly(length) if length else b"")  # fmt: skip
        except BadRequest as exc:
            writer.write(render(exc.status, _error_body(exc.message), close=True))
            return False
        except asyncio.LimitOverrunError:
            writer.write(render(400, _error_body("chunk size line too long"), close=True))
            return False
        keep = head.keep_alive
        resp = await self._answer(head, body)
        writer.write(render(resp.status, resp.body, resp.content_type, close=not keep))
        if not keep:
            await writer.drain()
            return False
        transport = writer.transport
        if transport.get_write_buffer_size() > 1 << 16:  # a client that pipelines but does not read
            await writer.drain()
        return True

    async def _answer(self, head: Head, body: bytes) -> HttpResponse:
        try:
            return await self._route(head, body)
        except Exception as exc:  # logged and answered 500 (the client retries), never swallowed
            log.exception("http: %s %s failed: %s", head.method[:20], head.target[:200], exc)
            return HttpResponse(500, b'{"error":"internal error, retry later"}')

    async def _route(self, head: Head, body: bytes) -> HttpResponse:
        path, _, qs = head.target.partition("?")
        parts = path.strip("/").split("/", 2)
        if parts[0] == "webhooks" and len(parts) >= 2 and parts[1]:
            request = HttpRequest(head.method, parts[2] if len(parts) > 2 else "",
                                  dict(parse_qsl(qs, keep_blank_values=True)), head.headers, body)  # fmt: skip
            handle: Callable[[str, HttpRequest], Awaitable[HttpResponse]] | None = getattr(
                self.app, "webhook_async", None
            )
            if handle is not None:
                return await handle(parts[1], request)
            return await self._blocking(self.app.webhook, parts[1], request)
        if head.method == "GET":
            if path == "/healthz":
                return HttpResponse(200, b'{"status":"alive"}')
            if path == "/connectors":
                return HttpResponse(200, json.dumps(await self._blocking(self.app.connectors)).encode())
            if path == "/readyz":
                checks = await self._blocking(self.app.checks)
                ready = all(v == "ok" for v in checks.values())
                return HttpResponse(200 if ready else 503, json.dumps({"ready": ready, "checks": checks}).encode())
            if path == "/metrics":
                return HttpResponse(200, await self._blocking(self.app.metrics), CONTENT_TYPE_LATEST)
            return HttpResponse(404, b'{"error":"not found; try /healthz, /readyz, /metrics, /connectors"}')
        if head.method == "POST":
            names = path.strip("/").split("/")
            if len(names) == 3 and names[0] == "connectors" and names[2] in ("pause", "resume"):
                code, answer = await self._blocking(self.app.control, names[1], names[2])
                return HttpResponse(code, json.dumps(answer).encode())
            return HttpResponse(404, b'{"error":"not found; try POST /connectors/NAME/pause or /resume"}')
        return HttpResponse(501, _error_body(f"method {head.method[:20]} is not supported here"))

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve_http(host: str, port: int, app: App) -> HttpServer:
    """Start bizbus's HTTP endpoints on a background thread (raises ``PortInUse`` if the port is taken)."""
    return HttpServer(host, port, app).start()


__all__ = ["App", "BadRequest", "Head", "HttpServer", "body_length", "parse_head", "read_chunked", "render",
           "serve_http"]  # fmt: skip
