"""`bizbus topics acls --apply`: skipped with a clear message on a broker without ACLs (the embedded Tansu,
whose CreateAcls answer would abort the client), and creating the readers' ACLs on Kafka with an authorizer."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from bizbus.catalogue import Catalogue, TopicSpec
from bizbus.docgen import acls
from bizbus.settings import load_settings


def test_apply_is_skipped_on_a_broker_without_acls(embedded_broker) -> None:
    bootstrap = embedded_broker.bootstrap_servers
    support = acls.probe({"bootstrap.servers": bootstrap})
    assert not support.supported and "Tansu" in support.reason

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    p = subprocess.run([sys.executable, "-m", "bizbus", "topics", "acls", "--apply"], env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "Assertion" not in p.stderr
    assert p.stdout.startswith(f"skipped: the broker at {bootstrap} does not support ACLs (cluster ")
    assert (
        "apply deploy/acls/kafka-acls.sh or deploy/acls/strimzi-kafka-users.yaml on a cluster with an authorizer"
        in p.stdout
    )
    assert embedded_broker.alive()  # the broker is untouched and still serving
    AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)


def test_apply_creates_the_readers_acls_on_kafka_with_an_authorizer() -> None:
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("needs Apache Kafka with an authorizer and admin credentials: run with "
                    "KAFKA_BOOTSTRAP_SERVERS=host:9092 (and BIZBUS_KAFKA_SASL_* / BIZBUS_KAFKA_CLIENT_CONFIG_FILE for an admin)")  # fmt: skip
    conf = load_settings().kafka_config()
    support = acls.probe(conf)
    if not support.supported:
        pytest.skip(
            f"KAFKA_BOOTSTRAP_SERVERS={conf['bootstrap.servers']} has no usable authorizer: {support.reason}"
        )
    team = f"itest-{uuid.uuid4().hex[:8]}"
    topic = f"bizbus.itest.acl-{uuid.uuid4().hex[:8]}.v1"
    spec = TopicSpec(name=topic, description="ACL integration test topic", owner="platform",
                     value_schema="bizbus.pm.TimesheetEntry", key="project key", readers=(team,))  # fmt: skip
    admin = AdminClient(conf)
    mine = [
        AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{team}", None, AclOperation.ANY,
                         AclPermissionType.ANY),
        AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, None, None, AclOperation.ANY,
                         AclPermissionType.ANY),
    ]  # fmt: skip
    try:
        results = acls.apply(conf, Catalogue(topics=(spec,)))
        assert [error for _, error in results if error] == []
        found = admin.describe_acls(mine[0], request_timeout=30).result(35)
        got = {(b.restype, b.name, b.resource_pattern_type, b.operation) for b in found}
        assert got == {
            (ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, AclOperation.READ),
            (ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, AclOperation.DESCRIBE),
            (ResourceType.GROUP, f"{team}-", ResourcePatternType.PREFIXED, AclOperation.READ),
        }
        writers = admin.describe_acls(mine[1], request_timeout=30).result(35)
        assert {(b.principal, b.operation) for b in writers if b.principal == "User:bizbus"} >= {
            ("User:bizbus", AclOperation.WRITE), ("User:bizbus", AclOperation.DESCRIBE)}  # fmt: skip
        again = acls.apply(conf, Catalogue(topics=(spec,)))  # idempotent: creating them again is fine
        assert [error for _, error in again if error] == []
    finally:
        for fut in admin.delete_acls(mine, request_timeout=30).values():
            fut.result(35)
