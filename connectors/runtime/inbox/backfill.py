"""The backfill task: polls the vendor and puts what no webhook brought into the inbox."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import psycopg
from bizbus.connectors.runtime.base import Task
from bizbus.connectors.runtime.cursor import PgCursorStore
from bizbus.connectors.runtime.inbox.interface import (
    Backfill,
    Delivery,
)
from bizbus.connectors.runtime.inbox.store import PgInbox, refused_content
from bizbus.connectors.runtime.lease import PgLease

from bizbus import metrics
from bizbus.deadletters import DeadLetterWriter, dead_letter
from bizbus.failures import ConnectorError, Permanent, classify

log = logging.getLogger(__name__)

BACKFILL_GAPS = metrics.BACKFILL_GAPS
BACKFILL_POLLS = metrics.BACKFILL_POLLS


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
                    if self.dlq is None or not refused_content(exc):
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
