"""``pg-slot-monitor``: how much WAL each PostgreSQL replication slot holds back.

A logical-decoding (CDC) slot whose reader stopped keeps every WAL segment from its confirmed position on,
until the database server's disk is full — a well-known operations problem with Debezium and any other
slot reader. This monitor reads ``pg_replication_slots`` every ``interval_seconds`` and exports

* ``bizbus_cdc_slot_lag_bytes{database,slot}``: current WAL position minus the slot's confirmed flush
  position (logical slots) or restart position (physical slots);
* ``bizbus_cdc_slot_active{database,slot}``: 1 while a reader is connected.

A slot that disappears loses its series; a failed query is logged and retried, the last values stay.
The alert ``CdcSlotLagHigh`` in deploy/prometheus watches the lag.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from threading import Event

import psycopg
from bizbus.connectors.runtime import probes

from bizbus import metrics
from bizbus.host.components import Component
from bizbus.statetables import KeptConnection

from .config import PgSlotMonitorConfig

log = logging.getLogger(__name__)

SLOTS_SQL = """
SELECT slot_name, active,
       pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, restart_lsn))::bigint AS lag
FROM pg_replication_slots
ORDER BY slot_name
"""


@dataclass(frozen=True)
class SlotState:
    slot: str
    active: bool
    lag_bytes: int | None  # None: the slot reserves no WAL yet


def read_slots(conn: psycopg.Connection, pattern: str) -> list[SlotState]:
    """The slots whose names match ``pattern``, with their lag (one query)."""
    rx = re.compile(pattern)
    rows = conn.execute(SLOTS_SQL).fetchall()
    return [SlotState(name, bool(active), int(lag) if lag is not None else None)
            for name, active, lag in rows if rx.fullmatch(name)]  # fmt: skip


class PgSlotMonitor(Component):
    """Exports the WAL lag of replication slots as metrics."""

    Config = PgSlotMonitorConfig
    config: PgSlotMonitorConfig

    def setup(self) -> None:
        c = self.config
        if c.database_label:
            self.database = c.database_label
        else:
            info = psycopg.conninfo.conninfo_to_dict(c.dsn)
            self.database = (
                f"{info.get('host') or 'local'}/{info.get('dbname') or info.get('user') or 'postgres'}"
            )
        self._conn = KeptConnection(c.dsn, f"slot monitor {self.name}")  # reopened when closed or broken
        self._seen: set[str] = set()

    def poll(self) -> list[SlotState]:
        """Read the slots once and update the gauges; raises psycopg errors (``run`` logs them)."""
        states = read_slots(self._conn.get(), self.config.slots)
        now = set()
        for s in states:
            now.add(s.slot)
            metrics.CDC_SLOT_ACTIVE.labels(self.database, s.slot).set(1 if s.active else 0)
            metrics.CDC_SLOT_LAG.labels(self.database, s.slot).set(s.lag_bytes or 0)
        for gone in self._seen - now:
            for gauge in (metrics.CDC_SLOT_LAG, metrics.CDC_SLOT_ACTIVE):
                with contextlib.suppress(KeyError):
                    gauge.remove(self.database, gone)
        self._seen = now
        return states

    def run(self, stop: Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                self.poll()
                if failing:
                    log.info("slot monitor %s: reading %s again", self.name, self.database)
                failing = False
            except psycopg.Error as exc:
                if not failing:
                    log.warning("slot monitor %s: cannot read replication slots of %s: %s",
                                self.name, self.database, exc)  # fmt: skip
                failing = True
                self._conn.close()
            stop.wait(self.config.interval_seconds)

    def probe(self) -> str | None:
        return probes.pg(self.config.dsn)

    def close(self) -> None:
        kept: KeptConnection | None = getattr(self, "_conn", None)
        if kept is not None:
            kept.close()
