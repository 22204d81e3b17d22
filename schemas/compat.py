"""Avro schema compatibility by the Avro specification's schema resolution rules.

Interface (other modules import only these names):

    class InvalidSchema(ValueError)                   -- not a valid Avro schema; the message says why
    def parse_schema(text_or_obj) -> dict|list|str    -- validated, fully expanded JSON form
    def canonical_form(schema) -> str                 -- Avro Parsing Canonical Form
    def reader_writer_incompatibilities(reader, writer) -> list[str]   -- [] when `reader` can read data
        written with `writer`, else reasons naming a path ("/fields/amount/type: writer type 'bytes' ...")
    COMPATIBILITY_LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
                            "FULL", "FULL_TRANSITIVE")
    def check_compatibility(new, previous: list, level: str) -> list[str]   -- previous is oldest..newest

Rules as implemented (Avro 1.11 "Schema Resolution"): named types match by *full* name or a reader alias
(aliases may be relative to the type's namespace); a reader union picks the first branch of the writer's
type (same name for named types), else the first branch the writer type promotes to; every branch of a
writer union must be readable; two valid decimals whose precision or scale differ are incompatible (as in
Confluent's checker), other logical types resolve by their underlying type.  Reason paths follow the
schema (``/fields/<name>/type``, ``/items``, ``/values``, ``/symbols``); a number indexes a writer union.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any, cast

import fastavro.schema as _fastavro

Schema = dict[str, Any] | list[Any] | str
Names = dict[str, dict[str, Any]]

COMPATIBILITY_LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
                        "FULL", "FULL_TRANSITIVE")

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PROMOTIONS: dict[str, tuple[str, ...]] = {  # writer type -> reader types it may be read as
    "int": ("long", "float", "double"), "long": ("float", "double"), "float": ("double",),
    "string": ("bytes",), "bytes": ("string",),
}
_FLOAT_WORDS = ("NaN", "Infinity", "-Infinity")  # a tuple: defaults may be unhashable
_VALID_DEFAULT: dict[str, Callable[[Any], bool]] = {  # is a JSON value a valid default for a primitive?
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "int": lambda v: type(v) is int and -(2**31) <= v < 2**31,
    "long": lambda v: type(v) is int and -(2**63) <= v < 2**63,
    "float": lambda v: type(v) in (int, float) or v in _FLOAT_WORDS,
    "double": lambda v: type(v) in (int, float) or v in _FLOAT_WORDS,
    "string": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, str) and all(ord(c) < 256 for c in v),  # code points 0-255
}
_FIELD_ORDERS = ("ascending", "descending", "ignore")


class InvalidSchema(ValueError):
    """The text or object is not a valid Avro schema; the message says why."""


def _at(path: str) -> str:
    return path or "/"


def _is_fullname(text: str) -> bool:
    return all(_NAME_RE.match(part) for part in text.split("."))


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _kind(schema: Schema) -> str:
    """The type of a dereferenced schema: a primitive name, 'union', 'record', 'enum', 'fixed', ..."""
    if isinstance(schema, list):
        return "union"
    kind = schema if isinstance(schema, str) else schema["type"]
    return "record" if kind == "error" else kind


def _deref(schema: Schema, names: Names) -> Schema:
    return names[schema] if isinstance(schema, str) and schema not in PRIMITIVES else schema


def _describe(schema: Schema) -> str:
    """Short human-readable description of a dereferenced schema, for messages."""
    if isinstance(schema, list):
        return "union [" + ", ".join(_describe(branch) for branch in schema) + "]"
    kind = _kind(schema)
    if isinstance(schema, str):
        return schema
    if kind in ("record", "enum", "fixed"):
        return f"{kind} {schema['name']}"
    decimal = _decimal(schema)
    if decimal:
        return f"{kind} (decimal {decimal[0]},{decimal[1]})"
    if isinstance(schema.get("logicalType"), str):
        return f"{kind} ({schema['logicalType']})"
    return kind


def _decimal(schema: Schema) -> tuple[int, int] | None:
    """(precision, scale) of a valid decimal logical type; None otherwise (the logical type is ignored)."""
    if not isinstance(schema, dict) or schema.get("logicalType") != "decimal":
        return None
    precision, scale = schema.get("precision"), schema.get("scale", 0)
    valid = type(precision) is int and type(scale) is int and 0 <= scale <= precision and precision > 0
    return (precision, scale) if valid else None


class _Parser:
    """Validates a loaded JSON schema and expands it (full names and aliases instead of namespaces)."""

    def __init__(self) -> None:
        self.names: Names = {}
        self._defaults: list[tuple[Schema, Any, str]] = []
        self.logical: list[dict[str, Any]] = []  # self-contained schemas carrying a logicalType

    def parse(self, obj: Any, namespace: str, path: str) -> Schema:
        if isinstance(obj, str):
            return self._reference(obj, namespace, path)
        if isinstance(obj, list):
            return self._union(obj, namespace, path)
        if not isinstance(obj, dict):
            raise InvalidSchema(f"{_at(path)}: expected a type name, object or array, got {obj!r}")
        kind = obj.get("type")
        if not isinstance(kind, str):
            raise InvalidSchema(f"{_at(path)}: 'type' must be a string, got {kind!r}")
        if kind in PRIMITIVES:
            if "logicalType" in obj:
                self.logical.append(obj)
            return kind if len(obj) == 1 else dict(obj)
        if kind in _NAMED:
            return self._named(obj, kind, namespace, path)
        if kind in ("array", "map"):
            key = "items" if kind == "array" else "values"
            if key not in obj:
                raise InvalidSchema(f"{_at(path)}: {kind} requires '{key}'")
            return {**obj, key: self.parse(obj[key], namespace, f"{path}/{key}")}
        return self._reference(kind, namespace, path)  # {"type": "SomeDefinedName"}

    def _reference(self, name: str, namespace: str, path: str) -> str:
        if name in PRIMITIVES:
            return name
        for candidate in (_fullname(name, namespace), name):
            if candidate in self.names:
                return candidate
        if name in _NAMED or name in ("array", "map"):
            raise InvalidSchema(f"{_at(path)}: complex type {name!r} must be written as a JSON object")
        raise InvalidSchema(f"{_at(path)}: unknown type {name!r}")

    def _union(self, branches: list[Any], namespace: str, path: str) -> list[Schema]:
        out: list[Schema] = []
        for i, branch in enumerate(branches):
            if isinstance(branch, list):
                raise InvalidSchema(f"{path}/{i}: a union may not directly contain another union")
            out.append(self.parse(branch, namespace, f"{path}/{i}"))
        keys = [r["name"] if _kind(r) in _NAMED else _kind(r) for r in (_deref(b, self.names) for b in out)]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise InvalidSchema(f"{path}/{i}: union contains {key!r} more than once")
        return out

    def _named(self, obj: dict[str, Any], kind: str, namespace: str, path: str) -> dict[str, Any]:
        name, space = obj.get("name"), obj.get("namespace", namespace)
        if not isinstance(name, str) or not isinstance(space, str | None):
            raise InvalidSchema(f"{_at(path)}: {kind} requires a string 'name' (and a string 'namespace')")
        full = _fullname(name, space or "")
        if not _is_fullname(full) or full.rpartition(".")[2] in PRIMITIVES:
            raise InvalidSchema(f"{_at(path)}: invalid {kind} name {full!r}")
        if full in self.names:
            raise InvalidSchema(f"{_at(path)}: type {full!r} is defined more than once")
        space = full.rpartition(".")[0]
        out = {k: v for k, v in obj.items() if k != "namespace"}
        out["name"] = full
        if namespace and not space:  # keep an explicit null namespace so re-parsing gives the same names
            out["namespace"] = ""
        if "aliases" in obj:
            aliases = obj["aliases"]
            if not isinstance(aliases, list) or not all(isinstance(a, str) and _is_fullname(a) for a in aliases):
                raise InvalidSchema(f"{_at(path)}: 'aliases' must be a list of names")
            out["aliases"] = [_fullname(a, space) for a in aliases]
        self.names[full] = out  # registered before the body so recursive references resolve
        if kind == "enum":
            symbols = out.get("symbols")
            if not isinstance(symbols, list) or not all(isinstance(s, str) and _NAME_RE.match(s) for s in symbols):
                raise InvalidSchema(f"{_at(path)}: enum 'symbols' must be a list of names [A-Za-z_][A-Za-z0-9_]*")
            if len(set(symbols)) != len(symbols):
                raise InvalidSchema(f"{_at(path)}: enum {full!r} has duplicate symbols")
            if "default" in out and out["default"] not in symbols:
                raise InvalidSchema(f"{_at(path)}: enum default {out['default']!r} is not one of the symbols")
        elif kind == "fixed":
            size = obj.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidSchema(f"{_at(path)}: fixed {full!r} requires a non-negative integer 'size'")
            if "logicalType" in obj:
                self.logical.append(out)
        else:
            out["fields"] = self._fields(obj, space, path)
        return out

    def _fields(self, obj: dict[str, Any], namespace: str, path: str) -> list[dict[str, Any]]:
        fields = obj.get("fields")
        if not isinstance(fields, list):
            raise InvalidSchema(f"{_at(path)}: record requires a 'fields' array")
        out: list[dict[str, Any]] = []
        for i, field in enumerate(fields):
            name = field.get("name") if isinstance(field, dict) else None
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise InvalidSchema(f"{path}/fields/{i}: field requires a valid 'name', got {name!r}")
            fpath = f"{path}/fields/{name}"
            if any(f["name"] == name for f in out):
                raise InvalidSchema(f"{fpath}: duplicate field name {name!r}")
            if "type" not in field:
                raise InvalidSchema(f"{fpath}: field {name!r} has no 'type'")
            aliases = field.get("aliases", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) and _NAME_RE.match(a) for a in aliases):
                raise InvalidSchema(f"{fpath}: field 'aliases' must be a list of names")
            if field.get("order", "ascending") not in _FIELD_ORDERS:
                raise InvalidSchema(f"{fpath}: field 'order' must be one of {_FIELD_ORDERS}")
            new = {**field, "type": self.parse(field["type"], namespace, f"{fpath}/type")}
            if "default" in field:
                self._defaults.append((new["type"], field["default"], fpath))
            out.append(new)
        return out

    def check_defaults(self) -> None:
        """Validate field defaults; deferred until every named type is defined."""
        for schema, value, path in self._defaults:
            if not self._valid(schema, value):
                resolved = _deref(schema, self.names)
                hint = " (a union's default must match its first branch)" if isinstance(resolved, list) else ""
                shown = json.dumps(value, default=repr)
                raise InvalidSchema(f"{path}: default {shown} is not valid for type {_describe(resolved)!r}{hint}")

    def _valid(self, schema: Schema, value: Any) -> bool:
        schema = _deref(schema, self.names)
        if isinstance(schema, list):
            return bool(schema) and self._valid(schema[0], value)
        kind = _kind(schema)
        if kind in _VALID_DEFAULT:
            return _VALID_DEFAULT[kind](value)
        if kind == "fixed":
            return _VALID_DEFAULT["bytes"](value) and len(value) == schema["size"]
        if kind == "enum":
            return isinstance(value, str) and value in schema["symbols"]
        if kind == "array":
            return isinstance(value, list) and all(self._valid(schema["items"], v) for v in value)
        if kind == "map":
            return isinstance(value, dict) and all(self._valid(schema["values"], v) for v in value.values())
        return isinstance(value, dict) and all(
            self._valid(f["type"], value[f["name"]]) if f["name"] in value else "default" in f
            for f in schema["fields"]
        )


def _load(text_or_obj: Any) -> Any:
    if isinstance(text_or_obj, bytes | bytearray):
        try:
            text_or_obj = text_or_obj.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidSchema(f"schema text is not UTF-8: {exc}") from None
    if not isinstance(text_or_obj, str):
        return text_or_obj
    text = text_or_obj.strip()
    if _is_fullname(text):  # a bare type name such as int or com.acme.Money (not valid JSON on its own)
        return text
    try:
        return json.loads(text_or_obj)
    except json.JSONDecodeError as exc:
        raise InvalidSchema(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _parse(text_or_obj: Any) -> tuple[Schema, Names]:
    parser = _Parser()
    try:
        schema = parser.parse(_load(text_or_obj), "", "")
        parser.check_defaults()
        for logical in parser.logical:  # logical-type parameters are validated as fastavro does
            try:
                _fastavro.parse_schema(copy.deepcopy(logical))
            except Exception as exc:  # fastavro raises assorted exception types
                raise InvalidSchema(f"invalid {logical['logicalType']!r} logical type: {exc}") from exc
    except RecursionError:
        raise InvalidSchema("schema is nested too deeply") from None
    return schema, parser.names


def parse_schema(text_or_obj: Any) -> Schema:
    """Validate a schema (JSON text or loaded object) and return its expanded JSON form.

    Named types carry their full name in ``name`` and full-name ``aliases`` (``namespace`` is dropped, except
    ``""`` for a null-namespace type inside a namespaced one); later uses of a named type are references by
    full name.  Raises InvalidSchema when invalid.
    """
    return _parse(text_or_obj)[0]


def canonical_form(schema: Any) -> str:
    """The Avro Parsing Canonical Form of a schema (JSON text, loaded or already parsed)."""
    return json.dumps(_canonical(parse_schema(schema)), separators=(",", ":"), ensure_ascii=False)


def _canonical(schema: Schema) -> Any:
    """Strip an expanded schema to the canonical attributes (names are already full names)."""
    if isinstance(schema, list):
        return [_canonical(branch) for branch in schema]
    kind = _kind(schema)
    if isinstance(schema, str) or kind in PRIMITIVES:
        return kind
    if kind in ("array", "map"):
        key = "items" if kind == "array" else "values"
        return {"type": kind, key: _canonical(schema[key])}
    out = {"name": schema["name"], "type": kind}  # an "error" is a record
    if kind == "record":
        out["fields"] = [{"name": f["name"], "type": _canonical(f["type"])} for f in schema["fields"]]
    else:
        out["symbols" if kind == "enum" else "size"] = schema["symbols" if kind == "enum" else "size"]
    return out


Reasons = list[tuple[str, str]]  # (path relative to the pair being checked, message)


def _prefixed(segment: str, reasons: Reasons) -> Reasons:
    return [(segment + path, message) for path, message in reasons]


class _Checker:
    """Reader/writer resolution check; record pairs are memoised so recursive types terminate."""

    def __init__(self, reader_names: Names, writer_names: Names) -> None:
        self._reader_names, self._writer_names = reader_names, writer_names
        self._memo: dict[tuple[int, int], Reasons | None] = {}  # None: check in progress

    def check(self, reader: Schema, writer: Schema) -> Reasons:
        reader, writer = _deref(reader, self._reader_names), _deref(writer, self._writer_names)
        if isinstance(writer, list):
            return [r for i, branch in enumerate(writer) for r in _prefixed(f"/{i}", self.check(reader, branch))]
        if isinstance(reader, list):
            branch = self._select_branch(reader, writer)
            if branch is None:
                return [("", f"writer type '{_describe(writer)}' matches no branch of reader '{_describe(reader)}'")]
            return self.check(branch, writer)
        return self._check_single(reader, writer)

    def _select_branch(self, union: list[Schema], writer: Schema) -> Schema | None:
        branches = [_deref(b, self._reader_names) for b in union]
        kind = _kind(writer)
        for branch in branches:
            if _kind(branch) == kind and (kind not in _NAMED or self._names_match(branch, writer)):
                return branch
        promotable = _PROMOTIONS.get(kind, ())
        return next((b for b in branches if _kind(b) in promotable), None)

    @staticmethod
    def _names_match(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
        """The spec (and Java's SchemaCompatibility, which Confluent uses) match *unqualified* names;
        the reader's aliases, which are full names, may also name the writer."""
        if reader["name"].rsplit(".", 1)[-1] == writer["name"].rsplit(".", 1)[-1]:
            return True
        return writer["name"] in reader.get("aliases", [])

    def _check_single(self, reader: Schema, writer: Schema) -> Reasons:
        rkind, wkind = _kind(reader), _kind(writer)
        if rkind != wkind:
            if rkind in _PROMOTIONS.get(wkind, ()):
                return []
            return [("", f"writer type '{_describe(writer)}' cannot be read as '{_describe(reader)}'")]
        rdec, wdec = _decimal(reader), _decimal(writer)
        if rdec and wdec and rdec != wdec:
            message = f"decimal precision/scale changed: '{_describe(writer)}' read as '{_describe(reader)}'"
            return [("", message)]
        if rkind in PRIMITIVES:
            return []
        r, w = cast(dict[str, Any], reader), cast(dict[str, Any], writer)
        if rkind in _NAMED and not self._names_match(r, w):
            return [("", f"writer {wkind} {w['name']!r} does not match reader name {r['name']!r} or its aliases")]
        if rkind == "record":
            return self._check_record(r, w)
        if rkind == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            return [("/symbols", f"writer symbols {missing} missing in reader enum without a default")
                    ] if missing and "default" not in r else []
        if rkind == "fixed":
            return [] if r["size"] == w["size"] else [
                ("/size", f"writer fixed size {w['size']} differs from reader size {r['size']}")]
        key = "items" if rkind == "array" else "values"
        return _prefixed(f"/{key}", self.check(r[key], w[key]))

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any]) -> Reasons:
        key = (id(reader), id(writer))
        if key in self._memo:
            return self._memo[key] or []  # in progress (recursive type): assume compatible
        self._memo[key] = None
        writer_fields = {f["name"]: f for f in writer["fields"]}
        reasons: Reasons = []
        for field in reader["fields"]:
            name = field["name"]
            match = next((writer_fields[n] for n in [name, *field.get("aliases", [])] if n in writer_fields), None)
            if match is not None:
                reasons += _prefixed(f"/fields/{name}/type", self.check(field["type"], match["type"]))
            elif "default" not in field:
                reasons.append((f"/fields/{name}", "reader field has no default and is missing in writer"))
        self._memo[key] = reasons
        return reasons


def _incompatibilities(reader: tuple[Schema, Names], writer: tuple[Schema, Names]) -> list[str]:
    try:
        reasons = _Checker(reader[1], writer[1]).check(reader[0], writer[0])
    except RecursionError:
        raise InvalidSchema("schema is nested too deeply") from None
    return [f"{_at(path)}: {message}" for path, message in reasons]


def reader_writer_incompatibilities(reader: Any, writer: Any) -> list[str]:
    """Reasons why data written with `writer` cannot be read with `reader`; empty when it can."""
    return _incompatibilities(_parse(reader), _parse(writer))


def check_compatibility(new: Any, previous: list[Any], level: str) -> list[str]:
    """Check `new` against `previous` (oldest..newest) at a Confluent-style compatibility level.

    BACKWARD: new reads data written by the latest previous; FORWARD: the latest previous reads data
    written by new; FULL: both.  *_TRANSITIVE levels check every previous version.  "version N" in the
    reasons is the N-th (1-based) entry of `previous`.  Raises ValueError for an unknown level.
    """
    if level not in COMPATIBILITY_LEVELS:
        raise ValueError(f"unknown compatibility level {level!r}; expected one of {', '.join(COMPATIBILITY_LEVELS)}")
    if level == "NONE" or not previous:
        return []
    candidate = _parse(new)
    versions = list(enumerate(previous, start=1))
    if not level.endswith("_TRANSITIVE"):
        versions = versions[-1:]
    reasons: list[str] = []
    for number, schema in versions:
        try:
            old = _parse(schema)
        except InvalidSchema as exc:
            raise InvalidSchema(f"previous version {number}: {exc}") from None
        if level.startswith(("BACKWARD", "FULL")):
            reasons += [f"reader new vs writer version {number}: {r}" for r in _incompatibilities(candidate, old)]
        if level.startswith(("FORWARD", "FULL")):
            reasons += [f"reader version {number} vs writer new: {r}" for r in _incompatibilities(old, candidate)]
    return reasons
