"""The host: run the pipeline's components in threads (``bizbus worker``; ``bizbus up`` adds the dev stack
around it, see ``bizbus.devstack.up``) until SIGINT / SIGTERM.

Also serves bizbus's own HTTP endpoints (bizbus.host.httpserver): on the public listener the webhooks and
``/healthz`` (the process is alive); on the admin listener ``/readyz`` (broker and registry reachable, every
component running; the body says which is not, and which connector is paused), ``/metrics``, ``/connectors``
and pause / resume / restart (bizbus.host.admin).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
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
from bizbus.gcfreeze import FreezeAfterStart
from bizbus.host.admin import admin_token, serve, watch_pauses
from bizbus.host.components import Component, RuntimeContext
from bizbus.host.httpserver import MAX_BODY, HttpServer
from bizbus.host.pauses import PauseWatcher
from bizbus.host.pipeline import Pipeline
from bizbus.host.webhook import HttpRequest, HttpResponse
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


def stop_on_signals(stop: threading.Event, echo: Callable[[str], None]) -> dict[int, Any]:
    def on_signal(signum: int, _frame: Any) -> None:
        echo(f"\n{signal.Signals(signum).name} received: stopping ...")
        stop.set()

    return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}


def worker(settings: Settings, pipeline: Pipeline, catalogue: Catalogue, only: tuple[str, ...] = (),
           echo: Callable[[str], None] = print) -> int:  # fmt: skip
    """Run pipeline components against an already running broker and registry (no embedded stack).

    Start as many workers as you like with the same pipeline: sink tasks share their consumer group,
    source shards are leased, so work spreads and a dead worker's share is taken over.
    """
    stop = threading.Event()
    old = stop_on_signals(stop, echo)
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
