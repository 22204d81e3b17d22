"""Helpers for the chaos tests: a private broker and registry, worker processes to SIGKILL, a killer."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from bizbus.schemas.registry.server import EmbeddedRegistry
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus.devstack.broker import EmbeddedBroker
from bizbus.devstack.procs import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    bootstrap: str
    registry_url: str
    workdir: Path


@contextmanager
def private_stack(tmp: Path, topics: dict[str, int]) -> Iterator[Stack]:
    """A broker and registry of this test alone, with ``topics`` (name -> partitions) created."""
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp / "broker")
    broker.start()
    try:
        with EmbeddedRegistry(tmp / "registry.sqlite") as reg:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
            if topics:
                futures = admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
                for f in futures.values():
                    f.result(15)
            yield Stack(broker.bootstrap_servers, reg.url, tmp)
    finally:
        broker.stop()


def write_pipeline(path: Path, connectors: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "name": "chaos", "connectors": connectors, "flows": []}))
    return path


@dataclass
class Worker:
    """One `bizbus worker --only NAME` process (or another bizbus ``command``), restartable; its output goes
    to a log file."""

    name: str
    stack: Stack
    pipeline: Path
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None  # bizbus sub-command; default: worker --only <connector>
    proc: subprocess.Popen | None = None
    starts: int = 0
    kills: int = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.stack.workdir / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115 (owned by the child)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.stack.bootstrap,
            "SCHEMA_REGISTRY_URL": self.stack.registry_url,
            "BIZBUS_HTTP_PORT": "0",
            "BIZBUS_ADMIN_PORT": "0",
            "BIZBUS_DATA_DIR": str(self.stack.workdir / "data"),
            "BIZBUS_LOG_LEVEL": "INFO",
            **self.env,
        }
        sub = self.command or ["worker", "--pipeline", str(self.pipeline), "--only", self.connector]
        cmd = [sys.executable, "-m", "bizbus", *sub]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        log.close()

    @property
    def connector(self) -> str:
        return self.name.rsplit("#", 1)[0]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
            for p in sorted(self.stack.workdir.glob(f"{self.name}.*.log"))
        )


def chaos(workers: list[Worker], kills_each: int, until: Callable[[], bool], rng: random.Random,
          pause: tuple[float, float] = (1.0, 3.5)) -> None:  # fmt: skip
    """SIGKILL workers at random moments (each at least ``kills_each`` times) while ``until()`` is false,
    restarting each right away; a worker that died on its own (a crash point) is restarted too."""
    while True:
        done = until() and all(w.kills >= kills_each for w in workers)
        if done:
            return
        time.sleep(rng.uniform(*pause))
        for w in workers:
            if not w.alive():
                w.start()
        behind = [w for w in workers if w.kills < kills_each] or workers
        victim = rng.choice(behind)
        victim.kill()
        victim.start()


def wait_for(cond: Callable[[], bool], timeout: float, what: str, workers: list[Worker]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            if not w.alive():
                w.start()  # died at a crash point: restart like an orchestrator would
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(w.logs() for w in workers))


def count_topic(bootstrap: str, topic: str, partitions: int, idle: float = 3.0) -> int:
    """Records in ``topic`` (all partitions from offset 0, until ``idle`` seconds bring nothing new)."""
    from bizbus.kafka import read_topic

    return len(read_topic({"bootstrap.servers": bootstrap}, topic, idle, partitions=list(range(partitions)),
                          group_prefix="chaos-count", batch=1000))


def timesheet_payload(n: int) -> dict:
    """The JSON an application writes into its outbox for entry ``n``."""
    return {"op": "CREATED", "worklog_id": f"W{n:06d}", "project": f"P{n % 7}", "task": None,
            "employee": f"E{n % 13:04d}", "work_date": "2026-11-23", "hours": f"{1 + n % 8}.25",
            "billable": True, "description": f"chaos entry {n}", "version": 1}  # fmt: skip


def create_outbox_table(conn, schema: str) -> None:
    conn.execute(f"""CREATE TABLE {schema}.outbox (id bigserial PRIMARY KEY, topic text NOT NULL,
        entity_key text NOT NULL, version bigint NULL, payload jsonb NOT NULL, correlation_id text NULL,
        created_at timestamptz NOT NULL DEFAULT now())""")


def start_application(dsn: str, schema: str, topic: str, events: int):
    """The application: outbox rows committed 25 per transaction, paced; returns (thread, done event)."""
    import json
    import threading

    import psycopg

    done = threading.Event()

    def run() -> None:
        with psycopg.connect(dsn, autocommit=False) as app:
            for start in range(0, events, 25):
                with app.transaction():
                    for n in range(start, min(start + 25, events)):
                        app.execute(
                            f"INSERT INTO {schema}.outbox (topic, entity_key, version, payload) VALUES (%s, %s, 1, %s)",
                            (topic, f"W{n:06d}", json.dumps(timesheet_payload(n))),
                        )
                time.sleep(0.02)
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done


def crash_count(path: Path) -> dict[str, int]:
    """Crash points hit, by name, from the BIZBUS_CRASHPOINT_LOG file."""
    out: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                name = line.split()[0]
                out[name] = out.get(name, 0) + 1
    return out
