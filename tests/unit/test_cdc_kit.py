"""The CDC kit's pure parts: journal chunking and ids, the mapping file, field evaluation and checks, the
converter's entity records and dead letters, the schema check."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pytest
from bizbus.connectors.runtime.cdc import (
    CdcConverter,
    Rejected,
    RowChange,
    SchemaIncompatible,
    Transaction,
    check_columns,
    deliveries,
    jsonable,
    load_mapping,
    snapshot_deliveries,
)
from bizbus.connectors.runtime.cdc.fields import RowRejected, convert, render_key
from bizbus.connectors.runtime.cdc.journal import HANDOVER, SNAPSHOT, changes_of
from bizbus.connectors.runtime.inbox import InboxRow

from bizbus.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MAPPING = load_mapping(ROOT / "deploy/examples/mappings/jxc-cdc.yaml")
T = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)


def move(no: str, qty: str = "2", unit: str = "M", kind: str = "issue") -> RowChange:
    row = {"move_no": no, "kind": kind, "warehouse": "W1", "material": "M-1", "quantity": qty, "unit": unit,
           "unit_cost": "1.5", "project": "P1", "cost_center": None, "company": "C100", "moved_on": "2026-12-01"}  # fmt: skip
    return RowChange("stock_moves", "insert", {"move_no": no}, None, row)


def inbox_rows(tx: Transaction, chunk: int = 500, first_id: int = 1) -> list[InboxRow]:
    return [InboxRow(first_id + i, d.delivery_id, d.kind, d.payload, None, "log", T)
            for i, d in enumerate(deliveries(tx, chunk))]  # fmt: skip


def test_a_transaction_is_chunked_with_ids_from_its_position() -> None:
    tx = Transaction("0/16B3748", T, tuple(move(f"MV{i}") for i in range(5)))
    ds = deliveries(tx, 2)
    assert [d.delivery_id for d in ds] == ["0/16B3748/0", "0/16B3748/1", "0/16B3748/2"]
    assert [d.payload["last"] for d in ds] == [False, False, True]
    assert [d.payload["first"] for d in ds] == [0, 2, 4]
    back = [c for d in ds for c in changes_of(InboxRow(1, d.delivery_id, d.kind, d.payload, None, "log", T))]
    assert [c.key for c in back] == [{"move_no": f"MV{i}"} for i in range(5)]
    assert deliveries(tx, 2) == ds  # deterministic: a re-sent transaction has the same ids


def test_a_snapshot_is_numbered_across_chunks_and_ends_with_the_handover() -> None:
    chunks = [Transaction("0/1", T, (move("A"), move("B"))), Transaction("0/1", T, (move("C"),))]
    ds = snapshot_deliveries(chunks, 500)
    assert [(d.kind, d.delivery_id) for d in ds] == [(SNAPSHOT, "snapshot@0/1/0"), (SNAPSHOT, "snapshot@0/1/1"),
                                                      (HANDOVER, "handover@0/1")]  # fmt: skip
    assert ds[-1].payload["chunk"] == 2 and ds[1].payload["first"] == 2
    empty = snapshot_deliveries([Transaction("0/9", T, ())], 500)
    assert [d.kind for d in empty] == [SNAPSHOT, HANDOVER]


def test_values_are_journaled_as_exact_json() -> None:
    assert jsonable(decimal.Decimal("1.2300")) == "1.2300"
    assert jsonable(dt.date(2026, 12, 1)) == "2026-12-01"
    assert jsonable(b"\x00\x01") == "base64:AAE="
    assert jsonable({"a": [decimal.Decimal("1")]}) == {"a": ["1"]}


def test_field_conversions_and_keys() -> None:
    assert convert("q", "decimal", "2.5", 4) == decimal.Decimal("2.5000")
    assert convert("d", "date", "2026-12-01") == dt.date(2026, 12, 1)
    assert convert("t", "timestamp", "2026-12-01 10:00:00+08") == dt.datetime(2026, 12, 1, 2, tzinfo=dt.UTC)
    assert convert("b", "bool", "t") is True and convert("b", "bool", 0) is False
    with pytest.raises(RowRejected, match="not a decimal|not a number"):
        convert("q", "decimal", "abc")
    assert render_key("{warehouse}/{material}", {"warehouse": "W1", "material": "M-1"}, {}) == "W1/M-1"
    with pytest.raises(RowRejected, match="no column 'material'"):
        render_key("{warehouse}/{material}", {"warehouse": "W1"}, {})


def test_entities_become_records_and_misfits_dead_letters_with_their_key() -> None:
    tx = Transaction("0/16B3748", T, (move("MV1"), move("MV2", qty="-3"), move("MV3", unit="BARREL"),
                                      move("MV4", kind="receipt")))  # fmt: skip
    out = CdcConverter(MAPPING, None).convert_rows(inbox_rows(tx, first_id=7)[0])
    assert [type(o).__name__ for o in out] == ["Event", "Rejected", "Rejected"]  # the receipt move is not mapped
    event = out[0]
    assert event.topic == "bizbus.inventory.goods-issue.v1" and event.key == "MV1"
    assert event.value["lines"][0]["quantity"] == decimal.Decimal("2.0000")
    assert event.value["version"] == 7 * 100_000 and event.value["op"] == "CREATED"
    assert event.value["meta"]["source_system"] == "jxc"
    again = CdcConverter(MAPPING, None).convert_rows(inbox_rows(tx, first_id=7)[0])
    assert again[0].value["meta"]["event_id"] == event.value["meta"]["event_id"]  # deterministic
    neg, unit = out[1], out[2]
    assert isinstance(neg, Rejected) and neg.key == "MV2" and "below the allowed minimum" in str(neg.error)
    assert isinstance(unit, Rejected) and unit.key == "MV3" and "unknown unit 'BARREL'" in str(unit.error)
    assert neg.error.error_class == "permanent" and b'"move_no": "MV2"' in neg.raw


def test_a_stock_level_record_has_the_available_quantity_and_the_commit_time() -> None:
    row = {"warehouse": "W1", "material": "M-1", "unit": "M", "on_hand": "100.0000", "reserved": "20.0000",
           "safety_stock": "5.0000", "updated_at": "2026-12-01 10:00:00+08"}  # fmt: skip
    tx = Transaction("0/2", T, (RowChange("stock_levels", "update", {"warehouse": "W1", "material": "M-1"}, None, row),))
    (event,) = CdcConverter(MAPPING, None).convert_rows(inbox_rows(tx)[0])
    assert event.key == "W1/M-1" and event.value["available"] == decimal.Decimal("80.0000")
    assert event.value["as_of"] == T


def test_the_mapping_names_tables_topics_and_mapped_columns() -> None:
    assert set(MAPPING.topics()) == {"bizbus.md.material.v1", "bizbus.inventory.level.v1",
                                     "bizbus.inventory.goods-receipt.v1", "bizbus.inventory.goods-issue.v1",
                                     "bizbus.sales.order.v1", "bizbus.pm.material-need.v1"}  # fmt: skip
    assert "sales_order_lines" in MAPPING.tables() and "warehouses" not in MAPPING.tables()
    assert {"quantity", "project", "kind", "company"} <= MAPPING.mapped_columns("stock_moves")


def test_a_bad_mapping_file_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("source_system: x\nentities:\n  - {name: a, table: t, topic: x, key: '{id}', fields: {a: {}}}\n")
    with pytest.raises(ConfigError, match="exactly one of column"):
        load_mapping(p)


def test_the_schema_check_lets_new_columns_through_and_stops_at_dropped_or_retyped_mapped_ones() -> None:
    known = {"id": "integer", "qty": "numeric", "note": "text"}
    assert check_columns("t", {"id", "qty"}, known, {**known, "extra": "text"}) == (["extra"], [])
    assert check_columns("t", {"id", "qty"}, known, {"id": "integer", "qty": "numeric"}) == ([], ["note"])
    assert check_columns("t", {"id", "qty"}, known, {"id": "integer", "qty": "numeric", "note": "integer"}) == ([], [])
    with pytest.raises(SchemaIncompatible, match="mapped column.* qty no longer exist"):
        check_columns("t", {"id", "qty"}, known, {"id": "integer"})
    with pytest.raises(SchemaIncompatible, match="qty numeric -> text"):
        check_columns("t", {"id", "qty"}, known, {"id": "integer", "qty": "text"})
    assert SchemaIncompatible("x").error_class == "fatal"


def test_a_mapping_without_documents_never_touches_a_document_table() -> None:
    """The mariadb_cdc benchmark (entities only) stalled for ever on its handover row: the converter asked the
    state database for images in a document table it had (rightly) never made. Without documents in the
    mapping, the document state is not used at all: here a DocState whose database cannot be reached."""
    from bizbus.connectors.runtime.cdc.docstate import DocState

    only_entities = MAPPING.model_copy(update={"documents": ()})
    unreachable = DocState("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", "bizbus_state", "x")
    conv = CdcConverter(only_entities, unreachable)
    conv.setup()
    rows = inbox_rows(Transaction("0/1", T, (move("A"), move("B"))))
    handover = InboxRow(9, "handover@0/1", HANDOVER, {"position": "0/1", "commit_time": T.isoformat(), "chunk": 1},
                        None, "log", T)  # fmt: skip
    assert conv.convert_rows(handover) == []
    assert [(o.topic, o.key) for o in conv.convert_rows(rows[0])] == [("bizbus.inventory.goods-issue.v1", "A"),
                                                                      ("bizbus.inventory.goods-issue.v1", "B")]
