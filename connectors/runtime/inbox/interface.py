"""What a vendor module provides to the webhook inbox: the request and answer, the handler that
verifies and parses a push, the converter of inbox rows, the backfill poll, and small helpers for handlers."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bizbus.connectors.runtime.cursor import Position

from bizbus.host.webhook import HttpRequest, HttpResponse  # the host's types, re-exported for vendors


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
