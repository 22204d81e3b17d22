"""The reporting sink's Avro -> table mapping and row building (pure): names, types, keys, lines, DDL."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from bizbus.connectors.sinks.reporting import convert, mapping
from bizbus.schemas import catalog

from bizbus.failures import Permanent

TOPICS = [t for t in yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "topics.yaml").read_text())["topics"]
          if not t.get("internal")]  # a flow's step topic is not reported


def _layout(topic: str, schema: str) -> mapping.Layout:
    return mapping.layout(topic, catalog.load(schema))


def test_table_names_are_readable() -> None:
    assert mapping.table_name("bizbus.sales.order.v1") == "sales_order"
    assert mapping.table_name("bizbus.inventory.goods-receipt.v1") == "inventory_goods_receipt"
    assert mapping.table_name("bizbus.sales.order.v2") == "sales_order_v2"
    with pytest.raises(ValueError):
        mapping.table_name("orders")


@pytest.mark.parametrize("entry", TOPICS, ids=[t["name"] for t in TOPICS])
def test_every_catalogue_topic_has_a_layout_and_its_sample_builds(entry: dict) -> None:
    lay = _layout(entry["name"], entry["value_schema"])
    sample = catalog.sample(entry["value_schema"])
    rows = convert.build(lay, sample, 2, 41)
    assert all(v not in (None, "") for v in rows.key)
    assert rows.event_id == sample["meta"]["event_id"]
    assert rows.row["kafka_partition"] == 2 and rows.row["kafka_offset"] == 41
    for lt in lay.lines:
        assert [line["line_no"] for line in rows.lines[lt.table]] == [x["line_no"] for x in sample[lt.field]]
    names = [c.name for c in lay.columns]
    assert len(names) == len(set(names))
    # every statement renders and names each parameter the rows give
    st = convert.statements("reporting", lay)
    row, hist, key, lines = convert.params(lay, rows)
    assert st.upsert.count("%(") == len(row)
    assert set(hist) >= {c.name for c in lay.history_json}


def test_sales_order_types_keys_and_lines() -> None:
    lay = _layout("bizbus.sales.order.v1", "bizbus.sales.SalesOrder")
    types = {c.name: c.type for c in lay.columns}
    assert lay.table == "sales_order" and lay.history == "sales_order_history"
    assert lay.key == ("order_no",) and lay.version == "version"
    assert types["total_amount"] == "numeric(18,2)"
    assert types["order_date"] == "date"
    assert types["occurred_at"] == "timestamp with time zone"
    assert types["status"] == "text"  # enum
    assert types["trace"] == "jsonb"  # map
    assert "lines" not in types  # lines have their own table
    (lt,) = lay.lines
    assert lt.table == "sales_order_line"
    line_types = {c.name: c.type for c in lt.columns}
    assert line_types["quantity"] == "numeric(18,4)" and line_types["unit_price"] == "numeric(18,6)"
    assert line_types["need_by"] == "date"
    ddl = {t: st for t, st in mapping.create_statements("reporting", lay) if st.startswith("CREATE TABLE")}
    assert 'PRIMARY KEY ("order_no", line_no)' in ddl["sales_order_line"]
    assert 'UNIQUE ("event_id")' in ddl["sales_order_history"]
    assert '"lines" jsonb' in ddl["sales_order_history"]
    assert '"tax_amount" numeric(18,2),' in ddl["sales_order"]  # nullable
    assert '"order_no" text NOT NULL' in ddl["sales_order"]


def test_nested_records_flatten_and_meta_names_do_not_clash() -> None:
    ce = _layout("bizbus.finance.cost-entry.v1", "bizbus.finance.CostEntry")
    names = [c.name for c in ce.columns]
    assert {"source_ref_system", "source_ref_document_no", "source_ref_line_no"} <= set(names)
    assert ce.version is None  # offset order
    xw = _layout("bizbus.md.id-crosswalk.v1", "bizbus.md.IdCrosswalk")
    assert "meta_source_system" in [c.name for c in xw.columns]
    assert xw.column("source_system").path == ("source_system",)
    assert xw.key == ("entity_type", "source_system", "source_id", "target_system")
    voucher = _layout("bizbus.finance.voucher.v1", "bizbus.finance.Voucher")
    assert [lt.table for lt in voucher.lines] == ["finance_voucher_line"]  # source_refs: jsonb, not lines
    assert voucher.column("source_refs").type == "jsonb"
    level = _layout("bizbus.inventory.level.v1", "bizbus.inventory.InventoryLevel")
    assert level.key == ("warehouse", "material")


def test_row_values_keep_their_types_and_json_is_exact() -> None:
    lay = _layout("bizbus.sales.order-decision.v1", "bizbus.sales.OrderDecision")
    rec = catalog.sample("bizbus.sales.OrderDecision")
    rec["shortfalls"] = {"M-1": "12.5000"}
    rows = convert.build(lay, rec, 0, 7)
    assert json.loads(rows.row["shortfalls"]) == {"M-1": "12.5000"}
    assert isinstance(rows.row["occurred_at"], datetime) and rows.row["occurred_at"].tzinfo is not None
    assert json.loads(rows.history_extra["lines"])[0]["quantity"] == str(rec["lines"][0]["quantity"])
    line = rows.lines["sales_order_decision_line"][0]
    assert isinstance(line["quantity"], Decimal) and line["quantity"] == rec["lines"][0]["quantity"]
    assert convert.to_json({"d": date(2026, 1, 2), "t": datetime(2026, 1, 2, tzinfo=UTC), "b": b"\x01"}) == (
        '{"b": "01", "d": "2026-01-02", "t": "2026-01-02T00:00:00+00:00"}')


def test_missing_key_and_bad_lines_are_permanent() -> None:
    lay = _layout("bizbus.sales.order.v1", "bizbus.sales.SalesOrder")
    rec = catalog.sample("bizbus.sales.SalesOrder")
    rec["order_no"] = "  "
    with pytest.raises(Permanent, match="order_no"):
        convert.build(lay, rec, 0, 0)
    rec = catalog.sample("bizbus.sales.SalesOrder")
    rec["lines"] = rec["lines"] + [copy.deepcopy(rec["lines"][0])]
    with pytest.raises(Permanent, match="repeated line_no"):
        convert.build(lay, rec, 0, 0)


def _with_field(schema: dict, name: str, kind) -> dict:
    s = copy.deepcopy(schema)
    s["fields"].append({"name": name, "type": kind, "default": None} if isinstance(kind, list) else
                       {"name": name, "type": kind})  # fmt: skip
    return s


def _existing(lay: mapping.Layout) -> dict[str, dict[str, str]]:
    stamps = {lay.table: "updated_at"}
    return {t: {n: k for n, k, _ in cols} | {stamps.get(t, "landed_at"): "timestamp with time zone"}
            for t, cols in mapping.wanted(lay).items()}  # fmt: skip


def test_a_new_nullable_field_is_an_add_column_and_a_type_change_is_refused() -> None:
    base = catalog.load("bizbus.md.Material")
    old = mapping.layout("bizbus.md.material.v1", base)
    new = mapping.layout("bizbus.md.material.v1", _with_field(base, "color", ["null", "string"]))
    alters = mapping.reconcile("reporting", new, _existing(old))
    assert alters == ['ALTER TABLE "reporting"."md_material" ADD COLUMN IF NOT EXISTS "color" text',
                      'ALTER TABLE "reporting"."md_material_history" ADD COLUMN IF NOT EXISTS "color" text']  # fmt: skip
    assert mapping.reconcile("reporting", old, _existing(old)) == []
    assert mapping.reconcile("reporting", old, _existing(new)) == []  # an older version: NULL in color
    rows = convert.build(old, catalog.sample("bizbus.md.Material"), 0, 0)
    assert "color" not in rows.row
    changed = copy.deepcopy(base)
    for f in changed["fields"]:
        if f["name"] == "standard_cost":
            f["type"] = ["null", {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4}]
    with pytest.raises(mapping.SchemaMismatch, match=r"standard_cost is numeric\(18,6\).*needs numeric\(18,4\)"):
        mapping.reconcile("reporting", mapping.layout("bizbus.md.material.v1", changed), _existing(old))


def test_a_new_line_field_extends_the_line_table() -> None:
    base = catalog.load("bizbus.sales.SalesOrder")
    old = mapping.layout("bizbus.sales.order.v1", base)
    newer = copy.deepcopy(base)
    item = newer["fields"][[f["name"] for f in newer["fields"]].index("lines")]["type"]["items"]
    item["fields"].append({"name": "batch_no", "type": ["null", "string"], "default": None})
    alters = mapping.reconcile("reporting", mapping.layout("bizbus.sales.order.v1", newer), _existing(old))
    assert alters == ['ALTER TABLE "reporting"."sales_order_line" ADD COLUMN IF NOT EXISTS "batch_no" text']


def test_keys_must_exist_and_can_be_overridden() -> None:
    schema = catalog.load("bizbus.sales.SalesOrder")
    lay = mapping.layout("bizbus.sales.order.v1", schema, key=("company", "order_no"), table="so")
    assert lay.key == ("company", "order_no") and lay.table == "so" and lay.lines[0].table == "so_line"
    with pytest.raises(mapping.SchemaMismatch, match="no scalar field 'nope'"):
        mapping.layout("bizbus.sales.order.v1", schema, key=("nope",))
    with pytest.raises(mapping.SchemaMismatch, match="not a bizbus event"):
        mapping.layout("x", catalog.load("bizbus.common.DocumentLine"))


def test_upsert_orders_by_version_or_offset() -> None:
    with_version = convert.statements("r", _layout("bizbus.sales.order.v1", "bizbus.sales.SalesOrder"))
    assert with_version.upsert.endswith('WHERE "r"."sales_order"."version" <= EXCLUDED."version"')
    by_offset = convert.statements("r", _layout("bizbus.inventory.level.v1", "bizbus.inventory.InventoryLevel"))
    assert "kafka_offset <= EXCLUDED.kafka_offset" in by_offset.upsert
    # lines are replaced only when this event is the current state
    assert 'AND "event_id" = %(k__event_id)s' in with_version.delete_lines["sales_order_line"]
