"""The webhook inbox: how a vendor's push (webhook, event callback) and pull (backfill poll) enter the bus.

    vendor ──POST /webhooks/<connector>──► WebhookHandler.handle()  verify signature, decrypt, parse
                                             │ 401 bad signature (metric)      │ 400 malformed (metric + dead letter)
                                             ▼
                                      inbox table (PostgreSQL)   INSERT .. ON CONFLICT DO NOTHING
                                             │                    (delivery id and entity version are unique:
                                             │                     a redelivery or a polled copy is dropped)
                                             ▼  answer the vendor now (fast: one local INSERT)
    Backfill.poll(watermark) ──► same inbox  (what no webhook delivered is counted as a gap)
                                             │
                     inbox source task ──────┘  reads rows in id order (cursor + lease as every source),
                                                Converter.convert(row) -> canonical events (may call the
                                                vendor's API, e.g. to read an approval's form) -> topic

Answering fast matters (DingTalk retries after ~1.5 s); the slow part (API reads, mapping) happens in the
source task, which keeps the usual rule: the cursor moves only after the broker acknowledged. A vendor
field never reaches a topic: rows keep the vendor payload, the converter emits canonical events only.

A vendor connector subclasses ``InboxConnector`` and provides ``handler()``, ``converter()`` and
optionally ``backfill()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import httpx
import psycopg
from bizbus.connectors.runtime import probes
from bizbus.connectors.runtime.base import Connector, Task, TaskSpec
from bizbus.connectors.runtime.cursor import GapGuard, PgCursorStore, Position, pg_ended, pg_in_progress
from bizbus.connectors.runtime.lease import PgLease
from bizbus.connectors.runtime.pgconn import alive, close_quietly, connect
from bizbus.connectors.runtime.source import SourceItem, SourceReader, SourceTask
from bizbus.connectors.runtime.statetables import ensure_tables
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bizbus import metrics
from bizbus.backoff import Backoff
from bizbus.deadletters import DeadLetterWriter, dead_letter
from bizbus.failures import ConnectorError, Permanent, Retryable, classify
from bizbus.settings import no_password

log = logging.getLogger(__name__)

WEBHOOK_REQUESTS = metrics.WEBHOOK_REQUESTS
WEBHOOK_SECONDS = metrics.WEBHOOK_SECONDS
BACKFILL_GAPS = metrics.BACKFILL_GAPS
BACKFILL_POLLS = metrics.BACKFILL_POLLS

DEFAULT_STATE_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- what a vendor module provides -------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    """A request to ``/webhooks/<connector>[/<subpath>]``; header names are lower-case."""

    method: str
    subpath: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class HttpResponse:
    status: int = 200
    body: bytes = b'{"ok":true}'
    content_type: str = "application/json"


@dataclass(frozen=True)
class Delivery:
    """One change a webhook or a poll brought in, stored as is in the inbox.

    ``delivery_id``: the vendor's delivery id (a redelivery repeats it). ``entity_key``: the entity version
    it carries, e.g. ``worklog:10042@1730000000000``; the same version from another delivery or a poll is
    dropped, and the poller's "did a webhook bring this?" asks by it. None when the payload has no version.
    ``kind``: what the payload is, e.g. ``jira:worklog_created``, read by the converter.
    """

    delivery_id: str
    kind: str
    payload: Mapping[str, Any]
    entity_key: str | None = None


@dataclass(frozen=True)
class Accepted:
    """A verified request: the deliveries to store (maybe none) and the answer the vendor expects."""

    deliveries: tuple[Delivery, ...]
    response: HttpResponse = field(default_factory=HttpResponse)


class WebhookRejected(Exception):
    """Refuse a request: 401 (signature, token), 400 (malformed; also dead-lettered), 404, 405 ..."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    @property
    def dead_letter(self) -> bool:
        return self.status == 400


class WebhookHandler(ABC):
    """Verifies and parses one vendor's push requests. Must be fast and must not call the vendor."""

    @abstractmethod
    def handle(self, request: HttpRequest) -> Accepted | HttpResponse:
        """``Accepted`` to store deliveries; a bare ``HttpResponse`` for handshakes (nothing stored);
        raise ``WebhookRejected`` to refuse."""

    def precheck(self, method: str, subpath: str, query: Mapping[str, str], headers: Mapping[str, str]) -> None:
        """Refuse a request from its head alone, before its body is read (raise ``WebhookRejected``): a
        missing signature header, a bad or stale query signature. Default: nothing to check."""


@dataclass(frozen=True)
class InboxRow:
    id: int
    delivery_id: str
    kind: str
    payload: Mapping[str, Any]
    entity_key: str | None
    origin: str  # "webhook" or "poll"
    received_at: datetime
    payload_json: str | None = field(default=None, repr=False, compare=False)  # ``payload`` as stored (text)


@dataclass(frozen=True)
class Event:
    """A canonical event for a catalogue topic; ``value`` has ``meta`` (see bizbus.lineage.meta)."""

    topic: str
    key: str
    value: dict[str, Any]


class Converter(ABC):
    """Turns inbox rows into canonical events; may read the vendor's API (``setup`` opens the client)."""

    def setup(self) -> None:
        """Open clients."""

    @abstractmethod
    def convert(self, row: InboxRow) -> list[Event]:
        """Events for one row (may be none). Raise ``Permanent`` to dead-letter the row, a retryable
        ``ConnectorError`` (``Retryable``, ``BackOff``, ``NotConnected``) to try it again later."""

    def flush(self) -> None:
        """Make durable what ``convert`` remembered for later rows (e.g. an id map), once per batch, after
        its rows were converted and before their events are sent; raise to have the batch read again."""

    def discard(self) -> None:
        """Forget what ``convert`` remembered since the last ``flush`` (called after ``flush`` failed on what
        a row holds: the rows are converted again one by one, and the row it fails on is dead-lettered)."""

    def close(self) -> None:
        """Close clients."""


@dataclass(frozen=True)
class PollResult:
    deliveries: tuple[Delivery, ...]
    watermark: Position  # where the next poll starts; stored only after the deliveries are in the inbox


class Backfill(ABC):
    """Finds changes by asking the vendor (webhooks get lost; some vendors have none)."""

    def setup(self) -> None:
        """Open clients."""

    @abstractmethod
    def poll(self, watermark: Position | None) -> PollResult:
        """Changes since ``watermark`` (None: the configured start); every one needs an ``entity_key``."""

    def close(self) -> None:
        """Close clients."""


# -- the inbox table -----------------------------------------------------------------------------


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


# -- the tasks -------------------------------------------------------------------------------------


class InboxReader(SourceReader):
    """Inbox rows after the cursor ``{"id": N}`` -> canonical events (one ``SourceItem`` per event).

    A row with several events moves the cursor only with its last event; a row with none yields one
    item without a topic (the cursor moves, nothing is sent). A retryable converter error stops the batch
    before that row and backs off; the row is tried again: without limit while the vendor is down or
    throttling (``NotConnected``, ``BackOff``, ``Retryable``, network errors), but an error ``classify`` only
    calls retryable because it does not know it (a ``KeyError``, ``OverflowError``, ``RecursionError`` ...
    from the row's content) counts, and after ``max_attempts`` of them the row becomes a dead letter (its
    original error, with the attempts) so the rows behind it flow on. ``problem()`` says which row is
    retried and why; ``bizbus_source_retrying`` counts its failed attempts. Attempts are counted in memory,
    per row: a restart or a lease take-over counts again from 1.
    """

    def __init__(self, connector: str, inbox: PgInbox, converter: Converter, gap_grace: float = 1.0,
                 backoff_max: float = 30.0, notice_wait: float = 0.04, max_attempts: int = 5) -> None:  # fmt: skip
        self.connector, self.inbox, self.converter = connector, inbox, converter
        # with nothing to read, wait this long for the inbox's commit notification before returning empty
        # (the task then idles 50 ms): rows are read at their commit, not up to one idle wait later
        # (0, or an inbox without notifications: poll only)
        self.notice_wait = notice_wait if hasattr(inbox, "wait_for_rows") else 0.0
        self.guard = GapGuard(gap_grace)
        self.backoff_max = backoff_max
        self.max_attempts = max_attempts
        self._retry_at = 0.0
        self._failures = 0
        self._failing: _Failing | None = None  # the row the reader is stuck at
        self._narrow_to = 0  # after a flush failed on a row's content: one row per batch up to this id

    def setup(self) -> None:
        self.inbox.setup()
        self.converter.setup()
        metrics.SOURCE_RETRYING.labels(self.connector).set(0)

    def problem(self) -> str | None:
        """What keeps the reader from moving on (a row it retries), or None."""
        f = self._failing
        if f is None:
            return None
        if f.bounded:
            return (f"row {f.row} ({f.kind}) failed {f.bounded} of {self.max_attempts} attempts: {f.error}"
                    " (dead-lettered after the last)")  # fmt: skip
        return f"row {f.row} ({f.kind}) waits for the vendor ({f.attempts} attempts so far): {f.error}"

    def read(self, position: Position | None, limit: int) -> list[SourceItem]:
        if time.monotonic() < self._retry_at:
            return []
        after = int(position["id"]) if position else 0
        self.guard.refresh(self.inbox.ended)
        if self.notice_wait:
            self.inbox.forget_notices()
        if self._narrow_to and after >= self._narrow_to:
            self._narrow_to = 0
        limit = 1 if self._narrow_to else limit
        rows = self.inbox.read(after, limit)
        if not rows and self.notice_wait and self.inbox.wait_for_rows(self.notice_wait):
            rows = self.inbox.read(after, limit)
        n = self.guard.admit(after, [r.id for r in rows], time.monotonic(), self.inbox.in_progress)
        items: list[SourceItem] = []
        converted: list[InboxRow] = []
        stuck = False
        for row in rows[:n]:
            try:
                items += self._items(row)
            except Exception as exc:
                err = exc if isinstance(exc, ConnectorError) else classify(exc)
                if err.error_class == "fatal":  # e.g. credentials refused: stop the task, keep the row
                    if err is exc:
                        raise
                    raise err from exc
                if err.error_class in ("permanent", "poison"):
                    if err is exc:
                        raise  # _items made dead-letter items of these, so a bug
                    items.append(self._dead(row, err))  # e.g. a ValueError of the content
                    continue
                dead = self._failed(row, err)
                if dead is None:
                    stuck = True
                    break
                items.append(dead)
                continue
            converted.append(row)
        if items and converted:
            try:
                self.converter.flush()  # what the converter remembered is written before the events go out
            except Exception as exc:  # nothing of the batch is sent; it is read and converted again
                return self._flush_failed(exc, converted)
        if n and not stuck:
            self._flowing(rows[n - 1].id)
        return items

    def _failed(self, row: InboxRow, err: ConnectorError) -> SourceItem | None:
        """Count a retryable failure of ``row``: back off (None), or its dead letter when an unexpected
        error used up ``max_attempts``."""
        f = self._failing
        if f is None or f.row != row.id:
            f = self._failing = _Failing(row.id, row.kind)
        f.attempts += 1
        f.error = str(err) if err.__cause__ is not None else f"{type(err).__name__}: {err}"  # classify() names it
        metrics.RETRIES.labels(self.connector, err.reason).inc()
        metrics.SOURCE_RETRYING.labels(self.connector).set(f.attempts)
        if not counts_against_attempts(err):
            self._back_off(f"row {row.id} ({row.kind})", err)
            return None
        f.bounded += 1
        if f.bounded < self.max_attempts:
            self._back_off(f"row {row.id} ({row.kind}), attempt {f.bounded} of {self.max_attempts}", err)
            return None
        log.error("inbox %s row %d (%s): failed %d times with an unexpected error; dead-lettering it",
                  self.connector, row.id, row.kind, f.bounded, exc_info=err.__cause__ or err)  # fmt: skip
        self._flowing(row.id)
        return self._dead(row, err, attempts=f.bounded)

    def _flush_failed(self, exc: Exception, converted: list[InboxRow]) -> list[SourceItem]:
        """``converter.flush()`` failed: nothing of the batch is sent. The vendor's or our database being
        down waits; a failure caused by what a row holds (a value the state table refuses) is narrowed to
        its row: one row per batch, and the row whose flush keeps failing is dead-lettered."""
        err = exc if isinstance(exc, ConnectorError) else classify(exc)
        if err.error_class == "fatal":
            if err is exc:
                raise exc
            raise err from exc
        what = f"rows {converted[0].id}..{converted[-1].id} (converter state not written)"
        if err.error_class == "retryable" and not counts_against_attempts(err):
            self._back_off(what, err)
            return []
        self.converter.discard()
        if len(converted) > 1:
            log.warning("inbox %s %s: %s; converting them one by one", self.connector, what, err)
            self._narrow_to = converted[-1].id
            return []
        dead = self._failed(converted[0], err if err.error_class == "retryable" else _unexpected(err))
        return [dead] if dead is not None else []

    def _flowing(self, through: int) -> None:
        """The reader got through row ``through``: past the row it was stuck at, if that is not further on."""
        if self._failing is not None and self._failing.row <= through:
            log.info("inbox %s: past row %d after %d failed attempt(s)", self.connector, self._failing.row,
                     self._failing.attempts)  # fmt: skip
            self._failing = None
            metrics.SOURCE_RETRYING.labels(self.connector).set(0)
        self._failures = 0

    def _items(self, row: InboxRow) -> list[SourceItem]:
        try:
            events = self.converter.convert(row)
        except ConnectorError as exc:
            if exc.error_class not in ("permanent", "poison"):
                raise
            return [self._dead(row, exc)]
        raw = functools.partial(self._raw, row)  # made only if an event of the row becomes a dead letter
        origin = f"inbox:{self.connector}"
        if not events:
            return [SourceItem(position={"id": row.id}, origin=origin, offset=row.id, raw=raw)]
        before = {"id": row.id - 1}
        return [
            SourceItem(position={"id": row.id} if i == len(events) - 1 else before, origin=origin, offset=row.id,
                       raw=raw, topic=e.topic, key=e.key.encode(), value=e.value)
            for i, e in enumerate(events)
        ]  # fmt: skip

    def _dead(self, row: InboxRow, err: ConnectorError, attempts: int = 1) -> SourceItem:
        log.warning("inbox %s row %d (%s): %s", self.connector, row.id, row.kind, err)
        return SourceItem(position={"id": row.id}, origin=f"inbox:{self.connector}", offset=row.id,
                          raw=functools.partial(self._raw, row), error=err, attempts=attempts)  # fmt: skip

    @staticmethod
    def _raw(row: InboxRow) -> bytes:
        """The row as JSON (what a dead letter of it carries)."""
        if row.payload_json is None:
            return json.dumps({"delivery_id": row.delivery_id, "kind": row.kind, "origin": row.origin,
                               "payload": row.payload}, ensure_ascii=False, default=str).encode()  # fmt: skip
        head = json.dumps(
            {"delivery_id": row.delivery_id, "kind": row.kind, "origin": row.origin}, ensure_ascii=False
        )
        return f'{head[:-1]}, "payload": {row.payload_json}}}'.encode()

    def _back_off(self, what: str, err: ConnectorError) -> None:
        self._failures += 1
        wait = Backoff(0.5, self.backoff_max).delay(self._failures)
        retry_after = getattr(err, "retry_after", None)
        if retry_after:
            wait = max(wait, float(retry_after))
        self._retry_at = time.monotonic() + wait
        log.warning("inbox %s %s: %s; trying again in %.1f s", self.connector, what, err, wait)

    def close(self) -> None:
        self.converter.close()
        self.inbox.close()


@dataclass
class _Failing:
    """The row a reader is stuck at: failed attempts in all, those that count against max_attempts, why."""

    row: int
    kind: str
    attempts: int = 0
    bounded: int = 0
    error: str = ""


# what says the vendor (or our database) is unreachable, whatever classify() made of it: waited for, not counted
_UNREACHABLE = (OSError, httpx.TransportError, psycopg.OperationalError, psycopg.InterfaceError)


def counts_against_attempts(err: ConnectorError) -> bool:
    """True for a retryable failure that may be the record's fault, so it is retried only ``max_attempts``
    times: one ``classify`` calls retryable only because it does not know it (reason ``unexpected``: a
    ``KeyError``, ``TypeError``, ``OverflowError``, ``decimal.InvalidOperation``, ``RecursionError`` ...). A
    converter's own ``NotConnected`` / ``BackOff`` / ``Retryable`` (the vendor is down or throttling) and a
    network or database connection error are waited out without limit."""
    if err.error_class != "retryable" or err.reason != "unexpected":
        return False
    cause = err.__cause__
    return not isinstance(cause, _UNREACHABLE)


def _unexpected(err: ConnectorError) -> ConnectorError:
    """A permanent error of a converter's flush, as a counted retryable one (the state may be at fault)."""
    out = Retryable(str(err), reason="unexpected")
    out.__cause__ = err.__cause__ or err
    return out


class BackfillTask(Task):
    """Polls the vendor every ``interval`` seconds under the shard lease ``backfill``; found changes the
    inbox does not have yet go in (counted as gaps when the connector also takes webhooks). A found change
    the inbox cannot store for what it holds (a NUL character, an unpaired surrogate, nesting too deep) is a
    dead letter (``backfill:<connector>``), and the poll goes on past it."""

    def __init__(self, connector: str, backfill: Backfill, inbox: PgInbox, state_dsn: str, state_schema: str,
                 interval: float, count_gaps: bool, dlq: DeadLetterWriter | None = None) -> None:  # fmt: skip
        self.connector, self.backfill, self.inbox, self.dlq = connector, backfill, inbox, dlq
        self.state_dsn, self.state_schema = state_dsn, state_schema
        self.interval, self.count_gaps = interval, count_gaps
        self._next = 0.0
        self._paused = False
        self.gaps = 0

    def setup(self) -> None:
        self.lease = PgLease(self.state_dsn, self.connector, "backfill")
        self.store = PgCursorStore(self.state_dsn, self.state_schema)
        self.inbox.setup()
        self.backfill.setup()
        if self.dlq is not None:
            self.dlq.setup()
        metrics.init_component(self.connector, metrics.BACKFILL_GAPS)

    def step(self) -> int:
        if self._paused or time.monotonic() < self._next:
            return 0
        self._next = time.monotonic() + self.interval
        if not self.lease.held:
            if not self.lease.try_acquire():
                return 0
            self.store.setup(conn=self.lease.conn)
        watermark = self.store.load(self.connector, "backfill")
        try:
            result = self.backfill.poll(watermark)
        except Exception as exc:  # a failed poll is retried at the next interval; the watermark stays
            err = classify(exc)
            if err.error_class == "fatal":
                raise
            BACKFILL_POLLS.labels(self.connector, "failed").inc()
            log.warning(
                "backfill %s: poll failed (%s); next try in %.0f s", self.connector, err, self.interval
            )
            return 0
        added = 0
        dead = 0
        try:
            for d in result.deliveries:
                if d.entity_key is not None and self.inbox.has_entity(d.entity_key):
                    continue
                try:
                    stored = self.inbox.add(d, "poll")
                except (psycopg.Error, UnicodeEncodeError, RecursionError) as exc:
                    if self.dlq is None or not _refused_content(exc):
                        raise
                    self._dead_letter(d, exc)
                    dead += 1
                    continue
                if stored:
                    added += 1
                    if self.count_gaps:
                        BACKFILL_GAPS.labels(self.connector).inc()
                        log.info(
                            "backfill %s: %s was not delivered by a webhook (gap)",
                            self.connector,
                            d.entity_key,
                        )
        except psycopg.Error as exc:  # the inbox is down: keep the watermark, poll again next interval
            BACKFILL_POLLS.labels(self.connector, "failed").inc()
            log.warning(
                "backfill %s: inbox unavailable (%s); next try in %.0f s", self.connector, exc, self.interval
            )
            return added
        if dead:
            assert self.dlq is not None
            try:
                self.dlq.flush(30)
            except ConnectorError as exc:  # the watermark stays: the next poll finds them again
                log.warning("backfill %s: dead letters not acknowledged (%s)", self.connector, exc)
                return added
        try:
            self.store.store(self.connector, "backfill", dict(result.watermark))
        except psycopg.Error as exc:
            log.warning("backfill %s: lease session lost (%s)", self.connector, exc)
            self.lease.release()
        self.gaps += added if self.count_gaps else 0
        BACKFILL_POLLS.labels(self.connector, "ok").inc()
        return added

    def recover(self) -> None:
        """After a failed step (the state database away): poll again at the runtime's next try, not only
        after a whole interval."""
        self._next = 0.0

    def _dead_letter(self, d: Delivery, exc: BaseException) -> None:
        try:
            raw = json.dumps({"delivery_id": d.delivery_id, "kind": d.kind, "entity_key": d.entity_key,
                              "payload": d.payload}, default=str).encode()  # fmt: skip
        except (RecursionError, ValueError):
            raw = repr(d).encode("utf-8", "backslashreplace")[:100_000]
        log.warning("backfill %s: %s (%s) cannot be stored: %s; dead-lettered", self.connector, d.delivery_id,
                    d.kind, exc)  # fmt: skip
        assert self.dlq is not None
        self.dlq.send(dead_letter(connector=self.connector, topic=f"backfill:{self.connector}", partition=0,
                                  offset=int.from_bytes(hashlib.sha256(raw).digest()[:6], "big"),
                                  key=(d.entity_key or d.delivery_id).encode("utf-8", "backslashreplace"), value=raw,
                                  headers=None, timestamp_ms=None, attempts=1,
                                  error=Permanent(f"the inbox cannot store it: {type(exc).__name__}: {exc}",
                                                  reason="malformed")))  # fmt: skip

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def close(self) -> None:
        self.backfill.close()
        self.inbox.close()
        if self.dlq is not None:
            self.dlq.close()
        if getattr(self, "lease", None) is not None:
            self.lease.release()


# -- the connector -----------------------------------------------------------------------------


class InboxConfig(BaseModel):
    """Settings every inbox connector has (vendor configs extend this model)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    state_dsn: str = Field(default=DEFAULT_STATE_DSN,
                           description="PostgreSQL holding the inbox, cursors and leases (no password: PGPASSWORD or ~/.pgpass)")  # fmt: skip
    state_schema: str = Field(default="bizbus_state", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                              description="schema of the inbox table inbox_<connector>")  # fmt: skip
    batch_size: int = Field(default=200, ge=1, le=10_000, description="inbox rows converted per batch")
    poll_interval_seconds: float = Field(default=300, ge=0.1, le=86_400,
                                         description="how often the backfill poll runs (if the connector has one)")  # fmt: skip
    max_attempts: int = Field(default=5, ge=1, le=1000,
                              description="conversions of one inbox row that fail with an unexpected error (content the"
                              " converter cannot handle: KeyError, OverflowError, RecursionError ...) before the row is"
                              " dead-lettered and the rows behind it flow on; the vendor being down or throttling is"
                              " waited out without this limit")  # fmt: skip
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024,
                                description="largest webhook body accepted (larger: 413, refused before it is read)")  # fmt: skip

    _dsn = field_validator("state_dsn")(no_password)


class InboxConnector(Connector):
    """Webhook endpoint + inbox source task (+ backfill task) for one vendor system."""

    kind = "source"
    takes_webhooks: ClassVar[bool] = True

    @abstractmethod
    def handler(self) -> WebhookHandler | None:
        """The push side (None: poll only)."""

    @abstractmethod
    def converter(self) -> Converter:
        """Inbox rows -> canonical events."""

    def backfill(self) -> Backfill | None:
        """The pull side (None: webhooks only)."""

    def probe(self) -> str | None:
        """The inbox database (webhooks are answered from it)."""
        return probes.pg(self.config.state_dsn)  # type: ignore[attr-defined]
        return None

    # Connector ------------------------------------------------------------------------------------

    def validate(self) -> None:
        for topic in self.topics():
            self.ctx.catalogue.get(topic)

    def topics(self) -> tuple[str, ...]:
        """Catalogue topics this connector writes (checked at start)."""
        return ()

    def _inbox(self) -> PgInbox:
        c: Any = self.config
        return PgInbox(c.state_dsn, c.state_schema, self.name)

    def setup(self) -> None:
        self._webhook = self.handler()
        self._webhook_inbox = self._inbox()
        self._webhook_inbox.setup()
        kafka = self.ctx.settings.kafka_config()
        self._dlq = DeadLetterWriter(kafka, self.ctx.serde)
        self._dlq.setup()
        super().setup()

    def start_tasks(self, paused: bool | None = None) -> None:
        """New tasks, and a new producer for the webhook's dead letters: after a replaced broker an idempotent
        producer of the old one never delivers again (its sequence numbers mean nothing to the new log)."""
        old, self._dlq = self._dlq, DeadLetterWriter(self.ctx.settings.kafka_config(), self.ctx.serde)
        self._dlq.setup()
        old.abandon()
        old.close()
        super().start_tasks(paused)

    def task_specs(self, max_tasks: int) -> list[TaskSpec]:
        specs = [TaskSpec(0, shard="inbox")]
        if self.backfill() is not None:
            specs.append(TaskSpec(1, shard="backfill"))
        return specs

    def create_task(self, spec: TaskSpec) -> Task:
        c: Any = self.config
        if spec.shard == "backfill":
            bf = self.backfill()
            assert bf is not None
            return BackfillTask(self.name, bf, self._inbox(), c.state_dsn, c.state_schema, c.poll_interval_seconds,
                                count_gaps=self._webhook is not None,
                                dlq=DeadLetterWriter(self.ctx.settings.kafka_config(), self.ctx.serde))  # fmt: skip
        kafka = self.ctx.settings.kafka_config()
        reader = InboxReader(self.name, self._inbox(), self.converter(), max_attempts=c.max_attempts)
        return SourceTask(self.name, "inbox", reader, kafka, self.ctx.serde, self.ctx.catalogue,
                          DeadLetterWriter(kafka, self.ctx.serde), c.state_dsn, c.state_schema, batch_size=c.batch_size)  # fmt: skip

    # the push side (called by bizbus's HTTP server) ---------------------------------------------------

    async def webhook_async(self, request: HttpRequest) -> HttpResponse:
        """Answer a webhook on the HTTP server's event loop: checked on the loop (the handler is pure CPU),
        stored through the inbox's writer thread, answered when committed; a dead letter is written in a
        thread of the loop's executor."""
        started = time.perf_counter()
        try:
            outcome = self._screen(request)
            if isinstance(outcome, _Rejected):
                await asyncio.get_running_loop().run_in_executor(None, self._dead_letter_body, request,
                                                                 outcome.exc)  # fmt: skip
                return outcome.response
            if not isinstance(outcome, Accepted):
                return outcome
            try:
                added = await self._webhook_inbox.add_many_async(outcome.deliveries, "webhook")
            except psycopg.Error as exc:
                if _refused_content(exc):
                    return await asyncio.get_running_loop().run_in_executor(None, self._refused_by_inbox,
                                                                            request, exc)  # fmt: skip
                return self._unavailable(exc)
            except (RecursionError, UnicodeEncodeError) as exc:  # too deep to write as JSON, unpaired surrogate
                return await asyncio.get_running_loop().run_in_executor(None, self._malformed, request,
                                                                        self._handler_failed(exc))  # fmt: skip
            return self._stored(outcome, added)
        finally:
            WEBHOOK_SECONDS.labels(self.name).observe(time.perf_counter() - started)

    def webhook_gate(self, method: str, subpath: str, query: Mapping[str, str],
                     headers: Mapping[str, str]) -> tuple[int, HttpResponse | None]:  # fmt: skip
        """Before the body is read: the largest body accepted and, when the handler's ``precheck`` refuses
        the request from its head, the answer (counted and logged like any rejection)."""
        limit = int(getattr(self.config, "max_body_bytes", 4 * 1024 * 1024))
        handler = getattr(self, "_webhook", None)
        if handler is None:
            return limit, _json(404, {"error": f"connector {self.name} takes no webhooks"})
        started = time.perf_counter()
        try:
            handler.precheck(method, subpath, query, headers)
        except WebhookRejected as exc:
            WEBHOOK_REQUESTS.labels(self.name, exc.reason).inc()
            log.warning("webhook %s: %d %s (before the body): %s", self.name, exc.status, exc.reason, exc.message)
            WEBHOOK_SECONDS.labels(self.name).observe(time.perf_counter() - started)  # every answer is timed
            return limit, _json(exc.status, {"error": exc.message})
        return limit, None

    def _screen(self, request: HttpRequest) -> Accepted | HttpResponse | _Rejected:
        """The handler's verdict: deliveries to store, an answer (handshake, rejection), or a rejection whose
        body the caller must dead-letter."""
        handler = getattr(self, "_webhook", None)
        if handler is None:
            return _json(404, {"error": f"connector {self.name} takes no webhooks"})
        try:
            outcome = handler.handle(request)
        except Exception as raised:  # noqa: BLE001 - whatever a signed body makes a handler raise is the body's fault
            exc = raised if isinstance(raised, WebhookRejected) else self._handler_failed(raised)
            WEBHOOK_REQUESTS.labels(self.name, exc.reason).inc()
            log.warning("webhook %s: %d %s: %s", self.name, exc.status, exc.reason, exc.message)
            response = _json(exc.status, {"error": exc.message})
            if exc.dead_letter:
                return _Rejected(exc, response)
            return response
        if isinstance(outcome, HttpResponse):
            WEBHOOK_REQUESTS.labels(self.name, "handshake").inc()
        return outcome

    def _handler_failed(self, exc: Exception) -> WebhookRejected:
        """An exception of the handler other than ``WebhookRejected`` (e.g. a ``RecursionError`` of deeply
        nested JSON, a ``TypeError`` of an envelope field of the wrong type): the body is malformed, so a 400
        with a dead letter of it, never a 500 the vendor would retry forever. Its traceback is logged once
        per exception type (a bug to fix in the handler), later ones in one line."""
        kind = type(exc).__name__
        seen: set[str] = self.__dict__.setdefault("_handler_failures", set())
        if kind not in seen:
            seen.add(kind)
            log.error("webhook %s: a body could not be handled (%s); answered 400 malformed and dead-lettered"
                      " (traceback logged once per exception type)", self.name, kind, exc_info=exc)  # fmt: skip
        return WebhookRejected(400, "malformed", f"the body could not be handled: {kind}: {str(exc)[:500]}")

    def _refused_by_inbox(self, request: HttpRequest, exc: psycopg.Error) -> HttpResponse | None:
        """A row PostgreSQL refuses for what it holds (data exception, class 22: e.g. a character jsonb cannot
        hold; or a program limit, class 54: e.g. nesting past the stack depth) is a malformed body: 400 and a
        dead letter. None for anything else (the inbox is unavailable)."""
        if not _refused_content(exc):
            return None
        return self._malformed(request, WebhookRejected(400, "malformed",
                                                        f"the inbox cannot store the body: {str(exc)[:500]}"))  # fmt: skip

    def _malformed(self, request: HttpRequest, rejected: WebhookRejected) -> HttpResponse:
        """A body found malformed after the handler accepted it: counted, logged, dead-lettered, 400."""
        WEBHOOK_REQUESTS.labels(self.name, rejected.reason).inc()
        log.warning("webhook %s: %d %s: %s", self.name, rejected.status, rejected.reason, rejected.message)
        self._dead_letter_body(request, rejected)
        return _json(rejected.status, {"error": rejected.message})

    def _unavailable(self, exc: psycopg.Error) -> HttpResponse:
        """Not stored: the vendor must retry, so do not say "ok"."""
        WEBHOOK_REQUESTS.labels(self.name, "error").inc()
        log.error("webhook %s: inbox unavailable: %s", self.name, exc)
        return _json(503, {"error": "inbox unavailable, retry later"})

    def _stored(self, outcome: Accepted, added: list[bool]) -> HttpResponse:
        for stored in added:
            WEBHOOK_REQUESTS.labels(self.name, "accepted" if stored else "duplicate").inc()
        return outcome.response

    def _dead_letter_body(self, request: HttpRequest, exc: WebhookRejected) -> None:
        digest = int.from_bytes(hashlib.sha256(request.body).digest()[:6], "big")
        self._dlq.send(dead_letter(connector=self.name, topic=f"webhook:{self.name}", partition=0, offset=digest,
                                   key=None, value=request.body, headers=None, timestamp_ms=None,
                                   error=Permanent(exc.message, reason=exc.reason), attempts=1))  # fmt: skip
        try:
            self._dlq.flush(10)
        except ConnectorError as err:
            log.error("webhook %s: dead letter not acknowledged: %s", self.name, err)

    def close(self) -> None:
        super().close()
        for name in ("_webhook_inbox", "_dlq"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.close()


_REFUSED_CONTENT = ("22", "54")  # SQLSTATE classes of a row PostgreSQL refuses for its content


def _refused_content(exc: BaseException) -> bool:
    """The inbox refused a row for what it holds (not because the database is away)."""
    if isinstance(exc, psycopg.Error):
        return (exc.sqlstate or "")[:2] in _REFUSED_CONTENT
    return isinstance(exc, UnicodeEncodeError | RecursionError)


@dataclass(frozen=True)
class _Rejected:
    """A rejected webhook whose body is still to be dead-lettered, and the answer to give after that."""

    exc: WebhookRejected
    response: HttpResponse


def _json(status: int, body: dict[str, Any]) -> HttpResponse:
    return HttpResponse(status, json.dumps(body, ensure_ascii=False).encode())


def reject_unless(condition: bool, status: int, reason: str, message: str) -> None:
    """Small helper for handlers: ``reject_unless(sig_ok, 401, "bad_signature", "...")``."""
    if not condition:
        raise WebhookRejected(status, reason, message)


def require(mapping: Mapping[str, Any], *keys: str, what: str = "body") -> None:
    """Raise a 400 naming the first missing key."""
    for k in keys:
        if k not in mapping or mapping[k] in (None, ""):
            raise WebhookRejected(400, "malformed", f"{what} lacks {k!r}")


def parse_json_body(body: bytes | str) -> Any:
    """Decode a JSON body or raise a 400 ``malformed``; also for what the inbox (PostgreSQL jsonb) cannot
    store: ``NaN`` / ``Infinity`` and numbers beyond a float (``1e400``), a NUL character or an unpaired
    surrogate in a string, and nesting deeper than Python's JSON parser goes."""
    try:
        value = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except (UnicodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise WebhookRejected(400, "malformed", f"body is not JSON: {exc}") from None
    if (b"\\u" if isinstance(body, bytes) else "\\u") in body:  # only escapes can make them
        bad = _unstorable(value)
        if bad:
            raise WebhookRejected(400, "malformed", f"body has {bad}, which the inbox cannot store")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _unstorable(value: Any) -> str | None:
    """What in a parsed JSON value PostgreSQL's jsonb refuses (a NUL character, an unpaired surrogate)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            if "\x00" in v:
                return "a NUL character in a string"
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return "an unpaired surrogate in a string"
    return None


__all__ = ["Accepted", "Backfill", "BackfillTask", "Converter", "Delivery", "Event", "HttpRequest", "HttpResponse",
           "InboxConfig", "InboxConnector", "InboxReader", "InboxRow", "PgInbox", "PollResult", "WebhookHandler",
           "WebhookRejected", "parse_json_body", "reject_unless", "require"]  # fmt: skip
