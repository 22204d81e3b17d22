"""Run one inbox connector (webhook endpoint + inbox source + backfill) behind bizbus's real HTTP server,
against the embedded broker and registry, and read what it produced.

    with webhook_rig(embedded_broker, registry, "jira", {"secret_env": "X", ...}) as rig:
        httpx.post(rig.url, content=body, headers=...)
        events = rig.events("bizbus.pm.timesheet.v1", lambda v: v["project"] == key, expect=3)
        dead = rig.dead_letters(expect=1)

Topics are the catalogue's own (shared by the tests of a session): give each test unique business keys and
filter on them; dead letters are filtered by the rig's connector name, unique per rig.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bizbus.connectors.runtime.inbox import inbox_table
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY

from bizbus.catalogue import apply, load_catalogue
from bizbus.deadletters import DEAD_LETTER_TOPIC
from bizbus.host.components import COMPONENT_TYPES, RuntimeContext
from bizbus.host.httpserver import Limits, serve_http
from bizbus.host.runner import ComponentThread, Health, stop_components
from bizbus.serde import AvroSerde
from bizbus.settings import Settings, load_settings

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Rig:
    name: str
    url: str  # http://127.0.0.1:PORT/webhooks/<name>
    component: Any
    settings: Settings
    serde: AvroSerde
    server: Any = None  # bizbus.host.httpserver.HttpServer (``admin_address``: the admin listener)
    health: Health | None = None  # what /readyz and /connectors of the rig's server answer from

    def events(self, topic: str, match: Callable[[dict[str, Any]], bool], expect: int = 0,
               timeout: float = 30.0, idle: float = 1.5) -> list[dict[str, Any]]:  # fmt: skip
        """Decoded records of ``topic`` that ``match``: waits for ``expect`` of them, then ``idle`` seconds
        more so that anything extra (a duplicate) shows up too."""
        return read_topic(self.settings, self.serde, topic, match, expect, timeout, idle)

    def dead_letters(self, expect: int = 0, timeout: float = 30.0, idle: float = 1.5) -> list[dict[str, Any]]:
        return self.events(DEAD_LETTER_TOPIC, lambda v: v.get("connector") == self.name, expect, timeout, idle)

    def metric(self, name: str, **labels: str) -> float:
        """Current value of a Prometheus sample of this process (0 when absent)."""
        value = REGISTRY.get_sample_value(name, {"component": self.name, **labels})
        return float(value or 0.0)


def read_topic(settings: Settings, serde: AvroSerde, topic: str, match: Callable[[dict[str, Any]], bool],
               expect: int = 0, timeout: float = 30.0, idle: float = 1.5) -> list[dict[str, Any]]:  # fmt: skip
    conf = settings.kafka_config()
    md = AdminClient(conf).list_topics(topic, timeout=10)
    parts = list(md.topics[topic].partitions)
    c = Consumer({**conf, "group.id": f"rig-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = [m for m in c.consume(500, 0.3) if m.error() is None]
            if msgs:
                last = time.monotonic()
            for m in msgs:
                try:
                    value = serde.decode(m.value())
                except Exception:  # written by an earlier test under another (per-test) registry
                    continue
                try:
                    hit = match(value)
                except (KeyError, TypeError):  # a record of another shape (same id, other registry)
                    continue
                if hit:
                    out.append(value)
            if len(out) >= expect and time.monotonic() - last >= idle:
                break
    finally:
        c.close()
    return out


@contextmanager
def webhook_rig(embedded_broker: Any, registry: Any, type_name: str | type, config: dict[str, Any],
                name: str | None = None, limits: Limits | None = None, admin_token: str | None = None,
                forget: bool = True) -> Iterator[Rig]:  # fmt: skip
    """Build, set up and run connector ``type_name`` (a COMPONENT_TYPES name, or a connector class) with
    ``config`` and serve its webhook endpoint (and an admin listener on a free port). ``forget``: drop its
    inbox and cursors afterwards (False: a later rig of the same name goes on from them)."""
    cls = COMPONENT_TYPES[type_name].load() if isinstance(type_name, str) else type_name
    type_name = type_name if isinstance(type_name, str) else cls.__name__.lower()
    name = name or f"{type_name}-{uuid.uuid4().hex[:8]}"
    settings = load_settings(kafka_bootstrap_servers=embedded_broker.bootstrap_servers,
                             schema_registry_url=registry.url, http_port=0)  # fmt: skip
    catalogue = load_catalogue(settings.topics_file)
    apply(AdminClient(settings.kafka_config()), catalogue)  # create what is missing; no-op afterwards
    serde = AvroSerde(settings.registry_config())
    ctx = RuntimeContext(settings, catalogue, serde)
    comp = cls(name, cls.Config.model_validate(config), ctx)
    comp.setup()
    stop = threading.Event()
    thread = ComponentThread(name, type_name, comp, stop)
    thread.thread.start()
    health = Health(settings, [thread])
    server = serve_http("127.0.0.1", 0, health, admin=("127.0.0.1", 0), limits=limits,
                        admin_token=admin_token)  # fmt: skip
    try:
        yield Rig(name, f"http://127.0.0.1:{server.server_address[1]}/webhooks/{name}", comp, settings, serde, server,
                  health)  # fmt: skip
    finally:
        server.shutdown()
        stop_components([thread], stop)
        if forget:
            _forget(name, getattr(comp.config, "state_schema", "bizbus_state"))


def _forget(name: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{schema}"."{inbox_table(name)}"')
        conn.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (name,))
