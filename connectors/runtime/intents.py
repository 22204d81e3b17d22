"""The intent protocol of sinks whose target cannot join our database transaction (a REST API, an ERP's
web service): exactly once across a crash between "the target accepted the create" and "our ledger
recorded it".

An *intent* row is committed before any request is sent:

    a. effects already in the ledger               -> duplicates, nothing sent
    b. INSERT intents ... ON CONFLICT DO NOTHING   -> an id whose intent already existed is "in doubt":
                                                      an earlier attempt may have reached the target
    c. ledger.apply_batch: per effect, in doubt?   -> ``lookup(effect_id)`` at the target; found -> record
                                                      its id, do not create; else ``create``
    d. (crash point ``<crashpoint_name>`` between the create and the ledger commit)
    e. after the commit                            -> delete the intents of what is now settled

So the lookup runs only when in doubt, i.e. after a crash or a failed attempt, not once per record. A
target that dedupes by itself (an idempotency key carrying the effect id) sets ``lookup_in_doubt`` false:
every create carries the key and a retried create returns the original object.

:class:`IntentStore` is the table (``<ledger_schema>.http_intents``: connector, effect_id, started_at);
:class:`IntentSinkWriter` is the protocol, a ``SinkWriter`` whose subclass gives ``body_of``, ``lookup``
and ``create`` for its target.
"""

from __future__ import annotations

import json
import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import psycopg
from bizbus.connectors.runtime.ledger import Effect, PgLedger, ledger_lock
from bizbus.connectors.runtime.sink import LedgerSinkWriter, PlannedEffect, SinkRecord, WriteResult
from psycopg import sql

from bizbus.crashpoints import crashpoint
from bizbus.failures import ConnectorError, classify
from bizbus.logs import bound, record_fields
from bizbus.statetables import KeptConnection

log = logging.getLogger(__name__)

INTENT_TABLE = "http_intents"  # one table for every intent sink of a ledger schema, keyed by connector


class IntentStore:
    """The intents of one connector in ``<schema>.http_intents`` (autocommit: each statement is durable
    on return; reconnects after a broken connection)."""

    def __init__(self, dsn: str, schema: str, connector: str, table: str = INTENT_TABLE) -> None:
        self.dsn, self.schema, self.connector = dsn, schema, connector
        self.table = sql.Identifier(schema, table)
        self._kept = KeptConnection(dsn, f"intents {connector}", schema, [
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                    connector text NOT NULL,
                    effect_id text NOT NULL,
                    started_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (connector, effect_id))"""
            ).format(self.table),
        ], lock=ledger_lock(schema))  # fmt: skip

    def setup(self) -> None:
        """Create the table if missing, under the ledger's DDL lock (concurrent setups serialize)."""
        self._kept.make_tables()

    def _connection(self) -> psycopg.Connection[Any]:
        """The intents connection, reopened when it was closed or broke (``bizbus/statetables.py``)."""
        return self._kept.get()

    def insert(self, ids: Sequence[str]) -> set[str]:
        """Record intents for ``ids``; returns the ids that had none (all others are in doubt)."""
        if not ids:
            return set()
        rows = self._connection().execute(
            sql.SQL("INSERT INTO {} (connector, effect_id) SELECT %s, unnest(%s::text[])"
                    " ON CONFLICT DO NOTHING RETURNING effect_id").format(self.table),
            (self.connector, list(ids)),
        ).fetchall()  # fmt: skip
        return {str(r[0]) for r in rows}

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` have an intent (read only, for ``plan``)."""
        if not ids:
            return set()
        rows = self._connection().execute(
            sql.SQL("SELECT effect_id FROM {} WHERE connector = %s AND effect_id = ANY(%s)").format(self.table),
            (self.connector, list(ids)),
        ).fetchall()
        return {str(r[0]) for r in rows}

    def delete(self, ids: set[str]) -> None:
        """Drop settled intents; a failure only leaves stale rows, which the ledger check makes harmless."""
        if not ids:
            return
        try:
            self._connection().execute(
                sql.SQL("DELETE FROM {} WHERE connector = %s AND effect_id = ANY(%s)").format(self.table),
                (self.connector, sorted(ids)),
            )
        except psycopg.Error as exc:
            log.warning("sink %s: could not delete %d settled intent(s): %s", self.connector, len(ids), exc)

    def close(self) -> None:
        self._kept.close()


class IntentSinkWriter(LedgerSinkWriter):
    """Applies each record as one create at a target outside our database, exactly once (ledger + intents).

    Subclasses open their client in ``setup`` (then call ``super().setup()``), close it in ``close`` and
    give ``body_of``, ``lookup`` and ``create``. A ``ConnectorError`` whose class is retryable or fatal fails
    the rest of the batch (nothing more is sent); a permanent one fails only its record.
    """

    crashpoint_name: str = "intent.after-create"
    lookup_in_doubt: bool = True  # False: the target dedupes creates itself (idempotency key)

    def __init__(self, connector: str, state_dsn: str, ledger_schema: str) -> None:
        self.connector = connector
        self.ledger = PgLedger(state_dsn, connector, ledger_schema)
        self.intents = IntentStore(state_dsn, ledger_schema, connector)

    # -- what a target gives ---------------------------------------------------------------------------

    @abstractmethod
    def body_of(self, record: SinkRecord) -> Any:
        """What the create sends for ``record`` (a Permanent error fails only this record)."""

    @abstractmethod
    def lookup(self, effect_id: str) -> str | None:
        """The target's id of the object created for ``effect_id`` earlier ("" when it has none), or None."""

    @abstractmethod
    def create(self, effect_id: str, body: Any) -> tuple[str | None, bool]:
        """Create the object; returns (its id at the target, whether the target replayed an earlier create)."""

    def describe(self, record: SinkRecord, body: Any) -> str:
        """What ``plan`` shows for a create."""
        return json.dumps(body, ensure_ascii=False, default=str)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        self.ledger.setup()
        self.intents.setup()

    def close(self) -> None:
        self.intents.close()
        self.ledger.close()


    # -- the protocol ------------------------------------------------------------------------------------

    def write(self, records: list[SinkRecord]) -> WriteResult:
        """Apply ``records`` exactly once (see the module docstring for the steps)."""
        if not records:
            return WriteResult()
        ids = list(dict.fromkeys(r.effect_id for r in records))
        done = self.ledger.applied_ids(ids)
        fresh = self.intents.insert([i for i in ids if i not in done])
        in_doubt = {i for i in ids if i not in done and i not in fresh}
        found_at_target: set[str] = set()  # created by an earlier attempt: duplicates, not applied
        sent: set[str] = set()  # a create request left for these (the target may have them)
        batch_error: list[ConnectorError] = []  # first batch-wide error: the rest of the batch is not sent

        def apply(_cur: Any, effect: Effect) -> str | None:
            if batch_error:
                raise batch_error[0]
            with bound(**record_fields(effect.payload.value.get("meta"), component=self.connector)):
                return apply_one(effect)

        def apply_one(effect: Effect) -> str | None:
            try:
                body = self.body_of(effect.payload)
                if effect.effect_id in in_doubt and self.lookup_in_doubt:
                    ref = self.lookup(effect.effect_id)
                    if ref is not None:
                        log.info("sink %s: %s is already at the target as %s (found by lookup)",
                                 self.connector, effect.effect_id, ref)  # fmt: skip
                        found_at_target.add(effect.effect_id)
                        return ref or None
                sent.add(effect.effect_id)
                ref, replayed = self.create(effect.effect_id, body)
            except ConnectorError as exc:
                if exc.error_class in ("retryable", "fatal"):
                    batch_error.append(exc)
                raise
            crashpoint(self.crashpoint_name)
            if replayed:
                found_at_target.add(effect.effect_id)
            return ref

        effects = [Effect(r.effect_id, r.topic, r.partition, r.offset, r) for r in records]
        try:
            res = self.ledger.apply_batch(effects, apply)
        except Exception as exc:  # nothing committed; the intents stay, so the retry looks up first
            err = classify(exc)
            if err is exc:
                raise
            raise err from exc
        failed = {k: classify(v) for k, v in res.failed.items()}
        never_sent = set(failed) & (fresh - sent)  # our own new intents that reached nobody
        self.intents.delete(done | set(res.applied) | set(res.duplicates) | never_sent)
        if batch_error:
            raise batch_error[0]
        for err in failed.values():  # e.g. a psycopg error while recording target_ref: retry the batch
            if err.error_class in ("retryable", "fatal"):
                raise err
        dupes = len(found_at_target & set(res.applied))
        return WriteResult(len(res.applied) - dupes, len(res.duplicates) + dupes, failed)

    def plan(self, records: list[SinkRecord]) -> list[PlannedEffect]:
        """What ``write`` would do; reads the ledger, the intents and (when in doubt) the target only."""
        ids = [r.effect_id for r in records]
        done = self.ledger.applied_ids(ids)
        in_doubt = self.intents.existing([i for i in ids if i not in done])
        out: list[PlannedEffect] = []
        for r in records:
            if r.effect_id in done:
                out.append(PlannedEffect(r.effect_id, "skip", "already applied (ledger)"))
                continue
            try:
                body = self.body_of(r)
                ref = self.lookup(r.effect_id) if r.effect_id in in_doubt else None
            except ConnectorError as exc:
                if exc.error_class == "fatal":
                    raise
                out.append(PlannedEffect(r.effect_id, "skip", f"error: {exc}"))
                continue
            if ref is not None:
                out.append(PlannedEffect(r.effect_id, "skip",
                                         f"already at the target as {ref or '(no id)'} (found by lookup)"))  # fmt: skip
                continue
            out.append(PlannedEffect(r.effect_id, "create", self.describe(r, body)))
        return out
