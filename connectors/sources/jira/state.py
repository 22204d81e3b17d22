"""What the converter remembers between rows and restarts.

* issue id -> (issue key, project key): a worklog names its issue only by id (tables
  ``<state_schema>.jira_issues_<connector>``);
* worklog id -> the facts last emitted for it, so that a deletion the backfill found (only an id and a
  time) can still say which project, employee and day it reverses (``jira_worklogs_<connector>``).
Memory in front, PostgreSQL behind; writes are idempotent upserts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .mapping import WorklogFacts


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

    def close(self) -> None:
        """Nothing to close."""


def state_tables(connector: str) -> tuple[str, str]:
    suffix = connector.replace("-", "_")
    return f"jira_issues_{suffix}", f"jira_worklogs_{suffix}"


class PgState(MemoryState):
    """``MemoryState`` backed by two small tables in the connector's state schema."""

    def __init__(self, dsn: str, schema: str, connector: str) -> None:
        super().__init__()
        self.dsn, self.schema, self.connector = dsn, schema, connector
        issues, worklogs = state_tables(connector)
        self._t_issues, self._t_worklogs = sql.Identifier(schema, issues), sql.Identifier(schema, worklogs)
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self.dsn, autocommit=True, application_name=f"bizbus jira {self.connector}"
            )
        return self._conn

    def setup(self) -> None:
        conn = self._db()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('bizbus jira state ddl'))")
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (issue_id text PRIMARY KEY, issue_key text NOT NULL,"
                    " project_key text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
                ).format(self._t_issues)
            )
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (worklog_id text PRIMARY KEY, project_key text NOT NULL,"
                " issue_key text NULL, employee text NOT NULL, work_date date NOT NULL, hours numeric(9,2) NOT NULL,"
                " updated_at timestamptz NOT NULL DEFAULT now())").format(self._t_worklogs))  # fmt: skip

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
        with self._lock:
            self._db().execute(sql.SQL(
                "INSERT INTO {} (issue_id, issue_key, project_key) VALUES (%s, %s, %s) ON CONFLICT (issue_id)"
                " DO UPDATE SET issue_key = EXCLUDED.issue_key, project_key = EXCLUDED.project_key, updated_at = now()"
            ).format(self._t_issues), (str(issue_id), ref.key, ref.project))  # fmt: skip
        super().remember_issue(issue_id, ref)

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
        with self._lock:
            self._db().execute(sql.SQL(
                "INSERT INTO {} (worklog_id, project_key, issue_key, employee, work_date, hours)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (worklog_id) DO UPDATE SET project_key ="
                " EXCLUDED.project_key, issue_key = EXCLUDED.issue_key, employee = EXCLUDED.employee, work_date ="
                " EXCLUDED.work_date, hours = EXCLUDED.hours, updated_at = now()").format(self._t_worklogs),
                (str(worklog_id), facts.project, facts.task, facts.employee, facts.work_date, facts.hours))  # fmt: skip
        super().remember_worklog(worklog_id, facts)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
