"""Group commit in the webhook inbox (PgInbox.add / add_many), against the real PostgreSQL: concurrent
callers share one INSERT and commit, each learns its own result, a duplicate is still absorbed, a row the
database refuses fails only its own caller, and no caller returns before the commit that holds its rows.

Concurrency is made deterministic, not timed: the first group's INSERT is held until every other caller
has queued behind it, so the second group holds all of them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from bizbus.connectors.runtime.inbox import (
    Converter,
    Delivery,
    Event,
    InboxReader,
    InboxRow,
    PgInbox,
)
from bizbus.connectors.runtime.inbox.store import _Waiter
from psycopg import sql

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "bizbus_test_inbox"


class HeldInbox(PgInbox):
    """A PgInbox whose next group INSERT, once ``hold_for`` is set, waits until that many callers queued
    behind it; records how many callers each INSERT carried and which delivery ids had been committed."""

    def __init__(self, connector: str, group_max: int = 500) -> None:
        super().__init__(DSN, SCHEMA, connector, group_max=group_max)
        self.hold_for = 0
        self.holding = threading.Event()
        self.sizes: list[int] = []
        self.committed: set[str] = set()  # delivery ids whose INSERT statement had returned

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def _insert(self, group: list[_Waiter]) -> list[bool]:
        if self.hold_for:
            self.holding.set()
            deadline = time.monotonic() + 30  # only against a hang; nothing here is timed
            while self.queued() < self.hold_for:
                assert time.monotonic() < deadline, "the other callers never queued"
                time.sleep(0.001)
            self.hold_for = 0
        self.sizes.append(len(group))
        added = super()._insert(group)
        self.committed.update(d for w in group for d, _ in w.keys)
        return added


@pytest.fixture
def name(postgres: psycopg.Connection) -> Iterator[str]:
    connector = f"gc-{uuid.uuid4().hex[:8]}"
    yield connector
    postgres.execute(
        sql.SQL("DROP TABLE IF EXISTS {}").format(
            sql.Identifier(SCHEMA, "inbox_" + connector.replace("-", "_"))
        )
    )


def delivery(n: int | str, entity: str | None = None, **payload: Any) -> Delivery:
    return Delivery(f"d-{n}", "test", {"n": str(n), **payload}, entity if entity is not None else f"e-{n}")


def stored(postgres: psycopg.Connection, inbox: PgInbox) -> list[tuple[int, str]]:
    return postgres.execute(
        sql.SQL("SELECT id, delivery_id FROM {} ORDER BY id").format(inbox.table)
    ).fetchall()


def run_held(inbox: HeldInbox, first: list[Delivery], others: list[list[Delivery]]) -> dict[int, Any]:
    """``first`` is written alone and held until every list of ``others`` is queued behind it (so they form
    the next group); returns each caller's result or exception by index (0: the first caller)."""
    results: dict[int, Any] = {}

    def call(i: int, ds: list[Delivery]) -> None:
        try:
            results[i] = inbox.add_many(ds, "webhook")
        except Exception as exc:  # the test looks at it
            results[i] = exc

    inbox.hold_for = len(others)
    inbox.holding.clear()
    lead = threading.Thread(target=call, args=(0, first))
    lead.start()
    assert inbox.holding.wait(30)
    threads = [threading.Thread(target=call, args=(i + 1, ds)) for i, ds in enumerate(others)]
    for t in threads:
        t.start()
    for t in [lead, *threads]:
        t.join(60)
    return results


def test_concurrent_adds_share_one_commit_and_each_caller_gets_its_own_result(postgres, name) -> None:
    inbox = HeldInbox(name)
    inbox.setup()
    assert inbox.add(delivery(1), "webhook") is True  # already stored before the burst
    others = [[delivery(i)] for i in range(2, 12)] + [[delivery(1)], [delivery(20), delivery(21)]]
    results = run_held(inbox, [delivery(0)], others)
    assert results[0] == [True]
    assert [results[i + 1] for i in range(len(others))] == [[True]] * 10 + [[False], [True, True]]
    assert inbox.sizes == [1, 1, len(others)]  # the earlier single add, the held leader, then ONE group
    ids = stored(postgres, inbox)
    assert sorted(d for _, d in ids) == sorted(
        ["d-0", "d-1", *(f"d-{i}" for i in range(2, 12)), "d-20", "d-21"]
    )
    assert [i for i, _ in ids] == list(range(ids[0][0], ids[0][0] + len(ids)))  # dense: no id burnt
    inbox.close()


def test_duplicates_inside_one_group_are_absorbed(postgres, name) -> None:
    inbox = HeldInbox(name)
    inbox.setup()
    others = [[delivery(1)], [delivery(1)],  # the same delivery twice (a redelivery racing the first)
              [Delivery("d-other", "test", {"n": "x"}, "e-1")],  # another delivery of the same entity version
              [Delivery("d-2", "test", {"n": "2"}, None), Delivery("d-3", "test", {"n": "3"}, None)]]  # fmt: skip
    results = run_held(inbox, [delivery(0)], others)
    assert results == {0: [True], 1: [True], 2: [False], 3: [False], 4: [True, True]}
    assert sorted(d for _, d in stored(postgres, inbox)) == ["d-0", "d-1", "d-2", "d-3"]
    assert inbox.add(delivery(1), "poll") is False  # and later, from the poll
    inbox.close()


def test_a_row_the_database_refuses_fails_only_its_own_caller(postgres, name) -> None:
    inbox = HeldInbox(name)
    inbox.setup()
    poison = Delivery("d-bad", "test", {"text": "nul \u0000 char"}, "e-bad")  # jsonb refuses \u0000
    others = [[delivery(1)], [poison], [delivery(2), delivery(3)]]
    results = run_held(inbox, [delivery(0)], others)
    assert results[0] == [True] and results[1] == [True] and results[3] == [True, True]
    assert isinstance(results[2], psycopg.Error)
    assert sorted(d for _, d in stored(postgres, inbox)) == ["d-0", "d-1", "d-2", "d-3"]
    assert inbox.add(delivery(4), "webhook") is True  # the writer goes on
    inbox.close()


def test_no_caller_returns_before_the_commit_holding_its_rows(postgres, name) -> None:
    inbox = HeldInbox(name)
    inbox.setup()
    seen: dict[str, tuple[bool, bool]] = {}
    other = psycopg.connect(DSN, autocommit=True)
    lock = threading.Lock()

    def call(n: int) -> None:
        d = delivery(n)
        inbox.add(d, "webhook")
        visible = other_sees(d.delivery_id)
        with lock:
            seen[d.delivery_id] = (d.delivery_id in inbox.committed, visible)

    def other_sees(delivery_id: str) -> bool:
        with lock:
            return other.execute(sql.SQL("SELECT 1 FROM {} WHERE delivery_id = %s").format(inbox.table),
                                 (delivery_id,)).fetchone() is not None  # fmt: skip

    threads = [threading.Thread(target=call, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    other.close()
    assert len(seen) == 40
    assert all(committed and visible for committed, visible in seen.values()), seen
    assert sum(inbox.sizes) == 40
    inbox.close()


def test_groups_are_bounded_and_a_terminated_writer_is_replaced_unnoticed(postgres, name) -> None:
    inbox = HeldInbox(name, group_max=3)
    inbox.setup()
    results = run_held(inbox, [delivery(0)], [[delivery(i)] for i in range(1, 8)])
    assert all(results[i] == [True] for i in range(8))
    assert inbox.sizes[0] == 1 and max(inbox.sizes) <= 3 and sum(inbox.sizes) == 8
    assert inbox._writer is not None
    pid = inbox._writer.info.backend_pid
    assert inbox._writer.info.parameter_status("application_name") == f"bizbus inbox writer {name}"
    postgres.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # the group that finds the writer's session gone is written again on a new one: the caller sees nothing
    assert inbox.add(delivery(9), "webhook") is True
    assert inbox._writer.info.backend_pid != pid
    assert inbox.add(delivery(9), "webhook") is False  # stored once
    assert [d for _, d in stored(postgres, inbox)].count("d-9") == 1
    inbox.close()


class WatchedInbox(PgInbox):
    """Says when the reader starts waiting for a commit notification, and keeps what each wait returned."""

    def __init__(self, connector: str) -> None:
        super().__init__(DSN, SCHEMA, connector)
        self.waiting = threading.Event()
        self.woken: list[bool] = []

    def wait_for_rows(self, timeout: float) -> bool:
        self.waiting.set()
        self.woken.append(super().wait_for_rows(timeout))
        return self.woken[-1]


class Echo(Converter):
    def convert(self, row: InboxRow) -> list[Event]:
        return [Event("t", row.delivery_id, {"n": row.payload["n"]})]


def test_an_idle_reader_wakes_at_the_commit_and_not_for_duplicates(name) -> None:
    writer, watched = PgInbox(DSN, SCHEMA, name), WatchedInbox(name)
    writer.setup()
    reader = InboxReader(name, watched, Echo(), notice_wait=30.0)  # only a notification ends the wait early
    got: list[Any] = []

    def read() -> None:
        got.append(reader.read(None, 10))

    t = threading.Thread(target=read)
    t.start()
    assert watched.waiting.wait(30)  # it found nothing and waits: the row below is stored after that
    assert writer.add(delivery(1), "webhook") is True
    t.join(60)
    assert [[i.key for i in items] for items in got] == [[b"d-1"]] and watched.woken == [True]

    idle = InboxReader(name, watched, Echo(), notice_wait=0.3)
    watched.waiting.clear()
    got.clear()
    t = threading.Thread(target=lambda: got.append(idle.read({"id": 1}, 10)))
    t.start()
    assert watched.waiting.wait(30)
    assert writer.add(delivery(1), "poll") is False  # a duplicate stores nothing and wakes nobody
    t.join(60)
    assert got == [[]] and watched.woken == [True, False]
    writer.close()
    watched.close()


def test_the_group_insert_is_planned_for_each_group_never_a_cached_generic_plan(postgres, name) -> None:
    """A prepared (generic) plan of the INSERT is fixed while the table is small; its duplicate checks then
    became scans whose cost grew with the inbox (measured: 0.4 -> 1.4 ms of backend CPU per row while the
    table grew from 6k to 11k rows). The statement must stay unprepared however often it runs."""
    inbox = PgInbox(DSN, SCHEMA, name)
    inbox.setup()
    for i in range(12):  # psycopg prepares a statement from its 5th execution unless told not to
        inbox.add(delivery(i), "test")
    assert inbox._writer is not None
    prepared = inbox._writer.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    assert [s for (s,) in prepared if "jsonb_array_elements" in s] == []
    assert [d for _, d in stored(postgres, inbox)] == [f"d-{i}" for i in range(12)]
    inbox.close()


class CountingSleeps(PgInbox):
    def __init__(self, connector: str, group_wait: float = 0.002) -> None:
        super().__init__(DSN, SCHEMA, connector, group_wait=group_wait)
        self.gathered = 0
        self.sizes: list[int] = []

    def _gather(self) -> bool:
        waited = super()._gather()
        self.gathered += waited
        return waited

    def _insert(self, group: list[_Waiter]) -> list[bool]:
        self.sizes.append(len(group))
        return super()._insert(group)


def test_a_busy_leader_gathers_and_an_idle_one_writes_at_once(postgres, name) -> None:
    inbox = CountingSleeps(name)
    inbox.setup()
    inbox._last_write = -1.0
    inbox.add(delivery("idle"), "test")
    assert inbox.gathered == 0  # nothing written lately: no wait
    inbox.add(delivery("busy"), "test")
    assert inbox.gathered == 1  # the previous group ended just now: this one waited for company
    inbox._last_write = time.monotonic() - 2 * PgInbox.BUSY_GAP
    inbox.add(delivery("later"), "test")
    assert inbox.gathered == 1
    assert [d for _, d in stored(postgres, inbox)] == ["d-idle", "d-busy", "d-later"]
    inbox.close()


def test_a_request_arriving_while_a_busy_leader_gathers_joins_its_group(postgres, name) -> None:
    inbox = CountingSleeps(name, group_wait=0.5)  # long enough for a second thread to queue meanwhile
    inbox.setup()
    inbox.add(delivery("first"), "test")  # the inbox is now busy: the next leader gathers
    lead = threading.Thread(target=inbox.add, args=(delivery("leader"), "test"))
    lead.start()
    deadline = time.monotonic() + 30  # only against a hang
    while not inbox._writing:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    inbox.add(delivery("joiner"), "test")  # queues behind the gathering leader, written with it
    lead.join()
    assert inbox.gathered >= 1 and inbox.sizes == [1, 2]
    assert [d for _, d in stored(postgres, inbox)] == ["d-first", "d-leader", "d-joiner"]
    inbox.close()


# -- callers on an event loop (bizbus's HTTP server): add_many_async ------------------------------------


def run_held_async(inbox: HeldInbox, first: list[Delivery], others: list[list[Delivery]],
                   sync_others: list[list[Delivery]] = ()) -> tuple[dict[int, Any], int]:  # type: ignore[assignment]  # fmt: skip
    """Like ``run_held`` with every caller a coroutine on one loop (plus optional thread callers among the
    queued ones); returns the results by index and how often a ticker coroutine ran while the first INSERT
    was held (it runs only if the loop is free while the writer thread waits on PostgreSQL)."""
    import asyncio

    results: dict[int, Any] = {}
    ticks = 0

    async def call(i: int, ds: list[Delivery]) -> None:
        try:
            results[i] = await inbox.add_many_async(ds, "webhook")
        except Exception as exc:  # the test looks at it
            results[i] = exc

    def call_sync(i: int, ds: list[Delivery]) -> None:
        try:
            results[i] = inbox.add_many(ds, "webhook")
        except Exception as exc:
            results[i] = exc

    async def main() -> None:
        nonlocal ticks
        inbox.hold_for = len(others) + len(sync_others)
        inbox.holding.clear()
        lead = asyncio.ensure_future(call(0, first))
        while not inbox.holding.is_set():  # the writer thread took the first group and holds it
            await asyncio.sleep(0.001)
        tasks = [asyncio.ensure_future(call(i + 1, ds)) for i, ds in enumerate(others)]
        threads = [threading.Thread(target=call_sync, args=(100 + i, ds)) for i, ds in enumerate(sync_others)]
        for t in threads:
            t.start()
        while inbox.hold_for:  # still held: the loop keeps running other work meanwhile
            ticks += 1
            await asyncio.sleep(0.001)
        await asyncio.wait_for(asyncio.gather(lead, *tasks), 60)
        for t in threads:
            await asyncio.get_running_loop().run_in_executor(None, t.join, 60)

    asyncio.run(main())
    return results, ticks


def test_coroutines_share_group_commits_and_never_block_their_loop(postgres, name) -> None:
    inbox = HeldInbox(name)
    inbox.setup()
    assert inbox.add(delivery(1), "webhook") is True
    others = [[delivery(i)] for i in range(2, 12)] + [[delivery(1)], [delivery(20), delivery(21)]]
    results, ticks = run_held_async(inbox, [delivery(0)], others)
    assert results[0] == [True]
    assert [results[i + 1] for i in range(len(others))] == [[True]] * 10 + [[False], [True, True]]
    assert inbox.sizes == [1, 1, len(others)]  # the earlier single add, the held first group, then ONE group
    assert ticks > 0  # the loop ran other coroutines while PostgreSQL had the first group
    assert sorted(d for _, d in stored(postgres, inbox)) == sorted(
        ["d-0", "d-1", *(f"d-{i}" for i in range(2, 12)), "d-20", "d-21"]
    )
    inbox.close()


def test_a_refused_row_fails_only_its_coroutine_and_thread_callers_mix_in(postgres, name) -> None:
    inbox = HeldInbox(name, group_max=4)  # several groups: the lead passes between the writer and threads
    inbox.setup()
    poison = Delivery("d-bad", "test", {"text": "nul \u0000 char"}, "e-bad")  # jsonb refuses \u0000
    others = [[delivery(1)], [poison], [delivery(2), delivery(3)], [delivery(4)], [delivery(5)]]
    sync_others = [[delivery(50)], [delivery(51)], [delivery(1)]]
    results, _ = run_held_async(inbox, [delivery(0)], others, sync_others)
    assert isinstance(results[2], psycopg.Error)
    assert {i: r for i, r in results.items() if i != 2} == {
        0: [True], 1: results[1], 3: [True, True], 4: [True], 5: [True], 100: [True], 101: [True],
        102: results[102],
    }  # fmt: skip
    assert sorted([results[1], results[102]]) == [[False], [True]]  # d-1 twice: one stored, one duplicate
    assert inbox.sizes[0] == 1 and max(inbox.sizes) <= 4  # group_max bounds every group, whoever leads it
    assert sorted(d for _, d in stored(postgres, inbox)) == sorted(
        ["d-0", "d-1", "d-2", "d-3", "d-4", "d-5", "d-50", "d-51"]
    )
    assert inbox.add(delivery(6), "webhook") is True  # a thread caller after the writer thread led
    inbox.close()
