"""The CDC mapping (YAML): which table rows become which canonical records.

    source_system: jxc-pg               # meta.source_system and the first part of every event id
    constants: {company: C100}          # usable as {const: ...} and in key templates
    units: [PCS, KG, M]                 # a field with `unit: true` must hold one of these (else dead letter)
    entities:                           # one record per row change
      - {name: material, table: materials, topic: bizbus.md.material.v1, key: "{code}",
         deletes: skip, where: {kind: issue}, fields: {code: code, version: {meta: version}, ...}}
    documents:                          # header + lines, assembled from the log-ordered row images
      - {name: sales_order, topic: bizbus.sales.order.v1, key: "{order_no}",
         header: {table: sales_orders, key: [order_no]},
         lines: {table: sales_order_lines, key: [order_no, line_no], parent: [order_no], order_by: line_no},
         fields: {...}, line_fields: {...}}

A field is a column name, or ``{column|const|meta|sub|line: ..., type, scale, map, unit, min, default}``
(see ``Field``); ``meta`` is one of op, version, commit_time, position, source_system.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bizbus.errors import ConfigError

_FROZEN = ConfigDict(frozen=True, extra="forbid")
TYPES = ("string", "int", "decimal", "date", "timestamp", "bool", "raw")


class FieldSpec(BaseModel):
    """How one record field is made from a row image."""

    model_config = _FROZEN
    column: str | None = Field(default=None, description="the column the value comes from")
    const: Any = Field(default=None, description="a constant value (or the name of a mapping constant, '$name')")
    meta: Literal["op", "version", "commit_time", "position", "source_system"] | None = Field(
        default=None, description="a value of the change, not of the row")
    sub: tuple[str, str] | None = Field(default=None, description="column a minus column b (decimal)")
    line: dict[str, FieldSpec] | None = Field(default=None, description="a one-line list made from this row")
    type: Literal["string", "int", "decimal", "date", "timestamp", "bool", "raw"] = Field(
        default="raw", description="the value's type in the record")
    scale: int | None = Field(default=None, ge=0, le=18, description="decimal places a decimal is quantized to")
    map: dict[str, Any] | None = Field(default=None, description="value translation; a value not listed is a dead letter")
    unit: bool = Field(default=False, description="the value must be one of the mapping's units")
    min: float | None = Field(default=None, description="smallest value allowed (e.g. 0: no negative quantity)")
    default: Any = Field(default=None, description="the value when the column is NULL")
    required: bool = Field(default=False, description="NULL (and no default) is a dead letter")

    @model_validator(mode="before")
    @classmethod
    def _short_line(cls, v: Any) -> Any:
        if isinstance(v, dict) and isinstance(v.get("line"), dict):
            v = {**v, "line": _fields(v["line"])}
        return v

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        given = [k for k in ("column", "const", "meta", "sub", "line")
                 if getattr(self, k) is not None or k in self.model_fields_set]  # fmt: skip
        if len(given) != 1:
            raise ValueError(f"a field needs exactly one of column, const, meta, sub, line (got {given or 'none'})")
        return self

    def columns(self) -> set[str]:
        cols = {self.column} if self.column else set()
        cols |= set(self.sub or ())
        for f in (self.line or {}).values():
            cols |= f.columns()
        return cols


def _fields(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: ({"column": v} if isinstance(v, str) else v) for k, v in raw.items()}
    return raw


class EntityMap(BaseModel):
    model_config = _FROZEN
    name: str
    table: str = Field(description="the table's bare name (the connector captures one schema / database)")
    topic: str
    key: str = Field(description="the record key, a template of columns and constants: '{warehouse}/{material}'")
    where: dict[str, Any] = Field(default_factory=dict, description="only rows whose columns equal these values")
    deletes: Literal["emit", "skip"] = Field(default="emit", description="emit: a delete is a record (op DELETED)")
    fields: dict[str, FieldSpec]

    @model_validator(mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        return {**v, "fields": _fields(v.get("fields"))} if isinstance(v, dict) else v

    def columns(self) -> set[str]:
        return {c for f in self.fields.values() for c in f.columns()} | set(self.where) | _template_cols(self.key)


class TablePart(BaseModel):
    model_config = _FROZEN
    table: str
    key: tuple[str, ...] = Field(description="columns that identify the row within the document")
    parent: tuple[str, ...] = Field(default=(), description="lines: the columns holding the header's key")
    order_by: str | None = Field(default=None, description="lines: the column the lines are sorted by")


class DocumentMap(BaseModel):
    model_config = _FROZEN
    name: str
    topic: str
    key: str
    header: TablePart
    lines: TablePart
    fields: dict[str, FieldSpec]
    line_fields: dict[str, FieldSpec]
    lines_field: str = Field(default="lines", description="the record field holding the lines")

    @model_validator(mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        if isinstance(v, dict):
            v = {**v, "fields": _fields(v.get("fields")), "line_fields": _fields(v.get("line_fields"))}
        return v

    @model_validator(mode="after")
    def _parent(self) -> DocumentMap:
        if len(self.lines.parent) != len(self.header.key):
            raise ValueError(f"document {self.name}: lines.parent must name one column per header key column")
        return self

    def header_columns(self) -> set[str]:
        return {c for f in self.fields.values() for c in f.columns()} | set(self.header.key) | _template_cols(self.key)

    def line_columns(self) -> set[str]:
        cols = {c for f in self.line_fields.values() for c in f.columns()}
        return cols | set(self.lines.key) | set(self.lines.parent) | ({self.lines.order_by} - {None})


class CdcMapping(BaseModel):
    """A whole mapping file."""

    model_config = _FROZEN
    source_system: str = Field(description="meta.source_system of every record, first part of its event id")
    constants: dict[str, Any] = Field(default_factory=dict)
    units: tuple[str, ...] = Field(default=(), description="units a `unit: true` field accepts")
    entities: tuple[EntityMap, ...] = ()
    documents: tuple[DocumentMap, ...] = ()

    def tables(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for e in self.entities:
            seen[e.table] = None
        for d in self.documents:
            seen[d.header.table] = None
            seen[d.lines.table] = None
        return tuple(seen)

    def topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([e.topic for e in self.entities] + [d.topic for d in self.documents]))

    def mapped_columns(self, table: str) -> set[str]:
        cols: set[str] = set()
        for e in self.entities:
            if e.table == table:
                cols |= e.columns()
        for d in self.documents:
            if d.header.table == table:
                cols |= d.header_columns()
            if d.lines.table == table:
                cols |= d.line_columns()
        return cols


def _template_cols(template: str) -> set[str]:
    import string

    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def load_mapping(path: str | Path) -> CdcMapping:
    """The mapping file; a relative path is read from the working directory, else from the installation."""
    from bizbus.settings import PROJECT_ROOT

    p = Path(path)
    if not p.is_absolute() and not p.exists() and (PROJECT_ROOT / p).exists():
        p = PROJECT_ROOT / p
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the CDC mapping {p}: {exc}") from None
    try:
        return CdcMapping.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"the CDC mapping {p} is not valid: {exc}") from None
