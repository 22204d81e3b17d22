"""``bizbus up``: bring up the stack, bootstrap it, run the pipeline's components until Ctrl-C.

Also serves bizbus's own HTTP endpoints (bizbus.host.httpserver): on the public listener the webhooks and
``/healthz`` (the process is alive); on the admin listener ``/readyz`` (broker and registry reachable, every
component running; the body says which is not, and which connector is paused), ``/metrics``, ``/connectors``
and pause / resume / restart (bizbus.host.admin).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY, generate_latest

from bizbus import metrics
from bizbus.catalogue import Catalogue
from bizbus.connectors.runtime.inbox import HttpRequest, HttpResponse
from bizbus.devstack.procs import ChildProcess, free_port
from bizbus.devstack.stack import Stack, bootstrap
from bizbus.errors import BizbusError
from bizbus.gcfreeze import FreezeAfterStart
from bizbus.host.admin import admin_token, serve, watch_pauses
from bizbus.host.components import Component, RuntimeContext
from bizbus.host.httpserver import MAX_BODY, HttpServer
from bizbus.host.pauses import PauseWatcher
from bizbus.host.pipeline import Pipeline
from bizbus.serde import AvroSerde
from bizbus.settings import Settings

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

    pause_watcher: PauseWatcher | None = None  # the stored pauses (bizbus.host.admin.watch_pauses); None: local only

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
            state = "ok" if c.state in ("running", "finished") else c.state
            problems = task_problems(c.component)
            if state == "ok" and problems:  # a task retrying, waiting for its target, stuck on a record
                state = "; ".join(f"task {i}: {p}" for i, p in sorted(problems.items()))
            result[f"component:{c.name}"] = state
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
        """Each component's state and, for connectors, its tasks' states and whether it is paused."""
        out: dict[str, Any] = {}
        paused = self.paused()
        for c in self.components:
            states = getattr(c.component, "states", None)
            out[c.name] = {"type": c.type_name, "state": c.state, "tasks": states() if states else {},
                           "problems": task_problems(c.component)}  # fmt: skip
            if c.name in paused:
                out[c.name]["paused"] = paused[c.name]
        return out

    def paused(self) -> dict[str, str]:
        """Paused connectors of this process ("paused since ... by ..."), as stored in PostgreSQL."""
        watcher = self.pause_watcher
        if watcher is None:
            return {}
        out = {name: p.describe() for name, p in watcher.paused.items()}
        if watcher.error is not None:
            out["(store)"] = f"unreachable, showing the last state read: {watcher.error}"
        return out

    def webhook_gate(self, name: str, method: str, subpath: str, query: Any,
                     headers: Any) -> tuple[int, HttpResponse | None]:  # fmt: skip
        """Before a webhook's body is read: its size limit and, if the connector refuses it from the head
        alone (no such connector, no signature), the answer."""
        comp = next((c for c in self.components if c.name == name), None)
        if comp is None or not _takes_webhooks(comp.component):
            return MAX_BODY, self.webhook(name, HttpRequest(method, subpath, query, headers, b""))  # the 404
        gate = getattr(comp.component, "webhook_gate", None)
        return gate(method, subpath, query, headers) if gate is not None else (MAX_BODY, None)

    def webhook(self, name: str, request: HttpRequest) -> HttpResponse:
        """Hand a request to ``/webhooks/NAME`` to the component that takes that vendor's webhooks."""
        comp = next((c for c in self.components if c.name == name), None)
        handle = getattr(comp.component, "webhook", None) if comp is not None else None
        if handle is None:
            takers = [c.name for c in self.components if _takes_webhooks(c.component)]
            return HttpResponse(404, json.dumps({"error": f"no webhook connector {name!r} in this worker; "
                                                 f"here: {', '.join(takers) or 'none'}"}).encode())  # fmt: skip
        try:
            return handle(request)
        except Exception as exc:  # the vendor must retry; the error is logged, never swallowed
            log.exception("webhook %s failed: %s", name, exc)
            return HttpResponse(500, b'{"error":"internal error, retry later"}')

    async def webhook_async(self, name: str, request: HttpRequest) -> HttpResponse:
        """``webhook`` on the HTTP server's event loop: a component with ``webhook_async`` (the inbox
        connectors) answers on the loop; any other is called in a thread of the loop's executor."""
        comp = next((c for c in self.components if c.name == name), None)
        handle = getattr(comp.component, "webhook_async", None) if comp is not None else None
        if handle is None:
            return await asyncio.get_running_loop().run_in_executor(None, self.webhook, name, request)
        try:
            return await handle(request)
        except Exception as exc:  # the vendor must retry; the error is logged, never swallowed
            log.exception("webhook %s failed: %s", name, exc)
            return HttpResponse(500, b'{"error":"internal error, retry later"}')

    def control(self, name: str, action: str, by: str = "admin API") -> tuple[int, dict[str, Any]]:
        """Pause or resume a connector's tasks (they keep their group membership and leases), or restart
        them. A pause is stored first (bizbus.host.pauses): every worker of the connector applies it, also after
        a restart; when it cannot be stored nothing changes (503)."""
        comp = next((c for c in self.components if c.name == name), None)
        if comp is None:
            return 404, {
                "error": f"no component {name!r}; known: {', '.join(c.name for c in self.components)}"
            }
        fn = getattr(comp.component, "restart_tasks" if action == "restart" else action, None)
        if fn is None:
            return 409, {"error": f"{name} ({comp.type_name}) cannot {action}"}
        watcher = self.pause_watcher
        answer: dict[str, Any] = {"component": name, "requested": action}
        if watcher is not None and action in ("pause", "resume"):
            try:
                if action == "pause":
                    watcher.paused[name] = watcher.store.pause(name, by)
                    answer["paused"] = watcher.paused[name].describe()
                else:
                    watcher.store.resume(name)
                    watcher.paused.pop(name, None)
            except psycopg.Error as exc:
                log.error("%s of %s not stored: %s", action, name, exc)
                return 503, {"error": f"the {action} could not be stored in PostgreSQL (BIZBUS_STATE_DSN), "
                                      f"nothing changed: {type(exc).__name__}: {str(exc).strip()[:200]}"}  # fmt: skip
        if action == "restart" and watcher is not None:
            fn(paused=name in watcher.paused)  # the new tasks start paused if the connector is
        else:
            fn()
        log.info("connector %s: %s (%s)", name, action, by)
        return 202, answer


def _takes_webhooks(component: Any) -> bool:
    """Whether ``/webhooks/NAME`` goes to this component (it answers on the loop, or from a thread)."""
    return getattr(component, "webhook_async", None) is not None or getattr(component, "webhook", None) is not None


def task_problems(component: Component) -> dict[int, str]:
    """A connector's tasks that cannot make progress now (task id -> why); {} for other components."""
    problems = getattr(component, "problems", None)
    if problems is None:
        return {}
    try:
        return dict(problems())
    except Exception as exc:  # asking must not break the probe
        return {-1: f"problems() failed: {type(exc).__name__}: {exc}"}


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


def stop_components(threads: list[ComponentThread], stop: threading.Event, server: HttpServer | None = None,
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
    server: HttpServer | None = None
    pauses: PauseWatcher | None = None
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
        pauses = watch_pauses(settings, threads, health)
        server = serve(settings, health, admin_token(settings, generate=True, echo=echo))
        freezer = FreezeAfterStart()
        freezer.start()
        for t in threads:
            t.thread.start()
        flows_retry = 0.0
        if flows is not None:
            flows.start()
        echo(banner(settings, stack, pipeline, server))
        restarts = RestartBudget(settings.broker_restarts, RESTART_WINDOW)
        while not stop.wait(0.5):
            freezer.tick()
            dead = stack.dead_children()
            if dead:
                if not restarts.take():
                    echo(f"the embedded {' and '.join(dead)} exited unexpectedly ({stack.exit_codes(dead)}), "
                         f"{restarts.spent_text()}; stopping. Its log: {settings.data_dir / 'logs'}; raise "
                         "BIZBUS_BROKER_RESTARTS or use an external cluster (KAFKA_BOOTSTRAP_SERVERS)")  # fmt: skip
                    return 1
                echo(f"the embedded {' and '.join(dead)} exited unexpectedly ({stack.exit_codes(dead)}); restarting "
                     f"it ({restarts.used} of {restarts.limit} restarts within {RESTART_WINDOW / 60:.0f} min); "
                     "webhooks are still taken into the inbox meanwhile")  # fmt: skip
                if flows is not None and "broker" in dead:  # its tables and group lived in the lost broker
                    flows.stop(30)
                try:
                    replace_stack(stack, dead, settings, catalogue, serde, threads, echo)
                except BizbusError as exc:
                    echo(f"restarting the embedded {' and '.join(dead)} failed: {exc}; stopping")
                    return 1
                if flows is not None and "broker" in dead:
                    flows.start()
                continue
            if flows is not None and not flows.alive() and not stop.is_set() and time.monotonic() > flows_retry:
                echo(f"the flows worker exited; restarting it in 5 s (log: {flows.log_path}):\n{flows.log_tail(5)}")
                flows_retry = time.monotonic() + 5
                stop.wait(5)
                flows.start()
        return 0
    finally:
        if flows is not None:
            flows.stop(30)
        if pauses is not None:
            pauses.stop()
        stop_components(threads, stop, server, old)
        stack.stop()
        echo("bizbus stopped; every child process has exited.")


RESTART_WINDOW = 600.0  # seconds: BIZBUS_BROKER_RESTARTS restarts at most within this window


class RestartBudget:
    """At most ``limit`` restarts within ``window`` seconds (a child that keeps dying is not restarted for ever)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._times: list[float] = []

    @property
    def used(self) -> int:
        return len(self._times)

    def take(self) -> bool:
        """Whether one more restart is allowed now (and count it)."""
        now = self.clock()
        self._times = [t for t in self._times if now - t < self.window]
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True

    def spent_text(self) -> str:
        if self.limit == 0:
            return "and restarts are off (BIZBUS_BROKER_RESTARTS=0)"
        return f"after {self.limit} restart(s) within {self.window / 60:.0f} min"


def replace_stack(stack: Stack, dead: list[str], settings: Settings, catalogue: Catalogue, serde: AvroSerde,
                  threads: list[ComponentThread], echo: Callable[[str], None]) -> None:  # fmt: skip
    """Start the dead embedded children again; after a new broker (an empty log: it keeps nothing) create the
    topics again and give every connector new tasks, whose clients then talk to the new log: sources find the
    new log epoch and send again from their durable side, sinks find their ledger ahead of the log and
    de-duplicate by effect id (see README, exactly once)."""
    if "broker" not in dead:
        stack.restart(dead)
        return
    # the connectors' clients stop first: a client asking a new broker for a topic's metadata would have it
    # created with the broker's default partitions before the catalogue's are applied
    halted = [t for t in threads if getattr(t.component, "halt_tasks", None) and t.thread.is_alive()]
    for t in halted:
        t.component.halt_tasks(timeout=15, drain=False)  # type: ignore[attr-defined]
    stack.restart(dead)
    metrics.BROKER_RESTARTS.inc()
    bootstrap(settings, catalogue, serde, progress=echo, fresh_log=True)
    for t in halted:
        t.component.start_tasks()  # type: ignore[attr-defined]
    echo(f"the embedded broker is back on {settings.bootstrap_servers} (a new, empty log: {stack.broker.cluster_id if stack.broker else '?'}); "
         "connectors restarted")  # fmt: skip


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
    it serves /metrics and /readyz on its admin listener 127.0.0.1:``http_port``, which ``up`` merges into its own
    (its public listener, only /healthz there, takes any free port on 127.0.0.1)."""
    if not any(c.type.kind == "flow" for c in pipeline.enabled()):
        return None
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "SCHEMA_REGISTRY_URL": settings.registry_url, "BIZBUS_HTTP_HOST": "127.0.0.1", "BIZBUS_HTTP_PORT": "0",
           "BIZBUS_ADMIN_HOST": "127.0.0.1", "BIZBUS_ADMIN_PORT": str(http_port)}  # fmt: skip
    argv = [sys.executable, "-m", "bizbus", "flows", "run", "--pipeline", str(pipeline.path)]
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
    server: HttpServer | None = None
    pauses: PauseWatcher | None = None
    try:
        serde = AvroSerde(settings.registry_config())
        threads = start_components(pipeline, RuntimeContext(settings, catalogue, serde), stop, only)
        if not threads:
            echo(
                f"nothing to run: no enabled component{' named ' + ', '.join(only) if only else ''} in {pipeline.path}"
            )
            return 2
        health = Health(settings, threads)
        pauses = watch_pauses(settings, threads, health)
        server = serve(settings, health, admin_token(settings))
        freezer = FreezeAfterStart()
        freezer.start()
        for t in threads:
            t.thread.start()
        echo(f"bizbus worker: {', '.join(t.name for t in threads)} against {settings.bootstrap_servers}; "
             f"webhooks on http://{settings.http_host}:{server.server_address[1]}/webhooks/NAME, admin on "
             f"http://{settings.admin_host}:{admin_port(server)}/connectors")  # fmt: skip
        while not stop.wait(0.5):
            freezer.tick()
            failed = [t for t in threads if t.error is not None]
            if failed:
                echo(f"component {failed[0].name} failed: {failed[0].error}; stopping")
                return 1
        return 0
    finally:
        if pauses is not None:
            pauses.stop()
        stop_components(threads, stop, server, old)


def admin_port(server: HttpServer) -> int:
    return server.admin_address[1] if server.admin_address else server.server_address[1]


def banner(settings: Settings, stack: Stack, pipeline: Pipeline, server: HttpServer) -> str:
    http_port, admin = server.server_address[1], f"{settings.admin_host}:{admin_port(server)}"
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
  webhooks         http://{settings.http_host}:{http_port}/webhooks/NAME  /healthz
  admin            http://{admin}/readyz  /metrics  /connectors (bearer token)
  components       {comps}

Try next (in another terminal, with .venv/bin on PATH or via `.venv/bin/bizbus`):
  bizbus topics list                          the catalogue with live state
  bizbus tail {first_topic}        decoded records as they arrive
  curl -s http://{settings.registry_url.split("//", 1)[-1]}/subjects           subjects in the registry
  curl -s http://{admin}/readyz
Ctrl-C stops everything.
"""
