"""Connector pauses, stored in PostgreSQL so they survive restarts and apply to every worker.

``POST /connectors/NAME/pause`` on the admin listener writes a row into ``bizbus_state.connector_pauses``
(``BIZBUS_STATE_DSN``); ``/resume`` deletes it. Every bizbus process that runs connectors applies the
stored state before its tasks start and then polls it (``PauseWatcher``, every ~1.5 s, in a thread of its
own: never on the HTTP event loop), so a pause given to one worker reaches all workers of the connector
and outlives the process. While the database is unreachable the last known state is kept and the
watcher says so in a log line (once per outage).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bizbus.statetables import KeptConnection

log = logging.getLogger("bizbus.host.pauses")

SCHEMA = "bizbus_state"
POLL_SECONDS = 1.5


@dataclass(frozen=True)
class Pause:
    connector: str
    since: datetime
    by: str

    def describe(self) -> str:
        return f"paused since {self.since.isoformat(timespec='seconds')} by {self.by}"


class PauseStore:
    """The ``connector_pauses`` table, on one kept connection (reconnected after an error); thread-safe."""

    def __init__(self, dsn: str, schema: str = SCHEMA, connect_timeout: float = 3.0) -> None:
        self.dsn, self.schema, self.connect_timeout = dsn, schema, connect_timeout
        self._table = sql.Identifier(schema, "connector_pauses")
        self._conn = KeptConnection(dsn, "pauses", schema, [sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
            connector text PRIMARY KEY,
            paused_at timestamptz NOT NULL DEFAULT now(),
            paused_by text NOT NULL)""").format(self._table)], connect_timeout=max(1, int(connect_timeout)))  # fmt: skip

    def _execute(self, query: sql.Composable, params: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        """One statement on the kept connection; a broken connection is dropped (the next call reconnects)."""
        return self._conn.execute(query, params)

    def pause(self, connector: str, by: str) -> Pause:
        """Store a pause (a second pause keeps the first one's time and author)."""
        self._execute(sql.SQL("INSERT INTO {} (connector, paused_by) VALUES (%s, %s) "
                              "ON CONFLICT (connector) DO NOTHING").format(self._table), (connector, by[:200]))  # fmt: skip
        return self.all()[connector]

    def resume(self, connector: str) -> bool:
        """Delete the pause; False when the connector was not paused."""
        cur = self._execute(sql.SQL("DELETE FROM {} WHERE connector = %s").format(self._table), (connector,))
        return cur.rowcount > 0

    def all(self) -> dict[str, Pause]:
        cur = self._execute(sql.SQL("SELECT connector, paused_at, paused_by FROM {}").format(self._table))
        return {r[0]: Pause(r[0], r[1], r[2]) for r in cur.fetchall()}

    def close(self) -> None:
        self._conn.close()


def desired_states(names: Iterable[str], paused: dict[str, Pause]) -> dict[str, bool]:
    """Which of ``names`` should be paused (True) or running (False)."""
    return {name: name in paused for name in names}


class PauseWatcher:
    """Applies the stored pauses to this process's connectors: once at start (``apply()``), then every
    ``interval`` seconds on a daemon thread (``start()``). ``apply_to(name, paused)`` is the callback."""

    def __init__(self, store: PauseStore, names: Iterable[str], apply_to: Callable[[str, bool], None],
                 interval: float = POLL_SECONDS) -> None:  # fmt: skip
        self.store, self.names, self.apply_to, self.interval = store, tuple(names), apply_to, interval
        self.paused: dict[str, Pause] = {}  # the last state read (kept while the database is unreachable)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pause-watcher", daemon=True)

    def apply(self) -> None:
        """Read the stored pauses and apply them; a database error keeps the last state (logged once)."""
        try:
            stored = self.store.all()
        except psycopg.Error as exc:
            if self.error is None:
                log.warning("connector pauses: cannot read %s.connector_pauses (keeping the last known state "
                            "%s): %s", self.store.schema, sorted(self.paused) or "none paused", exc)  # fmt: skip
            self.error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            return
        if self.error is not None:
            log.info("connector pauses: %s.connector_pauses readable again", self.store.schema)
            self.error = None
        self.paused = {k: v for k, v in stored.items() if k in self.names}
        for name, paused in desired_states(self.names, self.paused).items():
            self.apply_to(name, paused)

    def start(self) -> PauseWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.store.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.apply()


__all__ = ["Pause", "PauseStore", "PauseWatcher", "desired_states"]
