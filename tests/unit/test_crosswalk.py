"""Dated lookups: which cost center a project mapped to on a day; which rate was valid on a day."""

from __future__ import annotations

from datetime import date

from bizbus.streams.runtime.crosswalk import cost_center_on, merge_dated, start_interval, valid_on

D = date


def history() -> list[dict]:
    intervals, _ = start_interval([], "CC-A", D(2026, 1, 1))
    intervals, closed = start_interval(intervals, "CC-B", D(2026, 6, 1))
    assert closed == {"code": "CC-A", "valid_from": D(2026, 1, 1), "valid_to": D(2026, 5, 31)}
    return intervals


def test_cost_center_on_each_side_of_a_change() -> None:
    intervals = history()
    assert cost_center_on(intervals, D(2026, 5, 31)) == "CC-A"
    assert cost_center_on(intervals, D(2026, 6, 1)) == "CC-B"
    assert cost_center_on(intervals, D(2027, 1, 1)) == "CC-B"


def test_before_the_first_interval_the_first_one_answers() -> None:
    assert cost_center_on(history(), D(2025, 12, 31)) == "CC-A"


def test_no_intervals_no_answer() -> None:
    assert cost_center_on([], D(2026, 1, 1)) is None


def test_same_code_starts_nothing_and_does_not_mutate_the_input() -> None:
    intervals = history()
    snapshot = [dict(i) for i in intervals]
    again, closed = start_interval(intervals, "CC-B", D(2026, 9, 1))
    assert closed is None and again == snapshot and intervals == snapshot
    changed, closed = start_interval(intervals, "CC-C", D(2026, 9, 1))
    assert intervals == snapshot  # the caller's list is untouched
    assert [i["code"] for i in changed] == ["CC-A", "CC-B", "CC-C"] and closed["valid_to"] == D(2026, 8, 31)


def test_a_change_dated_on_the_current_start_replaces_that_interval() -> None:
    intervals, closed = start_interval(history(), "CC-X", D(2026, 6, 1))
    assert closed is None
    assert intervals[-1] == {"code": "CC-X", "valid_from": D(2026, 6, 1), "valid_to": None}
    assert len(intervals) == 2


def test_valid_on_respects_inclusive_bounds_and_prefers_the_latest_start() -> None:
    rates = [
        {"valid_from": D(2026, 1, 1), "valid_to": None, "rate": "100"},
        {"valid_from": D(2026, 7, 1), "valid_to": D(2026, 7, 31), "rate": "120"},
    ]
    assert valid_on(rates, D(2025, 12, 31)) is None
    assert valid_on(rates, D(2026, 6, 30))["rate"] == "100"
    assert valid_on(rates, D(2026, 7, 1))["rate"] == "120"
    assert valid_on(rates, D(2026, 7, 31))["rate"] == "120"
    assert valid_on(rates, D(2026, 8, 1))["rate"] == "100"


def test_merge_dated_replaces_by_start_day_and_refuses_older_versions() -> None:
    a = {"valid_from": D(2026, 1, 1), "rate": "100", "version": 3}
    b = {"valid_from": D(2026, 7, 1), "rate": "120", "version": 4}
    merged = merge_dated([b], a)
    assert merged == [a, b]  # sorted by start
    corrected = {**b, "rate": "125", "version": 5}
    assert merge_dated(merged, corrected) == [a, corrected]
    assert merge_dated(merged, {**b, "rate": "90", "version": 2}) is None
    assert merge_dated(merged, b) == [a, b]  # the same version again is idempotent
