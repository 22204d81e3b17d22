"""The ``pg-slot-monitor`` component type."""

from __future__ import annotations

from bizbus.host.components import ComponentSpec

SPEC = ComponentSpec(
    "pg-slot-monitor",
    "monitor",
    "bizbus.connectors.monitors.pg_slots.connector:PgSlotMonitor",
    "Reports the WAL each PostgreSQL replication (CDC) slot holds back, as bizbus_cdc_slot_lag_bytes.",
    guarantee="none needed (reads slot lag into a metric; writes nothing)",
    example="deploy/examples/slot-monitor.yaml",
)
