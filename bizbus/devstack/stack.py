"""The dev stack: the embedded broker and registry (only those not configured externally), then the
bootstrap every deployment needs: probe the broker, create the catalogue's topics, register schemas."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bizbus import catalogue as cat_mod
from bizbus.devstack.broker import (
    BrokerCapabilities,
    EmbeddedBroker,
    probe_capabilities,
    save_capabilities,
)
from bizbus.devstack.procs import ChildProcess, port_is_free
from bizbus.errors import PortInUse, RegistryError
from bizbus.kafka import wait_for_metadata
from bizbus.serde import AvroSerde
from bizbus.settings import Settings

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def wait_registry(url: str, timeout: float, child: ChildProcess | None = None) -> None:
    """Block until the registry at ``url`` answers ``GET /subjects``."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RegistryError(f"the embedded schema registry exited at start; last log lines:\n{child.log_tail()}")
        try:
            r = httpx.get(f"{url}/subjects", timeout=1.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.1)
    raise RegistryError(f"schema registry {url} did not answer within {timeout:.0f}s ({last})")


class EmbeddedRegistryProcess:
    """The embedded schema registry as a child process, storing into ``<data_dir>/registry.sqlite``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db_path = settings.data_dir / "registry.sqlite"
        self._child: ChildProcess | None = None

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    def start(self, timeout: float = 20.0) -> None:
        s = self.settings
        if not port_is_free(s.registry_host, s.registry_port):
            raise PortInUse("the embedded schema registry", s.registry_host, s.registry_port, "BIZBUS_REGISTRY_PORT")
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "bizbus.schemas.registry", "--host", s.registry_host,
                "--port", str(s.registry_port), "--db", str(self.db_path)]  # fmt: skip
        self._child = ChildProcess("registry", argv, s.data_dir / "logs" / "registry.log")
        self._child.start()
        try:
            wait_registry(s.registry_url, timeout, self._child)
        except RegistryError:
            self.stop()
            raise

    def alive(self) -> bool:
        return self._child is not None and self._child.alive()

    @property
    def exit_code(self) -> int | None:
        return self._child.proc.returncode if self._child is not None and self._child.proc is not None else None

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None


@dataclass
class Stack:
    """Starts what is not configured externally; ``stop()`` stops it in reverse order."""

    settings: Settings
    broker: EmbeddedBroker | None = None
    registry: EmbeddedRegistryProcess | None = None
    capabilities: BrokerCapabilities | None = None

    def start(self, progress: Progress = _quiet) -> None:
        s = self.settings
        try:
            if s.embedded_broker:
                progress(f"starting embedded Kafka broker (Tansu) on {s.bootstrap_servers} ...")
                self.broker = EmbeddedBroker(s.broker_host, s.broker_port, s.data_dir, s.broker_storage)
                self.broker.start()
            else:
                progress(f"using Kafka cluster {s.bootstrap_servers}")
                wait_for_metadata(s.kafka_config(), timeout=30)
            if s.embedded_registry:
                progress(f"starting embedded schema registry on {s.registry_url} ...")
                self.registry = EmbeddedRegistryProcess(s)
                self.registry.start()
            else:
                progress(f"using schema registry {s.registry_url}")
                wait_registry(s.registry_url, timeout=30)
        except BaseException:
            self.stop()
            raise

    def dead_children(self) -> list[str]:
        """Embedded services that were started and have exited since."""
        started = {"broker": self.broker, "schema registry": self.registry}
        return [name for name, svc in started.items() if svc is not None and not svc.alive()]

    def exit_codes(self, names: list[str]) -> str:
        """``broker: exit code -9`` for the named dead children (for messages)."""
        svc = {"broker": self.broker, "schema registry": self.registry}
        return ", ".join(f"{name}: exit code {getattr(svc.get(name), 'exit_code', None)}" for name in names)

    def restart(self, names: list[str]) -> None:
        """Start the named embedded children again (same ports; the broker as a new, empty log)."""
        if "broker" in names and self.broker is not None:
            self.broker.stop()
            self.broker.start()
        if "schema registry" in names and self.registry is not None:
            self.registry.stop()
            self.registry.start()

    def stop(self) -> None:
        if self.registry is not None:
            self.registry.stop()
            self.registry = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def register_schemas(serde: AvroSerde, catalogue: cat_mod.Catalogue) -> dict[str, int]:
    """Register every topic's value schema under ``<topic>-value``; returns subject -> schema id."""
    from bizbus.schemas import catalog

    return {t.subject: serde.register(t.subject, catalog.load(t.value_schema)) for t in catalogue.topics}


def bootstrap(settings: Settings, catalogue: cat_mod.Catalogue, serde: AvroSerde, progress: Progress = _quiet,
              fresh_log: bool = False) -> BrokerCapabilities:  # fmt: skip
    """Probe the broker, create missing topics (report drift), register the schemas.

    ``fresh_log``: the broker was just started empty (a restarted embedded broker). A topic that exists already
    with other partitions than the catalogue's was auto-created by a client that asked for it too early; it is
    deleted and created as catalogued (whatever is in it is sent again: every source rewinds on a new log)."""
    from confluent_kafka.admin import AdminClient

    progress("probing broker capabilities ...")
    caps = probe_capabilities(settings.kafka_config(), embedded=settings.embedded_broker)
    save_capabilities(caps, settings.data_dir)
    admin = AdminClient(settings.kafka_config())
    states = cat_mod.apply(admin, catalogue)
    if fresh_log:
        wrong = [st.spec.name for st in states if st.exists and any(d.startswith("partitions") for d in st.drift)]
        if wrong:
            progress(f"re-creating {len(wrong)} topic(s) a client created too early on the new broker: {', '.join(wrong)}")
            for fut in admin.delete_topics(wrong, operation_timeout=30).values():
                fut.result(30)
            time.sleep(0.5)
            states = cat_mod.apply(admin, catalogue)
    created = sum(1 for st in states if st.action.startswith("created"))
    for st in states:
        if st.drift:
            progress(f"  drift on {st.spec.name}: {'; '.join(st.drift)}")
        if st.action.startswith("FAILED"):
            progress(f"  {st.spec.name}: {st.action}")
    progress(f"topics: {created} created, {len(states) - created} already present")
    ids = register_schemas(serde, catalogue)
    progress(f"schemas: {len(ids)} subjects registered")
    return caps
