"""``bizbus up``: bring up the stack, bootstrap it, run the pipeline's components until Ctrl-C.

Also serves bizbus's own HTTP endpoints: ``/healthz`` (the process is alive), ``/readyz`` (broker and
registry reachable, every component running; the body says which is not) and ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from bizbus import metrics
from bizbus.catalogue import Catalogue
from bizbus.components import Component, RuntimeContext
from bizbus.connectors.inbox import HttpRequest, HttpResponse
from bizbus.errors import PortInUse
from bizbus.gcfreeze import FreezeAfterStart
from bizbus.pipeline import Pipeline
from bizbus.procs import ChildProcess, free_port
from bizbus.serde import AvroSerde
from bizbus.settings import Settings
from bizbus.stack import Stack, bootstrap

log = logging.getLogger("bizbus.up")

COMPONENT_UP = metrics.COMPONENT_UP


class ComponentThread:
    """One component in its own thread; a crash is logged and shows in /readyz, not swallowed."""

    def __init__(self, name: str, type_name: str, component: Component, stop: threading.Event) -> None:
        self.name, self.type_name, self.component, self.stop = name, type_name, component, stop
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"component-{name}", daemon=True)

    def _run(self) -> None:
        COMPONENT_UP.labels(self.name, self.type_name).set(1)
        try:
            self.component.run(self.stop)
        except Exception as exc:  # any crash is kept for /readyz and logged, never swallowed
            self.error = exc
            log.exception("component %s failed: %s", self.name, exc)
        finally:
            COMPONENT_UP.labels(self.name, self.type_name).set(0)

    @property
    def state(self) -> str:
        if self.error is not None:
            return f"failed: {type(self.error).__name__}: {self.error}"
        return "running" if self.thread.is_alive() else "finished"


class Health:
    """Readiness checks, cached for a second so a probing load balancer cannot hammer the broker."""

    def __init__(self, settings: Settings, components: list[ComponentThread],
                 extra_checks: Callable[[], dict[str, str]] | None = None, registry: Any = None) -> None:  # fmt: skip
        self.settings = settings
        self.components = components
        self.extra_checks = extra_checks  # further named checks ("ok" or what is wrong), e.g. the Faust worker
        self.registry = registry if registry is not None else REGISTRY  # what /metrics serves
        self._admin = AdminClient(settings.kafka_config())
        self._cache: tuple[float, dict[str, str]] = (0.0, {})
        metrics.register_collectors()

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    def checks(self) -> dict[str, str]:
        now = time.monotonic()
        if now - self._cache[0] < 1.0:
            return self._cache[1]
        result: dict[str, str] = {}
        try:
            self._admin.list_topics(timeout=2)
            result["broker"] = "ok"
        except KafkaException as exc:
            result["broker"] = f"unreachable: {exc}"
        try:
            r = httpx.get(f"{self.settings.registry_url}/subjects", timeout=2)
            result["registry"] = "ok" if r.status_code == 200 else f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            result["registry"] = f"unreachable: {exc}"
        for c in self.components:
            result[f"component:{c.name}"] = "ok" if c.state in ("running", "finished") else c.state
            try:
                problem = c.component.probe()
            except Exception as exc:  # a probe that breaks is a finding too
                problem = f"probe failed: {type(exc).__name__}: {exc}"
            if problem is not None or type(c.component).probe is not Component.probe:
                result[f"target:{c.name}"] = problem or "ok"
        if self.extra_checks is not None:
            try:
                result.update(self.extra_checks())
            except Exception as exc:  # a failing check is a finding, not a crash of the probe
                result["checks"] = f"failed: {type(exc).__name__}: {exc}"
        self._cache = (now, result)
        return result

    def connectors(self) -> dict[str, Any]:
        """Each component's state and, for connectors, its tasks' states."""
        out: dict[str, Any] = {}
        for c in self.components:
            states = getattr(c.component, "states", None)
            out[c.name] = {"type": c.type_name, "state": c.state, "tasks": states() if states else {}}
        return out

    def webhook(self, name: str, request: HttpRequest) -> HttpResponse:
        """Hand a request to ``/webhooks/NAME`` to the component that takes that vendor's webhooks."""
        comp = next((c for c in self.components if c.name == name), None)
        handle = getattr(comp.component, "webhook", None) if comp is not None else None
        if handle is None:
            takers = [c.name for c in self.components if getattr(c.component, "webhook", None)]
            return HttpResponse(404, json.dumps({"error": f"no webhook connector {name!r} in this worker; "
                                                 f"here: {', '.join(takers) or 'none'}"}).encode())  # fmt: skip
        try:
            return handle(request)
        except Exception as exc:  # the vendor must retry; the error is logged, never swallowed
            log.exception("webhook %s failed: %s", name, exc)
            return HttpResponse(500, b'{"error":"internal error, retry later"}')

    def control(self, name: str, action: str) -> tuple[int, dict[str, Any]]:
        """Pause or resume a connector's tasks (they keep their group membership and leases)."""
        comp = next((c for c in self.components if c.name == name), None)
        if comp is None:
            return 404, {
                "error": f"no component {name!r}; known: {', '.join(c.name for c in self.components)}"
            }
        fn = getattr(comp.component, action, None)
        if fn is None:
            return 409, {"error": f"{name} ({comp.type_name}) cannot {action}"}
        fn()
        return 202, {"component": name, "requested": action}


class _Headers(dict[str, str]):
    """Request headers by lower-case name (a repeated header's values joined by ", ")."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


def _parse_request(h: BaseHTTPRequestHandler) -> bool:
    """Parse ``h.raw_requestline`` and the header lines after it into ``h.command``, ``h.path``,
    ``h.request_version``, ``h.headers`` (``_Headers``) and ``h.close_connection``."""
    h.command, h.request_version = None, "HTTP/0.9"  # type: ignore[assignment]
    h.close_connection = True
    h.requestline = str(h.raw_requestline, "iso-8859-1").rstrip("\r\n")
    words = h.requestline.split()
    if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
        http = len(words) == 3 and words[2].startswith("HTTP/")
        h.request_version = "HTTP/1.1" if http else "HTTP/0.9"  # the error answer's own format
        h.send_error(505 if http else 400, f"Bad request line {h.requestline[:80]!r}")
        return False
    h.command, h.path, h.request_version = words
    headers = _Headers()
    for _ in range(101):
        line = h.rfile.readline(65537)
        if line in (b"\r\n", b"\n", b""):
            break
        name, colon, value = str(line, "iso-8859-1").partition(":")
        name = name.strip().lower()
        if len(line) > 65536 or not colon or not name:
            h.send_error(400, "Bad header line")
            return False
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    else:
        h.send_error(431, "Too many headers")
        return False
    h.headers = headers  # type: ignore[assignment]
    connection = headers.get("connection", "").lower()
    http10 = h.request_version == "HTTP/1.0"
    h.close_connection = connection == "close" or (http10 and connection != "keep-alive")
    if headers.get("expect", "").lower() == "100-continue" and h.request_version == "HTTP/1.1":
        go_on = h.handle_expect_100()
        h.wfile.flush()  # the client waits for the interim answer before it sends the body
        return go_on
    return True


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The Date header value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


class _Server(ThreadingHTTPServer):
    """One thread per connection (connections are kept alive, so a thread serves many requests)."""

    # the listen backlog (socketserver's default is 5): a vendor opening a burst of connections must not
    # have SYNs dropped and retried a second later
    request_queue_size = 256


def serve_http(host: str, port: int, health: Health) -> ThreadingHTTPServer:
    """Start the HTTP endpoints on a background thread."""

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1: connections stay open (a vendor pushing webhooks reuses them; measured: HTTP/1.0 with a
        # thread and a new connection per request capped the webhook rate at ~220/s). Every answer
        # carries Content-Length, and every request body is read, so the next request parses cleanly.
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY and one buffered write per answer (flushed by handle_one_request): headers and body
        # went out as two small writes, and Nagle held the second until the client's delayed ACK, ~40 ms
        # per request (measured against a trivial handler: ~22 requests/s on one keep-alive connection
        # before, ~6,000/s after, ~14,000/s with the direct header parsing below)
        disable_nagle_algorithm = True
        wbufsize = 1 << 16

        def parse_request(self) -> bool:
            """The request line and headers, read directly (stdlib: an email.parser run per request, ~20 % of
            the worker's CPU at 1,000 webhooks/s); header names lower-case; ``False`` after an error answer."""
            return _parse_request(self)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            """Status line, headers and body in one write (no Server header; Date cached per second)."""
            phrase = self.responses.get(code, ("",))[0]
            self.wfile.write(b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
                code, phrase.encode(), _http_date(), ctype.encode("latin-1"), len(body), body))  # fmt: skip
            if log.isEnabledFor(logging.DEBUG):
                self.log_request(code, len(body))

        def _webhook(self) -> bool:
            path, _, qs = self.path.partition("?")
            parts = path.strip("/").split("/", 2)
            if parts[0] != "webhooks" or len(parts) < 2:
                return False
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            request = HttpRequest(self.command, parts[2] if len(parts) > 2 else "",
                                  dict(parse_qsl(qs, keep_blank_values=True)), dict(self.headers), body)  # fmt: skip
            resp = health.webhook(parts[1], request)
            self._send(resp.status, resp.body, resp.content_type)
            return True

        def do_POST(self) -> None:
            if self._webhook():
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > 0:
                self.rfile.read(length)  # not used, but it must not be taken for the next request
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            if len(parts) == 3 and parts[0] == "connectors" and parts[2] in ("pause", "resume"):
                code, body = health.control(parts[1], parts[2])
                self._send(code, json.dumps(body).encode(), "application/json")
            else:
                self._send(
                    404,
                    b'{"error":"not found; try POST /connectors/NAME/pause or /resume"}',
                    "application/json",
                )

        def do_GET(self) -> None:
            if self._webhook():
                return
            path = self.path.split("?", 1)[0]
            if path == "/connectors":
                self._send(200, json.dumps(health.connectors()).encode(), "application/json")
            elif path == "/healthz":
                self._send(200, b'{"status":"alive"}', "application/json")
            elif path == "/readyz":
                checks = health.checks()
                ready = all(v == "ok" for v in checks.values())
                body = json.dumps({"ready": ready, "checks": checks}).encode()
                self._send(200 if ready else 503, body, "application/json")
            elif path == "/metrics":
                self._send(200, health.metrics(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b'{"error":"not found; try /healthz, /readyz, /metrics"}', "application/json")

        def log_message(self, fmt: str, *args: Any) -> None:
            if log.isEnabledFor(logging.DEBUG):  # called for every request: format only when logged
                log.debug("http %s", fmt % args)

    try:
        server = _Server((host, port), Handler)
    except OSError:
        raise PortInUse("bizbus's HTTP server", host, port, "BIZBUS_HTTP_PORT") from None
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def start_components(pipeline: Pipeline, ctx: RuntimeContext, stop: threading.Event,
                     only: tuple[str, ...] = ()) -> list[ComponentThread]:  # fmt: skip
    """Build and set up the enabled components (or just ``only``); not started yet."""
    threads: list[ComponentThread] = []
    for cc in pipeline.enabled():
        if only and cc.name not in only:
            continue
        if cc.type.kind == "flow":  # flows run in their own Faust worker process (``bizbus flows run``)
            continue
        comp = cc.type.load()(cc.name, cc.config, ctx)
        comp.setup()
        threads.append(ComponentThread(cc.name, cc.type.name, comp, stop))
    return threads


def stop_components(threads: list[ComponentThread], stop: threading.Event, server: ThreadingHTTPServer | None = None,
                    old_signals: dict[int, Any] | None = None) -> None:  # fmt: skip
    """Stop with drain (each loop finishes its batch and commits, then closes), the HTTP server, signal handlers."""
    stop.set()
    for t in threads:
        t.thread.join(timeout=30)
        t.component.close()
    if server is not None:
        server.shutdown()
        server.server_close()
    for s, handler in (old_signals or {}).items():
        signal.signal(s, handler)


def _signals(stop: threading.Event, echo: Callable[[str], None]) -> dict[int, Any]:
    def on_signal(signum: int, _frame: Any) -> None:
        echo(f"\n{signal.Signals(signum).name} received: stopping ...")
        stop.set()

    return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}


def up(
    settings: Settings, pipeline: Pipeline, catalogue: Catalogue, echo: Callable[[str], None] = print
) -> int:
    """Run the bus in the foreground until SIGINT/SIGTERM; everything started is stopped on the way out."""
    stop = threading.Event()
    old = _signals(stop, echo)
    stack = Stack(settings)
    threads: list[ComponentThread] = []
    server: ThreadingHTTPServer | None = None
    flows: ChildProcess | None = None
    try:
        stack.start(progress=echo)
        serde = AvroSerde(settings.registry_config())
        bootstrap(settings, catalogue, serde, progress=echo)
        threads = start_components(pipeline, RuntimeContext(settings, catalogue, serde), stop)
        flows_port = free_port()
        flows = flows_process(settings, pipeline, flows_port)
        children = {"flows": f"http://127.0.0.1:{flows_port}"} if flows is not None else {}
        health = Health(settings, threads, child_checks(children), metrics.MergedRegistry(
            lambda: {name: f"{url}/metrics" for name, url in children.items()}))  # fmt: skip
        server = serve_http(settings.http_host, settings.http_port, health)
        freezer = FreezeAfterStart()
        freezer.start()
        for t in threads:
            t.thread.start()
        flows_retry = 0.0
        if flows is not None:
            flows.start()
        echo(banner(settings, stack, pipeline, server.server_address[1]))
        while not stop.wait(0.5):
            freezer.tick()
            dead = stack.dead_children()
            if dead:
                echo(
                    f"the embedded {' and '.join(dead)} exited unexpectedly; stopping (logs: {settings.data_dir / 'logs'})"
                )
                return 1
            if flows is not None and not flows.alive() and not stop.is_set() and time.monotonic() > flows_retry:
                echo(f"the flows worker exited; restarting it in 5 s (log: {flows.log_path}):\n{flows.log_tail(5)}")
                flows_retry = time.monotonic() + 5
                stop.wait(5)
                flows.start()
        return 0
    finally:
        if flows is not None:
            flows.stop(30)
        stop_components(threads, stop, server, old)
        stack.stop()
        echo("bizbus stopped; every child process has exited.")


def child_checks(children: dict[str, str]) -> Callable[[], dict[str, str]]:
    """Readiness of child processes that serve ``/readyz`` (name -> base URL), as named checks."""

    def checks() -> dict[str, str]:
        out: dict[str, str] = {}
        for name, url in children.items():
            try:
                r = httpx.get(f"{url}/readyz", timeout=2)
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            except (httpx.HTTPError, ValueError) as exc:
                out[name] = f"not answering: {type(exc).__name__}"
                continue
            bad = {k: v for k, v in (body.get("checks") or {}).items() if v != "ok"}
            out[name] = "ok" if r.status_code == 200 else f"not ready: {json.dumps(bad) if bad else r.status_code}"
        return out

    return checks


def flows_process(settings: Settings, pipeline: Pipeline, http_port: int = 0) -> ChildProcess | None:
    """The Faust worker running the pipeline's enabled flows, as a child of ``bizbus up`` (None: no flows);
    it serves /metrics and /readyz on 127.0.0.1:``http_port``, which ``up`` merges into its own."""
    if not any(c.type.kind == "flow" for c in pipeline.enabled()):
        return None
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "SCHEMA_REGISTRY_URL": settings.registry_url, "BIZBUS_HTTP_HOST": "127.0.0.1",
           "BIZBUS_HTTP_PORT": str(http_port)}  # fmt: skip
    argv = [sys.executable, "-m", "bizbus.cli", "flows", "run", "--pipeline", str(pipeline.path)]
    return ChildProcess("flows", argv, settings.data_dir / "logs" / "flows.log", env)


def worker(settings: Settings, pipeline: Pipeline, catalogue: Catalogue, only: tuple[str, ...] = (),
           echo: Callable[[str], None] = print) -> int:  # fmt: skip
    """Run pipeline components against an already running broker and registry (no embedded stack).

    Start as many workers as you like with the same pipeline: sink tasks share their consumer group,
    source shards are leased, so work spreads and a dead worker's share is taken over.
    """
    stop = threading.Event()
    old = _signals(stop, echo)
    threads: list[ComponentThread] = []
    server: ThreadingHTTPServer | None = None
    try:
        serde = AvroSerde(settings.registry_config())
        threads = start_components(pipeline, RuntimeContext(settings, catalogue, serde), stop, only)
        if not threads:
            echo(
                f"nothing to run: no enabled component{' named ' + ', '.join(only) if only else ''} in {pipeline.path}"
            )
            return 2
        server = serve_http(settings.http_host, settings.http_port, Health(settings, threads))
        freezer = FreezeAfterStart()
        freezer.start()
        for t in threads:
            t.thread.start()
        echo(f"bizbus worker: {', '.join(t.name for t in threads)} against {settings.bootstrap_servers}; "
             f"http://{settings.http_host}:{server.server_address[1]}/connectors")  # fmt: skip
        while not stop.wait(0.5):
            freezer.tick()
            failed = [t for t in threads if t.error is not None]
            if failed:
                echo(f"component {failed[0].name} failed: {failed[0].error}; stopping")
                return 1
        return 0
    finally:
        stop_components(threads, stop, server, old)


def banner(settings: Settings, stack: Stack, pipeline: Pipeline, http_port: int) -> str:
    broker = f"{settings.bootstrap_servers} ({'embedded Tansu, in memory' if stack.broker else 'external'})"
    registry = f"{settings.registry_url} ({'embedded, ' + str(stack.registry.db_path) if stack.registry else 'external'})"
    comps = ", ".join(f"{c.name} ({c.type.name})" for c in pipeline.enabled()) or "none"
    first_topic = next(
        (getattr(c.config, "topic", None) for c in pipeline.enabled() if getattr(c.config, "topic", None)),
        "bizbus.pm.timesheet.v1",
    )
    return f"""
bizbus is up — pipeline '{pipeline.name}' from {pipeline.path}
  Kafka broker     {broker}
  schema registry  {registry}
  HTTP             http://{settings.http_host}:{http_port}/healthz  /readyz  /metrics
  components       {comps}

Try next (in another terminal, with .venv/bin on PATH or via `.venv/bin/bizbus`):
  bizbus topics list                          the catalogue with live state
  bizbus tail {first_topic}        decoded records as they arrive
  curl -s http://{settings.registry_url.split("//", 1)[-1]}/subjects           subjects in the registry
  curl -s http://{settings.http_host}:{http_port}/readyz
Ctrl-C stops everything.
"""
