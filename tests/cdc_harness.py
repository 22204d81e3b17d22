"""A rig for the PostgreSQL CDC source: a private PostgreSQL with wal_level=logical holding the 进销存 test
schema, the connector's two tasks (capture, publish) built as the connector builds them, stepped by a thread,
and reading its records back (matched by a per-test ``source_system``).

State (journal, cursors, leases, document images) lives in the machine's PostgreSQL, so the captured database
can be restarted and killed while the journal stays."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from bizbus.connectors.runtime.cdc import CaptureTask, CdcConverter, CdcReader, load_mapping
from bizbus.connectors.runtime.cdc.docstate import DocState
from bizbus.connectors.runtime.inbox import PgInbox
from bizbus.connectors.runtime.source import SourceTask
from bizbus.connectors.sources.postgres_cdc.api import PgLogReader
from bizbus.connectors.sources.postgres_cdc.config import PostgresCdcConfig
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bizbus.catalogue import apply, load_catalogue
from bizbus.deadletters import DEAD_LETTER_TOPIC, DeadLetterWriter
from bizbus.serde import AvroSerde

ROOT = Path(__file__).resolve().parents[1]
STATE_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA_SQL = ROOT / "tests/fixtures/jxc/postgres.sql"
MAPPING = ROOT / "deploy/examples/mappings/jxc-cdc.yaml"
CATALOGUE = load_catalogue(ROOT / "deploy/topics.yaml")


def load_schema(pg: Any) -> None:
    with pg.connect() as conn:
        conn.execute(SCHEMA_SQL.read_text())
        conn.execute("INSERT INTO warehouses (code, name) VALUES ('W1', 'Main'), ('W2', 'Site')")


def mapping_file(tmp: Path, source_system: str) -> Path:
    raw = yaml.safe_load(MAPPING.read_text())
    raw["source_system"] = source_system
    p = tmp / "mapping.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return p


def ensure_topics(bootstrap: str) -> None:
    apply(AdminClient({"bootstrap.servers": bootstrap}), CATALOGUE)


def config(pg_dsn: str, mapping: Path, **over: Any) -> PostgresCdcConfig:
    return PostgresCdcConfig(dsn=pg_dsn, mapping=str(mapping), state_dsn=STATE_DSN, status_interval_seconds=1,
                             confirm_interval_seconds=0.2, **over)  # fmt: skip


def tasks(name: str, cfg: PostgresCdcConfig, bootstrap: str, registry_url: str) -> tuple[CaptureTask, SourceTask]:
    """The connector's tasks as ``CdcConnector.create_task`` makes them (without a host around them)."""
    mapping = load_mapping(cfg.mapping)
    conf = {"bootstrap.servers": bootstrap}
    serde = AvroSerde({"url": registry_url})
    capture = CaptureTask(name, PgLogReader(cfg, name, mapping.tables()), mapping,
                          PgInbox(cfg.state_dsn, cfg.state_schema, name), cfg.state_dsn, cfg.state_schema,
                          max_rows=cfg.read_rows, chunk_rows=cfg.chunk_rows, confirm_every=cfg.confirm_interval_seconds)  # fmt: skip
    reader = CdcReader(name, PgInbox(cfg.state_dsn, cfg.state_schema, name),
                       CdcConverter(mapping, DocState(cfg.state_dsn, cfg.state_schema, name)))  # fmt: skip
    source = SourceTask(name, "inbox", reader, conf, serde, CATALOGUE, DeadLetterWriter(conf, serde), cfg.state_dsn,
                        cfg.state_schema, batch_size=cfg.batch_size)  # fmt: skip
    return capture, source


class Runner:
    """Steps tasks in a thread the way the task runtime does: a retryable error -> recover() and again; a
    fatal one is kept in ``failed`` and that task stops."""

    def __init__(self, *ts: Any) -> None:
        self.tasks = list(ts)
        self.failed: dict[int, BaseException] = {}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Runner:
        for t in self.tasks:
            t.setup()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)
        for t in self.tasks:
            with contextlib.suppress(Exception):  # best effort at the end of a test
                t.close()

    def _run(self) -> None:
        from bizbus.failures import classify

        while not self._stop.is_set():
            moved = 0
            for i, t in enumerate(self.tasks):
                if i in self.failed:
                    continue
                try:
                    moved += t.step()
                except Exception as exc:  # noqa: BLE001
                    if classify(exc).error_class == "fatal":
                        self.failed[i] = exc
                        continue
                    self.errors.append(exc)
                    time.sleep(0.3)
                    try:
                        t.recover()
                    except Exception as again:  # noqa: BLE001
                        self.errors.append(again)
            if not moved:
                time.sleep(0.02)


def read_records(bootstrap: str, registry_url: str, topics: list[str], source_system: str, expect: int = 0,
                 timeout: float = 60.0, idle: float = 2.0) -> list[tuple[str, str, dict[str, Any]]]:  # fmt: skip
    """(topic, key, value) of the records of this test's source_system, in partition order per key."""
    serde = AvroSerde({"url": registry_url})
    conf = {"bootstrap.servers": bootstrap}
    md = AdminClient(conf).list_topics(timeout=10)
    c = Consumer({**conf, "group.id": f"cdc-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    c.assign([TopicPartition(t, p, 0) for t in topics for p in md.topics[t].partitions])
    out: list[tuple[str, str, dict[str, Any]]] = []
    deadline, last = time.monotonic() + timeout, time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = [m for m in c.consume(1000, 0.3) if m.error() is None]
            if msgs:
                last = time.monotonic()
            for m in msgs:
                try:
                    v = serde.decode(m.value())
                except Exception:  # noqa: BLE001 - another test's record (its own registry)
                    continue
                if v.get("meta", {}).get("source_system") == source_system or (
                        m.topic() == DEAD_LETTER_TOPIC and source_system in str(v.get("connector", ""))):  # fmt: skip
                    out.append((m.topic(), (m.key() or b"").decode(), v))
            if len(out) >= expect and time.monotonic() - last >= idle:
                break
    finally:
        c.close()
    return out


def wait_for(cond: Any, timeout: float = 60.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


def drop_state(name: str) -> None:
    """Remove a test connector's journal, document images, cursors and column baselines from the state DB."""
    import psycopg

    table = name.replace("-", "_")
    with psycopg.connect(STATE_DSN, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS bizbus_state.inbox_{table}, bizbus_state.cdc_docs_{table}")
        c.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (name,))
        c.execute("DELETE FROM bizbus_state.cdc_columns WHERE connector = %s", (name,))
