"""bizbus/statetables.py against a real PostgreSQL: concurrent setups of the same tables queue on
the advisory lock instead of racing on the catalogue, and a kept connection whose backend was terminated is
reopened by the next call (the failing statement's error goes to the caller)."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg import sql

from bizbus.pgconn import connect
from bizbus.statetables import KeptConnection, ensure_tables
from tests.conftest import PG_DSN


def _table(schema: str) -> sql.Composable:
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} (k text PRIMARY KEY, v int NOT NULL)").format(
        sql.Identifier(schema, "things"))


def test_concurrent_setups_of_a_new_schema_all_succeed(postgres: psycopg.Connection) -> None:
    schema = f"t_state_{uuid.uuid4().hex[:8]}"
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def setup() -> None:
        conn = connect(PG_DSN, "test state tables")
        try:
            start.wait()
            ensure_tables(conn, schema, [_table(schema)], lock=f"test {schema}")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=setup) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert postgres.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                                (schema,)).fetchone() == (1,)  # fmt: skip
    finally:
        postgres.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_a_kept_connection_is_reopened_after_its_backend_was_terminated(postgres: psycopg.Connection) -> None:
    schema = f"t_state_{uuid.uuid4().hex[:8]}"
    purpose = f"test kept {schema}"
    kept = KeptConnection(PG_DSN, purpose, schema, [_table(schema)], lock=f"test {schema}")
    insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(sql.Identifier(schema, "things"))
    try:
        kept.execute(insert, ("a", 1))
        assert kept.ready
        postgres.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                         (f"bizbus {purpose}",))  # fmt: skip
        with pytest.raises(psycopg.OperationalError):
            kept.execute(insert, ("b", 2))  # this statement met the dead backend
        kept.execute(insert, ("c", 3))  # the next one reconnects
        rows = kept.execute(sql.SQL("SELECT k FROM {} ORDER BY k").format(sql.Identifier(schema, "things")))
        assert [r[0] for r in rows.fetchall()] == ["a", "c"]
    finally:
        kept.close()
        postgres.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_a_kept_connection_without_a_schema_makes_nothing_and_is_reopened(postgres: psycopg.Connection) -> None:
    purpose = f"test plain {uuid.uuid4().hex[:8]}"
    kept = KeptConnection(PG_DSN, purpose)  # e.g. an outbox that bizbus only reads
    try:
        assert kept.ready  # no tables to make
        assert kept.make_tables().execute("SELECT current_setting('application_name')").fetchone() == (
            f"bizbus {purpose}",
        )
        postgres.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                         (f"bizbus {purpose}",))  # fmt: skip
        with pytest.raises(psycopg.OperationalError):
            kept.execute("SELECT 1")
        assert kept.execute("SELECT 1").fetchone() == (1,)
    finally:
        kept.close()
