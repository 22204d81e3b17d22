"""Reachability probes behind ``/readyz``: is the system a component talks to answering right now?

Each returns None when it is, else one line saying what is wrong (never a secret: DSNs and URLs are
shown without credentials). Probes are short (2 s timeouts); ``/readyz`` caches results for a second.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import psycopg

from bizbus.pgconn import connect

TIMEOUT = 2.0


def _where_pg(dsn: str) -> str:
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "PostgreSQL"
    return f"PostgreSQL {info.get('host') or 'local'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def pg(dsn: str) -> str | None:
    """PostgreSQL accepts a connection and answers ``SELECT 1``."""
    try:
        with connect(dsn, "probe", connect_timeout=int(TIMEOUT)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{_where_pg(dsn)} unreachable: {first}"
    return None


def http(url: str, method: str = "GET", json: object | None = None) -> str | None:
    """Something answers HTTP at ``url`` (any status: 401 or 404 still prove the server is up; 5xx not)."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"
    try:
        r = httpx.request(method, url, json=json, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return f"{shown} unreachable: {type(exc).__name__}"
    if r.status_code >= 500:
        return f"{shown} answers HTTP {r.status_code}"
    return None
