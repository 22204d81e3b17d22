"""How bizbus opens a PostgreSQL connection: one place for the session settings every connection gets.

* ``application_name`` is ``bizbus <purpose>`` (e.g. ``bizbus inbox jira-cloud``): an operator (or a test)
  finds the bus's backends in ``pg_stat_activity`` and sees what each one is for.
* ``connect_timeout`` and TCP keepalives: a server that went away without closing the socket (a failover,
  a network blip, a dropped NAT entry) shows up as an error within about a minute instead of a read that
  waits forever.

Every holder of a long-lived connection reconnects lazily: it checks :func:`alive` before use and opens
a new one when the old one was closed or broken (a terminated backend, a restarted server). The error of
the statement that found the connection broken goes up to the task runtime, which backs off and tries
again (connectors/runtime/base.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

APP_PREFIX = "bizbus"
CONNECT_TIMEOUT = 10  # s
# probe an idle connection after 30 s, then every 10 s; 3 unanswered probes break it (~60 s in all)
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def app_name(purpose: str) -> str:
    """``bizbus <purpose>`` cut to PostgreSQL's 63 bytes."""
    return f"{APP_PREFIX} {purpose}".encode()[:63].decode(errors="ignore")


def connect(dsn: str, purpose: str, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    """A new connection named ``bizbus <purpose>``, with a connect timeout and TCP keepalives."""
    params: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, **KEEPALIVES, **kwargs}
    return psycopg.connect(dsn, autocommit=autocommit, application_name=app_name(purpose), **params)


def alive(conn: psycopg.Connection[Any] | None) -> bool:
    """Whether ``conn`` can still be used (open and not known to be broken)."""
    return conn is not None and not conn.closed and not conn.broken


def close_quietly(conn: psycopg.Connection[Any] | None) -> None:
    """Close ``conn`` whatever state it is in (a broken connection may raise on close)."""
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            conn.close()
