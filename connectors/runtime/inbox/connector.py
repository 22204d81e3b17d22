"""The inbox connector: the webhook endpoint, the inbox source task and the backfill task of one vendor."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
from bizbus.connectors.runtime import probes
from bizbus.connectors.runtime.base import Connector, Task, TaskSpec
from bizbus.connectors.runtime.inbox.backfill import BackfillTask
from bizbus.connectors.runtime.inbox.interface import (
    Accepted,
    Backfill,
    Converter,
    HttpRequest,
    HttpResponse,
    WebhookHandler,
    WebhookRejected,
)
from bizbus.connectors.runtime.inbox.reader import InboxReader
from bizbus.connectors.runtime.inbox.store import PgInbox, refused_content
from bizbus.connectors.runtime.source import SourceTask
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bizbus import metrics
from bizbus.deadletters import DeadLetterWriter, dead_letter
from bizbus.failures import ConnectorError, Permanent
from bizbus.settings import no_password

log = logging.getLogger(__name__)

WEBHOOK_REQUESTS = metrics.WEBHOOK_REQUESTS
WEBHOOK_SECONDS = metrics.WEBHOOK_SECONDS

DEFAULT_STATE_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


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
                if refused_content(exc):
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
        if not refused_content(exc):
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


@dataclass(frozen=True)
class _Rejected:
    """A rejected webhook whose body is still to be dead-lettered, and the answer to give after that."""

    exc: WebhookRejected
    response: HttpResponse


def _json(status: int, body: dict[str, Any]) -> HttpResponse:
    return HttpResponse(status, json.dumps(body, ensure_ascii=False).encode())
