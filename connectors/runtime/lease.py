"""Shard leases: at most one process reads a source shard at a time.

A lease is a PostgreSQL session-level advisory lock keyed on (connector, shard), held by a dedicated
connection for as long as the task owns the shard. When the owning process dies (even by SIGKILL), the
server ends its session and the lock is free at once for a standby worker, which polls ``try_acquire``.

The same connection stores the shard's cursor (``PgCursorStore.setup(conn=lease.conn)``): a task whose
lease session was lost cannot move the cursor any more, and its last sends are duplicates with the same
event ids, which sinks absorb. Two live owners of one shard are therefore impossible at the cursor and
harmless at the broker.

A lease session that ends (the process dies, a DBA or a failover terminates the backend, the server
restarts) frees the lock on the server at once. The holder finds out at its next use of the session (a
cursor store fails, or ``check()`` after an error) and must take the lease again, and re-read the cursor,
before it writes anything: another worker may have moved the cursor meanwhile.
"""

from __future__ import annotations

import zlib
from typing import Any

import psycopg

from bizbus.pgconn import alive, close_quietly, connect


def lease_key(connector: str, shard: str) -> int:
    """A stable signed 64-bit advisory-lock key for (connector, shard)."""
    hi = zlib.crc32(f"bizbus-lease:{connector}".encode())
    lo = zlib.crc32(f"{connector}\x00{shard}".encode())
    return ((hi << 32) | lo) - 2**63


class PgLease:
    """An advisory-lock lease; ``conn`` is the session that holds it (None until acquired)."""

    def __init__(self, dsn: str, connector: str, shard: str) -> None:
        self.dsn, self.connector, self.shard = dsn, connector, shard
        self.key = lease_key(connector, shard)
        self.conn: psycopg.Connection[Any] | None = None

    @property
    def held(self) -> bool:
        return alive(self.conn)

    def try_acquire(self) -> bool:
        """Take the lease if it is free; returns whether this process holds it now. Raises the
        ``psycopg.OperationalError`` of a server that cannot be reached (the task runtime backs off)."""
        if self.held:
            return True
        self.release()  # a session that broke: drop it before opening the next
        conn = connect(self.dsn, f"lease {self.connector}/{self.shard}")
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except BaseException:
            close_quietly(conn)
            raise
        if row and row[0]:
            self.conn = conn
            return True
        conn.close()
        return False

    def check(self) -> bool:
        """Whether the lease session is still alive (a cheap round trip)."""
        if not self.held:
            return False
        assert self.conn is not None
        try:
            self.conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            self.release()
            return False

    def release(self) -> None:
        """Give the lease up (closing the session releases the lock even if the unlock fails)."""
        if self.conn is not None:
            try:
                if not self.conn.closed and not self.conn.broken:
                    self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except psycopg.Error:
                pass
            finally:
                close_quietly(self.conn)
                self.conn = None
