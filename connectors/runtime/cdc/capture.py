"""The capture task: reads the database's log under the lease ``capture`` and writes the journal.

    lease ──► journal's last position ──► reader.setup(resume)
                 │ empty journal: reader.snapshot(tables) ──► one add_many (chunks + handover marker)
                 ▼
    loop: reader.read() ──► schema check ──► journal (add_many: one state-DB transaction)
          every ``confirm_every`` s: the publishing cursor (shard ``inbox``) ──► the newest whole
          transaction it passed ──► reader.confirm(position)   (PG: the slot's flush LSN)

A crash anywhere re-reads from the database's confirmed position; what the journal already holds is
dropped by its delivery id (position + chunk). The snapshot goes in whole or not at all: a crash during
it takes a new one (the log position it hands over at is new, and nothing of the first went in).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from bizbus.connectors.runtime.base import Task
from bizbus.connectors.runtime.cdc.journal import JournalPositions, deliveries, snapshot_deliveries
from bizbus.connectors.runtime.cdc.mapping import CdcMapping
from bizbus.connectors.runtime.cdc.model import LogReader, SchemaIncompatible, Transaction
from bizbus.connectors.runtime.cdc.schema import SchemaGuard
from bizbus.connectors.runtime.cursor import PgCursorStore
from bizbus.connectors.runtime.inbox.store import PgInbox, inbox_table
from bizbus.connectors.runtime.lease import PgLease

log = logging.getLogger(__name__)


class CaptureTask(Task):
    def __init__(self, connector: str, reader: LogReader, mapping: CdcMapping, inbox: PgInbox, state_dsn: str,
                 state_schema: str, max_rows: int = 5000, wait: float = 0.2, chunk_rows: int = 500,
                 confirm_every: float = 0.5) -> None:  # fmt: skip
        self.connector, self.reader, self.mapping, self.inbox = connector, reader, mapping, inbox
        self.state_dsn, self.state_schema = state_dsn, state_schema
        self.max_rows, self.wait, self.chunk_rows, self.confirm_every = max_rows, wait, chunk_rows, confirm_every
        self.positions = JournalPositions(state_schema, inbox_table(connector))
        self.guard = SchemaGuard(connector, state_schema, {t: mapping.mapped_columns(t) for t in mapping.tables()})
        self._started = False
        self._paused = False
        self._confirm_at = 0.0
        self.confirmed: str | None = None  # the position last confirmed to the database's log
        self._confirmed_id = 0  # its journal row
        self.journaled = 0  # changes written to the journal by this task (for tests and the curious)

    def setup(self) -> None:
        self.lease = PgLease(self.state_dsn, self.connector, "capture")
        self.cursors = PgCursorStore(self.state_dsn, self.state_schema)
        self.inbox.setup()

    def _start(self) -> bool:
        if not self.lease.try_acquire():
            return False
        conn = self.lease.conn
        self.cursors.setup(conn=conn)
        self.guard.setup(conn)
        _kind, position = self.positions.last(conn)
        self.reader.setup(position)
        self._started = True
        if position is None:
            log.info("cdc %s: the journal is empty; taking the initial snapshot of %s", self.connector,
                     ", ".join(self.mapping.tables()))  # fmt: skip
            ds = snapshot_deliveries(self._checked(self.reader.snapshot(self.mapping.tables())), self.chunk_rows)
            self.inbox.add_many(ds, "snapshot")
            rows = sum(len(d.payload["changes"]) for d in ds)
            self.journaled += rows
            log.info("cdc %s: snapshot of %d row(s) journaled; streaming from %s", self.connector, rows,
                     ds[-1].payload["position"] if ds else "?")  # fmt: skip
        else:
            log.info("cdc %s: capture lease taken; the journal ends at %s", self.connector, position)
        return True

    def _checked(self, txs: Iterator[Transaction] | list[Transaction]) -> Iterator[Transaction]:
        for tx in txs:
            for c in tx.changes:
                if c.columns is not None:
                    self.guard.check(self.lease.conn, c.table, c.columns)
            yield tx

    def step(self) -> int:
        if self._paused:
            return 0
        if not self._started and not self._start():
            return 0
        txs = self.reader.read(self.max_rows, self.wait)
        n = 0
        if txs:
            ok: list[Transaction] = []
            try:
                for tx in self._checked(txs):
                    ok.append(tx)
            except SchemaIncompatible:
                self._journal(ok)  # what came before the change is kept; the rest stays in the log
                raise
            n = self._journal(ok)
        self._confirm()
        return n

    def _journal(self, txs: list[Transaction]) -> int:
        ds = [d for tx in txs for d in deliveries(tx, self.chunk_rows)]
        if ds:
            self.inbox.add_many(ds, "log")
        n = sum(len(tx.changes) for tx in txs)
        self.journaled += n
        return n

    def _confirm(self) -> None:
        now = time.monotonic()
        if now < self._confirm_at:
            return
        self._confirm_at = now + self.confirm_every
        cursor = self.cursors.load(self.connector, "inbox")
        if not cursor:
            return
        found = self.positions.published(self.lease.conn, int(cursor.get("id", 0)))
        # forward only: after a lost broker the publishing cursor starts again from the journal's beginning
        if found is not None and found[0] > self._confirmed_id:
            self.reader.confirm(found[1])
            self._confirmed_id, self.confirmed = found

    def recover(self) -> None:
        """After a failed step: start over from the journal and the database's confirmed position."""
        self._started = False
        self.confirmed, self._confirmed_id = None, 0
        try:
            self.reader.close()
        finally:
            self.lease.release()

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def problem(self) -> str | None:
        return None if self._started or self._paused else "waiting for the capture lease"

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.inbox.close()
            if getattr(self, "lease", None) is not None:
                self.lease.release()
