"""Documents (header + lines) assembled from the log-ordered row images, kept in the state database.

``<schema>.cdc_docs_<connector>`` holds one image per (document, key, inbox row): the document as it was
after that journal row. A document is rebuilt from the image before the row being converted, never from
the source database's current state, so a re-read journal (a crash, a broker that lost its log) makes
the very same documents again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bizbus.pgconn import alive, close_quietly, connect
from bizbus.statetables import ensure_tables


@dataclass
class DocImage:
    header: dict[str, Any] | None = None
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)  # line key (JSON) -> row image
    header_op: str | None = None  # op of the header in the transaction being converted
    deleted: dict[str, Any] | None = None  # the header's last image, when this transaction deleted it
    tx: str | None = None  # the transaction (position) that made this image

    def copy(self) -> DocImage:
        return DocImage(dict(self.header) if self.header is not None else None, dict(self.lines), self.header_op,
                        self.deleted, self.tx)  # fmt: skip

    def info(self) -> dict[str, Any]:
        return {"op": self.header_op, "deleted": self.deleted, "tx": self.tx}

    def within(self, tx: str) -> DocImage:
        """This image as the start of transaction ``tx``: what an earlier transaction did is not carried over."""
        img = self.copy()
        if img.tx != tx:
            img.header_op, img.deleted, img.tx = None, None, tx
        return img


class DocState:
    """Images of documents by (document name, key), read through a small cache, written at ``flush``."""

    def __init__(self, dsn: str, schema: str, connector: str) -> None:
        self.dsn, self.schema = dsn, schema
        self.table = sql.Identifier(schema, "cdc_docs_" + connector.replace("-", "_"))
        self.connector = connector
        self._conn: psycopg.Connection[Any] | None = None
        self._cache: dict[tuple[str, str], tuple[int, DocImage]] = {}
        self._pending: dict[tuple[str, str, int], DocImage] = {}

    def _c(self) -> psycopg.Connection[Any]:
        if not alive(self._conn):
            close_quietly(self._conn)
            self._conn = connect(self.dsn, f"cdc docs {self.connector}")
        return self._conn

    def setup(self) -> None:
        ensure_tables(self._c(), self.schema, [sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (doc text NOT NULL, doc_key text NOT NULL, row_id bigint NOT NULL,"
            " header jsonb NULL, lines jsonb NOT NULL, info jsonb NOT NULL DEFAULT '{{}}',"
            " PRIMARY KEY (doc, doc_key, row_id))").format(self.table)],
            lock="bizbus cdc docs ddl")  # fmt: skip

    def before(self, doc: str, key: str, row_id: int, tx: str) -> DocImage:
        """The document as it was before journal row ``row_id`` (empty when it did not exist), as the start
        of (the rest of) transaction ``tx``."""
        return self._before(doc, key, row_id).within(tx)

    def _before(self, doc: str, key: str, row_id: int) -> DocImage:
        best = None
        for (d, k, r), img in self._pending.items():
            if d == doc and k == key and r < row_id and (best is None or r > best[0]):
                best = (r, img)
        if best is not None:
            return best[1]
        cached = self._cache.get((doc, key))
        if cached is not None and cached[0] < row_id:
            return cached[1]
        row = self._c().execute(sql.SQL("SELECT header, lines, info FROM {} WHERE doc = %s AND doc_key = %s"
                                        " AND row_id < %s ORDER BY row_id DESC LIMIT 1").format(self.table),
                                (doc, key, row_id)).fetchone()  # fmt: skip
        if not row:
            return DocImage()
        info = row[2] or {}
        return DocImage(row[0], dict(row[1]), info.get("op"), info.get("deleted"), info.get("tx"))

    def put(self, doc: str, key: str, row_id: int, image: DocImage) -> None:
        self._pending[(doc, key, row_id)] = image.copy()

    def touched_between(self, first_id: int, row_id: int) -> set[tuple[str, str]]:
        """Documents changed by journal rows ``first_id`` .. ``row_id - 1`` (earlier chunks of a transaction)."""
        found = {(d, k) for (d, k, r) in self._pending if first_id <= r < row_id}
        if first_id < row_id:
            rows = self._c().execute(sql.SQL("SELECT doc, doc_key FROM {} WHERE row_id >= %s AND row_id < %s")
                                     .format(self.table), (first_id, row_id)).fetchall()  # fmt: skip
            found |= {(d, k) for d, k in rows}
        return found

    def flush(self) -> None:
        if not self._pending:
            return
        rows = [[d, k, r, img.header, img.lines, img.info()] for (d, k, r), img in self._pending.items()]
        self._c().execute(sql.SQL(
            "INSERT INTO {} (doc, doc_key, row_id, header, lines, info) SELECT r->>0, r->>1, (r->>2)::bigint, r->3,"
            " r->4, r->5 FROM jsonb_array_elements(%s::jsonb) AS r ON CONFLICT (doc, doc_key, row_id) DO UPDATE"
            " SET header = EXCLUDED.header, lines = EXCLUDED.lines, info = EXCLUDED.info").format(self.table),
            (json.dumps(rows, ensure_ascii=False),), prepare=False)  # fmt: skip
        for (d, k, r), img in self._pending.items():
            cached = self._cache.get((d, k))
            if cached is None or cached[0] <= r:
                self._cache[(d, k)] = (r, img)
        self._pending.clear()
        if len(self._cache) > 50_000:
            self._cache.clear()

    def discard(self) -> None:
        self._pending.clear()

    def close(self) -> None:
        close_quietly(self._conn)
        self._conn = None
