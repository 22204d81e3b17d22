"""Documents assembled from log-ordered row images (state in the machine's PostgreSQL): a document is made
per transaction that touched it, from the images before it, so converting the journal again from the start
(a broker that lost its log) makes the very same records, even when the rows changed after."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from bizbus.connectors.runtime.cdc import CdcConverter, Rejected, RowChange, Transaction, load_mapping
from bizbus.connectors.runtime.cdc.docstate import DocState
from bizbus.connectors.runtime.cdc.journal import deliveries
from bizbus.connectors.runtime.inbox import InboxRow

from tests.cdc_harness import STATE_DSN, drop_state

ROOT = Path(__file__).resolve().parents[2]
MAPPING = load_mapping(ROOT / "deploy/examples/mappings/jxc-cdc.yaml")
T = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)


def order(status: str = "submitted", total: str = "30") -> dict:
    return {"order_no": "SO-1", "company": "C100", "customer": "K1", "status": status, "order_date": "2026-12-01",
            "delivery_date": None, "warehouse": "W1", "currency": "CNY", "total_amount": total}  # fmt: skip


def line(n: int, qty: str, unit: str = "M") -> dict:
    return {"order_no": "SO-1", "line_no": n, "material": "M-1", "quantity": qty, "unit": unit, "unit_price": "5",
            "amount": None}  # fmt: skip


def ins(table: str, row: dict, op: str = "insert") -> RowChange:
    key = {"order_no": row["order_no"]} | ({"line_no": row["line_no"]} if "line_no" in row else {})
    return RowChange(table, op, key, None if op == "insert" else row, None if op == "delete" else row)


def journal() -> list[InboxRow]:
    txs = [
        Transaction("0/10", T, (ins("sales_orders", order()), ins("sales_order_lines", line(1, "2")),
                                ins("sales_order_lines", line(2, "4")))),
        Transaction("0/20", T, (ins("sales_order_lines", line(1, "3"), "update"), ins("sales_order_lines", line(3, "1")),
                                ins("sales_orders", order("approved", "40"), "update"))),
        Transaction("0/30", T, (ins("sales_order_lines", line(2, "4"), "delete"),)),
        Transaction("0/40", T, (ins("sales_order_lines", line(4, "1", unit="BARREL")),)),
        Transaction("0/50", T, (ins("sales_order_lines", line(1, "3"), "delete"), ins("sales_order_lines", line(3, "1"), "delete"),
                                ins("sales_order_lines", line(4, "1", "BARREL"), "delete"), ins("sales_orders", order("approved", "40"), "delete"))),
    ]  # fmt: skip
    rows, rid = [], 1
    for tx in txs:
        for d in deliveries(tx, 2):  # small chunks: a transaction spans several journal rows
            rows.append(InboxRow(rid, d.delivery_id, d.kind, d.payload, None, "log", T))
            rid += 1
    return rows


def run(name: str) -> list:
    conv = CdcConverter(MAPPING, DocState(STATE_DSN, "bizbus_state", name))
    conv.setup()
    out = []
    try:
        for row in journal():
            out.extend(conv.convert_rows(row))
            conv.flush()
    finally:
        conv.close()
    return out


def test_documents_follow_the_log_and_come_out_the_same_when_converted_again() -> None:
    name = f"cdc-docs-{uuid.uuid4().hex[:6]}"
    try:
        first = run(name)
        again = run(name)  # the same journal converted again (the state holds the later images already)
    finally:
        drop_state(name)
    events = [o for o in first if not isinstance(o, Rejected)]
    assert [(e.value["op"], e.value["status"], [ln["line_no"] for ln in e.value["lines"]]) for e in events] == [
        ("CREATED", "SUBMITTED", [1, 2]), ("UPDATED", "APPROVED", [1, 2, 3]), ("UPDATED", "APPROVED", [1, 3]),
        ("DELETED", "APPROVED", [])]  # fmt: skip
    assert str(events[1].value["lines"][0]["quantity"]) == "3.0000"
    dead = [o for o in first if isinstance(o, Rejected)]
    assert len(dead) == 1 and dead[0].key == "SO-1" and "unknown unit 'BARREL'" in str(dead[0].error)
    assert [(type(o).__name__, getattr(o, "value", None)) for o in again] == [
        (type(o).__name__, getattr(o, "value", None)) for o in first]
