"""The replication-slot monitor against the real PostgreSQL: a reserved slot that nobody reads shows its WAL
lag growing; a dropped slot loses its series; an unreachable server is logged and does not stop the loop."""

from __future__ import annotations

import threading
import uuid

import pytest
from bizbus.connectors.monitors.pg_slots.config import PgSlotMonitorConfig
from bizbus.connectors.monitors.pg_slots.connector import PgSlotMonitor
from prometheus_client import REGISTRY

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _monitor(name: str, **config: object) -> PgSlotMonitor:
    m = PgSlotMonitor(name, PgSlotMonitorConfig(**config), ctx=None)  # type: ignore[arg-type]
    m.setup()
    return m


def _lag(db: str, slot: str) -> float | None:
    return REGISTRY.get_sample_value("bizbus_cdc_slot_lag_bytes", {"database": db, "slot": slot})


def test_an_unread_slot_reports_growing_lag_and_disappears_when_dropped(postgres) -> None:
    slot = f"bizbus_test_{uuid.uuid4().hex[:8]}"
    other = f"other_{uuid.uuid4().hex[:8]}"
    postgres.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
    postgres.execute("SELECT pg_create_physical_replication_slot(%s, true)", (other,))
    try:
        mon = _monitor("slots", dsn=DSN, database_label="test-db", slots="bizbus_test_.*")
        mon.poll()
        first = _lag("test-db", slot)
        assert first is not None and first >= 0
        assert _lag("test-db", other) is None  # filtered out by the pattern
        assert REGISTRY.get_sample_value("bizbus_cdc_slot_active", {"database": "test-db", "slot": slot}) == 0
        table = f"slot_wal_{uuid.uuid4().hex[:8]}"
        postgres.execute(f"CREATE TABLE {table} AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 5000) g")
        postgres.execute(f"DROP TABLE {table}")
        mon.poll()
        grown = _lag("test-db", slot)
        assert grown is not None and grown > first + 500_000  # ~1 MB of WAL written, none released
    finally:
        postgres.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        postgres.execute("SELECT pg_drop_replication_slot(%s)", (other,))
    mon.poll()
    assert _lag("test-db", slot) is None
    mon.close()


def test_an_unreachable_server_is_logged_and_the_loop_keeps_running(caplog: pytest.LogCaptureFixture) -> None:
    mon = _monitor("slots-down", dsn="postgresql://postgres@127.0.0.1:1/postgres", interval_seconds=0.1)
    stop = threading.Event()
    t = threading.Thread(target=mon.run, args=(stop,), daemon=True)
    with caplog.at_level("WARNING"):
        t.start()
        t.join(1.0)
        assert t.is_alive()  # still looping
        stop.set()
        t.join(5)
    assert not t.is_alive()
    warnings = [r for r in caplog.records if "cannot read replication slots" in r.getMessage()]
    assert len(warnings) == 1  # logged once while failing, not on every retry
    assert mon.database == "127.0.0.1/postgres"


def test_config_refuses_a_password_in_the_dsn_and_a_bad_pattern() -> None:
    with pytest.raises(ValueError, match="must not contain a password"):
        PgSlotMonitorConfig(dsn="postgresql://u:secret@h/db")
    with pytest.raises(ValueError, match="not a regular expression"):
        PgSlotMonitorConfig(slots="(")
