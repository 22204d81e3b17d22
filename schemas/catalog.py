"""The catalogue of bizbus' canonical Avro schemas (the ``schemas/avro/*.avsc`` files).

Each ``.avsc`` file holds one named type and is called ``<full name>.avsc``; a file refers to shared types
(``bizbus.common.EventMeta``, ``bizbus.common.DocumentLine``, ...) by full name only. :func:`load` resolves
those references (fastavro's ``load_schema`` convention) and returns one self-contained schema in which
every named type is defined exactly once, ready to be registered in a schema registry without references.

fastavro and decimals (checked against fastavro 1.13): the writer refuses a ``Decimal`` whose exponent has
more fractional digits than the field's scale (``ValueError: Scale provided in schema does not match the
decimal``), even when the extra digits are zeros (``Decimal("1.230")`` for scale 2), and a ``Decimal`` with
more *significant digits* than the precision. It does NOT check that the scaled value fits the precision:
``Decimal("12345678901234567")`` in a ``decimal(18, 2)`` field is written as a 19-digit unscaled number
that other Avro readers and a ``NUMERIC(18, 2)`` column reject, and fastavro reads it back with the wrong
scale. :func:`validate` closes that gap and names the offending field.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import load_schema
from fastavro.validation import ValidationError
from fastavro.validation import validate as _fastavro_validate

from bizbus.errors import SchemaError
from bizbus.serde import decimal_problems

from . import samples as _samples

AVRO_DIR: Path = Path(os.environ.get("BIZBUS_SCHEMA_DIR") or Path(__file__).resolve().parent / "avro")
"""Folder holding the ``.avsc`` files (``BIZBUS_SCHEMA_DIR`` points elsewhere, e.g. a schema under review)."""

META_TYPE = "bizbus.common.EventMeta"
"""Full name of the envelope record that is the first field (``meta``) of every top-level event."""

_FULL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_TYPE_KEYS = ("type", "name", "namespace", "aliases", "doc", "symbols", "default", "size", "fields",
              "items", "values", "logicalType", "precision", "scale")
_FIELD_KEYS = ("name", "aliases", "doc", "type", "default", "order")


class SchemaValidationError(ValueError):
    """A record does not fit its canonical schema; the message names the schema and the field."""


def schema_files() -> list[Path]:
    """All ``.avsc`` files of the catalogue, sorted by name."""
    return sorted(AVRO_DIR.glob("*.avsc"))


def names() -> list[str]:
    """Full names of all named types in the catalogue (records, enums), sorted."""
    return [path.name[: -len(".avsc")] for path in schema_files()]


def _path(full_name: str) -> Path:
    if not isinstance(full_name, str) or not _FULL_NAME.fullmatch(full_name):
        raise KeyError(f"not a full Avro name: {full_name!r}")
    path = AVRO_DIR / f"{full_name}.avsc"
    if not path.is_file():
        raise KeyError(f"no schema {full_name!r} in {AVRO_DIR}")
    return path


def _tidy(node: Any, is_field: bool = False) -> Any:
    """Drop fastavro's internal keys and put the keys of every type / field in a readable order."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    order = _FIELD_KEYS if is_field else _TYPE_KEYS
    keys = [k for k in order if k in node] + [k for k in node if k not in order]
    out: dict[str, Any] = {}
    for key in keys:
        if key.startswith("__"):
            continue
        value = node[key]
        if key == "fields":
            value = [_tidy(field, is_field=True) for field in value]
        elif key in ("type", "items", "values"):
            value = _tidy(value)
        out[key] = value
    return out


def load_file(path: Path) -> Any:
    """Load one ``.avsc`` file with its references resolved; ``SchemaError`` names the file when it fails."""
    try:
        loaded = load_schema(str(path), _write_hint=False)
    except Exception as exc:  # fastavro raises JSON, parse and unknown-type errors of several classes
        raise SchemaError(f"{path}: not a valid Avro schema: {type(exc).__name__}: {exc}") from None
    return _tidy(loaded)


@functools.cache
def _text(full_name: str) -> str:
    return json.dumps(load_file(_path(full_name)), sort_keys=False, separators=(",", ":"), ensure_ascii=False)


def schema_text(full_name: str) -> str:
    """Compact JSON text of :func:`load` (non-ASCII kept as is), e.g. for registering the schema."""
    return _text(full_name)


def load(full_name: str) -> dict[str, Any]:
    """The fully expanded, self-contained schema of ``full_name`` as a JSON-serialisable dict.

    Every referenced named type is defined once, at its first use, and referred to by full name after
    that. The result is a fresh copy: changing it does not change the catalogue. Raises ``KeyError`` for
    an unknown name.
    """
    return json.loads(_text(full_name))


@functools.cache
def parsed(full_name: str) -> dict[str, Any]:
    """The schema of ``full_name`` parsed by fastavro (for its readers, writers and validation).

    Cached and shared: do not modify it.
    """
    return fastavro.parse_schema(load(full_name))


@functools.cache
def _raw(full_name: str) -> dict[str, Any]:
    path = _path(full_name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SchemaError(f"{path}: not valid JSON: {exc}") from None


def top_level_names() -> list[str]:
    """Full names of the records meant to be topic values: those whose first field is ``meta``.

    Excludes the envelope ``bizbus.common.EventMeta`` itself, enums and line / item records.
    """
    result = []
    for name in names():
        raw = _raw(name)
        fields = raw.get("fields") if raw.get("type") == "record" else None
        if fields and fields[0]["name"] == "meta" and fields[0]["type"] == META_TYPE:
            result.append(name)
    return result


def sample(full_name: str) -> dict[str, Any]:
    """A valid, realistic sample record of ``full_name`` (fresh each call); ``KeyError`` if none."""
    return _samples.sample(full_name)


def validate(full_name: str, record: Mapping[str, Any]) -> None:
    """Check ``record`` against the canonical schema ``full_name``; raise if it does not fit.

    On top of fastavro's validation, every ``Decimal`` must be finite, have at most ``scale`` fractional
    digits and fit ``precision`` digits once scaled (fastavro misses the last case). Raises
    :class:`SchemaValidationError` (a ``ValueError``) whose message names the schema and the field path,
    e.g. ``bizbus.finance.Voucher: lines[1].credit: ...``.
    """
    problems = decimal_problems(load(full_name), record)
    if problems:
        raise SchemaValidationError(f"{full_name}: " + "; ".join(problems))
    try:
        _fastavro_validate(record, parsed(full_name), raise_errors=True)
    except (ValidationError, ValueError, TypeError) as exc:
        raise SchemaValidationError(f"{full_name}: {exc}") from exc
