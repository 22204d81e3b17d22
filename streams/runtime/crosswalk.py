"""Dated lookups (pure): which cost center a project mapped to on a day, which rate was valid on a day.

An *interval list* is a list of dicts ``{"code": str, "valid_from": date, "valid_to": date | None}``
sorted by ``valid_from``; a project's cost center history is one. A *dated list* is any list of dicts
with ``valid_from`` / ``valid_to`` (inclusive, None = open-ended), e.g. an employee's cost rates.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

Interval = dict[str, Any]


def cost_center_on(intervals: list[Interval], day: date) -> str | None:
    """The code the project mapped to on ``day``: the last interval starting on or before it; before the
    first interval, the first one (work booked before the project's start still belongs to it)."""
    if not intervals:
        return None
    found = intervals[0]
    for interval in intervals:
        if interval["valid_from"] <= day:
            found = interval
        else:
            break
    return str(found["code"])


def start_interval(intervals: list[Interval], code: str, day: date) -> tuple[list[Interval], Interval | None]:
    """Map to ``code`` from ``day`` on: returns the new interval list and the interval that was closed
    (its ``valid_to`` set to the day before), or None when nothing was closed.

    A change dated on or before the start of the current interval replaces that interval's code (the
    crosswalk keeps one interval per start day); intervals are never reordered.
    """
    out = [dict(i) for i in intervals]
    if not out:
        return [{"code": code, "valid_from": day, "valid_to": None}], None
    last = out[-1]
    if last["code"] == code:
        return out, None
    if day <= last["valid_from"]:
        last["code"] = code
        return out, None
    last["valid_to"] = day - timedelta(days=1)
    out.append({"code": code, "valid_from": day, "valid_to": None})
    return out, last


def valid_on(entries: list[dict[str, Any]], day: date) -> dict[str, Any] | None:
    """The entry valid on ``day`` (valid_from ≤ day ≤ valid_to); with several, the latest valid_from."""
    best: dict[str, Any] | None = None
    for e in entries:
        valid = e["valid_from"] <= day and (e.get("valid_to") is None or day <= e["valid_to"])
        if valid and (best is None or e["valid_from"] >= best["valid_from"]):
            best = e
    return best


def merge_dated(entries: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``entries`` with ``new`` put in its place (one entry per ``valid_from``, the higher ``version``
    wins); None when ``new`` is older than what is there (nothing to change)."""
    out: list[dict[str, Any]] = []
    for e in entries:
        if e["valid_from"] == new["valid_from"]:
            if int(e.get("version", 0)) > int(new.get("version", 0)):
                return None
            continue
        out.append(e)
    out.append(new)
    out.sort(key=lambda e: e["valid_from"])
    return out
