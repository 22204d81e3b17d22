"""Connector error taxonomy and retry policy (pure, no I/O).

A connector task fails with one of a small fixed set of errors. The runtime acts on ``error_class``:
retryable -> back off and retry within the budget; permanent -> dead-letter the original record;
poison -> dead-letter the raw bytes; fatal -> stop the task. ``reason`` is a bounded snake_case label
for metrics and dead letters. :func:`classify` maps stdlib/httpx/psycopg/pydantic exceptions onto the
taxonomy; :func:`call_with_retry` applies a :class:`RetryPolicy`.
"""

from __future__ import annotations

import email.utils
import errno
import math
import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import ClassVar, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from bizbus.backoff import Backoff

try:
    import httpx
except ImportError:  # pragma: no cover - a project dependency, optional here
    httpx = None  # type: ignore[assignment]
try:
    import psycopg.errors
except ImportError:  # pragma: no cover - a project dependency, optional here
    psycopg = None  # type: ignore[assignment]

T = TypeVar("T")
ErrorClass = Literal["retryable", "permanent", "poison", "fatal"]

_REASON_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# what PostgreSQL answers a login it refuses for good (libpq reports it without a SQLSTATE); a server that
# is starting up or shutting down says "the database system is ..." instead and stays retryable
_PG_REFUSED_LOGIN = re.compile(
    r"FATAL:\s+(password authentication failed|role \S+ does not exist|database \S+ does not exist"
    r"|no pg_hba\.conf entry)"
)
_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH})


class ConnectorError(Exception):
    """Base of every error a connector task raises; never raised itself."""

    default_reason: ClassVar[str] = "error"
    _error_class: ClassVar[ErrorClass] = "retryable"

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        label = reason if reason is not None else self.default_reason
        if not _REASON_RE.match(label):
            raise ValueError(f"reason must be a short snake_case label, got {label!r}")
        self.reason = label  # bounded machine-friendly label, usable as a Prometheus label value
        self.attempts = 0  # calls made before giving up; set by call_with_retry

    @property
    def error_class(self) -> ErrorClass:
        """What the runtime does with the failure: retryable, permanent, poison or fatal."""
        return self._error_class


class NotConnected(ConnectorError):
    """The source/target is unreachable right now (refused, DNS, TLS handshake). Retryable."""
    default_reason = "connection"


class BackOff(ConnectorError):
    """The target throttles us; wait at least ``retry_after`` seconds (if known). Retryable."""
    default_reason = "throttled"

    def __init__(self, message: str = "", *, retry_after: float | None = None, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        if retry_after is not None and not (math.isfinite(retry_after) and retry_after >= 0):
            raise ValueError(f"retry_after must be a finite number >= 0, got {retry_after!r}")
        self.retry_after = retry_after


class Retryable(ConnectorError):
    """Any other transient failure (timeout, 5xx, lock conflict, serialization failure)."""
    default_reason = "transient"


class Permanent(ConnectorError):
    """This record can never succeed as is; dead-letter it with the original record."""
    default_reason = "permanent"
    _error_class = "permanent"


class Poison(ConnectorError):
    """The record cannot even be decoded; dead-letter it as raw bytes."""
    default_reason = "decode"
    _error_class = "poison"

    def __init__(self, message: str = "", *, raw: bytes | None = None, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.raw = raw


class Fatal(ConnectorError):
    """The task cannot continue (bad credentials, config the target refuses); stop, do not retry."""
    default_reason = "fatal"
    _error_class = "fatal"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or HTTP-date); None if invalid."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def classify_http_status(status: int, headers: Mapping[str, str] | None = None, body_hint: str = "") -> ConnectorError | None:
    """Map an HTTP status (plus Retry-After) to the taxonomy; None when the call succeeded (< 400)."""
    if status < 400:
        return None
    message = f"HTTP {status}" + (f": {body_hint[:200]}" if body_hint else "")
    raw_retry_after = next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"), None)
    retry_after = parse_retry_after(raw_retry_after)
    if status == 429:
        return BackOff(message, retry_after=retry_after, reason="http_429")
    if status == 408:
        return Retryable(message, reason="timeout")
    if status in (401, 403):
        return Fatal(message, reason="auth")
    if 400 <= status < 500:
        return Permanent(message, reason="http_4xx")
    if status == 503 and retry_after is not None:
        return BackOff(message, retry_after=retry_after, reason="http_5xx")
    if 500 <= status < 600:
        return Retryable(message, reason="http_5xx")
    return Retryable(message, reason="unexpected")


def _classify_foreign(exc: BaseException) -> ConnectorError | None:
    """Library-specific mappings (httpx, psycopg), most specific first."""
    text = f"{type(exc).__name__}: {exc}"
    if httpx is not None:
        if isinstance(exc, httpx.HTTPStatusError):
            resp = exc.response
            try:
                hint = resp.text[:200]
            except httpx.ResponseNotRead:
                hint = ""
            mapped = classify_http_status(resp.status_code, resp.headers, hint)
            return mapped or Retryable(text, reason="unexpected")
        if isinstance(exc, httpx.TimeoutException):
            return Retryable(text, reason="timeout")
        if isinstance(exc, httpx.ConnectError):
            return NotConnected(text)
    if psycopg is not None:
        pe = psycopg.errors
        if isinstance(exc, pe.SerializationFailure | pe.DeadlockDetected | pe.LockNotAvailable):
            return Retryable(text, reason="db_conflict")
        if isinstance(exc, pe.InvalidAuthorizationSpecification | pe.InvalidPassword) or (
            isinstance(exc, psycopg.OperationalError) and _PG_REFUSED_LOGIN.search(str(exc))
        ):
            return Fatal(text, reason="auth")  # retrying cannot fix credentials or a database name
        if isinstance(exc, pe.UndefinedTable | pe.UndefinedColumn | pe.InvalidSchemaName):
            # the target's schema is not (yet / any more) what the sink writes: a migration, a rename; the
            # sink waits for it (every record fails alike) instead of dead-lettering the records
            return Retryable(text, reason="db_schema")
        if isinstance(exc, pe.ReadOnlySqlTransaction):
            return Retryable(text, reason="db_read_only")  # a failover in progress: the primary comes back
        if isinstance(exc, psycopg.OperationalError):
            return NotConnected(text)
        if isinstance(exc, psycopg.IntegrityError | psycopg.DataError):
            return Permanent(text, reason="db_constraint")
    return None


def classify(exc: BaseException) -> ConnectorError:
    """Map any exception onto the taxonomy, keeping the original as ``__cause__``.

    Unknown exceptions are Retryable "unexpected" (retried within the budget, then dead-lettered, never
    dropped); non-``Exception`` ones (KeyboardInterrupt, cancellation) are Fatal "interrupted"."""
    if isinstance(exc, ConnectorError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    result = _classify_foreign(exc)
    if result is None:
        if isinstance(exc, TimeoutError):  # socket.timeout is an alias
            result = Retryable(text, reason="timeout")
        elif isinstance(exc, ssl.SSLError):
            result = NotConnected(text, reason="tls")
        elif isinstance(exc, ConnectionError | socket.gaierror) or (
            isinstance(exc, OSError) and exc.errno in _CONNECT_ERRNOS
        ):
            result = NotConnected(text)
        elif isinstance(exc, pydantic.ValidationError | ValueError):
            result = Permanent(text, reason="validation")
        elif not isinstance(exc, Exception):
            result = Fatal(text, reason="interrupted")
        else:
            result = Retryable(text, reason="unexpected")
    result.__cause__ = exc
    return result


class RetryPolicy(BaseModel):
    """Capped exponential backoff with full-jitter style randomisation and two budgets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_delay: float = Field(0.2, gt=0, description="Delay in seconds after the first failure.")
    max_delay: float = Field(30.0, gt=0, description="Upper bound in seconds of a computed delay.")
    multiplier: float = Field(2.0, ge=1, description="Growth factor of the delay per attempt.")
    jitter: float = Field(0.5, ge=0, le=1, description="Randomised fraction: delay * uniform(1 - jitter, 1).")
    max_attempts: int = Field(8, ge=1, description="Total calls including the first one.")
    max_elapsed: float = Field(300.0, gt=0, description="Seconds after the first call when retrying stops.")

    def delay(self, attempt: int, error: ConnectorError | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed call ``attempt`` (1-based); a BackOff's retry_after is a floor."""
        value = self.backoff().delay(attempt, rng or _RNG)
        if isinstance(error, BackOff) and error.retry_after is not None:
            value = max(value, error.retry_after)
        return value

    def backoff(self) -> Backoff:
        """The delays of this policy without its budgets."""
        return Backoff(self.initial_delay, self.max_delay, self.multiplier, self.jitter)

    def should_retry(self, error: ConnectorError, attempt: int, elapsed: float) -> bool:
        """True when the error is retryable and both the attempt and the time budget allow another call."""
        return error.error_class == "retryable" and attempt < self.max_attempts and elapsed < self.max_elapsed


_RNG = random.Random()


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[ConnectorError, int, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn`` until it succeeds or the failure is final; raise the classified error.

    The raised :class:`ConnectorError` carries ``attempts`` (calls made). A wait that would end past
    ``max_elapsed`` is not started. ``on_retry(error, attempt, delay)`` runs before each sleep.
    """
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            err = classify(exc)
            err.attempts = attempt
            elapsed = clock() - start
            wait = policy.delay(attempt, err, rng) if err.error_class == "retryable" else 0.0
            if not policy.should_retry(err, attempt, elapsed) or elapsed + wait > policy.max_elapsed:
                if err is exc:
                    raise
                raise err from exc
        if on_retry is not None:
            on_retry(err, attempt, wait)
        sleep(wait)
