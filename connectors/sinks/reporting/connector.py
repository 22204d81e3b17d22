"""``reporting-db`` sink: every canonical event into PostgreSQL tables a BI tool reads (mapping.py says which).

Per batch: each record's writer schema (its schema id, from the registry) gives the layout of its topic's
tables; tables that are missing are made, columns a newer schema version adds are added
(``ALTER TABLE ... ADD COLUMN``, nullable, no default: a catalogue change, no rewrite) on a connection of
their own under a short ``lock_timeout``, so a long report holding its lock makes the DDL give up and try
again instead of queueing every other reader behind it. Then the rows and the ledger rows commit in one
transaction (``PgLedger.apply_batch``): a replay, a crash or a terminated connection writes nothing twice.

Failures: a record without its business key or with repeated line numbers is a dead letter (``Permanent``);
a schema the tables cannot take (a column would change its type) **parks its topic** (state.py): its records
go into ``<schema>._parked_events`` with their ledger rows, in order, the other topics go on, and once the
tables fit again (checked every ``UNPARK_EVERY`` seconds while batches come) they are written before any newer
record of that topic. An ALTER that waited too long for readers' locks raises ``HoldBatch``: nothing of the
batch is written and the task tries again after a back-off. A database that is down is waited for by the
sink runtime (paused partitions, ``bizbus_sink_paused``).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from typing import Any

import psycopg
from bizbus.connectors.runtime import probes
from bizbus.connectors.runtime.ledger import Effect, PgLedger
from bizbus.connectors.runtime.sink import (
    HoldBatch,
    LedgerSinkWriter,
    PlannedEffect,
    SinkConnector,
    SinkRecord,
    WriteResult,
)

from bizbus.errors import ConfigError
from bizbus.failures import Permanent, classify
from bizbus.pgconn import close_quietly, connect
from bizbus.serde import AvroSerde

from . import state
from .config import ReportingSinkConfig
from .convert import Rows, Statements, build, params, statements
from .mapping import Layout, SchemaMismatch, create_statements, ident, layout, reconcile

log = logging.getLogger(__name__)
UNPARK_EVERY = 5.0  # seconds between attempts to write a parked topic again
_DDL_LOCK = threading.Lock()  # tasks of one process make DDL one at a time (other processes: advisory lock)


class ReportingWriter(LedgerSinkWriter):
    """Lands records of any catalogue topic in the reporting schema; one instance per sink task."""

    def __init__(self, dsn: str, connector: str, serde: AvroSerde, schema: str = "reporting",
                 keys: dict[str, tuple[str, ...]] | None = None, tables: dict[str, str] | None = None,
                 ledger_schema: str = "bizbus_ledger", lock_timeout_ms: int = 2000) -> None:  # fmt: skip
        self.dsn, self.connector, self.serde, self.schema = dsn, connector, serde, schema
        self.keys, self.tables = dict(keys or {}), dict(tables or {})
        self.lock_timeout_ms = lock_timeout_ms
        self.ledger = PgLedger(dsn, connector, ledger_schema)
        self._layouts: dict[tuple[str, int | None], tuple[Layout, Statements]] = {}
        self._ready: set[tuple[str, int | None]] = set()  # layouts whose tables were checked
        self._ddl: psycopg.Connection[Any] | None = None
        self.ddl_statements = 0  # ALTER / CREATE statements this writer ran (tests, logs)
        self.parked = 0  # records this writer parked
        self._unpark_at = 0.0

    def setup(self) -> None:
        self.ledger.setup()
        with _DDL_LOCK:
            conn = self._ddl_conn()
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(),))
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema)}")
                cur.execute(state.create_sql(self.schema))

    def close(self) -> None:
        close_quietly(self._ddl)
        self._ddl = None
        self.ledger.close()

    def _lock_key(self, what: str = "") -> int:
        return zlib.crc32(f"bizbus_reporting:{self.schema}{what}".encode()) - 2**31

    # -- layouts and DDL -----------------------------------------------------------------------------

    def _layout(self, r: SinkRecord) -> tuple[Layout, Statements]:
        """The layout of the record's writer schema, its tables made / extended first (cached per schema id);
        ``SchemaMismatch`` when the tables cannot take it."""
        schema_id = AvroSerde.schema_id_of(r.raw)
        k = (r.topic, schema_id)
        hit = self._layouts.get(k)
        if hit is None:
            if schema_id is None:
                raise Permanent("the record is not in the Confluent wire format", reason="decode")
            lay = layout(r.topic, self.serde.parsed(schema_id), self.keys.get(r.topic), self.tables.get(r.topic))
            hit = self._layouts[k] = (lay, statements(self.schema, lay))
        if k not in self._ready:
            self._ensure(hit[0])
            self._ready.add(k)
        return hit

    def _ddl_conn(self) -> psycopg.Connection[Any]:
        if self._ddl is None or self._ddl.closed or self._ddl.broken:
            close_quietly(self._ddl)
            self._ddl = connect(self.dsn, f"reporting {self.connector} ddl", connect_timeout=10)
        return self._ddl

    def _ensure(self, lay: Layout) -> None:
        """Create the layout's tables if missing and add the columns it has and they do not, in one short
        transaction under ``lock_timeout`` (``SchemaMismatch``: a column would change its type; ``HoldBatch``:
        readers held the table longer than the timeout)."""
        with _DDL_LOCK:
            conn = self._ddl_conn()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}")
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(),))
                    existing = self._columns(cur, lay)
                    todo = [stmt for table, stmt in create_statements(self.schema, lay) if table not in existing]
                    todo += reconcile(self.schema, lay, existing)
                    for stmt in todo:
                        cur.execute(stmt)
            except psycopg.errors.LockNotAvailable as exc:
                raise HoldBatch(f"reporting sink {self.connector}: changing the tables of {lay.topic} waited "
                                f"{self.lock_timeout_ms} ms for readers' locks; tried again later ({exc})",
                                reason="ddl_lock") from None  # fmt: skip
            if todo:
                self.ddl_statements += len(todo)
                log.info("reporting sink %s: %s: %s", self.connector, lay.topic, "; ".join(todo))

    def _columns(self, cur: Any, lay: Layout) -> dict[str, dict[str, str]]:
        names = [lay.table, lay.history, *(lt.table for lt in lay.lines)]
        cur.execute("SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped",
                    (self.schema, names))  # fmt: skip
        out: dict[str, dict[str, str]] = {}
        for table, col, kind in cur.fetchall():
            out.setdefault(table, {})[col] = kind
        return out

    # -- writing -------------------------------------------------------------------------------------

    def _prepare(self, records: list[SinkRecord], parked: dict[str, str]) -> tuple[list[Effect], dict[str, Exception]]:
        """The effects of a batch: rows, or a parked record for a topic whose tables cannot take its schema
        (``parked`` grows when a record shows one); per-record failures (dead letters)."""
        effects, failed = [], {}
        for r in records:
            try:
                if r.topic not in parked:
                    try:
                        lay, st = self._layout(r)
                    except SchemaMismatch as exc:
                        parked[r.topic] = f"schema id {AvroSerde.schema_id_of(r.raw)}: {exc}"
                        log.error("reporting sink %s: topic %s is parked: %s. Its records wait in %s.%s and are "
                                  "written in order once the tables fit (alter the column, or route the topic to a "
                                  "new table with 'tables:'); the other topics go on", self.connector, r.topic,
                                  parked[r.topic], self.schema, state.PARKED)  # fmt: skip
                if r.topic in parked:
                    effects.append(Effect(r.effect_id, r.topic, r.partition, r.offset, ("park", r, parked[r.topic])))
                    continue
                rows = build(lay, r.value, r.partition, r.offset)
            except Permanent as exc:
                failed[r.effect_id] = exc
                continue
            effects.append(Effect(r.effect_id, r.topic, r.partition, r.offset, ("row", lay, st, rows)))
        return effects, failed

    def _apply(self, cur: Any, effect: Effect) -> None:
        kind, *rest = effect.payload
        if kind == "park":
            r, reason = rest
            cur.execute(state.park_sql(self.schema), (r.topic, r.partition, r.offset, r.effect_id, r.key, r.raw, reason))
            self.parked += 1
            return
        self._write_rows(cur, *rest)

    @staticmethod
    def _write_rows(cur: Any, lay: Layout, st: Statements, rows: Rows) -> None:
        row, hist, key, lines = params(lay, rows)
        cur.execute(st.history, hist)
        cur.execute(st.upsert, row)
        for table, items in lines.items():
            cur.execute(st.delete_lines[table], key)
            for item in items:
                cur.execute(st.insert_line[table], item)

    def _unpark(self) -> dict[str, str]:
        """Write the parked records of each topic whose tables fit again (in order, each chunk with the deletion
        of its parked rows in one transaction; at most every ``UNPARK_EVERY`` seconds); the topics still parked."""
        conn = self._ddl_conn()
        with conn.cursor() as cur:
            parked = state.parked_topics(cur, self.schema)
        if not parked or time.monotonic() < self._unpark_at:
            return parked
        self._unpark_at = time.monotonic() + UNPARK_EVERY
        for topic in list(parked):
            while True:
                with conn.cursor() as cur:
                    chunk = state.parked_chunk(cur, self.schema, topic)
                if not chunk:
                    del parked[topic]
                    log.info("reporting sink %s: topic %s is written again (its parked records are in)", self.connector,
                             topic)  # fmt: skip
                    break
                try:  # layouts (and their DDL) first, outside the transaction that writes the rows
                    records = [SinkRecord(topic, p, o, k, self.serde.decode(raw), raw, [], None) for p, o, k, raw in chunk]
                    prepared = [(r, *self._layout(r)) for r in records]
                except SchemaMismatch as exc:
                    with conn.cursor() as cur:
                        state.set_reason(cur, self.schema, topic, str(exc))
                    break
                try:
                    if not self._unpark_chunk(conn, topic, chunk, prepared):
                        continue  # another task wrote these meanwhile: look again
                except psycopg.Error as exc:
                    if conn.broken or isinstance(exc, psycopg.OperationalError):
                        raise
                    log.error("reporting sink %s: the parked records of %s cannot be written yet: %s", self.connector,
                              topic, exc)  # fmt: skip
                    with conn.cursor() as cur:
                        state.set_reason(cur, self.schema, topic, str(exc))
                    break
        return parked

    def _unpark_chunk(self, conn: Any, topic: str, chunk: list[Any], prepared: list[Any]) -> bool:
        """Write one chunk of parked records and delete them, in one transaction; False if it changed meanwhile."""
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(topic),))
            if state.parked_chunk(cur, self.schema, topic) != chunk:
                return False
            for r, lay, st in prepared:
                try:
                    rows = build(lay, r.value, r.partition, r.offset)
                except Permanent as exc:
                    log.error("reporting sink %s: parked record %s[%d]@%d (key %r) does not fit: %s; kept in "
                              "%s.%s with failed set", self.connector, topic, r.partition, r.offset, r.key, exc,
                              self.schema, state.PARKED)  # fmt: skip
                    state.set_failed(cur, self.schema, topic, r.partition, r.offset, str(exc))
                    continue
                self._write_rows(cur, lay, st, rows)
                state.unpark(cur, self.schema, topic, r.partition, r.offset)
        return True

    def write(self, records: list[SinkRecord]) -> WriteResult:
        effects, failed = self._prepare(records, self._unpark())
        res = self.ledger.apply_batch(effects, self._apply, transactional_write=True) if effects else None
        errors = {k: classify(v) for k, v in failed.items()}
        if res is None:
            return WriteResult(0, 0, errors, set())
        errors.update({k: classify(v) for k, v in res.failed.items()})
        return WriteResult(len(res.applied), len(res.duplicates), errors, set(res.applied))

    def plan(self, records: list[SinkRecord]) -> list[PlannedEffect]:
        done = self.ledger.applied_ids([r.effect_id for r in records])
        out = []
        for r in records:
            if r.effect_id in done:
                out.append(PlannedEffect(r.effect_id, "skip", "already applied (ledger)"))
                continue
            try:
                schema_id = AvroSerde.schema_id_of(r.raw)
                lay = layout(r.topic, self.serde.parsed(schema_id), self.keys.get(r.topic), self.tables.get(r.topic))
                rows: Rows = build(lay, r.value, r.partition, r.offset)
            except Exception as exc:  # noqa: BLE001 - said in the plan
                out.append(PlannedEffect(r.effect_id, "skip", f"error: {classify(exc)}"))
                continue
            n = sum(len(v) for v in rows.lines.values())
            out.append(PlannedEffect(r.effect_id, "create", f"{self.schema}.{lay.table} key {rows.key}: upsert, "
                                     f"{n} line(s), history row {rows.event_id}"))  # fmt: skip
        return out


class ReportingSink(SinkConnector):
    """``tasks_max`` consumer-group members over the configured topics, each with its own writer."""

    Config = ReportingSinkConfig
    config: ReportingSinkConfig

    def probe(self) -> str | None:
        return probes.pg(self.config.dsn)

    def validate(self) -> None:
        super().validate()
        try:
            with connect(self.config.dsn, f"check {self.name}", connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            raise ConfigError(f"connector {self.name}: cannot connect to the reporting database: {exc}") from None
        bad = sorted(set(self.config.tables) - set(self.config.topics)) + sorted(set(self.config.keys) - set(self.config.topics))
        if bad:
            raise ConfigError(f"connector {self.name}: tables/keys name topics it does not read: {', '.join(bad)}")

    def writer(self) -> ReportingWriter:
        c = self.config
        return ReportingWriter(c.dsn, self.name, self.ctx.serde, c.schema_name, dict(c.keys), dict(c.tables),
                               c.ledger_schema, c.ddl_lock_timeout_ms)  # fmt: skip
