"""State tables in PostgreSQL: created once, under an advisory lock, on a connection that is reopened when
it broke.

Several processes (workers, a CLI, a test) may create the same schema and tables at the same moment;
``CREATE ... IF NOT EXISTS`` alone then races on the catalogue (a unique violation on ``pg_namespace`` or
``pg_type``). :func:`ensure_tables` runs the DDL in one transaction that first takes a transaction-scoped
advisory lock, so concurrent setups queue instead. The lock is named by a text (``hashtext`` of it on
the server, e.g. ``bizbus_state ddl``) or given as a number; table names and lock keys stay what they were
when a store moves here (live state is never orphaned).

:class:`KeptConnection` is the one long-lived connection of a store: opened on first use (with the tables
made), checked before each use and reopened when it was closed or broke (a terminated backend, a restarted
server); the error of the statement that found it broken goes to the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql

from bizbus.pgconn import alive, close_quietly, connect

STATE_LOCK = "bizbus_state ddl"
"""The advisory lock of the ``bizbus_state`` tables (cursors, pauses)."""

Statement = sql.Composable | str | Callable[[psycopg.Cursor[Any]], None]
"""A DDL statement, or a function given the cursor (a migration that checks the catalogue first)."""


def ensure_tables(conn: psycopg.Connection[Any], schema: str, statements: Iterable[Statement],
                  lock: str | int = STATE_LOCK) -> None:  # fmt: skip
    """Create ``schema`` and run ``statements`` in one transaction under the advisory lock ``lock`` (a text:
    ``hashtext(lock)``; a number: that key). Idempotent: the statements say ``IF NOT EXISTS``."""
    with conn.transaction(), conn.cursor() as cur:
        if isinstance(lock, str):
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
        else:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for statement in statements:
            if callable(statement):
                statement(cur)
            else:
                cur.execute(statement)


class KeptConnection:
    """One autocommit connection named ``bizbus <purpose>``, reopened when closed or broken; the tables
    (``schema``, ``statements``, ``lock`` as in :func:`ensure_tables`) are made on the first connect of the
    process's store. Without ``schema`` nothing is made: a kept connection to a database that bizbus only
    reads (an outbox it does not create, a server's replication slots). ``execute`` runs one statement
    under a lock (thread-safe) and drops the connection when the statement failed, so the next call
    reconnects."""

    def __init__(self, dsn: str, purpose: str, schema: str | None = None, statements: Iterable[Statement] = (),
                 lock: str | int = STATE_LOCK, **connect_kwargs: Any) -> None:  # fmt: skip
        self.dsn, self.purpose, self.schema = dsn, purpose, schema
        self.statements, self.lock, self.connect_kwargs = tuple(statements), lock, connect_kwargs
        self.ready = schema is None  # the tables were made (once per store, not per reconnect); none to make
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.RLock()

    def get(self) -> psycopg.Connection[Any]:
        """The kept connection, opened (and the tables made, the first time) when there is none alive."""
        with self._lock:
            if alive(self._conn):
                assert self._conn is not None
                return self._conn
            close_quietly(self._conn)
            self._conn = None
            conn = connect(self.dsn, self.purpose, **self.connect_kwargs)
            if not self.ready:
                assert self.schema is not None
                try:
                    ensure_tables(conn, self.schema, self.statements, self.lock)
                except BaseException:
                    close_quietly(conn)
                    raise
                self.ready = True
            self._conn = conn
            return conn

    def make_tables(self) -> psycopg.Connection[Any]:
        """Make the tables now (again, if they were made before: a store set up a second time); the
        connection. Without ``schema``: only the connection."""
        with self._lock:
            fresh = not self.ready
            conn = self.get()  # a first connect makes them
            if not fresh and self.schema is not None:
                ensure_tables(conn, self.schema, self.statements, self.lock)
            return conn

    def execute(self, query: sql.Composable | str, params: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        """One statement on the kept connection; a failed one drops the connection (the next call reconnects)."""
        with self._lock:
            try:
                return self.get().execute(query, params)
            except psycopg.Error:
                self.close()
                raise

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            close_quietly(conn)
