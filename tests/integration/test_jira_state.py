"""The jira converter's state (PgState) is written once per batch by ``flush()``, against the real
PostgreSQL; a failed flush keeps what it could not write, and the inbox reader sends nothing of a batch
whose converter state was not written (the rows are read again)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest
from bizbus.connectors.runtime.inbox import Converter, Delivery, Event, InboxReader, InboxRow, PgInbox
from bizbus.connectors.sources.jira.mapping import WorklogFacts
from bizbus.connectors.sources.jira.state import IssueRef, PgState, state_tables
from psycopg import sql

from bizbus.failures import Retryable

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "bizbus_test_state"


@pytest.fixture
def connector(postgres: psycopg.Connection) -> Iterator[str]:
    name = f"st-{uuid.uuid4().hex[:8]}"
    yield name
    for table in (*state_tables(name), "inbox_" + name.replace("-", "_")):
        postgres.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(SCHEMA, table)))


def facts(hours: str) -> WorklogFacts:
    return WorklogFacts("P1", "P1-7", "acc-1", date(2026, 11, 2), Decimal(hours))


def test_remembered_state_is_written_by_flush_and_read_back(postgres, connector) -> None:
    state = PgState(DSN, SCHEMA, connector)
    state.setup()
    state.remember_issue("10001", IssueRef("P1-7", "P1"))
    state.remember_worklog("20001", facts("1.50"))
    state.remember_worklog("20001", facts("2.25"))  # the last one counts
    issues, worklogs = (sql.Identifier(SCHEMA, t) for t in state_tables(connector))
    assert postgres.execute(sql.SQL("SELECT count(*) FROM {}").format(worklogs)).fetchone()[0] == 0
    state.flush()
    assert postgres.execute(sql.SQL("SELECT issue_key, project_key FROM {}").format(issues)).fetchall() == [
        ("P1-7", "P1")
    ]
    assert postgres.execute(sql.SQL("SELECT hours, work_date FROM {}").format(worklogs)).fetchall() == [
        (Decimal("2.25"), date(2026, 11, 2))
    ]
    state.close()
    fresh = PgState(DSN, SCHEMA, connector)  # a restarted worker reads it back
    fresh.setup()
    assert fresh.issue("10001") == IssueRef("P1-7", "P1")
    assert fresh.worklog("20001") == facts("2.25")
    fresh.close()


def test_a_failed_flush_keeps_its_rows_for_the_next(postgres, connector) -> None:
    state = PgState(DSN, SCHEMA, connector)
    state.setup()
    state.remember_worklog("20002", facts("3.00"))
    postgres.execute("SELECT pg_terminate_backend(%s)", (state._db().info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        state.flush()
    state.remember_worklog("20002", facts("3.00"))  # converted again: already in memory, still to write
    state.flush()
    worklogs = sql.Identifier(SCHEMA, state_tables(connector)[1])
    assert postgres.execute(sql.SQL("SELECT worklog_id, hours FROM {}").format(worklogs)).fetchall() == [
        ("20002", Decimal("3.00"))
    ]
    state.close()


class FlakyFlush(Converter):
    def __init__(self) -> None:
        self.fail = True
        self.flushes = 0

    def convert(self, row: InboxRow) -> list[Event]:
        meta = {"occurred_at": datetime(2026, 11, 2, tzinfo=UTC)}
        return [Event("t", row.delivery_id, {"meta": meta, "n": row.payload["n"]})]

    def flush(self) -> None:
        self.flushes += 1
        if self.fail:
            raise Retryable("state database down")


def test_the_reader_sends_nothing_of_a_batch_whose_state_was_not_written(connector) -> None:
    inbox = PgInbox(DSN, SCHEMA, connector)
    inbox.setup()
    inbox.add_many([Delivery(f"d-{i}", "k", {"n": i}, None) for i in range(3)], "webhook")
    conv = FlakyFlush()
    reader = InboxReader(connector, inbox, conv, backoff_max=0.0)
    assert reader.read(None, 10) == []  # converted, flush failed: nothing goes out
    conv.fail = False
    reader._retry_at = 0.0  # the back-off is over
    items = reader.read(None, 10)
    assert [(i.key, i.position) for i in items] == [
        (b"d-0", {"id": 1}),
        (b"d-1", {"id": 2}),
        (b"d-2", {"id": 3}),
    ]
    assert conv.flushes == 2
    assert reader.read({"id": 3}, 10) == [] and conv.flushes == 2  # no rows: no flush
    reader.close()


def test_memory_holds_a_bounded_number_of_worklogs_and_postgresql_all_of_them(postgres, connector) -> None:
    state = PgState(DSN, SCHEMA, connector, cache_max=50)
    state.setup()
    for i in range(40):
        state.remember_worklog(str(30000 + i), facts("1.00"))
    state.flush()
    for i in range(40, 120):  # not flushed yet: these must stay in memory whatever the bound says
        state.remember_worklog(str(30000 + i), facts("2.00"))
    assert all(str(30000 + i) in state._worklogs for i in range(40, 120))  # dirty: kept
    assert not any(str(30000 + i) in state._worklogs for i in range(40))  # written: dropped first
    state.flush()
    for i in range(120, 130):
        state.remember_worklog(str(30000 + i), facts("3.00"))
    assert len(state._worklogs) <= 50  # back under the bound once the others are written
    assert state.worklog("30003") == facts("1.00")  # dropped from memory, read back from PostgreSQL
    state.close()


class StateConverter(Converter):
    """Remembers each row's worklog facts in a real PgState (written by flush), one event per row."""

    def __init__(self, state: PgState) -> None:
        self.state = state

    def convert(self, row: InboxRow) -> list[Event]:
        self.state.remember_worklog(str(row.payload["n"]), facts(row.payload["hours"]))
        return [Event("t", str(row.payload["n"]), {"meta": {}})]

    def flush(self) -> None:
        self.state.flush()

    def discard(self) -> None:
        self.state.discard()


def test_a_row_whose_state_the_table_refuses_is_found_and_dead_lettered_the_others_go_on(connector) -> None:
    """hours numeric(9,2) cannot hold 1e10: the batch's flush fails on one row's content. The reader converts
    the rows one by one, dead-letters the one whose flush keeps failing (after max_attempts) and the others
    are written and sent; nothing of the refused row stays in the converter's state."""
    inbox = PgInbox(DSN, SCHEMA, connector)
    inbox.setup()
    inbox.add_many([Delivery(f"d-{i}", "k", {"n": i, "hours": h}, None)
                    for i, h in enumerate(["1.00", "1E+10", "2.00"])], "webhook")  # fmt: skip
    state = PgState(DSN, SCHEMA, connector)
    state.setup()
    reader = InboxReader(connector, inbox, StateConverter(state), backoff_max=0.0, max_attempts=2)
    position, sent, dead, problems = None, [], [], []
    for _ in range(10):
        for item in reader.read(position, 10):
            (dead if item.error else sent).append(item)
            position = item.position
        problems.append(reader.problem())
    assert [i.key for i in sent] == [b"0", b"2"]
    assert [(i.offset, i.attempts, i.error.error_class, i.error.reason) for i in dead] == [
        (2, 2, "retryable", "unexpected")]  # fmt: skip
    assert "numeric field overflow" in str(dead[0].error)
    assert any(p and p.startswith("row 2 (k) failed 1 of 2 attempts") for p in problems)
    assert problems[-1] is None and position == {"id": 3}
    assert state.worklog("1") is None and state.worklog("2") == facts("2.00") and state.worklog("0") == facts("1.00")
    reader.close()
    state.close()
