"""``pg-outbox``: the transactional-outbox source. An application writes its business change and an outbox
row in one transaction; this source turns each outbox row into a canonical Avro event.

Outbox table (created when ``create_table`` is true)::

    id             bigserial PRIMARY KEY   -- change sequence, the cursor
    topic          text NOT NULL           -- catalogue topic, e.g. bizbus.pm.timesheet.v1
    entity_key     text NOT NULL           -- business key; the Kafka key
    version        bigint NULL             -- entity version if the application has one
    payload        jsonb NOT NULL          -- the event without ``meta``, as plain JSON (money as strings)
    correlation_id text NULL               -- business document; defaults to entity_key
    created_at     timestamptz NOT NULL DEFAULT now()

``event_id`` = uuid5(source_system, topic, entity_key, version or id): reading a row again gives the
same id. A row whose topic is not in the catalogue or whose payload does not fit the schema becomes a
dead letter (origin ``pg:<table>``, offset = row id) and the cursor moves on.

Ids from a sequence can become visible out of order (a transaction that took id 7 commits after the
one that took id 8; a rolled-back one leaves 7 out for ever). ``GapGuard`` keeps the cursor from jumping
a gap until every transaction that could still fill it has ended.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
from bizbus.connectors.runtime import probes
from bizbus.connectors.runtime.base import Connector, Task, TaskSpec
from bizbus.connectors.runtime.cursor import GapGuard, Position, pg_ended, pg_in_progress
from bizbus.connectors.runtime.source import SourceItem, SourceReader, SourceTask
from bizbus.schemas import catalog
from psycopg import sql

from bizbus import lineage
from bizbus.catalogue import Catalogue
from bizbus.deadletters import DeadLetterWriter
from bizbus.errors import ConfigError
from bizbus.failures import Permanent
from bizbus.jsonavro import from_json
from bizbus.statetables import KeptConnection, Statement, ensure_tables

from .config import PgOutboxConfig

OUTBOX_LOCK = "bizbus outbox ddl"
"""The advisory lock under which outbox tables are made (several workers may start at once)."""


class PgOutboxReader(SourceReader):
    """Reads outbox rows after the cursor ``{"id": N}`` and maps them to canonical events."""

    def __init__(self, connector: str, config: PgOutboxConfig, catalogue: Catalogue) -> None:
        self.connector, self.config, self.catalogue = connector, config, catalogue
        self.guard = GapGuard(config.gap_grace_seconds)
        self._schemas: dict[str, Any] = {}
        purpose = f"outbox {connector}"
        if config.create_table:  # made at setup; otherwise the application's table is only read
            schema = config.table.split(".")[0]
            self._kept = KeptConnection(config.dsn, purpose, schema, outbox_ddl(config.table), lock=OUTBOX_LOCK)
        else:
            self._kept = KeptConnection(config.dsn, purpose)

    def setup(self) -> None:
        if self.config.create_table:
            self._kept.make_tables()

    def _db(self) -> psycopg.Connection[Any]:
        """The outbox connection, reopened when it was closed or broke (a terminated backend, a restart)."""
        return self._kept.get()

    def read(self, position: Position | None, limit: int) -> list[SourceItem]:
        after = int(position["id"]) if position else 0
        self.guard.refresh(self._ended)
        schema, table = self.config.table.split(".")
        rows = self._db().execute(
            sql.SQL(
                "SELECT id, topic, entity_key, version, payload, correlation_id, created_at"
                " FROM {} WHERE id > %s ORDER BY id LIMIT %s"
            ).format(sql.Identifier(schema, table)),
            (after, limit),
        ).fetchall()
        n = self.guard.admit(after, [r[0] for r in rows], time.monotonic(), self._in_progress)
        return [self._item(r) for r in rows[:n]]

    def _in_progress(self) -> list[int]:
        return pg_in_progress(self._db())

    def _ended(self, xids: list[int]) -> bool:
        return pg_ended(self._db(), xids)

    def _item(self, row: tuple[Any, ...]) -> SourceItem:
        rid, topic, key, version, payload, correlation_id, created_at = row
        origin = f"pg:{self.config.table}"
        raw = json.dumps({"topic": topic, "entity_key": key, "version": version, "payload": payload},
                         ensure_ascii=False, default=str).encode()  # fmt: skip
        common = {
            "position": {"id": rid},
            "origin": origin,
            "offset": rid,
            "raw": raw,
            "key": str(key).encode(),
        }
        if self.config.topics and topic not in self.config.topics:
            return SourceItem(**common, error=Permanent(f"row {rid}: topic {topic!r} is not one this source may write "
                                                        f"({', '.join(self.config.topics)})", reason="unknown_topic"))  # fmt: skip
        try:
            spec = self.catalogue.get(topic)
        except (KeyError, ValueError, ConfigError):
            return SourceItem(
                **common, error=Permanent(f"row {rid}: unknown topic {topic!r}", reason="unknown_topic")
            )
        if not isinstance(payload, dict):
            return SourceItem(
                **common, error=Permanent(f"row {rid}: payload is not a JSON object", reason="malformed")
            )
        schema = self._schemas.get(spec.value_schema)
        if schema is None:
            schema = self._schemas[spec.value_schema] = catalog.load(spec.value_schema)
        eid = lineage.event_id(self.config.source_system, topic, key, version if version is not None else rid)
        m = lineage.meta(event_id=eid, correlation_id=correlation_id or str(key),
                         source_system=self.config.source_system, occurred_at=created_at)  # fmt: skip
        try:
            value = from_json(schema, {**payload, "meta": {**m, "occurred_at": created_at.isoformat()}})
        except ValueError as exc:
            return SourceItem(**common, error=Permanent(f"row {rid}: {exc}", reason="schema_mismatch"))
        return SourceItem(**common, topic=topic, value=value)

    def close(self) -> None:
        self._kept.close()


def outbox_ddl(table: str) -> list[Statement]:
    """The statement that makes the outbox table ``schema.name`` if missing."""
    schema, name = table.split(".")
    return [sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
            id bigserial PRIMARY KEY, topic text NOT NULL, entity_key text NOT NULL, version bigint NULL,
            payload jsonb NOT NULL, correlation_id text NULL, created_at timestamptz NOT NULL DEFAULT now())"""
    ).format(sql.Identifier(schema, name))]  # fmt: skip


def create_outbox(conn: psycopg.Connection[Any], table: str) -> None:
    """Create the outbox table if missing (safe when several workers start at once)."""
    ensure_tables(conn, table.split(".")[0], outbox_ddl(table), lock=OUTBOX_LOCK)


class PgOutboxSource(Connector):
    """One shard per outbox table; a second worker stands by on the lease."""

    Config = PgOutboxConfig
    config: PgOutboxConfig
    kind = "source"

    def validate(self) -> None:
        unknown = [t for t in self.config.topics if t not in self.ctx.catalogue.names()]
        if unknown:
            raise ConfigError(f"connector {self.name}: topics not in the catalogue: {', '.join(unknown)}")

    def task_specs(self, max_tasks: int) -> list[TaskSpec]:
        return [TaskSpec(0, shard=self.config.table)]

    def probe(self) -> str | None:
        return probes.pg(self.config.dsn) or probes.pg(self.config.state_dsn)

    def create_task(self, spec: TaskSpec) -> Task:
        assert spec.shard is not None
        kafka = self.ctx.settings.kafka_config()
        return SourceTask(
            self.name, spec.shard, PgOutboxReader(self.name, self.config, self.ctx.catalogue), kafka,
            self.ctx.serde, self.ctx.catalogue, DeadLetterWriter(kafka, self.ctx.serde), self.config.state_dsn,
            batch_size=self.config.batch_size,
        )  # fmt: skip
