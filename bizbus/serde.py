"""Avro in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary body.

Any team's standard Kafka client (``AvroDeserializer`` of confluent-kafka, Java's KafkaAvroDeserializer,
…) reads what bizbus writes, and bizbus reads what they write. Schemas are fetched from the registry
once per id and cached; encoding is fastavro's schemaless writer.

A record that does not match its schema raises ``RecordInvalid`` naming the field; bytes that are not
in the wire format, or carry an id the registry does not know, raise ``PoisonRecord`` (a connector
dead-letters those as raw bytes).
"""

from __future__ import annotations

import decimal
import io
import json
import struct
import threading
from collections.abc import Callable, Mapping
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
    except (ValueError, TypeError):  # fastavro raises plain errors for some types, without the field
        pass
    # decimals were checked (with their field) before writing, so what is left has no known field
    return "(unknown)", f"{type(error).__name__}: {error}"


_NAMED_TYPES = ("record", "error", "enum", "fixed")


def named_types(schema: Any, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named type (record, enum, fixed) defined in ``schema``, by name and by full name."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            named_types(branch, found)
    elif isinstance(schema, dict):
        if schema.get("type") in _NAMED_TYPES:
            found[schema["name"]] = schema
            if "namespace" in schema and "." not in schema["name"]:
                found[f"{schema['namespace']}.{schema['name']}"] = schema
        for field in schema.get("fields", ()):
            named_types(field["type"], found)
        for key in ("items", "values", "type"):
            if isinstance(schema.get(key), (dict, list)):
                named_types(schema[key], found)
    return found


def _decimal_problem(value: decimal.Decimal, precision: int, scale: int) -> str | None:
    if not value.is_finite():
        return f"{value} is not a finite number"
    _sign, digits, exp = value.as_tuple()
    exponent = int(exp)
    if -exponent > scale:
        return (f"{value} has {-exponent} fractional digits but the scale is {scale} "
                f"(quantize it to {scale} places; trailing zeros count too)")
    unscaled_digits = 0 if not any(digits) else len(digits) + exponent + scale
    if unscaled_digits > precision:
        return (f"{value} needs {unscaled_digits} digits but the precision is {precision} "
                f"(at most {precision - scale} digits before the decimal point)")
    return None


# A compiled check: None when the value fits, else (path relative to the value, problem) pairs. Paths are
# only built for a problem, so a fitting record costs one call per decimal-bearing field and nothing else.
Check = Callable[[Any], "list[tuple[str, str]] | None"]


def _join(prefix: str, sub: str) -> str:
    if not sub:
        return prefix
    return prefix + sub if sub.startswith("[") else f"{prefix}.{sub}"


_SUSPECT: list[tuple[str, str]] = [("", "may not fit")]


def _check_decimal(precision: int, scale: int, quick: bool = False) -> Check:
    if quick:
        # what fastavro lets through: a finite value whose integer digits overflow the precision once
        # scaled (too many fractional digits fastavro refuses itself); two C calls, no digit tuple. A
        # suspect (also 0E+9: its exponent is large) goes to the exact check.
        limit = precision - scale

        def suspect(value: Any) -> list[tuple[str, str]] | None:
            if not isinstance(value, decimal.Decimal) or (value.is_finite() and value.adjusted() < limit):
                return None
            return _SUSPECT

        return suspect

    def check(value: Any) -> list[tuple[str, str]] | None:
        if not isinstance(value, decimal.Decimal):
            return None
        problem = _decimal_problem(value, precision, scale)
        return [("", problem)] if problem else None

    return check


def _check_record(fields: list[tuple[str, Check]]) -> Check:
    def check(value: Any) -> list[tuple[str, str]] | None:
        if not isinstance(value, Mapping):
            return None
        found: list[tuple[str, str]] | None = None
        for name, sub in fields:
            if name in value:
                problems = sub(value[name])
                if problems:
                    found = (found or []) + [(_join(name, p), why) for p, why in problems]
        return found

    return check


def _check_array(items: Check) -> Check:
    def check(value: Any) -> list[tuple[str, str]] | None:
        if not isinstance(value, (list, tuple)):
            return None
        found: list[tuple[str, str]] | None = None
        for index, item in enumerate(value):
            problems = items(item)
            if problems:
                found = (found or []) + [(_join(f"[{index}]", p), why) for p, why in problems]
        return found

    return check


def _check_map(values: Check) -> Check:
    def check(value: Any) -> list[tuple[str, str]] | None:
        if not isinstance(value, Mapping):
            return None
        found: list[tuple[str, str]] | None = None
        for key, item in value.items():
            problems = values(item)
            if problems:
                found = (found or []) + [(_join(f"[{key!r}]", p), why) for p, why in problems]
        return found

    return check


def _check_union(branches: list[tuple[Any, Check | None]]) -> Check:
    def check(value: Any) -> list[tuple[str, str]] | None:
        if value is None:
            return None
        for schema, sub in branches:  # the first branch that could hold the value decides (as fastavro)
            if _could_hold(schema, value):
                return sub(value) if sub is not None else None
        return None

    return check


class _DecimalCompiler:
    """Builds the :data:`Check` of a schema, once; subtrees without a decimal get no check at all."""

    def __init__(self, schema: Any, quick: bool = False) -> None:
        self.quick = quick
        self.named = named_types(schema)
        self.built: dict[int, Check | None] = {}  # id(named schema) -> its check (None: no decimal inside)
        self.has: dict[int, bool] = {}

    def has_decimal(self, schema: Any, visiting: frozenset[int] = frozenset()) -> bool:
        if isinstance(schema, str):
            target = self.named.get(schema)
            return target is not None and self.has_decimal(target, visiting)
        if isinstance(schema, list):
            return any(self.has_decimal(b, visiting) for b in schema)
        if not isinstance(schema, dict) or id(schema) in visiting:
            return False
        if id(schema) in self.has:
            return self.has[id(schema)]
        if schema.get("logicalType") == "decimal":
            return True
        inner = visiting | {id(schema)}
        kind = schema.get("type")
        if kind in ("record", "error"):
            found = any(self.has_decimal(f["type"], inner) for f in schema["fields"])
        elif kind == "array":
            found = self.has_decimal(schema["items"], inner)
        elif kind == "map":
            found = self.has_decimal(schema["values"], inner)
        else:
            found = isinstance(kind, (dict, list)) and self.has_decimal(kind, inner)
        if not visiting:
            self.has[id(schema)] = found
        return found

    def build(self, schema: Any) -> Check | None:
        if isinstance(schema, str):
            target = self.named.get(schema)
            return self.build(target) if target is not None else None
        if isinstance(schema, list):
            branches = [(self.named.get(b, b) if isinstance(b, str) else b) for b in schema]
            if not any(self.has_decimal(b) for b in branches):
                return None
            return _check_union([(b, self.build(b)) for b in branches])
        if not isinstance(schema, dict) or not self.has_decimal(schema):
            return None
        if schema.get("logicalType") == "decimal":
            return _check_decimal(schema["precision"], schema.get("scale", 0), self.quick)
        key = id(schema)
        if key in self.built:
            return self.built[key]
        kind = schema.get("type")
        if kind in ("record", "error"):
            fields: list[tuple[str, Check]] = []
            self.built[key] = _check_record(fields)  # filled below: a recursive type finds itself
            for f in schema["fields"]:
                sub = self.build(f["type"])
                if sub is not None:
                    fields.append((f["name"], sub))
            return self.built[key]
        if kind == "array":
            items = self.build(schema["items"])
            return _check_array(items) if items is not None else None
        if kind == "map":
            values = self.build(schema["values"])
            return _check_map(values) if values is not None else None
        return self.build(kind) if isinstance(kind, (dict, list)) else None


def _could_hold(schema: Any, value: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("logicalType") == "decimal":
        return isinstance(value, decimal.Decimal)
    kind = schema.get("type")
    if kind in ("record", "error", "map"):
        return isinstance(value, Mapping)
    return kind == "array" and isinstance(value, (list, tuple))


def decimal_check(schema: Any, quick: bool = False) -> Callable[[Any], list[str]] | None:
    """A function giving ``path: problem`` for every Decimal of a record that does not fit its decimal type
    (compiled once per schema); None when the schema has no decimal. ``quick``: only flags, without a
    reason, each Decimal that may overflow its precision (the cheap test encode() runs on every record;
    a flagged record gets the exact check)."""
    check = _DecimalCompiler(schema, quick).build(schema)
    if check is None:
        return None

    def problems(record: Any) -> list[str]:
        found = check(record)
        return [f"{path}: {why}" for path, why in found] if found else []

    return problems


def decimal_problems(schema: Any, record: Any) -> list[str]:
    """``path: problem`` for every Decimal in ``record`` that does not fit its decimal type.

    fastavro refuses too many fractional digits but not a scaled value that overflows the precision
    (``Decimal("12345678901234567")`` in ``decimal(18, 2)`` is written as 19 digits and read back wrong),
    so encode() checks this before writing money.
    """
    check = decimal_check(schema)
    return check(record) if check is not None else []


class AvroSerde:
    """Encode/decode records with schemas from a Confluent-compatible registry (thread safe)."""

    def __init__(self, registry: SchemaRegistryClient | dict[str, Any]) -> None:
        self.registry = registry if isinstance(registry, SchemaRegistryClient) else SchemaRegistryClient(registry)
        self._by_id: dict[int, Any] = {}
        # schema id -> its decimal checks (quick, exact); None without decimals
        self._money: dict[int, tuple[Callable[[Any], list[str]], Callable[[Any], list[str]]] | None] = {}
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
        hit = self._by_id.get(schema_id)  # one dict read is atomic: no lock on the hot path
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
        if schema_id in self._money:
            money = self._money[schema_id]
        else:
            money = self._money[schema_id] = self._money_checks(parsed)
        if money is not None and money[0](record):
            self._refuse_money(parsed, record, money[1])
        buf = io.BytesIO()
        buf.write(_HEADER.pack(MAGIC, schema_id))
        try:
            fastavro.schemaless_writer(buf, parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, struct.error, OverflowError) as exc:
            if money is not None:  # e.g. too many fractional digits: named with its field
                self._refuse_money(parsed, record, money[1])
            raise RecordInvalid(parsed.get("name", "?"), *_first_problem(parsed, record, exc)) from None
        return buf.getvalue()

    @staticmethod
    def _money_checks(parsed: Any) -> tuple[Callable[[Any], list[str]], Callable[[Any], list[str]]] | None:
        quick, exact = decimal_check(parsed, quick=True), decimal_check(parsed)
        return (quick, exact) if quick is not None and exact is not None else None

    @staticmethod
    def _refuse_money(parsed: Any, record: Any, exact: Callable[[Any], list[str]]) -> None:
        """Raise ``RecordInvalid`` for the first Decimal of ``record`` that does not fit, if there is one."""
        problems = exact(record)
        if problems:
            path, _, reason = problems[0].partition(": ")
            raise RecordInvalid(parsed.get("name", "?"), path, reason)

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
