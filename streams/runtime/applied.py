"""Which input events a flow state has already applied: the guard that makes an aggregate exact under
at-least-once delivery.

A stateful flow on the embedded broker runs ``at_least_once``: after a SIGKILL the records since the last
commit come again. A state that *replaces* (a project's latest version) does not care; a state that *adds*
(stock reserved, cost booked) would count them twice. Such a state keeps the event ids it applied, in the
state value itself, so the id list travels through the same changelog record as the figure it guards and
the two can never disagree after a crash.

The list is bounded (``limit`` newest ids, oldest dropped first). A redelivery comes from the last
uncommitted stretch of one partition, so the bound only has to exceed what one key can see between two
commits; the default is far above that.

    ids, fresh = remember(state.get("applied"), event_id)
    if not fresh:
        return state            # already counted: change nothing, emit nothing new
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_LIMIT = 256
"""Ids kept per state by default."""


def seen(applied: Sequence[str] | None, event_id: str) -> bool:
    """Whether ``event_id`` is among the applied ids."""
    return bool(applied) and event_id in applied  # type: ignore[operator]


def remember(applied: Sequence[str] | None, event_id: str, limit: int = DEFAULT_LIMIT) -> tuple[list[str], bool]:
    """``(ids, fresh)``: the applied ids with ``event_id`` added (newest last, at most ``limit``) and whether it
    was new. When it was not new, ``ids`` is the list unchanged and the caller must not apply the event again."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    ids = list(applied or ())
    if event_id in ids:
        return ids, False
    ids.append(event_id)
    if len(ids) > limit:
        del ids[: len(ids) - limit]
    return ids, True
