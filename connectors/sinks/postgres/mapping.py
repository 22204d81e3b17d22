"""Columns of the ``pg-table`` sink: each filled from a dotted path into the decoded event or from the
record's coordinates (``$effect_id``, ``$topic``, ``$partition``, ``$offset``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bizbus.connectors.runtime.sink import SinkRecord, field_at

COORDINATES: dict[str, Callable[[SinkRecord], Any]] = {
    "$effect_id": lambda r: r.effect_id, "$topic": lambda r: r.topic,
    "$partition": lambda r: r.partition, "$offset": lambda r: r.offset,
}  # fmt: skip


def _getter(path: str) -> Callable[[SinkRecord], Any]:
    """The value at ``path`` of a record, the path split once (not once per record and column)."""
    if path in COORDINATES:
        return COORDINATES[path]
    parts = tuple(path.split("."))

    def get(r: SinkRecord) -> Any:
        cur = r.value
        try:
            for part in parts:
                cur = cur[part]
        except (KeyError, TypeError, IndexError):
            return field_at(r.value, path)  # raises the Permanent error naming the missing part
        return cur

    return get


class ColumnMapper:
    """The row of a record: each column filled from its path (a missing field is a per-record Permanent
    error). Called like a :data:`RowFn`; :meth:`values` gives the same row as a tuple in ``columns``
    order, for COPY (no dict per record)."""

    def __init__(self, columns: dict[str, str]) -> None:
        self.columns = tuple(columns)
        self._getters = tuple(_getter(path) for path in columns.values())

    def __call__(self, r: SinkRecord) -> dict[str, Any]:
        return dict(zip(self.columns, self.values(r), strict=True))

    def values(self, r: SinkRecord) -> tuple[Any, ...]:
        return tuple([get(r) for get in self._getters])


def column_mapper(columns: dict[str, str]) -> ColumnMapper:
    """A row function filling each column from its path (a missing field is a per-record Permanent error)."""
    return ColumnMapper(columns)
