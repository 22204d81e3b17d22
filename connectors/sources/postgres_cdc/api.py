"""The PostgreSQL ``LogReader`` (api.py: the client of the replication protocol): a pgoutput logical replication
slot (psycopg2's replication protocol) plus a publication of the mapped tables, both managed here."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import select
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg2
import psycopg2.extras
from bizbus.connectors.runtime.cdc import LogReader, RowChange, Transaction
from psycopg import sql

from bizbus.failures import Fatal, NotConnected
from bizbus.pgconn import close_quietly, connect

from .config import PostgresCdcConfig
from .convert import Begin, Change, Commit, Decoder, Relation, family, lsn_int, lsn_text

log = logging.getLogger(__name__)


class PgLogReader(LogReader):
    def __init__(self, config: PostgresCdcConfig, connector: str, tables: tuple[str, ...]) -> None:
        self.c, self.connector, self.tables = config, connector, tables
        self.slot = config.slot or f"bizbus_{connector.replace('-', '_')}"
        self.publication = config.publication or f"bizbus_{connector.replace('-', '_')}"
        self._admin: psycopg.Connection[Any] | None = None
        self._snap: psycopg.Connection[Any] | None = None  # the snapshot's transaction (blocks a new slot while open)
        self._repl: Any = None
        self._cur: Any = None
        self._decoder = Decoder()
        self._keys: dict[str, tuple[str, ...]] = {}
        self._tx: list[RowChange] | None = None
        self._begin: Begin | None = None
        self._ends: dict[str, int] = {}  # commit position -> end LSN (what is confirmed)
        self._last_read: str | None = None
        self._confirmed: str | None = None
        self._streaming = False
        self._newest = 0.0

    # -- set up --------------------------------------------------------------------------------------

    def setup(self, resume: str | None) -> None:
        self._admin = connect(self.c.dsn, f"cdc admin {self.connector}")
        self._keys = self._primary_keys()
        self._publication()
        self._repl = psycopg2.connect(self.c.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection,
                                      application_name=f"bizbus cdc {self.connector}", connect_timeout=10)  # fmt: skip
        self._cur = self._repl.cursor()
        if resume is not None:
            if not self._slot_exists():
                raise Fatal(f"replication slot {self.slot} is gone, so changes after {resume} may be lost; drop the"
                            f" connector's journal (table inbox_{self.connector.replace('-', '_')}) to take a new"
                            " snapshot", reason="slot_lost")  # fmt: skip
            self._start()

    def _primary_keys(self) -> dict[str, tuple[str, ...]]:
        assert self._admin is not None
        rows = self._admin.execute(
            "SELECT c.relname, array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum))"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indisprimary AND n.nspname = %s AND c.relname = ANY(%s) GROUP BY c.relname",
            (self.c.schema_name, list(self.tables))).fetchall()  # fmt: skip
        keys = {name: tuple(cols) for name, cols in rows}
        missing = [t for t in self.tables if t not in keys]
        if missing:
            raise Fatal(f"captured table(s) {', '.join(missing)} not found in schema {self.c.schema_name} or without"
                        " a primary key", reason="config")  # fmt: skip
        return keys

    def _publication(self) -> None:
        assert self._admin is not None
        names = [sql.Identifier(self.c.schema_name, t) for t in self.tables]
        if self.c.replica_identity_full:  # deletes and updates carry the whole old row
            for n in names:
                self._admin.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(n))
        if not self.c.manage_publication:
            return
        exists = self._admin.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,)).fetchone()
        verb = "ALTER PUBLICATION {} SET TABLE {}" if exists else "CREATE PUBLICATION {} FOR TABLE {}"
        self._admin.execute(sql.SQL(verb).format(sql.Identifier(self.publication), sql.SQL(", ").join(names)))

    def _slot_exists(self) -> bool:
        assert self._admin is not None
        return self._admin.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                   (self.slot,)).fetchone() is not None  # fmt: skip

    def _free_slot(self) -> bool:
        """End a walsender still holding the slot (a killed reader's, until the server notices): the capture lease
        says this process is the only reader. False when the slot does not exist."""
        assert self._admin is not None
        for _ in range(50):
            row = self._admin.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                      (self.slot,)).fetchone()  # fmt: skip
            if row is None:
                return False
            if row[0] is None:
                return True
            log.info("cdc %s: slot %s is still held by pid %s (a reader before this one); ending it", self.connector,
                     self.slot, row[0])  # fmt: skip
            self._admin.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            time.sleep(0.2)
        raise Fatal(f"replication slot {self.slot} stays in use by another process", reason="slot_busy")

    def _drop_slot(self) -> None:
        if self._free_slot():
            assert self._admin is not None
            self._admin.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))

    def _start(self) -> None:
        self._free_slot()
        self._cur.start_replication(slot_name=self.slot, decode=False, status_interval=self.c.status_interval_seconds,
                                    options={"proto_version": "1", "publication_names": self.publication})  # fmt: skip
        self._streaming = True

    # -- snapshot ------------------------------------------------------------------------------------

    def snapshot(self, tables: tuple[str, ...]) -> Iterator[Transaction]:
        self._drop_slot()
        self._cur.execute(f'CREATE_REPLICATION_SLOT "{self.slot}" LOGICAL pgoutput EXPORT_SNAPSHOT')
        _slot, consistent_point, snapshot_name, _plugin = self._cur.fetchone()
        now = dt.datetime.now(dt.UTC)
        log.info("cdc %s: slot %s created at %s; reading the snapshot %s", self.connector, self.slot,
                 consistent_point, snapshot_name)  # fmt: skip
        conn = self._snap = connect(self.c.dsn, f"cdc snapshot {self.connector}", autocommit=False)
        try:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
            yielded = False
            for table in tables:
                for chunk in self._read_table(conn, table):
                    yielded = True
                    yield Transaction(consistent_point, now, chunk)
            if not yielded:
                yield Transaction(consistent_point, now, ())
            conn.rollback()
        finally:
            close_quietly(conn)
            self._snap = None
        self._start()  # the snapshot is no longer needed: stream from the slot's consistent point

    def _read_table(self, conn: psycopg.Connection[Any], table: str) -> Iterator[tuple[RowChange, ...]]:
        cols = conn.execute("SELECT a.attname, a.atttypid::int FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
                            " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                            (self.c.schema_name, table)).fetchall()  # fmt: skip
        families = {name: family(oid) for name, oid in cols}
        keys = self._keys[table]
        query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n, _ in cols),
            sql.Identifier(self.c.schema_name, table), sql.SQL(", ").join(map(sql.Identifier, keys)))  # fmt: skip
        names = [n for n, _ in cols]
        with conn.cursor(name=f"snap_{table}") as cur:
            cur.execute(query)
            while rows := cur.fetchmany(self.c.snapshot_fetch_rows):
                out = []
                for r in rows:
                    image = dict(zip(names, r, strict=True))
                    out.append(RowChange(table, "read", {k: image[k] for k in keys}, None, image, families))
                yield tuple(out)

    # -- stream --------------------------------------------------------------------------------------

    def read(self, max_rows: int, timeout: float) -> list[Transaction]:
        try:
            return self._read(max_rows, timeout)
        except (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.DatabaseError) as exc:
            raise NotConnected(f"the replication connection to {self.c.schema_name}@{_where(self.c.dsn)} broke"
                               f" ({str(exc).strip() or type(exc).__name__}); reading again from the slot") from exc

    def _read(self, max_rows: int, timeout: float) -> list[Transaction]:
        if not self._streaming:
            self._start()
        out: list[Transaction] = []
        rows = 0
        deadline = time.monotonic() + timeout
        while rows < max_rows:
            msg = self._cur.read_message()
            if msg is None:
                left = deadline - time.monotonic()
                if out or left <= 0:
                    break
                select.select([self._cur], [], [], min(left, 0.05))
                continue
            tx = self._message(msg.payload)
            if tx is not None:
                out.append(tx)
                rows += len(tx.changes)
        if not out and self._tx is None:
            self._idle_feedback()
        return out

    def _message(self, payload: bytes) -> Transaction | None:
        m = self._decoder.decode(payload)
        if isinstance(m, Begin):
            self._begin, self._tx = m, []
        elif isinstance(m, Change):
            rel = self._decoder.relations[m.rel_id]
            if self._tx is not None and rel.schema == self.c.schema_name and rel.name in self._keys:
                self._tx.append(self._row(rel, m))
        elif isinstance(m, Commit) and self._tx is not None:
            changes, self._tx = tuple(self._tx), None
            position = lsn_text(m.commit_lsn)
            self._ends[position] = m.end_lsn
            self._last_read = position
            self._newest = m.commit_time.timestamp()
            if changes:
                return Transaction(position, m.commit_time, changes)
        elif isinstance(m, Relation):
            log.debug("cdc %s: relation %s.%s: %s", self.connector, m.schema, m.name, dict(m.families))
        return None

    def _row(self, rel: Relation, m: Change) -> RowChange:
        keys = self._keys[rel.name]
        image = m.new if m.new is not None else (m.old or {})
        return RowChange(rel.name, m.op, {k: image.get(k) for k in keys}, m.old, m.new, rel.families)  # type: ignore[arg-type]

    def confirm(self, position: str) -> None:
        """The slot may forget everything up to this commit (its end LSN when this reader read it)."""
        lsn = self._ends.get(position) or lsn_int(position)
        self._cur.send_feedback(flush_lsn=lsn, reply=True)
        self._confirmed = position
        for p in [p for p in self._ends if lsn_int(p) <= lsn_int(position)]:
            del self._ends[p]

    def _idle_feedback(self) -> None:
        """Nothing read and nothing unconfirmed: let the slot move with the server's WAL (other tables'
        traffic would otherwise keep WAL for this slot)."""
        if self._confirmed is not None and self._confirmed == self._last_read and not self._ends:
            wal_end = getattr(self._cur, "wal_end", 0)
            if wal_end:
                self._cur.send_feedback(flush_lsn=wal_end)

    def lag(self) -> float | None:
        return max(0.0, time.time() - self._newest) if self._newest else None

    def close(self) -> None:
        self._streaming = False
        self._tx = None
        for conn in (self._repl,):
            if conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()
        self._repl = self._cur = None
        close_quietly(self._admin)
        close_quietly(self._snap)
        self._admin = self._snap = None


def _where(dsn: str) -> str:
    """host:port/db of a DSN, for messages (no user, no options)."""
    tail = dsn.split("@", 1)[-1]
    return tail.split("?", 1)[0]
