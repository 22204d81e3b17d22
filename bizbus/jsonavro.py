"""Plain JSON (as people write it) to the Python values fastavro expects, guided by the Avro schema.

Money as a JSON string or number becomes ``Decimal`` (from its text, so "0.10" stays exact);
timestamps as RFC 3339 strings become aware datetimes; dates as "2026-11-23" become ``date``; a union
takes ``null`` or the first branch the value converts to. Anything that does not fit raises
``ValueError`` naming the field path.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bizbus.serde import named_types


def from_json(schema: Any, value: Any) -> Any:
    """Convert ``value`` (parsed JSON) for writing with ``schema`` (an expanded JSON schema)."""
    return _conv(schema, value, "", named_types(schema))


def _conv(schema: Any, value: Any, path: str, named: dict[str, Any]) -> Any:
    where = path or "(record)"
    if isinstance(schema, str):
        if schema in named:
            return _conv(named[schema], value, path, named)
        return _primitive(schema, value, where)
    if isinstance(schema, list):
        if value is None and "null" in schema:
            return None
        errors = []
        for branch in schema:
            if branch == "null":
                continue
            try:
                return _conv(branch, value, path, named)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits no branch of the union")
    kind, logical = schema.get("type"), schema.get("logicalType")
    if logical == "decimal":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{where}: expected a decimal number (as a string like \"12.50\"), got {value!r}")
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{where}: {value!r} is not a decimal number") from None
    if logical in ("timestamp-millis", "timestamp-micros") and isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not an RFC 3339 timestamp") from None
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    if logical == "date" and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not a date like 2026-11-23") from None
    if kind in ("record", "error"):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        unknown = set(value) - {f["name"] for f in schema["fields"]}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        out = {}
        for f in schema["fields"]:
            child = f"{path}.{f['name']}" if path else f["name"]
            if f["name"] in value:
                out[f["name"]] = _conv(f["type"], value[f["name"]], child, named)
            elif "default" not in f:
                raise ValueError(f"{child}: required field is missing")
        return out
    if kind == "array":
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        return [_conv(schema["items"], v, f"{path}[{i}]", named) for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        return {k: _conv(schema["values"], v, f"{path}[{k!r}]", named) for k, v in value.items()}
    if kind == "enum":
        if value not in schema["symbols"]:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(schema['symbols'])}")
        return value
    if isinstance(kind, (dict, list)) or kind in named:
        return _conv(kind, value, path, named)
    return _primitive(kind, value, where)


def _primitive(kind: str, value: Any, where: str) -> Any:
    ok = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "long": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "double": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "bytes": isinstance(value, str),
        "fixed": isinstance(value, str),
    }.get(kind)
    if ok is None:
        raise ValueError(f"{where}: unknown type {kind!r}")
    if not ok:
        raise ValueError(f"{where}: expected {kind}, got {type(value).__name__} {value!r}")
    return value.encode("latin-1") if kind in ("bytes", "fixed") else value
