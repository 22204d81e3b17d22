"""Crash points: named places where a chaos test may SIGKILL the process, off unless asked for.

Exactly-once claims are only worth something if they survive a crash at the worst moment, e.g. after a
target API accepted a create and before our ledger recorded it. Code marks such moments with
``crashpoint("http-api.after-create")``; a chaos test arms them through the environment::

    BIZBUS_CRASHPOINTS="http-api.after-create:0.01,pg.after-insert:0.5"
    BIZBUS_CRASHPOINT_LOG=/tmp/crashes.log   # optional: one line "<name> <pid> <unix time>" per kill

When an armed point is reached and ``random.random() < probability``, the line is appended to the log
(fsynced, so the test can count the kills it caused) and the process sends itself SIGKILL: no
``finally`` blocks, no atexit handlers, no flushed buffers, exactly like a power cut or the OOM killer.

The variable is read once, on the first call; unset, a crash point costs one dict lookup. A malformed
value raises ``ValueError`` on that first call, so a typo cannot silently turn a chaos run into a calm one.
"""

from __future__ import annotations

import os
import random
import signal
import time

__all__ = ["CRASHPOINTS_ENV", "CRASHPOINT_LOG_ENV", "crashpoint", "parse", "reset"]

CRASHPOINTS_ENV = "BIZBUS_CRASHPOINTS"
CRASHPOINT_LOG_ENV = "BIZBUS_CRASHPOINT_LOG"

_armed: dict[str, float] | None = None  # None: environment not read yet
_hits: dict[str, int] = {}  # arrivals per point, for the @N form


def parse(spec: str) -> dict[str, float]:
    """``"a:0.1,b:1,c:@300"`` -> ``{"a": 0.1, "b": 1.0, "c": -300.0}``; empty -> ``{}``; malformed -> ValueError.

    ``@N`` (stored as ``-N``) means: on the N-th time this process reaches the point, deterministically.
    """
    armed: dict[str, float] = {}
    for entry in spec.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, prob = entry.rpartition(":")
        name = name.strip()
        if prob.strip().startswith("@") and prob.strip()[1:].isdigit() and int(prob.strip()[1:]) >= 1:
            armed[name] = -float(prob.strip()[1:])
            continue
        try:
            p = float(prob)
        except ValueError:
            p = float("nan")
        if not sep or not name or not 0.0 <= p <= 1.0:
            raise ValueError(
                f"{CRASHPOINTS_ENV}: {entry!r} is not 'name:probability' with a probability between 0 and 1, or 'name:@N'"
            )
        armed[name] = p
    return armed


def reset() -> None:
    """Forget the parsed setting so the next call re-reads the environment (for tests)."""
    global _armed
    _armed = None
    _hits.clear()


def crashpoint(name: str) -> None:
    """Kill this process with SIGKILL here if ``name`` is armed and the dice say so; else do nothing."""
    global _armed
    armed = _armed
    if armed is None:
        armed = _armed = parse(os.environ.get(CRASHPOINTS_ENV, ""))
    p = armed.get(name)
    if p is None:
        return
    if p < 0:  # @N: the N-th arrival
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] != -p:
            return
    elif random.random() >= p:
        return
    _record(name)
    os.kill(os.getpid(), signal.SIGKILL)


def _record(name: str) -> None:
    """Append ``<name> <pid> <unix time>`` to the crash log, durably, before dying."""
    path = os.environ.get(CRASHPOINT_LOG_ENV)
    if not path:
        return
    line = f"{name} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one small O_APPEND write: lines from concurrent processes do not interleave
        os.fsync(fd)
    finally:
        os.close(fd)
