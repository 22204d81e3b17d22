"""PgLedger against a real PostgreSQL: effects once, duplicates skipped, rollbacks, crashes, offsets."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from bizbus.connectors.runtime.ledger import Effect, PgLedger
from psycopg import sql

DSN = os.environ.get("BIZBUS_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_HOWTO = (
    "needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres): e.g. "
    "`docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`, "
    "or set BIZBUS_TEST_PG_DSN"
)


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


@dataclass
class Env:
    schema: str
    target: str
    admin: psycopg.Connection[Any]

    def count(self, query: str, *params: Any) -> int:
        q = sql.SQL(query).format(schema=sql.Identifier(self.schema), target=sql.Identifier(self.target))
        row = self.admin.execute(q, params).fetchone()
        assert row is not None
        return int(row[0])

    def targets(self) -> int:
        return self.count("SELECT count(*) FROM {target}")

    def ledger_rows(self, connector: str = "c1") -> int:
        return self.count("SELECT count(*) FROM {schema}.applied_effects WHERE connector = %s", connector)

    def ledger(self, connector: str = "c1") -> PgLedger:
        led = PgLedger(DSN, connector, schema=self.schema)
        led.setup()
        return led

    def write(self, cur: psycopg.Cursor[Any], eff: Effect) -> str | None:
        """Target write without a unique constraint: only the ledger prevents doubles."""
        cur.execute(
            sql.SQL("INSERT INTO {} (effect_key, payload) VALUES (%s, %s) RETURNING id").format(
                sql.Identifier(self.target)
            ),
            (eff.effect_id, str(eff.payload)),
        )
        row = cur.fetchone()
        assert row is not None
        return f"row-{row[0]}"


@pytest.fixture
def env() -> Iterator[Env]:
    if not _pg_reachable():
        pytest.skip(PG_HOWTO)
    suffix = uuid.uuid4().hex[:12]
    admin = psycopg.connect(DSN, autocommit=True)
    e = Env(schema=f"ledger_{suffix}", target=f"target_{suffix}", admin=admin)
    admin.execute(
        sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, effect_key text NOT NULL, payload text)").format(
            sql.Identifier(e.target)
        )
    )
    try:
        yield e
    finally:
        admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(e.target)))
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(e.schema)))
        admin.close()


def effects(n: int, start: int = 0, topic: str = "t", partition: int = 0) -> list[Effect]:
    return [Effect(f"ev-{i}", topic, partition, i, {"n": i}) for i in range(start, start + n)]


def test_batch_writes_target_and_ledger_once(env: Env) -> None:
    led = env.ledger()
    batch = effects(5) + [Effect("ev-p1", "t", 1, 7, {})]
    res = led.apply_batch(batch, env.write)
    assert res.applied == [e.effect_id for e in batch] and not res.duplicates and not res.failed
    assert res.offsets == {("t", 0): 5, ("t", 1): 8}
    assert env.targets() == 6 and env.ledger_rows() == 6
    assert env.count("SELECT count(DISTINCT effect_key) FROM {target}") == 6
    assert env.count("SELECT count(*) FROM {schema}.applied_effects WHERE target_ref LIKE 'row-%%'") == 6
    assert led.committed_offsets() == {("t", 0): 5, ("t", 1): 8}
    assert led.is_applied("ev-3") and not led.is_applied("ev-99") and led.applied_count() == 6
    led.close()


def test_reapply_same_batch_is_all_duplicates(env: Env) -> None:
    led = env.ledger()
    led.apply_batch(effects(4), env.write)
    res = led.apply_batch(effects(4), env.write)
    assert res.applied == [] and res.duplicates == [f"ev-{i}" for i in range(4)]
    assert env.targets() == 4 and env.ledger_rows() == 4
    # overlapping batch: only the new ones are written
    res = led.apply_batch(effects(4, start=2), env.write)
    assert res.applied == ["ev-4", "ev-5"] and res.duplicates == ["ev-2", "ev-3"]
    assert env.targets() == 6 and env.ledger_rows() == 6 and led.committed_offsets() == {("t", 0): 6}
    led.close()


def test_failing_write_rolls_back_only_that_record(env: Env) -> None:
    led = env.ledger()
    led.apply_batch(effects(1, start=0), env.write)  # next_offset 1

    def write(cur: psycopg.Cursor[Any], eff: Effect) -> str | None:
        ref = env.write(cur, eff)  # the target row is written, then the record fails
        if eff.effect_id == "ev-2":
            raise ValueError("unknown cost center")
        if eff.effect_id == "ev-3":
            cur.execute("SELECT 1/0")  # a database error aborting the (sub)transaction
        return ref

    res = led.apply_batch(effects(4, start=1), write)
    assert res.applied == ["ev-1", "ev-4"] and set(res.failed) == {"ev-2", "ev-3"}
    assert isinstance(res.failed["ev-2"], ValueError)
    assert isinstance(res.failed["ev-3"], psycopg.errors.DivisionByZero)
    assert env.targets() == 3 and env.ledger_rows() == 3
    assert env.count("SELECT count(*) FROM {target} WHERE effect_key IN ('ev-2', 'ev-3')") == 0
    assert not led.is_applied("ev-2") and not led.is_applied("ev-3")
    assert led.committed_offsets() == {("t", 0): 5}
    # a retry of the failed ones applies them exactly once
    res = led.apply_batch(effects(4, start=1), env.write)
    assert res.applied == ["ev-2", "ev-3"] and res.duplicates == ["ev-1", "ev-4"]
    assert env.targets() == 5 and env.ledger_rows() == 5
    led.close()


def test_all_failing_batch_leaves_nothing(env: Env) -> None:
    led = env.ledger()

    def boom(cur: psycopg.Cursor[Any], eff: Effect) -> str | None:
        env.write(cur, eff)
        raise RuntimeError("target refused")

    res = led.apply_batch(effects(3), boom)
    assert res.applied == [] and set(res.failed) == {"ev-0", "ev-1", "ev-2"} and res.offsets == {}
    assert env.targets() == 0 and env.ledger_rows() == 0 and led.committed_offsets() == {}
    led.close()


def test_offsets_never_move_backwards(env: Env) -> None:
    led = env.ledger()
    led.apply_batch([Effect("ev-10", "t", 0, 10, {})], env.write)
    assert led.committed_offsets() == {("t", 0): 11}
    res = led.apply_batch([Effect("ev-5", "t", 0, 5, {}), Effect("ev-10", "t", 0, 10, {})], env.write)
    assert res.applied == ["ev-5"] and res.duplicates == ["ev-10"]
    assert res.offsets == {("t", 0): 11} and led.committed_offsets() == {("t", 0): 11}
    assert env.count("SELECT next_offset FROM {schema}.offsets WHERE topic = 't' AND partition = 0") == 11
    led.close()


def test_killed_connection_mid_batch_leaves_nothing_and_retry_applies_once(env: Env) -> None:
    led = env.ledger()
    led.apply_batch(effects(1), env.write)
    conn = led._connection()
    pid = conn.info.backend_pid
    started = threading.Event()
    errors: list[BaseException] = []

    def slow_write(cur: psycopg.Cursor[Any], eff: Effect) -> str | None:
        ref = env.write(cur, eff)
        if eff.effect_id == "ev-3":
            started.set()
            cur.execute("SELECT pg_sleep(30)")
        return ref

    def run() -> None:
        try:
            led.apply_batch(effects(4, start=1), slow_write)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(10)
    time.sleep(0.2)
    # the batch's uncommitted rows are invisible to others while it runs
    assert env.targets() == 1 and env.ledger_rows() == 1
    assert env.count("SELECT count(*) FROM pg_terminate_backend(%s) WHERE pg_terminate_backend", pid) == 1
    worker.join(15)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], psycopg.OperationalError)
    assert env.targets() == 1 and env.ledger_rows() == 1
    assert led.committed_offsets() == {("t", 0): 1}  # reconnects transparently
    res = led.apply_batch(effects(5), env.write)
    assert res.applied == ["ev-1", "ev-2", "ev-3", "ev-4"] and res.duplicates == ["ev-0"]
    assert env.targets() == 5 and env.ledger_rows() == 5
    assert (
        env.count("SELECT count(*) FROM (SELECT effect_key FROM {target} GROUP BY 1 HAVING count(*) > 1) d")
        == 0
    )
    assert led.committed_offsets() == {("t", 0): 5}
    led.close()


def test_two_connectors_keep_separate_ledgers(env: Env) -> None:
    a, b = env.ledger("erp-sink"), env.ledger("oa-sink")
    a.apply_batch(effects(3), env.write)
    res = b.apply_batch(effects(2), env.write)
    assert res.applied == ["ev-0", "ev-1"] and not res.duplicates
    assert env.ledger_rows("erp-sink") == 3 and env.ledger_rows("oa-sink") == 2 and env.targets() == 5
    assert a.committed_offsets() == {("t", 0): 3} and b.committed_offsets() == {("t", 0): 2}
    assert a.applied_count() == 3 and b.applied_count() == 2
    assert b.apply_batch(effects(3), env.write).applied == ["ev-2"]
    assert a.apply_batch(effects(3), env.write).duplicates == ["ev-0", "ev-1", "ev-2"]
    a.close()
    b.close()


def test_setup_is_idempotent_and_safe_concurrently(env: Env) -> None:
    led = env.ledger()
    led.setup()
    led.apply_batch(effects(2), env.write)
    led.setup()  # existing data survives
    assert led.applied_count() == 2
    led.close()

    for round_ in range(3):
        schema = f"{env.schema}_c{round_}"
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []
        ledgers = [PgLedger(DSN, f"c{i}", schema=schema) for i in range(6)]

        def go(
            ledger: PgLedger, barrier: threading.Barrier = barrier, errors: list[BaseException] = errors
        ) -> None:
            try:
                barrier.wait(10)
                ledger.setup()
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(ledger,)) for ledger in ledgers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        try:
            assert errors == []
            tables = env.count(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", schema
            )
            assert tables == 2
            assert all(ledger.applied_count() == 0 for ledger in ledgers)
        finally:
            for ledger in ledgers:
                ledger.close()
            env.admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_whole_batch_at_once_gives_the_same_result_as_record_by_record(env: Env) -> None:
    """transactional_write: one multi-row ledger insert and pipelined writes; duplicates (also twice in one
    batch), target refs and offsets as in the record-by-record path."""
    led = env.ledger()
    batch = effects(5) + [Effect("ev-p1", "t", 1, 7, {})]
    res = led.apply_batch(batch, env.write, transactional_write=True)
    assert res.applied == [e.effect_id for e in batch] and not res.duplicates and not res.failed
    assert res.offsets == {("t", 0): 5, ("t", 1): 8}
    assert env.targets() == 6 and env.ledger_rows() == 6
    assert env.count("SELECT count(*) FROM {schema}.applied_effects WHERE target_ref LIKE 'row-%%'") == 6
    again = effects(3, start=3) + [Effect("ev-6", "t", 0, 9, {}), Effect("ev-6", "t", 0, 9, {})]
    res = led.apply_batch(again, env.write, transactional_write=True)
    assert res.applied == ["ev-5", "ev-6"] and res.duplicates == ["ev-3", "ev-4", "ev-6"]
    assert env.targets() == 8 and env.ledger_rows() == 8 and led.committed_offsets()[("t", 0)] == 10
    led.close()


def test_whole_batch_at_once_falls_back_to_isolating_the_failing_record(env: Env) -> None:
    led = env.ledger()
    calls: list[str] = []

    def write(cur: psycopg.Cursor[Any], eff: Effect) -> str | None:
        calls.append(eff.effect_id)
        if eff.effect_id == "ev-2":
            cur.execute("SELECT 1/0")  # a database error: the batch-at-once transaction rolls back
        return env.write(cur, eff)

    res = led.apply_batch(effects(4), write, transactional_write=True)
    assert res.applied == ["ev-0", "ev-1", "ev-3"] and list(res.failed) == ["ev-2"]
    assert env.targets() == 3 and env.ledger_rows() == 3  # nothing of the failed attempt is left
    assert env.count("SELECT count(DISTINCT effect_key) FROM {target}") == 3
    assert calls.count("ev-0") == 2  # tried at once, then record by record
    led.close()
