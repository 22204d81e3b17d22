"""The MariaDB binlog reader (the kit's ``LogReader``): a consistent snapshot that hands over to the binlog
at its GTID, then the binlog's ROW events grouped into committed transactions, resumed by GTID.

    snapshot   START TRANSACTION WITH CONSISTENT SNAPSHOT  (InnoDB snapshot and binlog position together)
               SHOW STATUS LIKE 'binlog_snapshot_%'        -> file, position of the snapshot in the binlog
               SELECT BINLOG_GTID_POS(file, position)      -> the GTID state: the handover position
               SELECT * of each table (streamed)           -> "read" changes
    read       COM_BINLOG_DUMP with @slave_connect_state = the position (mysql-replication, is_mariadb)
               GTID event .. rows events .. XID (or COMMIT) -> one Transaction, position = GTID state after it

Nothing is confirmed to the server (a binlog client keeps no state there); the journal's newest position is
where ``setup`` resumes. Binlog purged past that position is fatal (a new snapshot is needed).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import pymysql
from bizbus.connectors.runtime.cdc.model import LogReader, RowChange, Transaction
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from bizbus.failures import Fatal, NotConnected

from . import mapping as m

log = logging.getLogger(__name__)

_EVENTS = [MariadbGtidEvent, XidEvent, QueryEvent, WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent,
           HeartbeatLogEvent]  # fmt: skip
_KIND = {WriteRowsEvent: "write", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}
# server errors that mean the connection or the server is gone (client 2003/2006/2013, shutdown 1053)
_GONE = {1053, 2003, 2006, 2013, 2055}
_PURGED = 1236  # "could not find GTID state requested by slave in any binlog files" and the like


class BinlogReader(LogReader):
    """Reads the binlog of one server as replica ``server_id`` (unique among the server's replicas): the
    ``tables`` of one ``database`` (bare names, as the mapping has them; ``RowChange.table`` is bare too)."""

    def __init__(self, connection: dict[str, Any], server_id: int, database: str, tables: tuple[str, ...],
                 heartbeat: float = 0.5, snapshot_chunk: int = 1000) -> None:  # fmt: skip
        self.connection = {"connect_timeout": 5, **connection}
        self.server_id, self.heartbeat, self.snapshot_chunk = server_id, heartbeat, snapshot_chunk
        self.database, self.tables = database, frozenset(tables)
        self.state: str | None = None  # the GTID state after the last transaction returned
        self._stream: BinLogStreamReader | None = None
        self._last_commit: float | None = None

    # LogReader ----------------------------------------------------------------------------------------

    def setup(self, resume: str | None) -> None:
        if resume is not None:
            m.parse_state(resume)  # refuse what is no GTID position before connecting
        self.state = resume

    def snapshot(self, tables: tuple[str, ...]) -> Iterator[Transaction]:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION time_zone = '+00:00'")  # TIMESTAMP values in UTC, as the binlog has them
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
                status = {str(k).lower(): v for k, v in cur.fetchall()}
                file, pos = status.get("binlog_snapshot_file"), status.get("binlog_snapshot_position")
                if not file:
                    raise Fatal("the server writes no binary log (log_bin is OFF): see docs/connectors/mariadb_cdc.md",
                                reason="binlog_off")  # fmt: skip
                cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, int(pos)))
                handover = str(cur.fetchone()[0] or "")
            when = m.commit_time(None)
            log.info("mariadb snapshot at %s:%s = GTID %r (%d tables)", file, pos, handover, len(tables))
            for name in tables:
                yield from self._table(conn, name, handover, when)
            conn.commit()
        except pymysql.err.MySQLError as exc:
            raise self._error(exc, "snapshot") from exc
        finally:
            conn.close()
        self.state = handover

    def read(self, max_rows: int, timeout: float) -> list[Transaction]:
        if self.state is None:
            raise RuntimeError("BinlogReader.read before setup(resume) or snapshot()")
        deadline = time.monotonic() + timeout
        out: list[Transaction] = []
        empty: Transaction | None = None  # the newest transaction without captured rows (moves the position)
        rows = 0
        gtid: str | None = None  # the group being read
        changes: list[RowChange] = []
        standalone = False
        try:
            stream = self._open()
            while True:
                if gtid is None and (rows >= max_rows or time.monotonic() >= deadline):
                    break
                event = stream.fetchone()
                if event is None:  # the server ended the dump (shut down): reconnect at the next read
                    self._close_stream()
                    break
                if isinstance(event, MariadbGtidEvent):
                    gtid, changes, standalone = event.gtid, [], bool(event.flags & m.FL_STANDALONE)
                    continue
                if gtid is None or isinstance(event, HeartbeatLogEvent):
                    continue
                kind = _KIND.get(type(event))
                if kind is not None:
                    if event.schema == self.database and event.table in self.tables:
                        cols = m.columns_of(event.columns)
                        changes.extend(m.row_changes(kind, event.table, m.key_columns(event.primary_key),
                                                     event.rows, cols))  # fmt: skip
                    continue
                ends = isinstance(event, XidEvent) or (isinstance(event, QueryEvent) and
                                                       (standalone or m.is_commit(str(event.query))))  # fmt: skip
                if not ends:
                    continue
                if not m.seen(self.state, gtid):
                    self.state = stream.auto_position = m.advance(self.state, gtid)  # (its own reconnects too)
                    tx = Transaction(self.state, m.commit_time(event.timestamp), tuple(changes))
                    self._last_commit = tx.commit_time.timestamp()
                    if changes:
                        out.append(tx)
                        rows += len(changes)
                        empty = None
                    else:
                        empty = tx
                gtid, changes = None, []
        except pymysql.err.MySQLError as exc:
            self._close_stream()
            if not out and empty is None:
                raise self._error(exc, "binlog") from exc
            log.warning("mariadb binlog: %s; %d transactions read before it are kept", exc, len(out))
        if empty is not None and empty.position == self.state:
            out.append(empty)  # nothing captured after it: let the journal store the position it reached
        return out

    def confirm(self, position: str) -> None:
        """Nothing to tell the server: the journal holds the position (``setup`` resumes from it)."""

    def lag(self) -> float | None:
        return None if self._last_commit is None else max(0.0, time.time() - self._last_commit)

    def close(self) -> None:
        self._close_stream()

    # internals ----------------------------------------------------------------------------------------

    def _connect(self) -> pymysql.connections.Connection:
        try:
            return pymysql.connect(**self.connection, autocommit=False, charset="utf8mb4")
        except pymysql.err.OperationalError as exc:
            raise self._error(exc, "connect") from exc

    def _table(self, conn: Any, table: str, handover: str, when: Any) -> Iterator[Transaction]:
        schema = self.database
        with conn.cursor() as cur:
            cur.execute("SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s"
                        " AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                        (schema, table))  # fmt: skip
            keys = tuple(str(r[0]) for r in cur.fetchall())
        with conn.cursor(pymysql.cursors.SSDictCursor) as cur:
            cur.execute(f"SELECT * FROM `{schema.replace('`', '``')}`.`{table.replace('`', '``')}`")
            while True:
                batch = cur.fetchmany(self.snapshot_chunk)
                if not batch:
                    break
                yield Transaction(handover, when, tuple(RowChange(table, "read", m.key_of(r, keys), None, r)
                                                        for r in batch))  # fmt: skip

    def _open(self) -> BinLogStreamReader:
        if self._stream is None:
            settings = {k: v for k, v in self.connection.items() if k != "database"}
            # a server that stops answering (no heartbeat either) is a lost connection, not a read that never ends
            settings["read_timeout"] = max(5, int(self.heartbeat * 10))
            self._stream = BinLogStreamReader(
                connection_settings=settings, server_id=self.server_id, blocking=True, is_mariadb=True,
                auto_position=self.state, slave_heartbeat=self.heartbeat, only_events=_EVENTS,
                only_schemas=[self.database], enable_logging=False,
                # a table map already known by its table id is not parsed again (a third of the parse time);
                # a changed table gets a new table id (ALTER TABLE, FLUSH TABLES), a restart a new binlog
                freeze_schema=True,
            )  # fmt: skip
        return self._stream

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):  # a broken socket may fail to close; it is dropped either way
                stream.close()

    def _error(self, exc: pymysql.err.MySQLError, doing: str) -> Exception:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        if code == _PURGED:
            return Fatal(f"mariadb {doing}: the server no longer has the binlog at GTID {self.state!r} ({exc});"
                         " delete the connector's journal to take a new snapshot", reason="binlog_purged")  # fmt: skip
        if code == 1146:
            return Fatal(f"mariadb {doing}: {exc}; the mapping names a table that database {self.database} does not"
                         " have", reason="unknown_table")  # fmt: skip
        if code in (1045, 1227, 1044, 1142):
            return Fatal(f"mariadb {doing}: access refused ({exc}); the user needs REPLICATION SLAVE,"
                         " REPLICATION CLIENT and SELECT", reason="access_denied")  # fmt: skip
        return NotConnected(f"mariadb {doing}: {exc}", reason="unreachable")
