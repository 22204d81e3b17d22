"""Durable storage of the embedded schema registry: one SQLite file (WAL mode).

Tables (created when missing):

* ``schemas``      -- every distinct schema once, with its global ``id`` (never reused: AUTOINCREMENT) and
  ``guid``; ``identity`` (a digest of the normalised schema and its references) deduplicates it, so the
  same schema registered under two subjects shares one id, as in Confluent's registry. Rows are kept
  forever, so a schema registered again after a permanent delete gets its old id back.
* ``versions``     -- subject versions 1..n, each pointing at a schema id; ``deleted`` marks a soft delete.
* ``schema_refs``  -- the references (subject, version) a schema was registered with.
* ``config``       -- compatibility level, global (subject ``''``) and per subject.

The store knows no HTTP and no Avro; :mod:`bizbus.schemas.registry.service` holds the registry rules.
One connection is shared behind a lock, so the store may be created on one thread and used on another
(the embedded server runs its event loop on a background thread).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_COMPATIBILITY = "BACKWARD"
_GLOBAL = ""

_DDL = """
CREATE TABLE IF NOT EXISTS schemas (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    guid            TEXT NOT NULL UNIQUE,
    schema_type     TEXT NOT NULL,
    schema_text     TEXT NOT NULL,
    resolved_text   TEXT NOT NULL,
    references_json TEXT NOT NULL DEFAULT '[]',
    identity        TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS versions (
    subject   TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    schema_id INTEGER NOT NULL REFERENCES schemas(id),
    deleted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, version)
);
CREATE INDEX IF NOT EXISTS versions_by_schema ON versions(schema_id);
CREATE TABLE IF NOT EXISTS schema_refs (
    schema_id   INTEGER NOT NULL REFERENCES schemas(id),
    name        TEXT    NOT NULL,
    ref_subject TEXT    NOT NULL,
    ref_version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS refs_by_target ON schema_refs(ref_subject, ref_version);
CREATE TABLE IF NOT EXISTS config (
    subject       TEXT PRIMARY KEY,
    compatibility TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StoredSchema:
    """A registered schema: ``text`` as first registered, ``resolved`` with its references inlined."""

    id: int
    guid: str
    schema_type: str
    text: str
    resolved: str
    references: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SubjectVersion:
    """One version of a subject."""

    subject: str
    version: int
    schema_id: int
    deleted: bool


class RegistryStore:
    """SQLite-backed registry state; every method is one transaction."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._tx() as db:
            for statement in filter(str.strip, _DDL.split(";")):
                db.execute(statement)

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- schemas -------------------------------------------------------------------------------------

    @staticmethod
    def _schema(row: sqlite3.Row | None) -> StoredSchema | None:
        if row is None:
            return None
        return StoredSchema(
            id=row["id"],
            guid=row["guid"],
            schema_type=row["schema_type"],
            text=row["schema_text"],
            resolved=row["resolved_text"],
            references=json.loads(row["references_json"]),
        )

    def schema_by_id(self, schema_id: int) -> StoredSchema | None:
        rows = self._query("SELECT * FROM schemas WHERE id = ?", (schema_id,))
        return self._schema(rows[0] if rows else None)

    def schema_by_guid(self, guid: str) -> StoredSchema | None:
        rows = self._query("SELECT * FROM schemas WHERE guid = ?", (guid,))
        return self._schema(rows[0] if rows else None)

    def schema_by_identity(self, identity: str) -> StoredSchema | None:
        rows = self._query("SELECT * FROM schemas WHERE identity = ?", (identity,))
        return self._schema(rows[0] if rows else None)

    # -- subjects and versions -----------------------------------------------------------------------

    @staticmethod
    def _version(row: sqlite3.Row) -> SubjectVersion:
        return SubjectVersion(row["subject"], row["version"], row["schema_id"], bool(row["deleted"]))

    def subjects(self) -> dict[str, bool]:
        """Every subject that has versions, mapped to True when at least one version is live."""
        rows = self._query(
            "SELECT subject, MIN(deleted) AS all_deleted FROM versions GROUP BY subject ORDER BY subject"
        )
        return {row["subject"]: not row["all_deleted"] for row in rows}

    def versions(self, subject: str) -> list[SubjectVersion]:
        """All versions of ``subject`` (soft-deleted ones included), oldest first."""
        rows = self._query("SELECT * FROM versions WHERE subject = ? ORDER BY version", (subject,))
        return [self._version(row) for row in rows]

    def versions_of_schema(self, schema_id: int) -> list[SubjectVersion]:
        """Every subject version that uses schema ``schema_id``."""
        rows = self._query(
            "SELECT * FROM versions WHERE schema_id = ? ORDER BY subject, version", (schema_id,)
        )
        return [self._version(row) for row in rows]

    def add_version(
        self,
        subject: str,
        *,
        schema_type: str,
        text: str,
        resolved: str,
        references: list[dict[str, Any]],
        identity: str,
    ) -> tuple[StoredSchema, int]:
        """Append a version to ``subject`` (creating the schema row unless ``identity`` exists)."""
        with self._tx() as db:
            row = db.execute("SELECT id FROM schemas WHERE identity = ?", (identity,)).fetchone()
            if row is None:
                cursor = db.execute(
                    "INSERT INTO schemas (guid, schema_type, schema_text, resolved_text, references_json,"
                    " identity) VALUES (?, ?, ?, ?, ?, ?)",
                    (str(uuid.uuid4()), schema_type, text, resolved, json.dumps(references), identity),
                )
                schema_id = int(cursor.lastrowid or 0)
                db.executemany(
                    "INSERT INTO schema_refs (schema_id, name, ref_subject, ref_version) VALUES (?, ?, ?, ?)",
                    [(schema_id, r["name"], r["subject"], r["version"]) for r in references],
                )
            else:
                schema_id = row["id"]
            top = db.execute("SELECT MAX(version) FROM versions WHERE subject = ?", (subject,)).fetchone()[0]
            version = (top or 0) + 1
            db.execute(
                "INSERT INTO versions (subject, version, schema_id, deleted) VALUES (?, ?, ?, 0)",
                (subject, version, schema_id),
            )
            stored = self._schema(db.execute("SELECT * FROM schemas WHERE id = ?", (schema_id,)).fetchone())
        assert stored is not None
        return stored, version

    def soft_delete(self, subject: str, versions: list[int]) -> None:
        """Mark ``versions`` of ``subject`` deleted (they stay readable with ``deleted=true``)."""
        with self._tx() as db:
            db.executemany(
                "UPDATE versions SET deleted = 1 WHERE subject = ? AND version = ?",
                [(subject, v) for v in versions],
            )

    def hard_delete(self, subject: str, versions: list[int]) -> None:
        """Remove ``versions`` of ``subject``; the schemas themselves (and their ids) are kept."""
        with self._tx() as db:
            db.executemany(
                "DELETE FROM versions WHERE subject = ? AND version = ?", [(subject, v) for v in versions]
            )

    def referenced_by(self, subject: str, version: int, *, include_deleted: bool) -> list[int]:
        """Ids of schemas registered (live, or also soft-deleted) that reference ``subject`` ``version``."""
        deleted_filter = "" if include_deleted else "AND v.deleted = 0"
        rows = self._query(
            "SELECT DISTINCT r.schema_id FROM schema_refs r JOIN versions v ON v.schema_id = r.schema_id "
            f"WHERE r.ref_subject = ? AND r.ref_version = ? {deleted_filter} ORDER BY r.schema_id",
            (subject, version),
        )
        return [row["schema_id"] for row in rows]

    # -- config --------------------------------------------------------------------------------------

    def compatibility(self, subject: str | None) -> str | None:
        """The level set for ``subject`` (None: global); None when nothing is set at that level."""
        rows = self._query("SELECT compatibility FROM config WHERE subject = ?", (subject or _GLOBAL,))
        return rows[0]["compatibility"] if rows else None

    def global_compatibility(self) -> str:
        """The global level, ``BACKWARD`` unless set."""
        return self.compatibility(None) or DEFAULT_COMPATIBILITY

    def set_compatibility(self, subject: str | None, level: str) -> None:
        """Set the level for ``subject`` (None: global)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO config (subject, compatibility) VALUES (?, ?) "
                "ON CONFLICT(subject) DO UPDATE SET compatibility = excluded.compatibility",
                (subject or _GLOBAL, level),
            )

    def delete_compatibility(self, subject: str | None) -> None:
        """Remove the level set for ``subject`` (None: reset the global level to the default)."""
        with self._tx() as db:
            db.execute("DELETE FROM config WHERE subject = ?", (subject or _GLOBAL,))
