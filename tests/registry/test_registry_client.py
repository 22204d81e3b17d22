"""The embedded schema registry, driven through confluent_kafka's own SchemaRegistryClient and Avro serdes.

Raw HTTP (httpx) is used only where the client hides what is asserted (error codes of requests it does
not expose, verbose compatibility messages, the error body format). Every test has its own SQLite file
and a registry on a free port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from bizbus.schemas.registry import EmbeddedRegistry, RegistryPortInUse
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    SchemaRegistryError,
    ServerConfig,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.schema_registry_client import ConfigCompatibilityLevel
from confluent_kafka.serialization import MessageField, SerializationContext


def record(name: str, *fields: dict[str, Any], namespace: str = "com.acme") -> Schema:
    """An Avro record schema as the client's Schema."""
    body = {"type": "record", "name": name, "namespace": namespace, "fields": list(fields)}
    return Schema(json.dumps(body), "AVRO")


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def client_for(registry: EmbeddedRegistry) -> SchemaRegistryClient:
    """A fresh client (no cache), failing fast instead of retrying."""
    return SchemaRegistryClient({"url": registry.url, "max.retries": 0})


def error_of(call: Any, *args: Any, **kwargs: Any) -> SchemaRegistryError:
    with pytest.raises(SchemaRegistryError) as info:
        call(*args, **kwargs)
    return info.value


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[EmbeddedRegistry]:
    with EmbeddedRegistry(tmp_path / "registry.db") as running:
        yield running


@pytest.fixture
def client(registry: EmbeddedRegistry) -> SchemaRegistryClient:
    return client_for(registry)


V1 = record("Order", f("id", "string"))
V2 = record("Order", f("id", "string"), f("note", "string", default=""))


# -- register and read back -----------------------------------------------------------------------


def test_register_and_read_back_by_id_version_and_latest(registry: EmbeddedRegistry) -> None:
    client = client_for(registry)
    schema_id = client.register_schema("orders-value", V1)
    assert client.register_schema("orders-value", V1) == schema_id

    fresh = client_for(registry)
    assert json.loads(fresh.get_schema(schema_id).schema_str) == json.loads(V1.schema_str)
    assert fresh.get_schema(schema_id).schema_type == "AVRO"
    by_version = fresh.get_version("orders-value", 1)
    assert (by_version.schema_id, by_version.version, by_version.subject) == (schema_id, 1, "orders-value")
    assert by_version.guid
    latest = fresh.get_latest_version("orders-value")
    assert (latest.schema_id, latest.version) == (schema_id, 1)
    assert fresh.get_schema_types() == ["AVRO"]
    assert fresh.get_subjects_by_schema_id(schema_id) == ["orders-value"]
    assert [(v.subject, v.version) for v in fresh.get_schema_versions(schema_id)] == [("orders-value", 1)]
    assert fresh.get_schema_by_guid(by_version.guid).schema_str == by_version.schema.schema_str

    v2_id = client.register_schema("orders-value", V2)
    assert v2_id > schema_id
    fresh = client_for(registry)
    assert fresh.get_versions("orders-value") == [1, 2]
    assert fresh.get_latest_version("orders-value").schema_id == v2_id
    assert fresh.get_version("orders-value", 1).schema_id == schema_id
    # registering an already registered schema returns its existing id and creates no version
    assert fresh.register_schema_full_response("orders-value", V1).schema_id == schema_id
    assert client_for(registry).get_versions("orders-value") == [1, 2]
    assert fresh.get_global_mode() == "READWRITE"
    assert fresh.get_mode("orders-value") == "READWRITE"


def test_schema_ids_are_shared_across_subjects_and_distinguish_logical_types(
    client: SchemaRegistryClient,
) -> None:
    first = client.register_schema("a-value", V1)
    assert client.register_schema("b-value", V1) == first
    reformatted = Schema(json.dumps(json.loads(V1.schema_str), indent=4), "AVRO")
    assert client.register_schema("c-value", reformatted) == first
    assert sorted(client.get_subjects_by_schema_id(first)) == ["a-value", "b-value", "c-value"]

    plain = record("Money", f("amount", "bytes"))
    decimal = record(
        "Money", f("amount", {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2})
    )
    client.set_compatibility("money", "NONE")
    assert client.register_schema("money", plain) != client.register_schema("money", decimal)


def test_lookup_by_subject(client: SchemaRegistryClient) -> None:
    schema_id = client.register_schema("orders-value", V1)
    found = client.lookup_schema("orders-value", V1)
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, "orders-value")

    assert error_of(client.lookup_schema, "orders-value", V2).error_code == 40403
    missing = error_of(client.lookup_schema, "nobody-value", V1)
    assert (missing.http_status_code, missing.error_code) == (404, 40401)


def test_list_subjects_and_versions(client: SchemaRegistryClient) -> None:
    client.register_schema("orders-value", V1)
    client.register_schema("orders-value", V2)
    client.register_schema("orders-key", Schema('"string"', "AVRO"))
    client.register_schema("payments-value", V1)

    assert client.get_subjects() == ["orders-key", "orders-value", "payments-value"]
    assert client.get_subjects(subject_prefix="orders") == ["orders-key", "orders-value"]
    assert client.get_subjects(offset=1, limit=1) == ["orders-value"]
    assert client.get_versions("orders-value") == [1, 2]
    assert error_of(client.get_versions, "nobody").error_code == 40401
    assert error_of(client.get_version, "orders-value", 7).error_code == 40402
    assert error_of(client.get_version, "nobody", 1).error_code == 40401


# -- deletes --------------------------------------------------------------------------------------


def test_soft_and_permanent_subject_delete(registry: EmbeddedRegistry) -> None:
    client = client_for(registry)
    v1_id = client.register_schema("orders-value", V1)
    client.register_schema("orders-value", V2)
    client.register_schema("keep-value", V1)

    # permanent delete needs a soft delete first
    assert error_of(client.delete_subject, "orders-value", permanent=True).error_code == 40405
    assert client.delete_subject("orders-value") == [1, 2]
    assert error_of(client.delete_subject, "orders-value").error_code == 40404

    fresh = client_for(registry)
    assert fresh.get_subjects() == ["keep-value"]
    assert fresh.get_subjects(deleted=True) == ["keep-value", "orders-value"]
    assert fresh.get_subjects(deleted_only=True) == ["orders-value"]
    assert error_of(fresh.get_versions, "orders-value").error_code == 40401
    assert fresh.get_versions("orders-value", deleted=True) == [1, 2]
    assert fresh.get_version("orders-value", 2, deleted=True).version == 2
    assert error_of(fresh.get_latest_version, "orders-value").error_code == 40401
    assert fresh.get_schema(v1_id).schema_str  # soft-deleted schemas still decode old data

    assert client.delete_subject("orders-value", permanent=True) == [1, 2]
    fresh = client_for(registry)
    assert fresh.get_subjects(deleted=True) == ["keep-value"]
    assert error_of(fresh.get_versions, "orders-value", deleted=True).error_code == 40401
    assert error_of(fresh.delete_subject, "orders-value").error_code == 40401
    assert fresh.get_schema(v1_id).schema_str  # still used by keep-value
    v2_id = client_for(registry).register_schema("orders-value", V2)
    gone = error_of(client_for(registry).get_schema, v2_id + 1)
    assert (gone.http_status_code, gone.error_code) == (404, 40403)
    # the subject starts over at version 1, the schema keeps its id
    assert client_for(registry).get_version("orders-value", 1).schema_id == v2_id


def test_soft_and_permanent_version_delete(registry: EmbeddedRegistry) -> None:
    client = client_for(registry)
    client.register_schema("orders-value", V1)
    v2_id = client.register_schema("orders-value", V2)

    assert error_of(client.delete_version, "orders-value", 1, permanent=True).error_code == 40407
    assert client.delete_version("orders-value", 1) == 1
    assert error_of(client.delete_version, "orders-value", 1).error_code == 40406
    assert error_of(client.delete_version, "orders-value", 9).error_code == 40402
    assert error_of(client.delete_version, "nobody", 1).error_code == 40401
    fresh = client_for(registry)
    assert fresh.get_versions("orders-value") == [2]
    assert fresh.get_versions("orders-value", deleted=True) == [1, 2]
    assert fresh.get_versions("orders-value", deleted_only=True) == [1]
    assert client.delete_version("orders-value", 1, permanent=True) == 1
    assert client_for(registry).get_versions("orders-value", deleted=True) == [2]
    assert client_for(registry).get_latest_version("orders-value").schema_id == v2_id

    bad = httpx.delete(f"{registry.url}/subjects/orders-value/versions/zero")
    assert (bad.status_code, bad.json()["error_code"]) == (422, 42202)


# -- config ---------------------------------------------------------------------------------------


def test_global_and_subject_config(registry: EmbeddedRegistry) -> None:
    client = client_for(registry)
    assert client.get_compatibility() == "BACKWARD"
    assert client.get_config().compatibility_level == ConfigCompatibilityLevel.BACKWARD

    assert error_of(client.get_compatibility, "orders-value").error_code == 40408
    fallback = httpx.get(f"{registry.url}/config/orders-value", params={"defaultToGlobal": "true"})
    assert fallback.json() == {"compatibilityLevel": "BACKWARD"}

    client.set_compatibility(level="full")
    assert client.get_compatibility() == "FULL"
    client.set_compatibility("orders-value", "FORWARD_TRANSITIVE")
    assert client.get_compatibility("orders-value") == "FORWARD_TRANSITIVE"
    client.set_config("orders-value", ServerConfig(compatibility=ConfigCompatibilityLevel.NONE))
    assert client.get_config("orders-value").compatibility_level == ConfigCompatibilityLevel.NONE
    assert client.get_compatibility() == "FULL"

    assert client.delete_config("orders-value").compatibility_level == ConfigCompatibilityLevel.NONE
    assert error_of(client.get_config, "orders-value").error_code == 40408
    invalid = error_of(client.set_compatibility, "orders-value", "SIDEWAYS")
    assert (invalid.http_status_code, invalid.error_code) == (422, 42203)
    assert client.delete_config().compatibility_level == ConfigCompatibilityLevel.FULL
    assert client.get_compatibility() == "BACKWARD"


# -- compatibility --------------------------------------------------------------------------------

A = f("a", "int")
B_DEFAULT = f("b", "string", default="x")
B_REQUIRED = f("b", "string")
C_DEFAULT = f("c", "long", default=0)

# level -> (history registered first, a change the level accepts, a change the level rejects)
COMPATIBILITY_CASES: dict[str, tuple[list[Schema], Schema, Schema]] = {
    "BACKWARD": ([record("R", A)], record("R", A, B_DEFAULT), record("R", A, B_REQUIRED)),
    "FORWARD": ([record("R", A, B_REQUIRED)], record("R", A, B_REQUIRED, C_DEFAULT), record("R", A)),
    "FULL": ([record("R", A)], record("R", A, B_DEFAULT), record("R", A, B_REQUIRED)),
    # the rejected change is compatible with the latest version but not with version 1
    "BACKWARD_TRANSITIVE": (
        [record("R", A), record("R", A, B_DEFAULT)],
        record("R", A, B_DEFAULT, C_DEFAULT),
        record("R", A, B_REQUIRED),
    ),
    "FORWARD_TRANSITIVE": (
        [record("R", A, B_REQUIRED), record("R", A, B_DEFAULT)],
        record("R", A, B_DEFAULT, C_DEFAULT),
        record("R", A),
    ),
    "FULL_TRANSITIVE": (
        [record("R", A), record("R", A, B_DEFAULT)],
        record("R", A, B_DEFAULT, C_DEFAULT),
        record("R", A, B_REQUIRED),
    ),
    "NONE": ([record("R", A)], record("R", A, B_DEFAULT), record("R", f("a", "string"))),
}


@pytest.mark.parametrize("level", sorted(COMPATIBILITY_CASES))
def test_compatibility_levels(registry: EmbeddedRegistry, level: str) -> None:
    history, accepted, rejected = COMPATIBILITY_CASES[level]
    client = client_for(registry)
    client.set_compatibility("events", level)
    for schema in history:
        client.register_schema("events", schema)

    assert client.test_compatibility("events", accepted) is True
    assert client.test_compatibility_all_versions("events", accepted) is True
    if level == "NONE":
        assert client.test_compatibility("events", rejected) is True
        client.register_schema("events", rejected)
        assert client_for(registry).get_versions("events") == [1, 2]
        return
    assert client.test_compatibility("events", rejected) is False
    assert client.test_compatibility_all_versions("events", rejected) is False
    refused = error_of(client.register_schema, "events", rejected)
    assert (refused.http_status_code, refused.error_code) == (409, 409)
    assert "incompatible with an earlier schema" in refused.error_message
    assert client_for(registry).get_versions("events") == list(range(1, len(history) + 1))
    client.register_schema("events", accepted)
    assert client_for(registry).get_versions("events") == list(range(1, len(history) + 2))


@pytest.mark.parametrize("level", ["BACKWARD", "FORWARD", "FULL"])
def test_non_transitive_levels_check_only_the_latest_version(
    client: SchemaRegistryClient, level: str
) -> None:
    history, _, rejected_transitively = COMPATIBILITY_CASES[f"{level}_TRANSITIVE"]
    client.set_compatibility("events", level)
    for schema in history:
        client.register_schema("events", schema)
    assert client.test_compatibility("events", rejected_transitively) is True
    assert client.test_compatibility("events", rejected_transitively, version=1) is False
    client.register_schema("events", rejected_transitively)


def test_verbose_compatibility_messages_and_default_level(registry: EmbeddedRegistry) -> None:
    client = client_for(registry)
    client.register_schema("events", record("R", A))  # global default: BACKWARD
    assert error_of(client.register_schema, "events", record("R", A, B_REQUIRED)).error_code == 409

    url = f"{registry.url}/compatibility/subjects/events/versions/latest"
    body = {"schema": record("R", A, B_REQUIRED).schema_str}
    verbose = httpx.post(url, params={"verbose": "true"}, json=body).json()
    assert verbose["is_compatible"] is False
    assert any("/fields/b" in message and "version 1" in message for message in verbose["messages"])
    assert "messages" not in httpx.post(url, json=body).json()
    missing = error_of(client.test_compatibility, "nobody", record("R", A))
    assert missing.error_code == 40401
    assert client.test_compatibility_all_versions("nobody", record("R", A)) is True


def test_invalid_schemas_are_rejected_with_42201(registry: EmbeddedRegistry) -> None:
    client = client_for(registry)
    cases = [
        Schema('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "integer"}]}', "AVRO"),
        Schema('{"type": "record", "name": "R"', "AVRO"),
        Schema('{"type": "object"}', "JSON"),
        Schema('syntax = "proto3";', "PROTOBUF"),
    ]
    for schema in cases:
        refused = error_of(client.register_schema, "bad-value", schema)
        assert (refused.http_status_code, refused.error_code) == (422, 42201), schema
    unsupported = error_of(client.register_schema, "bad-value", cases[2])
    assert "AVRO only" in unsupported.error_message
    assert client.get_subjects(deleted=True) == []


def test_error_body_format(registry: EmbeddedRegistry) -> None:
    response = httpx.get(f"{registry.url}/subjects/nobody/versions")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")
    assert response.json() == {"error_code": 40401, "message": "Subject 'nobody' not found."}
    assert httpx.get(f"{registry.url}/").json() == {}
    assert httpx.get(f"{registry.url}/no/such/route").json()["error_code"] == 404


# -- references -----------------------------------------------------------------------------------

ADDRESS = record("Address", f("street", "string"), f("city", "string"))


def test_references_resolve_and_protect_the_referenced_version(registry: EmbeddedRegistry) -> None:
    client = client_for(registry)
    client.register_schema("address", ADDRESS)
    customer = Schema(
        json.dumps(
            {
                "type": "record",
                "name": "Customer",
                "namespace": "com.acme",
                "fields": [f("name", "string"), f("home", "Address"), f("work", ["null", "Address"])],
            }
        ),
        "AVRO",
        [SchemaReference("com.acme.Address", "address", 1)],
    )
    customer_id = client.register_schema("customers-value", customer)
    stored = client_for(registry).get_version("customers-value", 1)
    assert stored.schema_id == customer_id
    assert stored.schema.references == [SchemaReference("com.acme.Address", "address", 1)]
    assert client_for(registry).get_referenced_by("address", 1) == [customer_id]
    dangling = Schema(customer.schema_str, "AVRO", [SchemaReference("com.acme.Address", "address", 5)])
    assert error_of(client.register_schema, "other-value", dangling).error_code == 42201
    assert error_of(client.delete_version, "address", 1).error_code == 42206

    serializer = AvroSerializer(client, customer)
    deserializer = AvroDeserializer(client_for(registry))
    value = {"name": "Ada", "home": {"street": "1 Main St", "city": "Springfield"}, "work": None}
    ctx = SerializationContext("customers", MessageField.VALUE)
    assert deserializer(serializer(value, ctx), ctx) == value


# -- serdes ---------------------------------------------------------------------------------------

PAYMENT = record(
    "Payment",
    f("id", "string"),
    f("amount", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}),
    f("currency", "string", default="EUR"),
)


def test_avro_serializer_and_deserializer_round_trip_a_decimal(registry: EmbeddedRegistry) -> None:
    serializer = AvroSerializer(client_for(registry), PAYMENT.schema_str)
    ctx = SerializationContext("payments", MessageField.VALUE)
    value = {"id": "p-1", "amount": Decimal("1234.56"), "currency": "USD"}
    data = serializer(value, ctx)

    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert client_for(registry).get_latest_version("payments-value").schema_id == schema_id

    decoded = AvroDeserializer(client_for(registry))(data, ctx)
    assert decoded == value
    assert isinstance(decoded["amount"], Decimal)


# -- durability and serving -----------------------------------------------------------------------


def test_restart_keeps_subjects_versions_ids_and_never_reuses_ids(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    with EmbeddedRegistry(db) as first:
        client = client_for(first)
        ids = [client.register_schema("orders-value", V1), client.register_schema("orders-value", V2)]
        throwaway = client.register_schema("scratch", record("Scratch", f("x", "int")))
        client.set_compatibility("orders-value", "FULL")
        client.delete_subject("scratch")
        client.delete_subject("scratch", permanent=True)
        client.register_schema("gone-soft", record("Soft", f("y", "int")))
        client.delete_subject("gone-soft")

    with EmbeddedRegistry(db) as second:
        client = client_for(second)
        assert client.get_subjects() == ["orders-value"]
        assert client.get_subjects(deleted=True) == ["gone-soft", "orders-value"]
        assert client.get_versions("orders-value") == [1, 2]
        assert [client.get_version("orders-value", v).schema_id for v in (1, 2)] == ids
        assert client.get_compatibility("orders-value") == "FULL"
        assert json.loads(client.get_schema(ids[0]).schema_str) == json.loads(V1.schema_str)
        fresh_id = client.register_schema("new-value", record("New", f("z", "int")))
        assert fresh_id > max(*ids, throwaway)


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(RegistryPortInUse, match=f"127.0.0.1:{port}"):
            EmbeddedRegistry(tmp_path / "registry.db", port=port).start()

        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "bizbus.schemas.registry",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "cli.db"),
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert cli.returncode == 2
    assert f"127.0.0.1:{port}" in cli.stderr and "already in use" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bizbus.schemas.registry", "--port", "0", "--db", str(tmp_path / "cli.db")],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"schema registry listening on (http://\S+) \(store: .*cli\.db\)", line)
        assert match, line
        client = SchemaRegistryClient({"url": match[1], "max.retries": 0})
        assert client.register_schema("cli-value", V1) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
