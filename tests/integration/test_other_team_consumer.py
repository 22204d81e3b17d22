"""Another team reads a bizbus topic with plain confluent-kafka: deploy/examples/other-team-consumer.py
against the embedded broker and the embedded schema registry, records written the way bizbus writes them."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import uuid
from datetime import date
from decimal import Decimal

from bizbus.schemas import catalog
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import lineage
from bizbus.serde import AvroSerde
from bizbus.settings import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "deploy" / "examples" / "other-team-consumer.py"
SCHEMA = "bizbus.pm.TimesheetEntry"


def test_the_example_imports_no_bizbus_code() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules == {"__future__", "argparse", "os", "sys", "time", "confluent_kafka"}


def _records() -> list[dict]:
    first = catalog.sample(SCHEMA)  # worklog 10042: 7.50 h on 2025-03-14
    second = catalog.sample(SCHEMA)
    second["meta"]["event_id"] = lineage.event_id("jira", "worklog", "10043", 1)
    second.update(
        worklog_id="10043", hours=Decimal("3.25"), work_date=date(2025, 3, 15), task=None, version=1
    )
    return [first, second]


def test_reads_and_decodes_what_bizbus_wrote(embedded_broker, registry) -> None:
    topic = f"bizbus.pm.timesheet-{uuid.uuid4().hex[:8]}.v1"
    conf = {"bootstrap.servers": embedded_broker.bootstrap_servers}
    admin = AdminClient(conf)  # kept referenced until the future resolves
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    # what `bizbus produce` does: register under <topic>-value, encode, key = correlation id, lineage headers
    serde = AvroSerde({"url": registry.url})
    schema_id = serde.register(f"{topic}-value", catalog.load(SCHEMA))
    records = _records()
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all"})
    for rec in records:
        producer.produce(topic, key=rec["meta"]["correlation_id"].encode(), value=serde.encode(schema_id, rec),
                         headers=lineage.headers(rec["meta"]))  # fmt: skip
    assert producer.flush(15) == 0

    group_purpose = f"itest-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": embedded_broker.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": registry.url,
    }
    p = subprocess.run([sys.executable, str(SCRIPT), topic, "--team", "bi", "--purpose", group_purpose, "--from-beginning",
                        "--max-records", "2", "--idle-timeout", "45"],
                       capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stdout.splitlines() if line.startswith(topic)]
    assert len(lines) == 2, p.stdout + p.stderr
    by_event = {rec["meta"]["event_id"]: rec for rec in records}
    for line in lines:
        event_id = next(part.split("=", 1)[1] for part in line.split() if part.startswith("event_id="))
        rec = by_event.pop(event_id)
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        assert fields["key"] == "P2025-001"
        assert fields["correlation_id"] == "P2025-001"
        assert fields["occurred_at"] == rec["meta"]["occurred_at"].isoformat()  # decoded to a datetime
        assert fields["worklog_id"] == rec["worklog_id"]
        assert fields["hours"] == str(rec["hours"])  # an exact Decimal, not a float
        assert fields["work_date"] == rec["work_date"].isoformat()
        assert fields["op"] == "UPDATED"
    assert not by_event, f"records not printed: {sorted(by_event)}"
    assert f"2 records read from {topic} by group bi-{group_purpose}" in p.stderr
