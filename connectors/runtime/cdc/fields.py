"""Pure evaluation of a mapping's fields on a row image (no I/O): typed values, checks, key templates."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bizbus.connectors.runtime.cdc.mapping import FieldSpec

from bizbus.failures import Permanent

OP_NAMES = {"insert": "CREATED", "read": "CREATED", "update": "UPDATED", "delete": "DELETED"}
_TRUE, _FALSE = {"t", "true", "1", "y", "yes", "on"}, {"f", "false", "0", "n", "no", "off"}


class RowRejected(Permanent):
    """A row that does not fit the mapping (a dead letter with the row's key; the connector goes on)."""

    default_reason = "mapping"


@dataclass(frozen=True)
class Change:
    """What a field's ``meta`` can read, and the mapping's constants and units."""

    op: str
    version: int
    commit_time: dt.datetime
    position: str
    source_system: str
    constants: Mapping[str, Any]
    units: tuple[str, ...] = ()


def evaluate(fields: Mapping[str, FieldSpec], image: Mapping[str, Any], change: Change) -> dict[str, Any]:
    """The record's fields from one row image; raises ``RowRejected`` naming the field."""
    return {name: value(name, spec, image, change) for name, spec in fields.items()}


def value(name: str, spec: FieldSpec, image: Mapping[str, Any], change: Change) -> Any:
    if spec.line is not None:
        return [evaluate(spec.line, image, change)]
    if spec.meta is not None:
        return OP_NAMES[change.op] if spec.meta == "op" else getattr(change, spec.meta)
    if spec.const is not None or "const" in spec.model_fields_set:
        v = spec.const
        if isinstance(v, str) and v.startswith("$"):
            if v[1:] not in change.constants:
                raise RowRejected(f"field {name}: no constant {v[1:]!r} in the mapping")
            v = change.constants[v[1:]]
    elif spec.sub is not None:
        a, b = (_column(name, c, image) for c in spec.sub)
        v = None if a is None or b is None else _decimal(name, a) - _decimal(name, b)
    else:
        assert spec.column is not None
        v = _column(name, spec.column, image)
    if v is None:
        v = spec.default
    if v is None:
        if spec.required:
            raise RowRejected(f"field {name}: column {spec.column or spec.sub} is NULL")
        return None
    if spec.map is not None:
        if str(v) not in spec.map:
            raise RowRejected(f"field {name}: value {v!r} is not one of {sorted(spec.map)}")
        v = spec.map[str(v)]
    v = convert(name, spec.type, v, spec.scale)
    if spec.unit and v not in change.units:
        raise RowRejected(f"field {name}: unknown unit {v!r} (known: {', '.join(change.units)})")
    if spec.min is not None and v < spec.min:
        raise RowRejected(f"field {name}: {v} is below the allowed minimum {spec.min}")
    return v


def _column(name: str, column: str, image: Mapping[str, Any]) -> Any:
    if column not in image:
        raise RowRejected(f"field {name}: the row has no column {column!r}")
    return image[column]


def _decimal(name: str, v: Any) -> decimal.Decimal:
    try:
        d = decimal.Decimal(str(v))
    except decimal.InvalidOperation:
        raise RowRejected(f"field {name}: {v!r} is not a number") from None
    if not d.is_finite():
        raise RowRejected(f"field {name}: {v!r} is not a finite number")
    return d


def convert(name: str, kind: str, v: Any, scale: int | None = None) -> Any:
    """A JSON-journaled column value as the record's type (see ``journal.jsonable``)."""
    try:
        if kind == "string":
            return v if isinstance(v, str) else str(v)
        if kind == "int":
            return int(v) if not isinstance(v, str) else int(v.strip())
        if kind == "decimal":
            d = _decimal(name, v)
            return d.quantize(decimal.Decimal(1).scaleb(-scale)) if scale is not None else d
        if kind == "date":
            return v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)[:10])
        if kind == "timestamp":
            return _timestamp(v)
        if kind == "bool":
            return _bool(v)
    except RowRejected:
        raise
    except (ValueError, TypeError, decimal.InvalidOperation) as exc:
        raise RowRejected(f"field {name}: {v!r} is not a {kind}: {exc}") from None
    return v


def _timestamp(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        t = v
    else:
        text = str(v).strip().replace(" ", "T", 1)
        if len(text) > 3 and text[-3] in "+-" and text[-2:].isdigit() and ":" not in text[-6:]:
            text += ":00"  # PostgreSQL's "+08"
        t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a boolean")


def render_key(template: str, image: Mapping[str, Any], constants: Mapping[str, Any]) -> str:
    """The record key from a template like ``{warehouse}/{material}`` (columns, then constants)."""
    values = {**constants, **{k: ("" if v is None else v) for k, v in image.items()}}
    try:
        return template.format_map(values)
    except KeyError as exc:
        raise RowRejected(f"key {template!r}: the row has no column {exc.args[0]!r}") from None


def matches(where: Mapping[str, Any], image: Mapping[str, Any]) -> bool:
    return all(str(image.get(k)) == str(v) for k, v in where.items())
