"""The inbox table (``<schema>.inbox_<connector>``): stores deliveries with one group commit for many
concurrent webhooks, and reads them back in id order for the inbox source task."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from bizbus.connectors.runtime.cursor import pg_ended, pg_in_progress
from bizbus.connectors.runtime.inbox.interface import (
    Delivery,
    InboxRow,
)
from psycopg import sql

from bizbus.pgconn import alive, close_quietly, connect
from bizbus.statetables import ensure_tables

log = logging.getLogger(__name__)

_REFUSED_CONTENT = ("22", "54")  # SQLSTATE classes of a row PostgreSQL refuses for its content


def inbox_table(connector: str) -> str:
    return "inbox_" + connector.replace("-", "_")


class PgInbox:
    """One table per connector (ids stay dense, so the reader's gap guard works as for an outbox).

    Writes use group commit: concurrent ``add`` / ``add_many`` calls (threads) and ``add_many_async`` calls
    (coroutines of bizbus's HTTP server, led by the inbox's writer thread) queue up; whichever caller
    finds no write under way leads: it takes the queue (up to ``group_max`` rows) and
    stores it with one multi-row INSERT, a single transaction and WAL flush, and wakes the callers in it.
    The next queued caller then leads the next group. Alone, a caller writes at once (no timer, no added
    wait); under load a commit carries many requests instead of one WAL flush and round trip each. Every
    caller returns only after the commit holding its rows, so an answer given after ``add`` still means
    "durable". A failing group is written again one caller at a time, so one bad row fails only its own
    request. Writes are serialized, so ids are committed in order and the reader sees no transient gaps.

    Under load a leader first gathers for ``group_wait`` seconds (only when the previous group was written
    less than ``BUSY_GAP`` ago; an idle inbox writes at once). Without it, groups at 1,000 webhooks/s held
    one or two requests, and a commit's fixed cost (~0.3-0.6 ms of PostgreSQL CPU, measured in the
    backend's /proc stat) made the inbox's backend the busiest process after the worker itself (~47 % of
    a core); with 3 ms a group holds a handful and the commits' CPU drops accordingly.
    """

    BUSY_GAP = 0.05  # s: a group written this recently means requests are arriving back to back

    def __init__(
        self, dsn: str, schema: str, connector: str, group_max: int = 500, group_wait: float = 0.003
    ) -> None:
        self.dsn, self.schema, self.connector = dsn, schema, connector
        self.table = sql.Identifier(schema, inbox_table(connector))
        self.group_max, self.group_wait = group_max, group_wait
        self._last_write = -1.0  # monotonic end of the last group write
        self._local = threading.local()
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._writing = False  # a leader is writing a group (it alone uses self._writer)
        self._writer: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None  # the reader's LISTEN (wait_for_rows)
        self._listen_failing = False  # the last LISTEN attempt failed (logged once)
        self._async_writer: concurrent.futures.ThreadPoolExecutor | None = None  # see add_many_async
        self.channel = f"bizbus_{inbox_table(connector)}"[:63]  # NOTIFY'd by every commit that stored rows
        self.groups = 0  # group commits done (for tests and the curious)
        # the group's rows travel as ONE JSON array of [delivery_id, entity_key, kind, origin, payload]
        # (measured: psycopg's text[] dumper, escaping each payload in Python, took ~40 % of the worker's CPU)
        # pg_notify in the same statement: the reader wakes at the commit (PostgreSQL sends one notification
        # per transaction and channel, and none when nothing was stored)
        self._insert_sql = sql.SQL(
            "WITH ins AS (INSERT INTO {t} (delivery_id, entity_key, kind, origin, payload)"
            " SELECT u.r->>0, u.r->>1, u.r->>2, u.r->>3, u.r->4"
            " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS u(r, n)"
            # a copy already stored is skipped before it draws an id (a burnt id is a gap the reader waits out)
            " WHERE NOT EXISTS (SELECT 1 FROM {t} x WHERE x.delivery_id = u.r->>0)"
            " AND (u.r->>1 IS NULL OR NOT EXISTS (SELECT 1 FROM {t} x WHERE x.entity_key = u.r->>1))"
            " ORDER BY u.n ON CONFLICT DO NOTHING RETURNING delivery_id, entity_key)"
            " SELECT ins.delivery_id, ins.entity_key FROM ins, LATERAL (SELECT pg_notify({c}, '')) AS n"
        ).format(t=self.table, c=sql.Literal(self.channel))

    def _connect(self, role: str = "") -> psycopg.Connection[Any]:
        return connect(self.dsn, f"inbox{role} {self.connector}")

    def _conn(self) -> psycopg.Connection[Any]:
        """This thread's read connection (reopened when it was closed or broke)."""
        conn = getattr(self._local, "conn", None)
        if not alive(conn):
            close_quietly(conn)
            conn = self._local.conn = self._connect()
        return conn

    def setup(self) -> None:
        conn = self._conn()
        name = inbox_table(self.connector)
        ensure_tables(conn, self.schema, [
            sql.SQL("""CREATE TABLE IF NOT EXISTS {} (
                id bigserial PRIMARY KEY, delivery_id text NOT NULL UNIQUE, entity_key text NULL UNIQUE,
                kind text NOT NULL, origin text NOT NULL, payload jsonb NOT NULL,
                received_at timestamptz NOT NULL DEFAULT now())""").format(self.table),
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                self.table, sql.Literal(f"bizbus webhook inbox of connector {self.connector} ({name})")),
        ], lock="bizbus inbox ddl")  # fmt: skip

    def add(self, delivery: Delivery, origin: str) -> bool:
        """Store a delivery; False when its delivery id or entity version is already there."""
        return self.add_many((delivery,), origin)[0]

    def add_many(self, deliveries: Sequence[Delivery], origin: str) -> list[bool]:
        """Store deliveries in one transaction (all or none), each True if stored, False if already there.

        Returns after the commit that holds them; raises the ``psycopg.Error`` of that write otherwise."""
        if not deliveries:
            return []
        me = self._waiter(deliveries, origin)
        with self._lock:
            self._queue.append(me)
            lead = not self._writing
            self._writing = True
        if not lead:
            me.wake.wait()  # woken when our group committed (done), or to lead the next group
        if not me.done:
            self._lead()
        return me.outcome()

    async def add_many_async(self, deliveries: Sequence[Delivery], origin: str) -> list[bool]:
        """``add_many`` for a caller on an event loop (bizbus's HTTP server): the rows join the same group
        commit, written by the inbox's writer thread, and the coroutine resumes when their commit is done;
        the loop never blocks. One loop wake-up per group, not per request."""
        if not deliveries:
            return []
        loop = asyncio.get_running_loop()
        me = self._waiter(deliveries, origin)
        me.loop, me.future = loop, loop.create_future()
        with self._lock:
            self._queue.append(me)
            lead = not self._writing
            self._writing = True
        if lead:
            self._writer_thread().submit(self._lead_logged)
        await me.future
        return me.outcome()

    @staticmethod
    def _waiter(deliveries: Sequence[Delivery], origin: str) -> _Waiter:
        rows = [json.dumps([d.delivery_id, d.entity_key, d.kind, origin, d.payload], ensure_ascii=False, default=str)
                for d in deliveries]  # fmt: skip
        for row in rows:  # an unpaired surrogate fails here, for its caller alone, not in the group's INSERT
            row.encode()
        return _Waiter([(d.delivery_id, d.entity_key) for d in deliveries], rows)

    def _writer_thread(self) -> concurrent.futures.ThreadPoolExecutor:
        """The thread that leads group commits for callers on an event loop (they cannot wait themselves)."""
        with self._lock:
            if self._async_writer is None:
                self._async_writer = concurrent.futures.ThreadPoolExecutor(1, f"inbox-writer-{self.connector}")
            return self._async_writer

    def _gather(self) -> bool:
        """Under load (a group was written less than ``BUSY_GAP`` ago) wait ``group_wait`` so the requests
        arriving meanwhile join this group; True if it waited."""
        if self.group_wait and time.monotonic() - self._last_write < self.BUSY_GAP:
            time.sleep(self.group_wait)
            return True
        return False

    def _lead(self) -> None:
        """Write one group (this caller's included), wake its callers, hand the lead to the next in line."""
        self._gather()
        with self._lock:
            group: list[_Waiter] = []
            rows = 0
            while self._queue and (not group or rows + len(self._queue[0].keys) <= self.group_max):
                w = self._queue.pop(0)
                group.append(w)
                rows += len(w.keys)
        try:
            self._write_group(group)
        except BaseException as exc:  # never leave a caller waiting, whatever broke
            for w in group:
                if not w.done:
                    w.finish(error=exc)
            raise
        finally:
            self._last_write = time.monotonic()
            _wake(group)
            with self._lock:
                head = self._queue[0] if self._queue else None
                if head is None:
                    self._writing = False
            if head is not None:
                if head.loop is None:
                    head.wake.set()  # it leads next (its ``done`` is still False)
                else:  # a caller on an event loop: the writer thread leads for it
                    self._writer_thread().submit(self._lead_logged)

    def _lead_logged(self) -> None:
        """``_lead`` on the writer thread, where nobody would see an exception (its callers got it)."""
        try:
            self._lead()
        except BaseException as exc:
            log.exception("inbox %s: the writer thread failed: %s", self.connector, exc)

    def _write_group(self, group: list[_Waiter]) -> None:
        self.groups += 1
        try:
            added = self._insert(group)
        except psycopg.Error as exc:
            if len(group) == 1 or not alive(self._writer):
                for w in group:  # a lost connection fails everyone; a lone caller gets its own error
                    w.finish(error=exc)
                return
            log.warning("inbox %s: a group of %d requests failed (%s); writing them one by one",
                        self.connector, len(group), exc)  # fmt: skip
            for w in group:
                try:
                    w.finish(added=self._insert([w]))
                except psycopg.Error as one:
                    w.finish(error=one)
            return
        start = 0
        for w in group:
            w.finish(added=added[start : start + len(w.keys)])
            start += len(w.keys)

    def _insert(self, group: list[_Waiter]) -> list[bool]:
        """One INSERT (one transaction) of the group's rows; per row whether it was stored.

        A writer connection found broken by this INSERT (its backend was terminated, the server restarted
        since the last group) is replaced and the INSERT sent once more on the new one, so the callers do
        not see the old session's end. Safe: the INSERT skips rows already stored, and a statement that
        failed on a dead connection was not committed (a commit whose answer was lost is found again as
        stored rows, which the callers then see as duplicates)."""
        was_open = alive(self._writer)  # a new connection that fails is the server's answer: no second try
        try:
            return self._insert_once(group)
        except psycopg.OperationalError as exc:
            if not was_open or alive(self._writer):
                raise
            log.warning("inbox %s: the writer's connection broke (%s); writing on a new one",
                        self.connector, str(exc).strip().splitlines()[0] if str(exc).strip() else exc)  # fmt: skip
            return self._insert_once(group)

    def _insert_once(self, group: list[_Waiter]) -> list[bool]:
        if not alive(self._writer):
            close_quietly(self._writer)
            self._writer = self._connect(" writer")
        assert self._writer is not None
        doc = "[" + ",".join(j for w in group for j in w.json) + "]"
        # never prepared: a cached generic plan, made while the table was small, kept its duplicate checks
        # as scans of the whole table, so every commit cost more as the inbox grew (measured 0.4 -> 1.4 ms of
        # backend CPU per row from 6k to 11k rows); planned per group they stay index probes (~0.1 ms)
        stored = self._writer.execute(self._insert_sql, (doc,), prepare=False).fetchall()
        # a stored (delivery id, entity key) is the first row with both: rows go in in order, later copies conflict
        left: dict[tuple[str, str | None], int] = {}
        for delivery_id, entity_key in stored:
            left[(delivery_id, entity_key)] = left.get((delivery_id, entity_key), 0) + 1
        added = []
        for delivery_id, entity_key in (k for w in group for k in w.keys):
            n = left.get((delivery_id, entity_key), 0)
            added.append(n > 0)
            if n:
                left[(delivery_id, entity_key)] = n - 1
        return added

    def has_entity(self, entity_key: str) -> bool:
        row = (
            self._conn()
            .execute(sql.SQL("SELECT 1 FROM {} WHERE entity_key = %s").format(self.table), (entity_key,))
            .fetchone()
        )
        return row is not None

    def read(self, after: int, limit: int) -> list[InboxRow]:
        rows = self._conn().execute(
            sql.SQL("SELECT id, delivery_id, kind, payload::text, entity_key, origin, received_at FROM {}"
                    " WHERE id > %s ORDER BY id LIMIT %s").format(self.table), (after, limit),
        ).fetchall()  # fmt: skip
        # the payload's text is kept: a dead letter's raw bytes embed it without encoding the payload again
        return [InboxRow(i, d, k, json.loads(p), e, o, r, p) for i, d, k, p, e, o, r in rows]

    def forget_notices(self) -> None:
        """Drop the commit notifications received so far (call before a read: what comes after is new)."""
        self._notices(0)

    def wait_for_rows(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a commit that stored rows (any process); False on timeout. Lets an
        idle reader react at the commit instead of at its next poll; without LISTEN it returns False at once."""
        return self._notices(timeout) > 0

    def _notices(self, timeout: float) -> int:
        try:
            if not alive(self._listener):
                close_quietly(self._listener)
                self._listener = self._connect(" listen")
                self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            n = len(list(self._listener.notifies(timeout=timeout, stop_after=None if timeout == 0 else 1)))
        except psycopg.Error as exc:  # polling still works: the next read finds the rows
            if not self._listen_failing:  # once per outage, not at every read
                log.warning("inbox %s: LISTEN %s failed (%s); polling until it works again",
                            self.connector, self.channel, exc)  # fmt: skip
            self._listen_failing = True
            close_quietly(self._listener)
            self._listener = None
            return 0
        if self._listen_failing:
            log.info("inbox %s: LISTEN %s works again", self.connector, self.channel)
            self._listen_failing = False
        return n

    def in_progress(self) -> list[int]:
        return pg_in_progress(self._conn())

    def ended(self, xids: list[int]) -> bool:
        return pg_ended(self._conn(), xids)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            close_quietly(conn)
            self._local.conn = None
        with self._lock:
            writer, idle = self._writer, not self._writing
        if writer is not None and idle:  # a leader still writing closes nothing under its feet
            close_quietly(writer)
            self._writer = None
        if self._listener is not None:
            close_quietly(self._listener)
            self._listener = None
        if self._async_writer is not None:
            self._async_writer.shutdown(wait=False)
            self._async_writer = None


@dataclass(eq=False)
class _Waiter:
    """One caller of ``PgInbox.add_many`` waiting for the group commit that holds its rows."""

    keys: list[tuple[str, str | None]]  # (delivery_id, entity_key) of each row
    json: list[str]  # each row as the JSON array [delivery_id, entity_key, kind, origin, payload]
    wake: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None  # set for a caller on an event loop (add_many_async) ...
    future: asyncio.Future[None] | None = None  # ... which awaits this instead of ``wake``
    done: bool = False
    added: list[bool] = field(default_factory=list)
    error: BaseException | None = None

    def finish(self, added: list[bool] | None = None, error: BaseException | None = None) -> None:
        self.added, self.error, self.done = added or [], error, True

    def outcome(self) -> list[bool]:
        if self.error is not None:
            raise self.error
        return self.added


def _wake(group: list[_Waiter]) -> None:
    """Wake a written group's callers: threads through their event, coroutines with one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for w in group:
        if w.loop is None:
            w.wake.set()
        elif w.future is not None:
            by_loop.setdefault(w.loop, []).append(w.future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop (the server stopped): nobody waits any more
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for f in futures:
        if not f.done():  # a request cancelled at shutdown
            f.set_result(None)


def refused_content(exc: BaseException) -> bool:
    """The inbox refused a row for what it holds (not because the database is away)."""
    if isinstance(exc, psycopg.Error):
        return (exc.sqlstate or "")[:2] in _REFUSED_CONTENT
    return isinstance(exc, UnicodeEncodeError | RecursionError)
