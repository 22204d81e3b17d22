"""Connector error taxonomy, classification and retry policy."""

from __future__ import annotations

import errno
import random
import socket
import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import psycopg
import psycopg.errors
import pydantic
import pytest

from bizbus.failures import (
    BackOff,
    ConnectorError,
    Fatal,
    NotConnected,
    Permanent,
    Poison,
    Retryable,
    RetryPolicy,
    call_with_retry,
    classify,
    classify_http_status,
    parse_retry_after,
)


def _status_error(status: int, headers: dict[str, str] | None = None, body: str = "") -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://erp.example/api/voucher")
    response = httpx.Response(status, headers=headers, text=body, request=request)
    return httpx.HTTPStatusError(f"status {status}", request=request, response=response)


# --- taxonomy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "error_class", "reason"),
    [
        (NotConnected("x"), "retryable", "connection"),
        (BackOff("x", retry_after=3), "retryable", "throttled"),
        (Retryable("x"), "retryable", "transient"),
        (Permanent("x"), "permanent", "permanent"),
        (Poison("x"), "poison", "decode"),
        (Fatal("x"), "fatal", "fatal"),
        (Permanent("x", reason="unknown_master_data"), "permanent", "unknown_master_data"),
    ],
)
def test_error_class_and_reason(err: ConnectorError, error_class: str, reason: str) -> None:
    assert err.error_class == error_class
    assert err.reason == reason
    assert err.attempts == 0


@pytest.mark.parametrize("bad", ["", "HTTP 429", "Http429", "9lives", "x" * 41, "with-dash"])
def test_reason_must_be_a_bounded_label(bad: str) -> None:
    with pytest.raises(ValueError, match="snake_case"):
        Retryable("x", reason=bad)


def test_backoff_rejects_negative_retry_after_and_poison_keeps_raw() -> None:
    with pytest.raises(ValueError):
        BackOff(retry_after=-1)
    assert Poison("bad avro", raw=b"\x00\xff").raw == b"\x00\xff"


# --- classify -------------------------------------------------------------------------------------


def test_connector_errors_are_returned_as_is() -> None:
    err = Permanent("x", reason="unknown_master_data")
    assert classify(err) is err


def _psycopg_cases() -> list[tuple[BaseException, type[ConnectorError], str]]:
    return [
        (psycopg.errors.SerializationFailure("could not serialize"), Retryable, "db_conflict"),
        (psycopg.errors.DeadlockDetected("deadlock detected"), Retryable, "db_conflict"),
        (psycopg.errors.LockNotAvailable("lock not available"), Retryable, "db_conflict"),
        (psycopg.OperationalError("connection to server failed"), NotConnected, "connection"),
        (psycopg.errors.UniqueViolation("duplicate key"), Permanent, "db_constraint"),
        (psycopg.IntegrityError("fk"), Permanent, "db_constraint"),
        (psycopg.DataError("numeric overflow"), Permanent, "db_constraint"),
    ]


def _validation_error() -> pydantic.ValidationError:
    class Voucher(pydantic.BaseModel):
        amount: int

    try:
        Voucher(amount="lots")  # type: ignore[arg-type]
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("expected a ValidationError")


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        (TimeoutError("read timed out"), Retryable, "timeout"),
        (socket.timeout("timed out"), Retryable, "timeout"),  # noqa: UP041 - the alias itself
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), NotConnected, "connection"),
        (ConnectionResetError("reset"), NotConnected, "connection"),
        (ConnectionError("gone"), NotConnected, "connection"),
        (OSError(errno.EHOSTUNREACH, "no route to host"), NotConnected, "connection"),
        (OSError(errno.ECONNRESET, "reset"), NotConnected, "connection"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), NotConnected, "connection"),
        (OSError(errno.ENOSPC, "disk full"), Retryable, "unexpected"),
        (ssl.SSLError(1, "handshake failure"), NotConnected, "tls"),
        (httpx.ConnectTimeout("connect timed out"), Retryable, "timeout"),
        (httpx.ReadTimeout("read timed out"), Retryable, "timeout"),
        (httpx.ConnectError("connection refused"), NotConnected, "connection"),
        (_status_error(429, {"Retry-After": "7"}), BackOff, "http_429"),
        (_status_error(502), Retryable, "http_5xx"),
        (_status_error(401), Fatal, "auth"),
        (_status_error(422, body='{"code": 1001, "msg": "cost center unknown"}'), Permanent, "http_4xx"),
        (_validation_error(), Permanent, "validation"),
        (ValueError("amount must be positive"), Permanent, "validation"),
        (RuntimeError("surprise"), Retryable, "unexpected"),
        (KeyError("x"), Retryable, "unexpected"),
        (KeyboardInterrupt(), Fatal, "interrupted"),
        *_psycopg_cases(),
    ],
)
def test_classify(exc: BaseException, kind: type[ConnectorError], reason: str) -> None:
    err = classify(exc)
    assert type(err) is kind
    assert err.reason == reason
    assert err.__cause__ is exc
    if not isinstance(exc, httpx.HTTPStatusError):
        assert str(err).startswith(type(exc).__name__)


def test_classify_http_status_error_keeps_retry_after_and_body_hint() -> None:
    err = classify(_status_error(429, {"Retry-After": "7"}))
    assert isinstance(err, BackOff) and err.retry_after == 7.0
    err = classify(_status_error(400, body="unbalanced voucher"))
    assert str(err) == "HTTP 400: unbalanced voucher"


# --- classify_http_status --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "reason", "error_class"),
    [
        (408, Retryable, "timeout", "retryable"),
        (500, Retryable, "http_5xx", "retryable"),
        (502, Retryable, "http_5xx", "retryable"),
        (503, Retryable, "http_5xx", "retryable"),
        (504, Retryable, "http_5xx", "retryable"),
        (507, Retryable, "http_5xx", "retryable"),
        (401, Fatal, "auth", "fatal"),
        (403, Fatal, "auth", "fatal"),
        (400, Permanent, "http_4xx", "permanent"),
        (404, Permanent, "http_4xx", "permanent"),
        (409, Permanent, "http_4xx", "permanent"),
        (429, BackOff, "http_429", "retryable"),
    ],
)
def test_http_status_mapping(status: int, kind: type[ConnectorError], reason: str, error_class: str) -> None:
    err = classify_http_status(status)
    assert type(err) is kind
    assert err.reason == reason
    assert err.error_class == error_class


@pytest.mark.parametrize("status", [200, 201, 204, 301, 304])
def test_http_success_and_redirect_are_not_errors(status: int) -> None:
    assert classify_http_status(status) is None


def test_http_429_retry_after_seconds_and_garbage() -> None:
    err = classify_http_status(429, {"retry-after": "12"})
    assert isinstance(err, BackOff) and err.retry_after == 12.0
    err = classify_http_status(429, {"Retry-After": "soon-ish"})
    assert isinstance(err, BackOff) and err.retry_after is None
    err = classify_http_status(429, {"Retry-After": "-5"})
    assert isinstance(err, BackOff) and err.retry_after is None
    err = classify_http_status(429)
    assert isinstance(err, BackOff) and err.retry_after is None


def test_http_429_retry_after_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    err = classify_http_status(429, {"Retry-After": format_datetime(when, usegmt=True)})
    assert isinstance(err, BackOff)
    assert err.retry_after is not None and 115 <= err.retry_after <= 120
    past = classify_http_status(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert isinstance(past, BackOff) and past.retry_after == 0.0


def test_parse_retry_after_with_fixed_now() -> None:
    now = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Fri, 01 Mar 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after(" 3 ", now=now) == 3.0
    assert parse_retry_after("nan", now=now) is None
    assert parse_retry_after("", now=now) is None
    assert parse_retry_after(None, now=now) is None


def test_503_with_retry_after_backs_off() -> None:
    err = classify_http_status(503, httpx.Headers({"Retry-After": "30"}), body_hint="maintenance")
    assert isinstance(err, BackOff) and err.retry_after == 30.0 and err.reason == "http_5xx"
    assert str(err) == "HTTP 503: maintenance"


# --- RetryPolicy ----------------------------------------------------------------------------------


def test_policy_defaults_and_is_frozen() -> None:
    p = RetryPolicy()
    assert (p.initial_delay, p.max_delay, p.multiplier, p.jitter) == (0.2, 30.0, 2.0, 0.5)
    assert (p.max_attempts, p.max_elapsed) == (8, 300.0)
    assert RetryPolicy.model_fields["jitter"].description
    with pytest.raises(pydantic.ValidationError):
        p.max_attempts = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        RetryPolicy(jitter=1.5)
    with pytest.raises(pydantic.ValidationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(pydantic.ValidationError):
        RetryPolicy(unknown_knob=1)  # type: ignore[call-arg]


def test_delay_grows_exponentially_and_is_capped() -> None:
    p = RetryPolicy(initial_delay=0.5, max_delay=10, multiplier=2, jitter=0)
    assert [p.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert p.delay(100_000) == 10.0
    with pytest.raises(ValueError):
        p.delay(0)


def test_jitter_stays_within_bounds_and_is_reproducible() -> None:
    p = RetryPolicy(initial_delay=1, max_delay=100, multiplier=2, jitter=0.5)
    rng = random.Random(42)
    for attempt in range(1, 8):
        base = min(100.0, 2.0 ** (attempt - 1))
        for _ in range(50):
            assert base * 0.5 <= p.delay(attempt, rng=rng) <= base
    values = [p.delay(3, rng=random.Random(7)) for _ in range(2)]
    assert values[0] == values[1]
    assert len({p.delay(3, rng=rng) for _ in range(20)}) > 1


def test_backoff_retry_after_is_a_floor_and_can_exceed_max_delay() -> None:
    p = RetryPolicy(initial_delay=1, max_delay=10, jitter=0)
    assert p.delay(1, BackOff(retry_after=5)) == 5.0
    assert p.delay(5, BackOff(retry_after=5)) == 10.0
    assert p.delay(1, BackOff(retry_after=60)) == 60.0
    assert p.delay(2, BackOff(retry_after=None)) == 2.0
    assert p.delay(1, Retryable()) == 1.0


def test_should_retry() -> None:
    p = RetryPolicy(max_attempts=3, max_elapsed=10)
    assert p.should_retry(Retryable(), 1, 0.0) is True
    assert p.should_retry(NotConnected(), 2, 9.9) is True
    assert p.should_retry(BackOff(), 2, 0.0) is True
    assert p.should_retry(Retryable(), 3, 0.0) is False
    assert p.should_retry(Retryable(), 1, 10.0) is False
    for err in (Permanent(), Poison(), Fatal()):
        assert p.should_retry(err, 1, 0.0) is False


# --- call_with_retry ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_succeeds_after_two_transient_failures() -> None:
    clock = FakeClock()
    failures: list[BaseException] = [TimeoutError("slow"), ConnectionRefusedError("refused")]
    calls: list[int] = []
    retries: list[tuple[str, int, float]] = []

    def fn() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "posted"

    policy = RetryPolicy(initial_delay=0.2, multiplier=2, jitter=0)
    result = call_with_retry(
        fn, policy, sleep=clock.sleep, clock=clock, on_retry=lambda e, n, d: retries.append((e.reason, n, d))
    )
    assert result == "posted"
    assert len(calls) == 3
    assert clock.sleeps == [0.2, 0.4]
    assert retries == [("timeout", 1, 0.2), ("connection", 2, 0.4)]


def test_stops_at_max_attempts_and_raises_last_classified_error() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        raise httpx.ReadTimeout(f"timeout #{len(calls)}")

    policy = RetryPolicy(initial_delay=1, max_delay=4, jitter=0, max_attempts=4)
    with pytest.raises(Retryable) as info:
        call_with_retry(fn, policy, sleep=clock.sleep, clock=clock)
    assert len(calls) == 4
    assert info.value.attempts == 4
    assert info.value.reason == "timeout"
    assert "timeout #4" in str(info.value.__cause__)
    assert clock.sleeps == [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ValueError("unbalanced voucher"), Permanent),
        (Permanent("closed period", reason="validation"), Permanent),
        (_status_error(403), Fatal),
        (Poison("not avro", raw=b"\x01"), Poison),
    ],
)
def test_non_retryable_errors_are_not_retried(exc: Exception, kind: type[ConnectorError]) -> None:
    clock = FakeClock()
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        raise exc

    with pytest.raises(kind) as info:
        call_with_retry(fn, RetryPolicy(), sleep=clock.sleep, clock=clock)
    assert len(calls) == 1
    assert clock.sleeps == []
    assert info.value.attempts == 1


def test_honours_max_elapsed_with_fake_clock() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        clock.now += 4.0  # each call itself takes 4 s
        raise NotConnected("refused")

    policy = RetryPolicy(initial_delay=1, max_delay=1, jitter=0, max_attempts=100, max_elapsed=12)
    with pytest.raises(NotConnected) as info:
        call_with_retry(fn, policy, sleep=clock.sleep, clock=clock)
    # elapsed after calls: 4, 9, 14 -> third failure is past the 12 s budget
    assert len(calls) == 3
    assert info.value.attempts == 3
    assert clock.sleeps == [1.0, 1.0]


def test_does_not_start_a_wait_that_ends_past_max_elapsed() -> None:
    clock = FakeClock()

    def fn() -> None:
        raise BackOff("throttled", retry_after=600, reason="http_429")

    with pytest.raises(BackOff) as info:
        call_with_retry(fn, RetryPolicy(max_elapsed=300), sleep=clock.sleep, clock=clock)
    assert info.value.attempts == 1
    assert clock.sleeps == []
