"""Faust's "current event" of a task: table writes go to the changelog partition of the event being handled."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def current_event() -> Any:
    """The event Faust considers being handled in this task (None outside a stream)."""
    ref = _faust_current_event().get(None)
    return ref() if ref is not None else None


_CURRENT_EVENT: list[Any] = []


def _faust_current_event() -> Any:
    """Faust's context variable of the current event (imported once: this runs for every table write)."""
    if not _CURRENT_EVENT:
        from faust.streams import _current_event

        _CURRENT_EVENT.append(_current_event)
    return _CURRENT_EVENT[0]


def enter_event(event: Any) -> Any:
    """Make ``event`` Faust's current event (table writes go to its partition's changelog); the token for
    :func:`leave_event`, None when it cannot be one (None, or a stand-in of a test)."""
    try:
        ref = weakref.ref(event)
    except TypeError:
        return None
    return _faust_current_event().set(ref)


def leave_event(token: Any) -> None:
    """Undo :func:`enter_event`."""
    if token is not None:
        _faust_current_event().reset(token)


@contextmanager
def handling(event: Any) -> Iterator[None]:
    """:func:`enter_event` for a block."""
    token = enter_event(event)
    try:
        yield
    finally:
        leave_event(token)
