"""``bizbus up``: the dev stack around the host, in one foreground process.

Starts the embedded broker and registry (unless external ones are configured), creates the catalogue's
topics and registers the schemas, runs the pipeline's connectors in this process (``bizbus.host.runner``)
and its flows in a child ``bizbus flows run``, restarts an embedded child that dies, and stops everything
on SIGINT / SIGTERM. The host never imports this module: production runs ``bizbus worker`` and
``bizbus flows run`` against a real cluster.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable

import httpx

from bizbus import metrics
from bizbus.catalogue import Catalogue
from bizbus.devstack.procs import ChildProcess, free_port
from bizbus.devstack.stack import Stack, bootstrap
from bizbus.errors import BizbusError
from bizbus.gcfreeze import FreezeAfterStart
from bizbus.host.admin import admin_token, serve, watch_pauses
from bizbus.host.components import RuntimeContext
from bizbus.host.httpserver import HttpServer
from bizbus.host.pauses import PauseWatcher
from bizbus.host.pipeline import Pipeline
from bizbus.host.runner import (
    ComponentThread,
    Health,
    admin_port,
    start_components,
    stop_components,
    stop_on_signals,
)
from bizbus.serde import AvroSerde
from bizbus.settings import Settings


def up(
    settings: Settings, pipeline: Pipeline, catalogue: Catalogue, echo: Callable[[str], None] = print
) -> int:
    """Run the bus in the foreground until SIGINT/SIGTERM; everything started is stopped on the way out."""
    stop = threading.Event()
    old = stop_on_signals(stop, echo)
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
