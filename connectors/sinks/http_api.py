"""HTTP API sink: each record becomes one ``POST`` to a REST API, applied exactly once.

A REST target cannot join our database transaction, so there is a window between "the target accepted
the create" and "our ledger recorded it"; a SIGKILL there must not lead to a second create. The writer
closes it with an *intent* row, committed before any request is sent:

    a. effects already in the ledger               -> duplicates, nothing sent
    b. INSERT intents ... ON CONFLICT DO NOTHING   -> an id whose intent already existed is "in doubt":
                                                      an earlier attempt may have reached the target
    c. ledger.apply_batch: per effect, in doubt?   -> GET lookup_path?<ref_param>=<effect_id>; found ->
                                                      record its id, do not create; else POST create
    d. (crash point "http-api.after-create" between the create and the ledger commit)
    e. after the commit                            -> delete the intents of what is now settled

So the lookup runs only when in doubt, i.e. after a crash or a failed attempt, not once per record.
With ``dedupe="idempotency-key"`` the target dedupes by itself: every POST carries the effect id in an
idempotency header, and a retried POST returns the original object instead of creating another one.

Throttling (429), 5xx and network errors fail the whole batch (the runner retries it, honouring
Retry-After); other 4xx fail only their record (dead-lettered); 401/403 stop the connector (Fatal).
The bearer token comes from the environment variable named by ``token_env`` and never appears in the
config, in log lines or in error messages.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import psycopg
from bizbus.connectors.runtime import probes
from bizbus.connectors.runtime.ledger import Effect, PgLedger
from bizbus.connectors.runtime.pgconn import close_quietly, connect
from bizbus.connectors.runtime.sink import (
    PlannedEffect,
    SinkConnector,
    SinkRecord,
    SinkWriter,
    WriteResult,
    field_at,
)
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bizbus.crashpoints import crashpoint
from bizbus.errors import ConfigError
from bizbus.failures import (
    ConnectorError,
    Fatal,
    Permanent,
    RetryPolicy,
    classify,
    classify_http_status,
)
from bizbus.logs import bound, record_fields, register_secret
from bizbus.settings import no_password

log = logging.getLogger(__name__)

__all__ = ["HttpApiSinkConfig", "HttpApiWriter"]

MAX_ERROR_MESSAGE = 500  # characters of a target's error message kept in a dead letter
ID_FIELDS = ("id", "number", "bill_no")  # where a created object's id is looked for, in this order
LIST_FIELDS = ("items", "data", "results")  # where a lookup response's list is looked for
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class HttpApiSinkConfig(BaseModel):
    """Settings of one HTTP API sink connector; secrets are referenced by name, never stored here."""

    # hide_input_in_errors: a refused state_dsn must not echo its password into a log or a terminal
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    topics: tuple[str, ...] = Field(
        min_length=1,
        description="Topics whose records are sent to the API.",
        examples=[["bizbus.pm.timesheet.v1"]],
    )
    base_url: str = Field(
        description="Root URL of the target API (http or https, no credentials in it).",
        examples=["https://erp.example.com", "http://127.0.0.1:8080/tenant-1"],
    )
    create_path: str = Field(
        description="Path the create request is POSTed to, relative to base_url.", examples=["/api/orders"]
    )
    lookup_path: str = Field(
        description="Path queried with GET ?<ref_param>=<external ref> to find an object created earlier.",
        examples=["/api/orders"],
    )
    ref_param: str = Field("external_ref", min_length=1, description="Query parameter of the lookup request.")
    ref_field: str = Field(
        "external_ref",
        min_length=1,
        description="JSON body field carrying our external reference (the record's effect id), sent on "
        "every create and matched in lookup results.",
    )
    dedupe: Literal["lookup", "idempotency-key"] = Field(
        "lookup",
        description="How an in-doubt create is resolved: 'lookup' asks the target by external reference "
        "before re-creating; 'idempotency-key' sends the effect id in a header so the target dedupes.",
    )
    idempotency_header: str = Field(
        "Idempotency-Key", description="Header carrying the effect id when dedupe is 'idempotency-key'."
    )
    body: dict[str, str] = Field(
        min_length=1,
        description="JSON body field -> dotted path into the decoded record; a missing path fails that "
        "record (dead-lettered, reason 'mapping'). Decimals are sent as strings, dates as ISO-8601.",
        examples=[{"employee": "employee", "hours": "hours", "project": "project", "day": "work_date"}],
    )
    token_env: str | None = Field(
        None,
        description="NAME of the environment variable holding the bearer token (never the token itself); "
        "None sends no Authorization header.",
        examples=["ERP_API_TOKEN"],
    )
    timeout_seconds: float = Field(10, gt=0, description="Timeout of each HTTP request, in seconds.")
    state_dsn: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        description="PostgreSQL holding the ledger and the intents, without a password (use PGPASSWORD or "
        "~/.pgpass).",
    )
    ledger_schema: str = Field("bizbus_ledger", description="Schema of the ledger and intent tables.")
    tasks_max: int = Field(default=1, ge=1, le=64, description="consumer-group members in this process")
    batch_size: int = Field(default=100, ge=1, le=10_000, description="records per batch at most")
    batch_timeout_seconds: float = Field(
        default=0.2, gt=0, le=60, description="wait at most this long to fill a batch"
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="backoff for retryable errors and 429s"
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError(
                "base_url must not contain credentials; name an environment variable in token_env"
            )
        return v

    @field_validator("create_path", "lookup_path")
    @classmethod
    def _check_path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("a path must start with '/', e.g. '/api/orders'")
        return v

    @field_validator("idempotency_header")
    @classmethod
    def _check_header(cls, v: str) -> str:
        if not _HEADER_NAME.match(v):
            raise ValueError("idempotency_header must be a valid HTTP header name")
        return v

    @field_validator("body")
    @classmethod
    def _check_body(cls, v: dict[str, str]) -> dict[str, str]:
        for field, path in v.items():
            if not path or any(not part for part in path.split(".")):
                raise ValueError(f"body field {field!r}: {path!r} is not a dotted path like 'employee.code'")
        return v

    @field_validator("token_env")
    @classmethod
    def _check_token_env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            # deliberately without the value: whoever got this wrong may have pasted the token itself
            raise ValueError("token_env must be the NAME of an environment variable (letters, digits, '_')")
        return v

    _dsn = field_validator("state_dsn")(no_password)

    @field_validator("ledger_schema")
    @classmethod
    def _check_schema(cls, v: str) -> str:
        if not _SCHEMA_NAME.match(v):
            raise ValueError("ledger_schema must be a lower-case SQL identifier, e.g. 'bizbus_ledger'")
        return v

    @model_validator(mode="after")
    def _ref_not_mapped(self) -> HttpApiSinkConfig:
        if self.ref_field in self.body:
            raise ValueError(
                f"body must not map {self.ref_field!r}: the writer fills ref_field with the effect id"
            )
        return self


# -- record -> JSON ------------------------------------------------------------------------------------


def _jsonable(value: Any, where: str) -> Any:
    """A decoded Avro value as JSON: money stays exact (Decimal -> string), dates become ISO-8601."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")  # never a float, never exponent notation
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise Permanent(f"{where}: a {type(value).__name__} cannot be sent as JSON", reason="mapping")


def _first_id(obj: Any) -> str | None:
    """The created object's id: the first of ID_FIELDS present (``{"data": {...}}`` wrappers allowed)."""
    if isinstance(obj, Mapping):
        for key in ID_FIELDS:
            if obj.get(key) is not None:
                return str(obj[key])
        if isinstance(obj.get("data"), Mapping):
            return _first_id(obj["data"])
    return None


def _error_text(resp: httpx.Response) -> str:
    """A target's error message: ``error.message``, ``message`` or ``error``, else the raw body."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if isinstance(doc, Mapping):
        err = doc.get("error")
        if isinstance(err, Mapping) and err.get("message"):
            return str(err["message"])
        for key in ("message", "error", "detail"):
            if isinstance(doc.get(key), str) and doc[key]:
                return str(doc[key])
    return resp.text


class HttpApiWriter(SinkWriter):
    """POSTs each record to a REST API exactly once, with a PostgreSQL ledger and intents."""

    def __init__(self, connector: str, config: HttpApiSinkConfig) -> None:
        """Store the settings only; ``setup()`` connects."""
        self.connector = connector
        self.config = config
        self.ledger = PgLedger(config.state_dsn, connector, config.ledger_schema)
        self._client: httpx.Client | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._token: str | None = None
        self._intents = sql.Identifier(config.ledger_schema, "http_intents")

    # -- lifecycle ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Read the token, open the HTTP client, the ledger and the intent table (created if missing)."""
        headers = {"Accept": "application/json"}
        if self.config.token_env is not None:
            token = os.environ.get(self.config.token_env, "")
            if not token:
                raise Fatal(
                    f"sink {self.connector}: environment variable {self.config.token_env} (the API's bearer "
                    "token) is not set or empty",
                    reason="auth",
                )
            self._token = token
            register_secret(token)  # masked in every log line from now on, whatever the variable is called
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=self.config.base_url, timeout=self.config.timeout_seconds, headers=headers
        )
        self.ledger.setup()
        conn = self._connection()
        lock_key = zlib.crc32(f"bizbus_ledger:{self.config.ledger_schema}".encode()) - 2**31
        with conn.transaction():  # same advisory lock as the ledger's DDL: concurrent setups serialize
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            conn.execute(
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {} (
                        connector text NOT NULL,
                        effect_id text NOT NULL,
                        started_at timestamptz NOT NULL DEFAULT now(),
                        PRIMARY KEY (connector, effect_id))"""
                ).format(self._intents)
            )

    def close(self) -> None:
        """Close the HTTP client, the ledger and the intent connection."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.ledger.close()

    def safe_offsets(self) -> dict[tuple[str, int], int]:
        """The ledger's next offsets: what the target has durably received and we recorded."""
        return self.ledger.committed_offsets()

    def safe_positions(self) -> dict[tuple[str, int], tuple[int, str | None]]:
        """The ledger's next offsets with the effect id of the record before each (checked before a seek)."""
        return self.ledger.positions()

    def forget_offsets(self, partitions: list[tuple[str, int]]) -> None:
        self.ledger.forget_offsets(partitions)

    def _connection(self) -> psycopg.Connection[Any]:
        """The intent connection (autocommit: each intent statement is durable on return); reconnects."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            close_quietly(self._conn)
            self._conn = connect(self.config.state_dsn, f"intents {self.connector}")
        return self._conn

    # -- intents -----------------------------------------------------------------------------------

    def _insert_intents(self, ids: Sequence[str]) -> set[str]:
        """Record intents for ``ids``; returns the ids that had none (all others are in doubt)."""
        if not ids:
            return set()
        rows = (
            self._connection()
            .execute(
                sql.SQL(
                    "INSERT INTO {} (connector, effect_id) SELECT %s, unnest(%s::text[])"
                    " ON CONFLICT DO NOTHING RETURNING effect_id"
                ).format(self._intents),
                (self.connector, list(ids)),
            )
            .fetchall()
        )
        return {str(r[0]) for r in rows}

    def _existing_intents(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` have an intent (read only, for ``plan``)."""
        rows = (
            self._connection()
            .execute(
                sql.SQL("SELECT effect_id FROM {} WHERE connector = %s AND effect_id = ANY(%s)").format(
                    self._intents
                ),
                (self.connector, list(ids)),
            )
            .fetchall()
        )
        return {str(r[0]) for r in rows}

    def _delete_intents(self, ids: set[str]) -> None:
        """Drop settled intents; a failure only leaves stale rows, which the ledger check makes harmless."""
        if not ids:
            return
        try:
            self._connection().execute(
                sql.SQL("DELETE FROM {} WHERE connector = %s AND effect_id = ANY(%s)").format(self._intents),
                (self.connector, sorted(ids)),
            )
        except psycopg.Error as exc:
            log.warning("sink %s: could not delete %d settled intent(s): %s", self.connector, len(ids), exc)

    # -- HTTP --------------------------------------------------------------------------------------

    def body_of(self, record: SinkRecord) -> dict[str, Any]:
        """The JSON body of the create request for ``record`` (Permanent 'mapping' on a missing path)."""
        out = {
            field: _jsonable(field_at(record.value, path), field) for field, path in self.config.body.items()
        }
        out[self.config.ref_field] = record.effect_id
        return out

    def _redact(self, text: str) -> str:
        """Belt and braces: a target that echoes our token back must not put it into a dead letter."""
        return text.replace(self._token, "***") if self._token else text

    def _http(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; transport failures (refused, timeout, reset) become classified errors."""
        if self._client is None:
            raise RuntimeError("HttpApiWriter.setup() was not called")
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise classify(exc) from exc

    def _refused(self, what: str, resp: httpx.Response) -> ConnectorError:
        """The classified error of a non-2xx response; 4xx other than 401/403/408/429 is per record."""
        status = resp.status_code
        if status in (401, 403):
            where = (
                f"check the bearer token in the environment variable {self.config.token_env}"
                if self.config.token_env
                else "no token is configured: set token_env to the name of an environment variable holding one"
            )
            return Fatal(f"{what} refused our credentials (HTTP {status}): {where}", reason="auth")
        message = self._redact(_error_text(resp))[:MAX_ERROR_MESSAGE]
        err = classify_http_status(status, resp.headers, message)
        if isinstance(err, Permanent):
            return Permanent(f"{what} refused with HTTP {status}: {message}", reason=f"http_{status}")
        return err or Permanent(f"{what}: unexpected HTTP {status}", reason="unexpected")

    def lookup(self, effect_id: str) -> str | None:
        """The target's id of the object carrying ``effect_id`` as external reference, or None.

        Results are matched on ``ref_field`` too, so an API that ignores the filter parameter cannot make
        an unrelated object look like ours.
        """
        path = self.config.lookup_path
        resp = self._http("GET", path, params={self.config.ref_param: effect_id})
        if resp.status_code >= 300:
            raise self._refused(f"GET {path}", resp)
        try:
            doc = resp.json()
        except ValueError:
            raise Permanent(f"GET {path}: the response is not JSON", reason="lookup") from None
        items = doc if isinstance(doc, list) else next(
            (doc[k] for k in LIST_FIELDS if isinstance(doc, Mapping) and isinstance(doc.get(k), list)), None
        )  # fmt: skip
        if items is None:
            raise Permanent(
                f"GET {path}: no list in the response (looked for {', '.join(LIST_FIELDS)})", reason="lookup"
            )
        found = [i for i in items if isinstance(i, Mapping) and i.get(self.config.ref_field) == effect_id]
        if len(found) > 1:
            log.warning("sink %s: the target holds %d objects with %s=%s", self.connector, len(found),
                        self.config.ref_field, effect_id)  # fmt: skip
        if not found:
            return None
        return _first_id(found[0]) or ""

    def create(self, effect_id: str, body: dict[str, Any]) -> tuple[str | None, bool]:
        """POST the create; returns (the new object's id, whether the target replayed an earlier create)."""
        headers: dict[str, str] = {}
        if self.config.dedupe == "idempotency-key":
            headers[self.config.idempotency_header] = effect_id
        path = self.config.create_path
        resp = self._http("POST", path, json=body, headers=headers)
        if resp.status_code >= 300:
            raise self._refused(f"POST {path}", resp)
        replayed = resp.headers.get("Idempotent-Replayed", "").lower() == "true"
        try:
            ref = _first_id(resp.json())
        except ValueError:
            ref = None
        if ref is None:
            log.warning("sink %s: %s accepted %s but returned no id (looked for %s)", self.connector, path,
                        effect_id, ", ".join(ID_FIELDS))  # fmt: skip
        return ref, replayed

    # -- SinkWriter --------------------------------------------------------------------------------

    def write(self, records: list[SinkRecord]) -> WriteResult:
        """Apply ``records`` exactly once (see the module docstring for the steps)."""
        if not records:
            return WriteResult()
        ids = list(dict.fromkeys(r.effect_id for r in records))
        done = self.ledger.applied_ids(ids)
        fresh = self._insert_intents([i for i in ids if i not in done])
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
                if effect.effect_id in in_doubt and self.config.dedupe == "lookup":
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
            crashpoint("http-api.after-create")
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
        self._delete_intents(done | set(res.applied) | set(res.duplicates) | never_sent)
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
        in_doubt = self._existing_intents([i for i in ids if i not in done])
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
                out.append(
                    PlannedEffect(
                        r.effect_id, "skip", f"already at the target as {ref or '(no id)'} (found by lookup)"
                    )
                )
                continue
            detail = f"POST {self.config.create_path} {json.dumps(body, ensure_ascii=False)}"
            if self.config.dedupe == "idempotency-key":
                detail += f" ({self.config.idempotency_header}: {r.effect_id})"
            out.append(PlannedEffect(r.effect_id, "create", detail))
        return out


class HttpApiSink(SinkConnector):
    """Sink connector writing each record as one create at a REST API, exactly once."""

    Config = HttpApiSinkConfig
    config: HttpApiSinkConfig

    def probe(self) -> str | None:
        return probes.http(self.config.base_url) or probes.pg(self.config.state_dsn)

    def validate(self) -> None:
        super().validate()
        if self.config.token_env and not os.environ.get(self.config.token_env):
            raise ConfigError(
                f"connector {self.name}: environment variable {self.config.token_env} (the API token) is not set"
            )

    def writer(self) -> HttpApiWriter:
        return HttpApiWriter(self.name, self.config)
