"""A decoded event -> the rows of its reporting tables (pure), and the SQL that writes them.

Values keep their Python types (Decimal, date, aware datetime), so psycopg sends them exactly; jsonb
columns get JSON text (a decimal as its exact string, dates ISO 8601, bytes hex).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from bizbus.failures import Permanent

from .mapping import COORD_COLUMNS, Column, Layout, ident


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, default=_json_default, ensure_ascii=False, sort_keys=True)


def value_at(record: Any, col: Column) -> Any:
    """The value of ``col`` in ``record``: None where the path ends early (a NULL nested record, a field an
    older schema version does not have)."""
    cur = record
    for part in col.path:
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return to_json(cur) if col.json else cur


@dataclass(frozen=True)
class Rows:
    """What one event writes: the key, its current-state / history row and its document lines."""

    key: tuple[Any, ...]
    event_id: str
    row: dict[str, Any]  # current state (the history row adds history_json)
    history_extra: dict[str, Any]
    lines: dict[str, list[dict[str, Any]]]  # line table -> rows (without the key columns)


def build(lay: Layout, record: dict[str, Any], partition: int, offset: int) -> Rows:
    """The rows of one decoded event; a missing or empty business key is a ``Permanent`` error (dead letter)."""
    row = {c.name: value_at(record, c) for c in lay.columns}
    key = tuple(row[k] for k in lay.key)
    missing = [k for k, v in zip(lay.key, key, strict=True) if v is None or (isinstance(v, str) and not v.strip())]
    if missing:
        raise Permanent(f"{lay.topic}: the business key field(s) {', '.join(missing)} are empty", reason="missing_key")
    event_id = row.get(lay.event_col)
    if not event_id:
        raise Permanent(f"{lay.topic}: the event has no meta.event_id", reason="missing_key")
    row["kafka_partition"], row["kafka_offset"] = partition, offset
    extra = {c.name: value_at(record, c) for c in lay.history_json}
    lines: dict[str, list[dict[str, Any]]] = {}
    for lt in lay.lines:
        items = record.get(lt.field) or []
        out, seen = [], set()
        for item in items:
            line = {c.name: value_at(item, c) for c in lt.columns}
            if line.get("line_no") is None or line["line_no"] in seen:
                raise Permanent(f"{lay.topic} {key}: {lt.field} has a missing or repeated line_no "
                                f"{line.get('line_no')!r}", reason="bad_lines")  # fmt: skip
            seen.add(line["line_no"])
            out.append(line)
        lines[lt.table] = out
    return Rows(key, str(event_id), row, extra, lines)


def _cast(name: str, kind: str) -> str:
    return f"%({name})s::{kind}"


@dataclass(frozen=True)
class Statements:
    """The SQL of one layout (rendered once per layout), named parameters taken from :class:`Rows`."""

    upsert: str
    history: str
    delete_lines: dict[str, str]
    insert_line: dict[str, str]


def statements(schema: str, lay: Layout, extra_columns: dict[str, tuple[str, ...]] | None = None) -> Statements:
    """Upsert of the current state (a newer version -- or with no version field, a later offset of the same
    partition -- wins; an older one changes nothing), history insert, and the line replacement that only
    happens when the upsert did (the current row then carries this event's id)."""
    s = ident(schema)
    cur_cols = [*((c.name, c.type) for c in lay.columns), *COORD_COLUMNS]
    names = ", ".join(ident(n) for n, _ in cur_cols)
    values = ", ".join(_cast(n, t) for n, t in cur_cols)
    keys = ", ".join(map(ident, lay.key))
    sets = ", ".join(f"{ident(n)} = EXCLUDED.{ident(n)}" for n, _ in cur_cols if n not in lay.key)
    t = f"{s}.{ident(lay.table)}"
    if lay.version is not None:
        newer = f"{t}.{ident(lay.version)} <= EXCLUDED.{ident(lay.version)}"
    else:
        newer = (f"({t}.kafka_partition <> EXCLUDED.kafka_partition OR {t}.kafka_offset <= EXCLUDED.kafka_offset)")
    upsert = (f"INSERT INTO {t} ({names}) VALUES ({values}) ON CONFLICT ({keys}) DO UPDATE SET {sets}, "
              f"updated_at = now() WHERE {newer}")  # fmt: skip
    hist_cols = cur_cols[: len(lay.columns)] + [(c.name, c.type) for c in lay.history_json] + list(COORD_COLUMNS)
    history = (f"INSERT INTO {s}.{ident(lay.history)} ({', '.join(ident(n) for n, _ in hist_cols)}) VALUES "
               f"({', '.join(_cast(n, ty) for n, ty in hist_cols)}) ON CONFLICT ({ident(lay.event_col)}) DO NOTHING")  # fmt: skip
    key_match = " AND ".join(f"{ident(k)} = {_cast('k_' + k, lay.column(k).type)}" for k in lay.key)
    won = f"EXISTS (SELECT 1 FROM {t} WHERE {key_match} AND {ident(lay.event_col)} = %(k__event_id)s)"
    delete_lines, insert_line = {}, {}
    for lt in lay.lines:
        lt_t = f"{s}.{ident(lt.table)}"
        delete_lines[lt.table] = f"DELETE FROM {lt_t} WHERE {key_match} AND {won}"
        lcols = [(k, lay.column(k).type, "k_" + k) for k in lay.key] + [(c.name, c.type, "l_" + c.name) for c in lt.columns]
        insert_line[lt.table] = (f"INSERT INTO {lt_t} ({', '.join(ident(n) for n, _, _ in lcols)}) SELECT "
                                 f"{', '.join(_cast(p, ty) for _, ty, p in lcols)} WHERE {won}")  # fmt: skip
    return Statements(upsert, history, delete_lines, insert_line)


def params(lay: Layout, rows: Rows) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """(upsert params, history params, key params, line table -> params of each line)."""
    key = {f"k_{k}": v for k, v in zip(lay.key, rows.key, strict=True)}
    key["k__event_id"] = rows.event_id
    hist = {**rows.row, **rows.history_extra}
    lines = {t: [{**key, **{f"l_{n}": v for n, v in line.items()}} for line in ls] for t, ls in rows.lines.items()}
    return rows.row, hist, key, lines
