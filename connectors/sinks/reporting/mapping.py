"""Avro schema -> reporting tables (pure): names, column types, business keys, the DDL to create or extend them.

One catalogue topic gets three tables in the reporting schema (``bizbus.sales.order.v1`` -> ``sales_order``):

* ``sales_order``: the current state, one row per business key (:data:`BUSINESS_KEYS`), upserted;
* ``sales_order_line``: the lines of the document (a field that is an array of records with ``line_no``,
  i.e. ``bizbus.common.DocumentLine`` / ``bizbus.finance.VoucherLine``), keyed by business key + ``line_no``;
* ``sales_order_history``: every event, append only, ``event_id`` unique.

Columns (:func:`sql_type`): decimal -> ``numeric(p,s)``, date -> ``date``, timestamp-* -> ``timestamptz``,
time-* -> ``time``, enum -> ``text``, map / other arrays / multi-branch unions -> ``jsonb``, a nested record
is flattened into ``<field>_<sub field>`` columns (``source_ref_system``). The envelope ``meta`` becomes
``event_id``, ``causation_id``, ``correlation_id``, ``source_system``, ``occurred_at`` and ``trace`` (jsonb)
-- prefixed ``meta_`` where the event has a field of that name (``bizbus.md.IdCrosswalk.source_system``).
Only business-key columns are NOT NULL: a record of an older schema version without a newer field writes
NULL there, and a new field of a newer version is an ``ADD COLUMN`` without default (catalogue only, no
rewrite of the table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

META_COLUMNS = ("event_id", "causation_id", "correlation_id", "source_system", "occurred_at", "trace")
COORD_COLUMNS = (("kafka_partition", "integer"), ("kafka_offset", "bigint"))
VERSION_FIELD = "version"

BUSINESS_KEYS: dict[str, tuple[str, ...]] = {
    "bizbus.pm.ProjectChanged": ("project",),
    "bizbus.pm.TaskChanged": ("task",),
    "bizbus.pm.TimesheetEntry": ("worklog_id",),
    "bizbus.pm.MaterialNeed": ("need_id",),
    "bizbus.oa.ApprovalChanged": ("instance_id",),
    "bizbus.oa.PaymentFreezeCommand": ("command_id",),
    "bizbus.purchase.PurchaseRequisition": ("requisition_no",),
    "bizbus.purchase.PurchaseOrder": ("order_no",),
    "bizbus.inventory.GoodsReceipt": ("receipt_no",),
    "bizbus.inventory.GoodsIssue": ("issue_no",),
    "bizbus.inventory.InventoryLevel": ("warehouse", "material"),
    "bizbus.inventory.ReplenishmentAlert": ("warehouse", "material"),
    "bizbus.sales.SalesOrder": ("order_no",),
    "bizbus.sales.OrderDecision": ("order_no",),
    "bizbus.hr.Attendance": ("attendance_id",),
    "bizbus.finance.CostEntry": ("entry_id",),
    "bizbus.finance.Voucher": ("voucher_no",),
    "bizbus.finance.BudgetAlert": ("project",),
    "bizbus.md.CostCenter": ("code",),
    "bizbus.md.Supplier": ("code",),
    "bizbus.md.Employee": ("code",),
    "bizbus.md.Material": ("code",),
    "bizbus.md.IdCrosswalk": ("entity_type", "source_system", "source_id", "target_system"),
    "bizbus.ops.DeadLetter": ("event_id",),
}
"""The business key of each canonical event: the fields that name the thing whose current state is kept
(``event_id`` for events that are facts of their own). A pipeline may override it per topic."""

_TOPIC = re.compile(r"^bizbus\.([a-z0-9_-]+(?:\.[a-z0-9_-]+)*)\.v([0-9]+)$")
_PRIMITIVE = {"string": "text", "boolean": "boolean", "int": "integer", "long": "bigint", "float": "real",
              "double": "double precision", "bytes": "bytea"}  # fmt: skip
_LOGICAL = {"date": "date", "timestamp-millis": "timestamp with time zone",
            "timestamp-micros": "timestamp with time zone", "time-millis": "time without time zone",
            "time-micros": "time without time zone", "uuid": "text"}  # fmt: skip


class SchemaMismatch(Exception):
    """A schema the reporting tables cannot take (a column would change type, a key field is missing)."""


@dataclass(frozen=True)
class Column:
    """One column: its name, its type as ``format_type`` spells it, where its value comes from (a field path
    in the event; ``json``: encode the value as jsonb) and whether it may be NULL."""

    name: str
    type: str
    path: tuple[str, ...]
    nullable: bool = True
    json: bool = False


@dataclass(frozen=True)
class LineTable:
    """The lines of a document: the array field they come from and their columns (keys added by the layout)."""

    field: str
    table: str
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Layout:
    """The tables of one topic for one schema version."""

    topic: str
    schema: str  # the record's full name
    table: str  # current state; history = table + "_history"
    key: tuple[str, ...]  # business-key column names (also the key columns of the line tables)
    version: str | None  # the column ordering versions, None: offset order
    columns: tuple[Column, ...]  # of the current-state and history tables (coordinates not included)
    lines: tuple[LineTable, ...]
    history_json: tuple[Column, ...]  # the line arrays as jsonb, in the history table only

    @property
    def history(self) -> str:
        return self.table + "_history"

    @property
    def event_col(self) -> str:
        """The column of ``meta.event_id`` (``meta_event_id`` where the event has an ``event_id`` field)."""
        return next(c.name for c in self.columns if c.path == ("meta", "event_id"))

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def table_name(topic: str) -> str:
    """``bizbus.sales.order.v1`` -> ``sales_order``; a major version past 1 keeps its suffix (``_v2``)."""
    m = _TOPIC.match(topic)
    if not m:
        raise ValueError(f"{topic!r} is not a catalogue topic name (bizbus.<domain>.<event>.v<major>)")
    base = re.sub(r"[.-]", "_", m.group(1))
    return base if m.group(2) == "1" else f"{base}_v{m.group(2)}"


def _named(schema: Any, found: dict[str, Any]) -> None:
    """Every named type of ``schema`` by full name (fastavro's parsed schemas and catalog.load's alike)."""
    if isinstance(schema, list):
        for branch in schema:
            _named(branch, found)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            name = schema["name"]
            if "." not in name and schema.get("namespace"):
                name = f"{schema['namespace']}.{name}"
            found.setdefault(name, schema)
        for f in schema.get("fields", ()):
            _named(f["type"], found)
        for k in ("items", "values", "type"):
            if isinstance(schema.get(k), (dict, list)):
                _named(schema[k], found)


class _Types:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.named: dict[str, Any] = {}
        _named(schema, self.named)
        self.namespace = schema.get("namespace") or schema["name"].rpartition(".")[0]

    def resolve(self, t: Any) -> Any:
        if isinstance(t, str) and t not in _PRIMITIVE and t != "null":
            hit = self.named.get(t) or self.named.get(f"{self.namespace}.{t}")
            if hit is None:
                raise SchemaMismatch(f"type {t!r} is not defined in the schema")
            return hit
        return t

    def unwrap(self, t: Any) -> tuple[Any, bool]:
        """(the type without ``null``, nullable): ``["null", X]`` is a nullable X; other unions stay unions."""
        t = self.resolve(t)
        if isinstance(t, list):
            branches = [b for b in t if b != "null"]
            if len(branches) == 1:
                return self.resolve(branches[0]), len(branches) < len(t)
            return t, "null" in t
        return t, False


def sql_type(types: _Types, t: Any) -> str | None:
    """The column type of a (non-record, non-null-union) Avro type; None for a record."""
    if isinstance(t, list):
        return "jsonb"
    if isinstance(t, str):
        return _PRIMITIVE[t]
    kind = t.get("type")
    logical = t.get("logicalType")
    if logical == "decimal":
        return f"numeric({int(t['precision'])},{int(t.get('scale', 0))})"
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    if kind == "record":
        return None
    if kind == "enum":
        return "text"
    if kind in ("map", "array"):
        return "jsonb"
    if kind == "fixed":
        return "bytea"
    if isinstance(kind, (str, dict, list)):
        return sql_type(types, types.resolve(kind))
    raise SchemaMismatch(f"no column type for Avro type {t!r}")


def _flatten(types: _Types, field_type: Any, path: tuple[str, ...], prefix: str, nullable: bool) -> list[Column]:
    t, null = types.unwrap(field_type)
    kind = sql_type(types, t)
    if kind is not None:
        return [Column(prefix, kind, path, nullable or null, kind == "jsonb")]
    out: list[Column] = []
    for f in t["fields"]:
        out += _flatten(types, f["type"], (*path, f["name"]), f"{prefix}_{f['name']}", nullable or null)
    return out


def _line_item(types: _Types, field_type: Any) -> dict[str, Any] | None:
    """The record type of a document-lines field (an array of records with a ``line_no``), else None."""
    t, _ = types.unwrap(field_type)
    if isinstance(t, dict) and t.get("type") == "array":
        item, _ = types.unwrap(t["items"])
        if isinstance(item, dict) and item.get("type") == "record" and any(
                f["name"] == "line_no" and f["type"] in ("int", "long") for f in item["fields"]):  # fmt: skip
            return item
    return None


def layout(topic: str, schema: dict[str, Any], key: tuple[str, ...] | None = None, table: str | None = None) -> Layout:
    """The tables of ``topic`` for records of ``schema`` (a top-level event: ``meta`` first)."""
    types = _Types(schema)
    full = schema["name"] if "." in schema["name"] else f"{schema.get('namespace')}.{schema['name']}"
    fields = schema.get("fields") or []
    if not fields or fields[0]["name"] != "meta":
        raise SchemaMismatch(f"{full} is not a bizbus event (its first field is not meta)")
    business = {f["name"] for f in fields[1:]}
    key = tuple(key or BUSINESS_KEYS.get(full, ()))
    if not key:
        raise SchemaMismatch(f"no business key known for {full} (set keys for topic {topic})")
    meta_type, _ = types.unwrap(fields[0]["type"])
    cols: list[Column] = []
    for f in meta_type["fields"]:
        name = f["name"] if f["name"] not in business else f"meta_{f['name']}"
        cols += _flatten(types, f["type"], ("meta", f["name"]), name, False)
    lines: list[LineTable] = []
    history_json: list[Column] = []
    base = table or table_name(topic)
    for f in fields[1:]:
        item = _line_item(types, f["type"])
        if item is not None:
            suffix = "line" if f["name"] == "lines" else f["name"]
            line_cols: list[Column] = []
            for lf in item["fields"]:
                line_cols += _flatten(types, lf["type"], (lf["name"],), lf["name"], False)
            lines.append(LineTable(f["name"], f"{base}_{suffix}", tuple(line_cols)))
            history_json.append(Column(f["name"], "jsonb", (f["name"],), True, True))
            continue
        cols += _flatten(types, f["type"], (f["name"],), f["name"], False)
    by_name = {c.name: c for c in cols}
    if len(by_name) != len(cols):
        raise SchemaMismatch(f"{full}: two fields flatten to the same column name")
    for k in key:
        if k not in by_name or by_name[k].json:
            raise SchemaMismatch(f"{full} has no scalar field {k!r} for the business key of {topic}")
    cols = [Column(c.name, c.type, c.path, False, c.json) if c.name in key else c for c in cols]
    for lt in lines:
        clash = {c.name for c in lt.columns} & set(key)
        if clash:
            raise SchemaMismatch(f"{full}: line field(s) {sorted(clash)} clash with the business key")
    version = VERSION_FIELD if VERSION_FIELD in by_name and by_name[VERSION_FIELD].type in ("bigint", "integer") else None
    return Layout(topic, full, base, key, version, tuple(cols), tuple(lines), tuple(history_json))


# -- DDL ----------------------------------------------------------------------------------------------


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def wanted(lay: Layout) -> dict[str, list[tuple[str, str, bool]]]:
    """table -> [(column, type, nullable)] the layout needs, key columns first."""
    coords = [(n, t, False) for n, t in COORD_COLUMNS]
    key_cols = [(c.name, c.type, False) for c in lay.columns if c.name in lay.key]
    rest = [(c.name, c.type, c.name != lay.event_col) for c in lay.columns if c.name not in lay.key]
    out = {lay.table: key_cols + rest + coords,
           lay.history: key_cols + rest + [(c.name, c.type, True) for c in lay.history_json] + coords}  # fmt: skip
    for lt in lay.lines:
        out[lt.table] = key_cols + [(c.name, c.type, c.name != "line_no") for c in lt.columns]
    return out


def create_statements(schema: str, lay: Layout) -> list[tuple[str, str]]:
    """(table, statement): ``CREATE TABLE IF NOT EXISTS`` of the three kinds of table (and the history's key
    index, under the history table's name: made with it)."""
    keys = ", ".join(map(ident, lay.key))
    out = []
    for table, cols in wanted(lay).items():
        defs = [f"{ident(n)} {t}{'' if null else ' NOT NULL'}" for n, t, null in cols]
        defs.append("updated_at timestamp with time zone NOT NULL DEFAULT now()" if table == lay.table
                    else "landed_at timestamp with time zone NOT NULL DEFAULT now()")  # fmt: skip
        if table == lay.table:
            defs.append(f"PRIMARY KEY ({keys})")
        elif table == lay.history:
            defs.append(f"UNIQUE ({ident(lay.event_col)})")
        else:
            defs.append(f"PRIMARY KEY ({keys}, line_no)")
        out.append((table, f"CREATE TABLE IF NOT EXISTS {ident(schema)}.{ident(table)} ({', '.join(defs)})"))
    out.append((lay.history, f"CREATE INDEX IF NOT EXISTS {ident(lay.history + '_key')} ON {ident(schema)}.{ident(lay.history)} "
               f"({keys})"))  # fmt: skip
    return out


def reconcile(schema: str, lay: Layout, existing: dict[str, dict[str, str]]) -> list[str]:
    """The ``ALTER TABLE ... ADD COLUMN`` statements that bring ``existing`` (table -> column -> type, as
    ``format_type`` gives it) to the layout; :class:`SchemaMismatch` when a column would change its type
    (``numeric(18,2)`` -> ``numeric(18,4)``, ``text`` -> ``bigint``): that needs a person, not a sink.
    A column the schema no longer has stays (NULL in new rows)."""
    out, problems = [], []
    for table, cols in wanted(lay).items():
        have = existing.get(table)
        if have is None:
            continue  # created by create_statements
        stamp = "updated_at" if table == lay.table else "landed_at"
        if stamp not in have:  # a table made by hand
            out.append(f"ALTER TABLE {ident(schema)}.{ident(table)} ADD COLUMN IF NOT EXISTS {stamp} "
                       "timestamp with time zone NOT NULL DEFAULT now()")  # fmt: skip
        for name, kind, _null in cols:
            if name not in have:
                out.append(f"ALTER TABLE {ident(schema)}.{ident(table)} ADD COLUMN IF NOT EXISTS {ident(name)} {kind}")
            elif have[name] != kind:
                problems.append(f"{schema}.{table}.{name} is {have[name]}, the schema of {lay.topic} needs {kind}")
    if problems:
        raise SchemaMismatch("incompatible schema change: " + "; ".join(problems))
    return out
