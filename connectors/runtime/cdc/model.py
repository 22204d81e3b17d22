"""What a CDC source reads from a database log, vendor-neutral: row changes grouped in committed
transactions, and the ``LogReader`` each vendor folder implements (PostgreSQL logical decoding, MariaDB
binlog).

    LogReader.setup(resume)      resume: the last position the journal holds (None: nothing yet)
    LogReader.snapshot(tables)   a consistent snapshot of the tables (op "read"), every chunk carrying the
                                 handover position: the stream then starts right after it (no gap, no
                                 duplicate)
    LogReader.read(max_rows, t)  committed transactions after the stream position, in commit order
    LogReader.confirm(position)  the journal holds everything up to ``position`` and it was published:
                                 the database may forget it (PG: the slot's flush LSN)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bizbus.failures import Fatal

Op = Literal["insert", "update", "delete", "read"]
OPS: tuple[str, ...] = ("insert", "update", "delete", "read")

# the type families a vendor reader reports for a column (what a mapping's schema check compares)
FAMILIES = ("text", "integer", "numeric", "float", "boolean", "date", "timestamp", "time", "json", "bytes", "other")


@dataclass(frozen=True)
class RowChange:
    """One row image change. ``table``: the table's bare name, as the mapping names it (a connector
    captures one PostgreSQL schema / one MariaDB database, so one mapping fits both); ``key``: the primary
    key columns and values; ``before`` / ``after``: the row images (None for an insert's before, a delete's
    after). ``columns``: the table's columns as the log described them when the change was logged
    (name -> type family, see ``FAMILIES``); None when the reader does not know (no schema check)."""

    table: str
    op: Op
    key: Mapping[str, Any]
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    columns: Mapping[str, str] | None = None

    @property
    def image(self) -> Mapping[str, Any]:
        """The row as it is after the change (the before image of a delete)."""
        return self.after if self.after is not None else (self.before or {})


@dataclass(frozen=True)
class Transaction:
    """One committed transaction (or one chunk of a snapshot). ``position``: where the log has it, as
    text (PG: the commit LSN ``0/16B3748``; MariaDB: the GTID ``0-1-42``); unique per transaction."""

    position: str
    commit_time: datetime
    changes: tuple[RowChange, ...]


class SchemaIncompatible(Fatal):
    """A captured table changed in a way the mapping cannot follow (a mapped column dropped, its type
    changed): the connector stops; the change stays unconfirmed in the database's log (nothing lost)."""

    default_reason = "schema_incompatible"


class LogReader(ABC):
    """One vendor's log reader. Not thread-safe: the capture task alone calls it."""

    @abstractmethod
    def setup(self, resume: str | None) -> None:
        """Connect. ``resume``: the last position in the journal (a transaction's, or a snapshot's handover
        position); None when the journal is empty, and ``snapshot`` is called next."""

    @abstractmethod
    def snapshot(self, tables: tuple[str, ...]) -> Iterator[Transaction]:
        """Every row of ``tables`` as ``read`` changes, in chunks, read in one consistent snapshot; each
        chunk's ``position`` is the handover position where ``read`` then starts. Yields at least one chunk
        (with no changes when the tables are empty), so the handover position is known."""

    @abstractmethod
    def read(self, max_rows: int, timeout: float) -> list[Transaction]:
        """Committed transactions after the last one returned (or the resume / handover position), whole,
        in commit order; waits up to ``timeout`` s for the first; stops after about ``max_rows`` changes."""

    @abstractmethod
    def confirm(self, position: str) -> None:
        """Everything up to and including ``position`` is durable downstream (journal + broker)."""

    def lag(self) -> float | None:
        """Seconds between the newest commit read and now (None: unknown)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Disconnect (keeps the slot / the stored position)."""
