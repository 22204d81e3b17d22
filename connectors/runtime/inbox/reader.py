"""The inbox source task's reader: inbox rows after the cursor become canonical events."""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass

import httpx
import psycopg
from bizbus.connectors.runtime.cursor import GapGuard, Position
from bizbus.connectors.runtime.inbox.interface import (
    Converter,
    InboxRow,
)
from bizbus.connectors.runtime.inbox.store import PgInbox
from bizbus.connectors.runtime.source import SourceItem, SourceReader

from bizbus import metrics
from bizbus.backoff import Backoff
from bizbus.failures import ConnectorError, Retryable, classify

log = logging.getLogger(__name__)

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
