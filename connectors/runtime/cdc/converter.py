"""Journal rows -> canonical records, by the mapping: one record per entity row change; one document
record per document a transaction touched (assembled from the log-ordered row images, see docstate)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from bizbus.connectors.runtime.cdc.docstate import DocImage, DocState
from bizbus.connectors.runtime.cdc.fields import Change, RowRejected, evaluate, matches, render_key
from bizbus.connectors.runtime.cdc.journal import HANDOVER, changes_of
from bizbus.connectors.runtime.cdc.mapping import CdcMapping, DocumentMap
from bizbus.connectors.runtime.cdc.model import RowChange
from bizbus.connectors.runtime.inbox.interface import Converter, Event, InboxRow

from bizbus import lineage
from bizbus.failures import ConnectorError

VERSION_SLOTS = 100_000  # record versions: journal row id * VERSION_SLOTS + the change's index in the row


@dataclass(frozen=True)
class Rejected:
    """A row (or a document) that does not fit the mapping: dead-lettered with its key."""

    key: str
    raw: bytes
    error: ConnectorError


Out = Event | Rejected


class CdcConverter(Converter):
    def __init__(self, mapping: CdcMapping, docs: DocState | None) -> None:
        # no documents in the mapping: no images to keep, and no table of them is ever made or read
        self.mapping, self.docs = mapping, (docs if mapping.documents else None)
        self._entities: dict[str, list[Any]] = {}
        for e in mapping.entities:
            self._entities.setdefault(e.table, []).append(e)
        self._headers = {d.header.table: d for d in mapping.documents}
        self._lines = {d.lines.table: d for d in mapping.documents}

    def setup(self) -> None:
        if self.docs is not None and self.mapping.documents:
            self.docs.setup()

    def convert(self, row: InboxRow) -> list[Event]:
        """Events only (a rejected row raises); the CDC reader calls ``convert_rows`` instead."""
        out = self.convert_rows(row)
        for o in out:
            if isinstance(o, Rejected):
                raise o.error
        return [o for o in out if isinstance(o, Event)]

    def convert_rows(self, row: InboxRow) -> list[Out]:
        p = row.payload
        if row.kind == HANDOVER and (self.docs is None or not p.get("chunk")):
            return []
        snapshot = row.kind != "cdc:tx"
        position = f"snapshot@{p['position']}" if snapshot else str(p["position"])
        when = dt.datetime.fromisoformat(p["commit_time"])
        out: list[Out] = []
        touched: dict[tuple[str, str], DocImage] = {}
        for i, c in enumerate(changes_of(row)):
            base = Change(c.op, row.id * VERSION_SLOTS + i, when, position, self.mapping.source_system,
                          self.mapping.constants, self.mapping.units)  # fmt: skip
            for e in self._entities.get(c.table, ()):
                if c.op == "delete" and e.deletes == "skip" or not matches(e.where, c.image):
                    continue
                out.append(self._entity(e, c, base, int(p.get("first", 0)) + i))
            if c.table in self._headers or c.table in self._lines:
                self._apply_doc(c, row.id, position, touched, out)
        if self.docs is not None:
            if p.get("last", True):  # the transaction's last chunk, or the snapshot's handover
                first = row.id - int(p.get("chunk", 0))
                for name, key in self.docs.touched_between(first, row.id) - set(touched):
                    touched[(name, key)] = self.docs.before(name, key, row.id + 1, position)
                done = Change("read" if snapshot else "update", row.id * VERSION_SLOTS + VERSION_SLOTS - 1, when, position,
                              self.mapping.source_system, self.mapping.constants, self.mapping.units)  # fmt: skip
                for (name, key), img in sorted(touched.items()):
                    out.extend(self._document(self._doc(name), key, img, done))
            for (name, key), img in touched.items():
                self.docs.put(name, key, row.id, img)
        return out

    def _entity(self, e: Any, c: RowChange, change: Change, index: int) -> Out:
        try:
            key = render_key(e.key, c.image, self.mapping.constants)
        except RowRejected as exc:
            return Rejected(_key_text(c.key), _raw(c, change.position, exc), exc)
        try:
            value = evaluate(e.fields, c.image, change)
        except RowRejected as exc:
            return Rejected(key, _raw(c, change.position, exc), exc)
        eid = lineage.event_id(self.mapping.source_system, c.table, _key_text(c.key), change.position, index)
        value["meta"] = lineage.meta(eid, key, self.mapping.source_system, change.commit_time)
        return Event(e.topic, key, value)

    def _doc(self, name: str) -> DocumentMap:
        return next(d for d in self.mapping.documents if d.name == name)

    def _apply_doc(self, c: RowChange, row_id: int, tx: str, touched: dict[tuple[str, str], DocImage],
                   out: list[Out]) -> None:  # fmt: skip
        assert self.docs is not None
        d = self._headers.get(c.table)
        part = d.header if d is not None else self._lines[c.table].lines
        d = d or self._lines[c.table]
        image = c.image
        cols = part.key if part is d.header else part.parent
        if any(col not in image for col in cols):
            exc = RowRejected(f"document {d.name}: the row lacks key column(s) {list(cols)}")
            out.append(Rejected(_key_text(c.key), _raw(c, "", exc), exc))
            return
        doc_key = json.dumps([image[col] for col in cols], ensure_ascii=False)
        img = touched.get((d.name, doc_key))
        if img is None:
            img = touched[(d.name, doc_key)] = self.docs.before(d.name, doc_key, row_id, tx)
        if part is d.header:
            img.header = None if c.op == "delete" else dict(image)
            if c.op == "delete":
                img.header_op, img.deleted = "delete", dict(image)
            else:  # a header deleted and inserted again in one transaction: an update
                img.header_op = "update" if img.header_op == "delete" else (img.header_op or c.op)
                img.deleted = None
        else:
            line_key = json.dumps([image.get(col) for col in part.key], ensure_ascii=False)
            if c.op == "delete":
                img.lines.pop(line_key, None)
            else:
                img.lines[line_key] = dict(image)

    def _document(self, d: DocumentMap, doc_key: str, img: DocImage, done: Change) -> list[Out]:
        header = img.header if img.header is not None else img.deleted
        if header is None:  # lines whose header the log has not shown yet: emitted with the header
            return []
        op = img.header_op or done.op
        change = Change(op, done.version, done.commit_time, done.position, done.source_system, done.constants,
                        done.units)  # fmt: skip
        key = ""
        try:
            key = render_key(d.key, header, self.mapping.constants)
            value = evaluate(d.fields, header, change)
            lines = sorted(img.lines.values(), key=lambda r: _sort(r.get(d.lines.order_by)) if d.lines.order_by else 0)
            value[d.lines_field] = [evaluate(d.line_fields, line, change) for line in lines]
        except RowRejected as exc:
            raw = json.dumps({"document": d.name, "key": key or doc_key, "position": done.position,
                              "header": header, "lines": list(img.lines.values()), "error": str(exc)},
                             ensure_ascii=False, default=str).encode()  # fmt: skip
            return [Rejected(key or doc_key, raw, exc)]
        eid = lineage.event_id(self.mapping.source_system, d.name, doc_key, done.position)
        value["meta"] = lineage.meta(eid, key, self.mapping.source_system, done.commit_time)
        return [Event(d.topic, key, value)]

    def flush(self) -> None:
        if self.docs is not None:
            self.docs.flush()

    def discard(self) -> None:
        if self.docs is not None:
            self.docs.discard()

    def close(self) -> None:
        if self.docs is not None:
            self.docs.close()


def _sort(v: Any) -> tuple[int, Any]:
    try:
        return (0, float(v))
    except (TypeError, ValueError):
        return (1, str(v))


def _key_text(key: Any) -> str:
    return json.dumps(dict(key), ensure_ascii=False, sort_keys=True, default=str)


def _raw(c: RowChange, position: str, exc: Exception) -> bytes:
    return json.dumps({"table": c.table, "op": c.op, "key": dict(c.key), "row": dict(c.image),
                       "position": position, "error": str(exc)}, ensure_ascii=False, default=str).encode()  # fmt: skip
