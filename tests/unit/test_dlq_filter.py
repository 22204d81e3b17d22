"""Dead-letter filters, id look-up, de-duplication, reading to idle and replay outcomes (no broker, no\ndatabase: fakes stand in for the consumer, the serde and the writer)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from bizbus.connectors.runtime.replay import (
    FILTER_KEYS,
    DeadLetterFilter,
    DeadLetterView,
    ReplayOutcome,
    _drain,
    dedupe,
    find_by_id,
    rebuild_record,
    replay,
    summary,
    table,
)
from bizbus.connectors.runtime.sink import PlannedEffect, SinkConnector, SinkRecord, SinkWriter, WriteResult
from pydantic import BaseModel

from bizbus.errors import BizbusError
from bizbus.failures import Fatal, Permanent, RetryPolicy
from bizbus.host.components import Component
from bizbus.host.pipeline import ConfiguredComponent, Pipeline
from bizbus.serde import PoisonRecord

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def view(**over: object) -> DeadLetterView:
    base: dict[str, object] = dict(
        id="aaaa1111-0000-5000-8000-000000000001", connector="pg-sink", source_topic="bizbus.pm.timesheet.v1",
        source_partition=2, source_offset=41, source_timestamp=T0, error_class="PERMANENT",
        error_type="Permanent/db_constraint", error_message="CheckViolation: new row violates hours_small",
        attempts=1, failed_at=T0, key=b"W1", value=b"\x00\x00\x00\x00\x01body", headers=(("event_id", b"e-1"),),
    )  # fmt: skip
    base.update(over)
    return DeadLetterView(**base)  # type: ignore[arg-type]


def test_no_filter_matches_everything() -> None:
    f = DeadLetterFilter.parse()
    assert f == DeadLetterFilter() and f.matches(view()) and f.describe() == ""


def test_each_key_narrows() -> None:
    v = view()
    cases = {
        "error_class=permanent": True, "error_class=POISON": False,
        "error_type=Permanent/db_constraint": True, "error_type=permanent": True, "error_type=Permanent/x": False,
        "error_type=Perm": False,
        "topic=bizbus.pm.timesheet.v1": True, "topic=bizbus.pm": False,
        "id=AAAA11": True, "id=aaab": False,
        "since=2026-11-23": True, "since=2026-11-23T08:00:00Z": True, "since=2026-11-23T08:00:01+00:00": False,
        "since=2026-11-23T09:30:00+01:00": False,  # 08:30Z, after the failure at 08:00Z
        "contains=VIOLATES": True, "contains=timeout": False,
    }  # fmt: skip
    for item, expected in cases.items():
        assert DeadLetterFilter.parse(filters=[item]).matches(v) is expected, item


def test_criteria_combine_with_and_and_connector() -> None:
    f = DeadLetterFilter.parse("pg-sink", ["error_class=PERMANENT", "contains=hours"])
    assert f.matches(view())
    assert not f.matches(view(connector="other"))
    assert not f.matches(view(error_class="POISON"))
    assert DeadLetterFilter.parse("other").apply([view(), view(connector="other")]) == [
        view(connector="other")
    ]
    assert f.describe() == "connector=pg-sink, error_class=PERMANENT, contains=hours"


def test_since_without_offset_is_utc_and_a_bare_date_is_midnight() -> None:
    assert DeadLetterFilter.parse(filters=["since=2026-11-23"]).since == T0 - timedelta(hours=8)
    assert DeadLetterFilter.parse(filters=["since=2026-11-23T08:00"]).since == T0
    tz = DeadLetterFilter.parse(filters=["since=2026-11-23T10:00+02:00"]).since
    assert tz == T0 and tz.tzinfo == timezone(timedelta(hours=2))


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(BizbusError) as exc:
        DeadLetterFilter.parse(filters=["partition=3"])
    for key in FILTER_KEYS:
        assert key in str(exc.value)
    assert "'partition'" in str(exc.value)


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("topic", "not key=value"),
        ("topic=", "needs a value"),
        ("error_class=FATAL", "RETRYABLE, PERMANENT, POISON"),
        ("since=yesterday", "not an ISO date"),
        ("since=2026-13-01", "not an ISO date"),
    ],
)
def test_bad_filters_say_what_is_wrong(item: str, needle: str) -> None:
    with pytest.raises(BizbusError, match=needle):
        DeadLetterFilter.parse(filters=[item])


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(BizbusError, match="given twice"):
        DeadLetterFilter.parse(filters=["topic=a", "topic=b"])


def test_find_by_id_exact_prefix_ambiguous_missing() -> None:
    a = view(id="abc10000-0000-5000-8000-000000000001")
    b = view(id="abc20000-0000-5000-8000-000000000002", source_offset=42)
    assert find_by_id([a, b], a.id) is a
    assert find_by_id([a, b], "ABC2") is b
    with pytest.raises(BizbusError) as exc:
        find_by_id([a, b], "abc")
    assert "ambiguous" in str(exc.value) and a.id in str(exc.value) and b.id in str(exc.value)
    with pytest.raises(BizbusError, match="no dead letter"):
        find_by_id([a, b], "ffff")
    with pytest.raises(BizbusError):
        find_by_id([a, b], "")


def test_dedupe_keeps_the_first_copy_and_orders_by_failed_at() -> None:
    first = view(id="x", failed_at=T0 + timedelta(minutes=5), position=(0, 7), attempts=1)
    resent = view(id="x", failed_at=T0 + timedelta(minutes=9), position=(1, 3), attempts=2)
    older = view(id="y", failed_at=T0, position=(1, 0))
    assert dedupe([resent, first, older]) == [older, first]


def test_table_and_summary() -> None:
    long = view(error_message="x" * 300 + "\nsecond line")
    lines = table([long, view(id="b" * 36, error_class="POISON", connector="other")])
    assert lines[0].split()[:3] == ["id", "failed_at", "connector"]
    assert "aaaa1111 " in lines[1] and "bizbus.pm.timesheet.v1[2]@41" in lines[1]
    assert lines[1].endswith("…") and "second line" not in lines[1]
    assert summary([view(), view(), view(error_class="POISON"), view(connector="other")]) == (
        "4 dead letters — other: PERMANENT 1; pg-sink: PERMANENT 2, POISON 1"
    )


class _Serde:
    """Decodes one known byte string; anything else is poison."""

    def decode(self, data: bytes) -> object:
        if data == b"\x00\x00\x00\x00\x01body":
            return {"meta": {"event_id": "e-1"}, "hours": 1}
        if data == b"\x00\x00\x00\x00\x01list":
            return [1, 2]
        raise PoisonRecord("magic byte 7 is not 0")


def test_rebuild_keeps_the_original_coordinates() -> None:
    rec = rebuild_record(view(), _Serde())  # type: ignore[arg-type]
    assert isinstance(rec, SinkRecord)
    assert (rec.topic, rec.partition, rec.offset, rec.key) == ("bizbus.pm.timesheet.v1", 2, 41, b"W1")
    assert rec.effect_id == "e-1" and rec.raw == view().value and rec.headers == [("event_id", b"e-1")]
    assert rec.timestamp_ms == int(T0.timestamp() * 1000)


@pytest.mark.parametrize(
    ("value", "needle"),
    [(None, "tombstone"), (b"\x07garbage", "magic byte"), (b"\x00\x00\x00\x00\x01list", "no meta")],
)
def test_rebuild_reports_what_cannot_be_replayed(value: bytes | None, needle: str) -> None:
    out = rebuild_record(view(value=value), _Serde())  # type: ignore[arg-type]
    assert isinstance(out, ReplayOutcome) and out.status == "undecodable" and needle in out.detail
    assert out.problem and out.coordinates == "bizbus.pm.timesheet.v1[2]@41"


class _FakeConsumer:
    """Hands out prepared batches, then nothing (waiting like a real consumer does)."""

    class Msg:
        def __init__(self, n: int) -> None:
            self.n = n

        def error(self) -> None:
            return None

    def __init__(self, batches: list[int], pause: float) -> None:
        self.batches, self.pause, self.n = list(batches), pause, 0

    def consume(self, _max: int, timeout: float) -> list[Msg]:
        if not self.batches:
            time.sleep(timeout)
            return []
        time.sleep(self.pause)
        out = [self.Msg(self.n + i) for i in range(self.batches.pop(0))]
        self.n += len(out)
        return out


def test_drain_reads_until_idle_and_reports_progress_only_on_long_reads() -> None:
    reports: list[int] = []
    t0 = time.monotonic()
    got = list(_drain(_FakeConsumer([3, 2], pause=0.01), 0.3, reports.append))  # type: ignore[arg-type]
    assert [m.n for m in got] == [0, 1, 2, 3, 4] and reports == []  # short read: quiet
    assert 0.3 <= time.monotonic() - t0 < 3
    slow = _FakeConsumer([1] * 6, pause=0.3)  # records keep coming for ~1.8 s
    got = list(_drain(slow, 0.5, reports.append))  # type: ignore[arg-type]
    assert len(got) == 6 and reports and reports == sorted(reports) and reports[-1] <= 6


class _Writer(SinkWriter):
    """Applies once per effect; 'bad' is refused for good, 'flaky' times out on its first attempt."""

    def __init__(self, fail_setup: bool = False) -> None:
        self.applied: list[str] = []
        self.flaky_calls = 0
        self.fail_setup = fail_setup
        self.closed = False

    def setup(self) -> None:
        if self.fail_setup:
            raise Fatal("password authentication failed")

    def write(self, records: list[SinkRecord]) -> WriteResult:
        (r,) = records
        if r.value["name"] == "bad":
            return WriteResult(failed={r.effect_id: Permanent("unknown cost center", reason="master_data")})
        if r.value["name"] == "flaky" and self.flaky_calls == 0:
            self.flaky_calls += 1
            raise TimeoutError("target timed out")
        if r.effect_id in self.applied:
            return WriteResult(duplicates=1)
        self.applied.append(r.effect_id)
        return WriteResult(applied=1)

    def plan(self, records: list[SinkRecord]) -> list[PlannedEffect]:
        return [PlannedEffect(r.effect_id, "skip" if r.effect_id in self.applied else "create", r.value["name"])
                for r in records]  # fmt: skip


class _Names:
    """Decodes b'name' to an event named so (what a registry-backed serde would give)."""

    def decode(self, data: bytes) -> object:
        if data.startswith(b"\x07"):
            raise PoisonRecord("magic byte 7 is not 0")
        return {"meta": {"event_id": f"e-{data.decode()}"}, "name": data.decode()}


def _pipeline(writer: _Writer) -> Pipeline:
    class Sink(SinkConnector):
        Config = BaseModel

        def writer(self) -> SinkWriter:
            return writer

    class Source(Component):
        Config = BaseModel

        def run(self, stop: object) -> None: ...

    def ctype(kind: str, cls: type) -> object:
        return SimpleNamespace(name=f"fake-{kind}", kind=kind, load=lambda: cls)

    comps = (ConfiguredComponent("pg-sink", ctype("sink", Sink), RetryPolicy(), True),  # type: ignore[arg-type]
             ConfiguredComponent("src", ctype("source", Source), RetryPolicy(), True))  # type: ignore[arg-type]  # fmt: skip
    return Pipeline("p", Path("/etc/bizbus/pipeline.yaml"), comps)


def _replay(views: list[DeadLetterView], writer: _Writer, dry_run: bool = False) -> list[ReplayOutcome]:
    ctx = SimpleNamespace(serde=_Names())
    policy = RetryPolicy(initial_delay=0.001, max_attempts=3)
    return replay(views, _pipeline(writer), ctx, dry_run, policy)  # type: ignore[arg-type]


def test_replay_goes_on_after_a_failure_and_retries_what_is_retryable() -> None:
    views = [
        view(id=f"dl-{n}", source_offset=i, value=n.encode())
        for i, n in enumerate(["a", "bad", "flaky", "b"])
    ]
    views += [view(id="dl-poison", value=b"\x07junk"), view(id="dl-src", connector="src", value=b"c"),
              view(id="dl-gone", connector="gone", value=b"d")]  # fmt: skip
    writer = _Writer()
    out = {o.id: o for o in _replay(views, writer)}
    assert {k: o.status for k, o in out.items()} == {
        "dl-a": "applied", "dl-bad": "failed", "dl-flaky": "applied", "dl-b": "applied",
        "dl-poison": "undecodable", "dl-src": "skipped", "dl-gone": "skipped",
    }  # fmt: skip
    assert out["dl-bad"].detail == "permanent (master_data): unknown cost center"
    assert out["dl-src"].detail == "src is a source; fix the record at the source"
    assert out["dl-gone"].detail == "connector gone is not in /etc/bizbus/pipeline.yaml"
    assert writer.applied == ["e-a", "e-flaky", "e-b"] and writer.flaky_calls == 1
    assert [o.status for o in _replay(views[:4], writer)] == ["already applied", "failed", "already applied",
                                                                "already applied"]  # fmt: skip
    assert writer.applied == ["e-a", "e-flaky", "e-b"]


def test_dry_run_plans_and_writes_nothing() -> None:
    writer = _Writer()
    writer.applied.append("e-a")
    out = _replay([view(id="1", value=b"a"), view(id="2", value=b"new")], writer, dry_run=True)
    assert [(o.status, o.detail) for o in out] == [("would skip", "a"), ("would create", "new")]
    assert writer.applied == ["e-a"]


def test_a_target_that_cannot_be_opened_fails_each_record_without_raising() -> None:
    out = _replay([view(id="1", value=b"a"), view(id="2", value=b"b")], _Writer(fail_setup=True))
    assert [o.status for o in out] == ["failed", "failed"]
    assert all(
        o.detail == "cannot open pg-sink's target: fatal (fatal): password authentication failed" for o in out
    )
