"""What the converter remembers between rows and restarts.

* issue id -> (issue key, project key): a worklog names its issue only by id (tables
  ``<state_schema>.jira_issues_<connector>``);
* worklog id -> the facts last emitted for it, so that a deletion the backfill found (only an id and a
  time) can still say which project, employee and day it reverses (``jira_worklogs_<connector>``).
Memory in front, PostgreSQL behind; writes are idempotent upserts, collected per batch and written by
``flush()`` in one transaction (the inbox reader calls it after converting a batch, before sending its
events; measured: one upsert and commit per worklog was ~70 % of the inbox task's time at 1,000 rows/s).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from itertools import islice
from typing import Any

import psycopg
from psycopg import sql

from bizbus.statetables import KeptConnection

from .mapping import WorklogFacts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssueRef:
    key: str
    project: str


class MemoryState:
    """The in-process part (also the whole state in unit tests)."""

    def __init__(self) -> None:
        self._issues: dict[str, IssueRef] = {}
        self._worklogs: dict[str, WorklogFacts] = {}

    def setup(self) -> None:
        """Nothing to open."""

    def issue(self, issue_id: str) -> IssueRef | None:
        return self._issues.get(str(issue_id))

    def remember_issue(self, issue_id: str, ref: IssueRef) -> None:
        self._issues[str(issue_id)] = ref

    def worklog(self, worklog_id: str) -> WorklogFacts | None:
        return self._worklogs.get(str(worklog_id))

    def remember_worklog(self, worklog_id: str, facts: WorklogFacts) -> None:
        self._worklogs[str(worklog_id)] = facts

    def flush(self) -> None:
        """Nothing to write."""

    def discard(self) -> None:
        """Nothing was written, so nothing to forget (the rows are converted again)."""

    def close(self) -> None:
        """Nothing to close."""


def state_tables(connector: str) -> tuple[str, str]:
    suffix = connector.replace("-", "_")
    return f"jira_issues_{suffix}", f"jira_worklogs_{suffix}"


def _bound(cache: dict[str, Any], dirty: dict[str, Any], most: int) -> None:
    """Past ``most`` entries, drop the oldest written ones (not in ``dirty``) down to nine tenths of ``most``."""
    if len(cache) <= most:
        return
    for k in list(islice((k for k in cache if k not in dirty), len(cache) - most * 9 // 10)):
        del cache[k]


class PgState(MemoryState):
    """``MemoryState`` backed by two small tables in the connector's state schema."""

    def __init__(self, dsn: str, schema: str, connector: str, cache_max: int = 20_000) -> None:
        super().__init__()
        self.dsn, self.schema, self.connector = dsn, schema, connector
        # memory holds at most this many issues and as many worklogs (the oldest written ones leave first;
        # PostgreSQL has them all). Unbounded, it held every worklog ever seen: 69k objects after a
        # 90-s run of the latency benchmark, and every full pass of the garbage collector walked them.
        self.cache_max = cache_max
        issues, worklogs = state_tables(connector)
        self._t_issues, self._t_worklogs = sql.Identifier(schema, issues), sql.Identifier(schema, worklogs)
        self._kept = KeptConnection(dsn, f"jira state {connector}", schema, [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (issue_id text PRIMARY KEY, issue_key text NOT NULL,"
                " project_key text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(self._t_issues),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (worklog_id text PRIMARY KEY, project_key text NOT NULL,"
                " issue_key text NULL, employee text NOT NULL, work_date date NOT NULL, hours numeric(9,2) NOT NULL,"
                " updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(self._t_worklogs),
        ], lock="bizbus jira state ddl")  # fmt: skip
        self._lock = threading.Lock()
        # remembered, not yet written (kept until a flush succeeds, so a failed flush is retried by the next)
        self._dirty_issues: dict[str, IssueRef] = {}
        self._dirty_worklogs: dict[str, WorklogFacts] = {}

    def _db(self) -> psycopg.Connection[Any]:
        """The state connection, reopened when it was closed or broke (``bizbus/statetables.py``)."""
        return self._kept.get()

    def setup(self) -> None:
        """Create the schema and both tables if missing (under the advisory lock ``bizbus jira state ddl``)."""
        self._kept.make_tables()

    def issue(self, issue_id: str) -> IssueRef | None:
        ref = super().issue(issue_id)
        if ref is None:
            with self._lock:
                row = self._db().execute(sql.SQL("SELECT issue_key, project_key FROM {} WHERE issue_id = %s")
                                         .format(self._t_issues), (str(issue_id),)).fetchone()  # fmt: skip
            if row is not None:
                ref = IssueRef(row[0], row[1])
                super().remember_issue(issue_id, ref)
        return ref

    def remember_issue(self, issue_id: str, ref: IssueRef) -> None:
        if super().issue(issue_id) == ref:
            return
        super().remember_issue(issue_id, ref)
        self._dirty_issues[str(issue_id)] = ref
        _bound(self._issues, self._dirty_issues, self.cache_max)

    def worklog(self, worklog_id: str) -> WorklogFacts | None:
        facts = super().worklog(worklog_id)
        if facts is None:
            with self._lock:
                row = self._db().execute(sql.SQL("SELECT project_key, issue_key, employee, work_date, hours FROM {}"
                                                 " WHERE worklog_id = %s").format(self._t_worklogs),
                                         (str(worklog_id),)).fetchone()  # fmt: skip
            if row is not None:
                facts = WorklogFacts(*row)
                super().remember_worklog(worklog_id, facts)
        return facts

    def remember_worklog(self, worklog_id: str, facts: WorklogFacts) -> None:
        known = super().worklog(worklog_id)
        if known is not None and (known.project, known.task, known.employee, known.work_date, known.hours) == (
                facts.project, facts.task, facts.employee, facts.work_date, facts.hours):  # fmt: skip
            return
        super().remember_worklog(worklog_id, facts)
        self._dirty_worklogs[str(worklog_id)] = facts
        _bound(self._worklogs, self._dirty_worklogs, self.cache_max)

    def flush(self) -> None:
        """Write what was remembered since the last flush, in one transaction."""
        issues, worklogs = dict(self._dirty_issues), dict(self._dirty_worklogs)
        if not issues and not worklogs:
            return
        parts: list[tuple[sql.Composable, str]] = []  # each table's rows as one JSON document: no per-row work
        if issues:
            parts.append((sql.SQL(
                "INSERT INTO {} (issue_id, issue_key, project_key) SELECT r.issue_id, r.issue_key,"
                " r.project_key FROM jsonb_to_recordset(%s::jsonb) AS r(issue_id text, issue_key text,"
                " project_key text) ON CONFLICT (issue_id) DO UPDATE SET issue_key = EXCLUDED.issue_key,"
                " project_key = EXCLUDED.project_key, updated_at = now()").format(self._t_issues),
                json.dumps([{"issue_id": i, "issue_key": ref.key, "project_key": ref.project}
                            for i, ref in issues.items()])))  # fmt: skip
        if worklogs:
            parts.append((sql.SQL(
                "INSERT INTO {} (worklog_id, project_key, issue_key, employee, work_date, hours)"
                " SELECT r.worklog_id, r.project_key, r.issue_key, r.employee, r.work_date, r.hours"
                " FROM jsonb_to_recordset(%s::jsonb) AS r(worklog_id text, project_key text, issue_key text,"
                " employee text, work_date date, hours numeric) ON CONFLICT (worklog_id) DO UPDATE SET"
                " project_key = EXCLUDED.project_key, issue_key = EXCLUDED.issue_key, employee ="
                " EXCLUDED.employee, work_date = EXCLUDED.work_date, hours = EXCLUDED.hours, updated_at = now()"
            ).format(self._t_worklogs), json.dumps([
                {"worklog_id": i, "project_key": f.project, "issue_key": f.task, "employee": f.employee,
                 "work_date": f.work_date.isoformat(), "hours": str(f.hours)} for i, f in worklogs.items()
            ])))  # fmt: skip
        # one statement, atomic on its own (both tables: the first as a data-modifying WITH): one round trip
        # on the autocommit connection instead of BEGIN, INSERT, INSERT, COMMIT
        statement = parts[-1][0] if len(parts) == 1 else sql.SQL("WITH issues AS ({}) {}").format(parts[0][0], parts[1][0])
        with self._lock:
            self._db().execute(statement, tuple(doc for _, doc in parts))
        for key, ref in issues.items():  # what was remembered again meanwhile stays dirty
            if self._dirty_issues.get(key) == ref:
                del self._dirty_issues[key]
        for key, facts in worklogs.items():
            if self._dirty_worklogs.get(key) == facts:
                del self._dirty_worklogs[key]

    def discard(self) -> None:
        """Forget what was remembered since the last flush (a flush failed on it): the next lookups read the
        table again, and the rows are converted again."""
        for key in self._dirty_issues:
            self._issues.pop(key, None)
        for key in self._dirty_worklogs:
            self._worklogs.pop(key, None)
        self._dirty_issues.clear()
        self._dirty_worklogs.clear()

    def close(self) -> None:
        if self._dirty_issues or self._dirty_worklogs:
            try:
                self.flush()
            except psycopg.Error as exc:  # the rows are re-read and converted again after a restart
                log.warning("jira %s: state not written at close (%s)", self.connector, exc)
        self._kept.close()
