"""Avro in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body.

Any team's standard Kafka client (``AvroDeserializer`` of confluent-kafka, Java's KafkaAvroDeserializer,
…) reads what bizbus writes, and bizbus reads what they write. Schemas are fetched from the registry
once per id and cached; encoding is fastavro's schemaless writer.

A record that does not match its schema raises ``RecordInvalid`` naming the field; bytes that are not
in the wire format, or carry an id the registry does not know, raise ``PoisonRecord`` (a connector
dead-letters those as raw bytes).
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.validation import ValidationError, validate

from bizbus.errors import BizbusError, RegistryError

MAGIC = 0
_HEADER = struct.Struct(">bI")


class SerdeError(BizbusError):
    """Encoding or decoding failed."""


class RecordInvalid(SerdeError):
    """A record does not match its Avro schema; ``field`` names the offending field."""

    def __init__(self, schema_name: str, field: str, message: str) -> None:
        super().__init__(f"record does not match schema {schema_name}: field {field}: {message}")
        self.schema_name = schema_name
        self.field = field


class PoisonRecord(SerdeError):
    """Bytes that cannot be decoded at all (wrong magic byte, unknown schema id, truncated body)."""


def _first_problem(schema: Any, record: Any, error: Exception) -> tuple[str, str]:
    """(field path, reason) for the first thing in ``record`` that does not fit ``schema``.

    Only called after fastavro refused to write, so the hot path pays nothing for it.
    """
    try:
        validate(record, schema, raise_errors=True)
    except ValidationError as exc:
        if exc.errors:
            e = exc.errors[0]
            return str(e.field), f"{e.datum!r} is not a valid {json.dumps(e.schema, default=str)[:80]}"
        return "(unknown)", str(exc)
    except (ValueError, TypeError):  # fastavro's decimal checks raise plain errors without the field
        pass
    found = _decimal_problem(schema, record)  # fastavro's decimal errors do not say which field
    return found if found else ("(unknown)", f"{type(error).__name__}: {error}")


def _decimal_problem(schema: Any, record: Any, path: str = "") -> tuple[str, str] | None:
    """The first Decimal with more places than its scale or more digits than its precision."""
    if isinstance(schema, dict):
        t = schema.get("type")
        if schema.get("logicalType") == "decimal" and isinstance(record, Decimal):
            scale, precision = int(schema.get("scale", 0)), int(schema["precision"])
            exp = record.as_tuple().exponent
            if isinstance(exp, int) and -exp > scale:
                return path or "(value)", f"{record} has more than {scale} decimal places"
            if len(record.quantize(Decimal(1).scaleb(-scale)).as_tuple().digits) > precision:
                return path or "(value)", f"{record} exceeds precision {precision}"
            return None
        if t == "record" and isinstance(record, dict):
            for f in schema["fields"]:
                p = _decimal_problem(f["type"], record.get(f["name"]), f"{path}.{f['name']}" if path else f["name"])
                if p:
                    return p
        elif t == "array" and isinstance(record, list):
            for i, item in enumerate(record):
                p = _decimal_problem(schema["items"], item, f"{path}[{i}]")
                if p:
                    return p
        elif t == "map" and isinstance(record, dict):
            for k, v in record.items():
                p = _decimal_problem(schema["values"], v, f"{path}[{k!r}]")
                if p:
                    return p
        elif isinstance(t, (dict, list)):
            return _decimal_problem(t, record, path)
    elif isinstance(schema, list):
        for branch in schema:
            if branch == "null" and record is None:
                return None
        for branch in schema:
            p = _decimal_problem(branch, record, path)
            if p is None and branch != "null":
                return None
    return None


class AvroSerde:
    """Encode/decode records with schemas from a Confluent-compatible registry (thread safe)."""

    def __init__(self, registry: SchemaRegistryClient | dict[str, Any]) -> None:
        self.registry = registry if isinstance(registry, SchemaRegistryClient) else SchemaRegistryClient(registry)
        self._by_id: dict[int, Any] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    # -- registration -----------------------------------------------------------------------------
    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register (or find) ``schema`` under ``subject``; returns its global id."""
        text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
        key = (subject, text)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        try:
            schema_id = self.registry.register_schema(subject, Schema(text, "AVRO"))
        except SchemaRegistryError as exc:
            raise RegistryError(f"registry refused schema for {subject}: {exc.error_message} (code {exc.error_code})") from None
        except Exception as exc:  # connection errors come as httpx / OS errors
            raise RegistryError(f"schema registry unreachable while registering {subject}: {exc}") from None
        parsed = fastavro.parse_schema(schema)
        with self._lock:
            self._ids[key] = schema_id
            self._by_id[schema_id] = parsed
        return schema_id

    def parsed(self, schema_id: int) -> Any:
        """The parsed writer schema of ``schema_id`` (fetched once)."""
        with self._lock:
            hit = self._by_id.get(schema_id)
        if hit is not None:
            return hit
        try:
            schema = self.registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            raise PoisonRecord(f"schema id {schema_id} is unknown to the registry: {exc.error_message}") from None
        except Exception as exc:
            raise RegistryError(f"schema registry unreachable while fetching id {schema_id}: {exc}") from None
        parsed = fastavro.parse_schema(json.loads(schema.schema_str))
        with self._lock:
            self._by_id[schema_id] = parsed
        return parsed

    # -- encode / decode --------------------------------------------------------------------------
    def encode(self, schema_id: int, record: dict[str, Any]) -> bytes:
        """Wire-format bytes of ``record``; ``RecordInvalid`` names the first field that does not fit."""
        parsed = self.parsed(schema_id)
        buf = io.BytesIO()
        buf.write(_HEADER.pack(MAGIC, schema_id))
        try:
            fastavro.schemaless_writer(buf, parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, struct.error, OverflowError) as exc:
            raise RecordInvalid(parsed.get("name", "?"), *_first_problem(parsed, record, exc)) from None
        return buf.getvalue()

    def encoder(self, subject: str, schema: dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
        """A function that encodes records of ``schema`` (registered under ``subject`` once)."""
        schema_id = self.register(subject, schema)
        return lambda record: self.encode(schema_id, record)

    def decode(self, data: bytes | None, reader_schema: Any | None = None) -> Any:
        """Record from wire-format bytes; with ``reader_schema`` the Avro resolution rules apply."""
        if data is None:
            return None
        if len(data) < 5:
            raise PoisonRecord(f"{len(data)} bytes are too short for the Confluent wire format (5-byte header)")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise PoisonRecord(f"magic byte {magic} is not 0: not Confluent wire-format Avro")
        writer = self.parsed(schema_id)
        try:
            return fastavro.schemaless_reader(io.BytesIO(data[5:]), writer, reader_schema)
        except Exception as exc:  # noqa: BLE001 - anything fastavro raises on bad bytes is poison
            raise PoisonRecord(f"body does not decode with schema id {schema_id}: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def schema_id_of(data: bytes) -> int | None:
        """The schema id in a wire-format header, or None when the bytes are not wire format."""
        if data is None or len(data) < 5 or data[0] != MAGIC:
            return None
        return int(_HEADER.unpack_from(data)[1])
