"""The canonical Avro schemas (schemas/avro/*.avsc), their catalogue and their samples."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
from bizbus.schemas import catalog, samples
from fastavro.validation import validate as fastavro_validate

TOP_LEVEL = {
    "bizbus.pm.ProjectChanged", "bizbus.pm.TaskChanged", "bizbus.pm.TimesheetEntry", "bizbus.pm.MaterialNeed",
    "bizbus.oa.ApprovalChanged",
    "bizbus.purchase.PurchaseRequisition", "bizbus.purchase.PurchaseOrder",
    "bizbus.inventory.GoodsReceipt", "bizbus.inventory.GoodsIssue", "bizbus.inventory.InventoryLevel",
    "bizbus.sales.SalesOrder", "bizbus.sales.OrderDecision", "bizbus.inventory.ReplenishmentAlert", "bizbus.sales.AtpStep",
    "bizbus.finance.BudgetAlert", "bizbus.oa.PaymentFreezeCommand", "bizbus.finance.BudgetStep",
    "bizbus.finance.MaterialCostStep",
    "bizbus.hr.Attendance",
    "bizbus.finance.CostEntry", "bizbus.finance.Voucher",
    "bizbus.md.CostCenter", "bizbus.md.Supplier", "bizbus.md.Employee", "bizbus.md.Material",
    "bizbus.md.IdCrosswalk",
    "bizbus.ops.DeadLetter",
}
NAMESPACES = {"bizbus.common", "bizbus.pm", "bizbus.oa", "bizbus.purchase", "bizbus.inventory", "bizbus.sales",
              "bizbus.hr", "bizbus.finance", "bizbus.md", "bizbus.ops"}
ALL_NAMES = catalog.names()
RECORD_NAMES = [n for n in ALL_NAMES if catalog.load(n)["type"] == "record"]
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
MONEY, QTY, RATE, HOURS = (18, 2), (18, 4), (18, 6), (9, 2)


def money_field(name: str) -> bool:
    return name in ("amount", "debit", "credit") or name.endswith("_amount")


def walk_types(schema: Any) -> Iterator[dict[str, Any]]:
    """Every complex type (dict) in a schema, depth first."""
    if isinstance(schema, list):
        for branch in schema:
            yield from walk_types(branch)
    elif isinstance(schema, dict):
        yield schema
        for field in schema.get("fields", ()):
            yield from walk_types(field["type"])
        for key in ("items", "values"):
            if key in schema:
                yield from walk_types(schema[key])


def walk_fields(schema: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(record full name, field) for every field of every record defined in a schema."""
    for node in walk_types(schema):
        if node.get("type") == "record":
            for field in node["fields"]:
                yield node["name"], field


def decimal_types(field_type: Any) -> list[dict[str, Any]]:
    """The decimal types a field itself holds (directly or as a union branch), not nested records'."""
    branches = field_type if isinstance(field_type, list) else [field_type]
    return [t for t in branches if isinstance(t, dict) and t.get("logicalType") == "decimal"]


def roundtrip(full_name: str, record: dict[str, Any]) -> dict[str, Any]:
    parsed = catalog.parsed(full_name)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    buf.seek(0)
    out = fastavro.schemaless_reader(buf, parsed)
    assert buf.read() == b"", "reader did not consume the whole encoding"
    return out


def decimals_in(value: Any, path: str = "") -> Iterator[tuple[str, Decimal]]:
    if isinstance(value, Decimal):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from decimals_in(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from decimals_in(item, f"{path}[{index}]")


# ------------------------------------------------------------------------------------------ files


def test_folder_holds_one_named_type_per_file_named_by_full_name():
    files = catalog.schema_files()
    assert [p.suffix for p in catalog.AVRO_DIR.iterdir()] == [".avsc"] * len(files)
    assert len(files) == 46
    for path in files:
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert raw["type"] in ("record", "enum"), path.name
        assert f"{raw['namespace']}.{raw['name']}.avsc" == path.name
        assert raw["namespace"] in NAMESPACES
        # shared types are referenced by full name, never defined inside another file
        nested = [t for t in walk_types(raw) if t is not raw and t.get("type") in ("record", "enum", "fixed")]
        assert nested == [], f"{path.name} inlines {[t['name'] for t in nested]}"


def test_namespaces_by_domain():
    by_ns: dict[str, set[str]] = {}
    for name in ALL_NAMES:
        ns, short = name.rsplit(".", 1)
        by_ns.setdefault(ns, set()).add(short)
    assert set(by_ns) == NAMESPACES
    assert {"EventMeta"} <= by_ns["bizbus.common"]
    assert by_ns["bizbus.pm"] >= {"ProjectChanged", "TaskChanged", "TimesheetEntry", "MaterialNeed"}
    assert by_ns["bizbus.finance"] >= {"CostEntry", "Voucher", "VoucherLine"}
    assert by_ns["bizbus.md"] >= {"CostCenter", "Supplier", "Employee", "Material", "IdCrosswalk"}
    assert by_ns["bizbus.ops"] >= {"DeadLetter"}


def test_shared_types_are_referenced_by_full_name():
    texts = {p.name: p.read_text(encoding="utf-8") for p in catalog.schema_files()}
    assert sum('"type": "bizbus.common.EventMeta"' in t for t in texts.values()) == 27
    assert sum('"items": "bizbus.common.DocumentLine"' in t for t in texts.values()) == 7
    assert '"items": "bizbus.finance.VoucherLine"' in texts["bizbus.finance.Voucher.avsc"]


# ------------------------------------------------------------------------------------------ catalogue


@pytest.mark.parametrize("name", ALL_NAMES)
def test_load_is_self_contained_and_parses(name):
    schema = catalog.load(name)
    text = json.dumps(schema)
    assert "__fastavro" not in text and "__named_schemas" not in text
    assert schema["name"] == name
    # parses on its own, with no repository and no previously known names, in two implementations
    fastavro.parse_schema(schema, named_schemas={})
    assert avro.schema.parse(catalog.schema_text(name)).fullname == name
    # every named type is defined exactly once and every reference is to a type defined before it
    defined: list[str] = []
    for node in walk_types(schema):
        if node.get("type") in ("record", "enum", "fixed"):
            defined.append(node["name"])
    assert len(defined) == len(set(defined))
    for node in walk_types(schema):
        refs = [f["type"] for f in node.get("fields", ())] + [node.get("items"), node.get("values")]
        for ref in refs:
            for r in ref if isinstance(ref, list) else [ref]:
                if isinstance(r, str) and r not in PRIMITIVES:
                    assert r in defined, f"{name}: dangling reference {r}"


def test_load_expands_shared_types_once():
    voucher = catalog.load("bizbus.finance.Voucher")
    fields = {f["name"]: f for f in voucher["fields"]}
    assert fields["meta"]["type"]["name"] == "bizbus.common.EventMeta"
    assert fields["lines"]["type"]["items"]["name"] == "bizbus.finance.VoucherLine"
    assert fields["source_refs"]["type"]["items"]["name"] == "bizbus.common.DocumentRef"
    dl = catalog.load("bizbus.ops.DeadLetter")
    assert next(f["type"] for f in dl["fields"] if f["name"] == "error_class")["symbols"] == [
        "RETRYABLE", "PERMANENT", "POISON"]


def test_load_returns_a_fresh_copy_and_schema_text_matches():
    first = catalog.load("bizbus.pm.TimesheetEntry")
    first["fields"].clear()
    assert len(catalog.load("bizbus.pm.TimesheetEntry")["fields"]) == 11
    text = catalog.schema_text("bizbus.finance.Voucher")
    assert json.loads(text) == catalog.load("bizbus.finance.Voucher")
    assert "凭证" in text and "\\u" not in text  # ensure_ascii=False
    assert '":' in text and '": ' not in text and '"},{"' in text  # compact separators
    assert text.startswith('{"type":"record","name":"bizbus.finance.Voucher","doc":')


@pytest.mark.parametrize("bad", ["bizbus.pm.Nope", "../avro/bizbus.pm.TaskChanged", "Voucher", ""])
def test_unknown_names_raise_key_error(bad):
    with pytest.raises(KeyError):
        catalog.load(bad)
    with pytest.raises(KeyError):
        catalog.sample(bad)


def test_top_level_names_are_the_twenty_seven_events():
    assert set(catalog.top_level_names()) == TOP_LEVEL
    assert len(catalog.top_level_names()) == 27
    assert "bizbus.common.EventMeta" not in catalog.top_level_names()


@pytest.mark.parametrize("name", sorted(TOP_LEVEL))
def test_meta_is_the_first_field_with_the_envelope(name):
    first = catalog.load(name)["fields"][0]
    assert first["name"] == "meta"
    meta = first["type"]
    assert meta["type"] == "record" and meta["name"] == "bizbus.common.EventMeta"
    fields = {f["name"]: f for f in meta["fields"]}
    assert [f["name"] for f in meta["fields"]] == [
        "event_id", "causation_id", "correlation_id", "source_system", "occurred_at", "trace"]
    assert fields["event_id"]["type"] == "string"
    assert fields["causation_id"]["type"] == ["null", "string"] and fields["causation_id"]["default"] is None
    assert fields["correlation_id"]["type"] == "string"
    assert fields["source_system"]["type"] == "string"
    assert fields["occurred_at"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert fields["trace"]["type"] == {"type": "map", "values": "string"} and fields["trace"]["default"] == {}


# ------------------------------------------------------------------------------------------ conventions


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_named_type_and_field_has_a_doc(name):
    schema = catalog.load(name)
    for node in walk_types(schema):
        if node.get("type") in ("record", "enum"):
            assert isinstance(node.get("doc"), str) and len(node["doc"]) >= 10, node["name"]
    for record, field in walk_fields(schema):
        assert isinstance(field.get("doc"), str) and len(field["doc"]) >= 5, f"{record}.{field['name']}"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_no_float_or_double_anywhere(name):
    raw_file = (catalog.AVRO_DIR / f"{name}.avsc").read_text(encoding="utf-8")
    assert not re.search(r'"(float|double)"', raw_file)
    for node in walk_types(catalog.load(name)):
        assert node.get("type") not in ("float", "double")
    for _, field in walk_fields(catalog.load(name)):
        for t in field["type"] if isinstance(field["type"], list) else [field["type"]]:
            assert t not in ("float", "double"), field["name"]


def test_every_decimal_has_precision_and_scale_matching_its_meaning():
    seen = {}
    for name in ALL_NAMES:
        for record, field in walk_fields(catalog.load(name)):
            for dec in decimal_types(field["type"]):
                assert dec["type"] == "bytes"
                assert isinstance(dec["precision"], int) and isinstance(dec["scale"], int)
                ps = (dec["precision"], dec["scale"])
                fname = field["name"]
                if money_field(fname):
                    assert ps == MONEY, f"{record}.{fname}"
                elif "hours" in fname:
                    assert ps == HOURS, f"{record}.{fname}"
                elif fname.endswith(("rate", "price", "cost")):
                    assert ps == RATE, f"{record}.{fname}"
                else:
                    assert ps == QTY, f"{record}.{fname}"
                seen[f"{record}.{fname}"] = ps
    assert seen["bizbus.finance.VoucherLine.debit"] == MONEY
    assert seen["bizbus.md.Employee.hourly_cost_rate"] == RATE
    assert seen["bizbus.pm.TimesheetEntry.hours"] == HOURS
    assert seen["bizbus.inventory.InventoryLevel.available"] == QTY
    assert len(seen) >= 30


def test_fields_are_snake_case_and_optional_fields_default_to_null():
    for name in ALL_NAMES:
        for record, field in walk_fields(catalog.load(name)):
            assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", field["name"]), f"{record}.{field['name']}"
            if isinstance(field["type"], list):
                assert field["type"][0] == "null" and len(field["type"]) == 2
                assert "default" in field and field["default"] is None, f"{record}.{field['name']}"


def test_times_and_dates_use_logical_types():
    for name in ALL_NAMES:
        for record, field in walk_fields(catalog.load(name)):
            fname = field["name"]
            types = [t for t in walk_types(field["type"]) if "logicalType" in t]
            if fname.endswith(("_date", "_at")) or fname in ("need_by", "valid_from", "valid_to"):
                assert types, f"{record}.{fname}"
                expected = {"type": "long", "logicalType": "timestamp-millis"} if fname.endswith("_at") \
                    else {"type": "int", "logicalType": "date"}
                assert types[0] == expected, f"{record}.{fname}"


def test_enums_have_the_agreed_symbols():
    def symbols(name):
        return catalog.load(name)["symbols"]

    assert symbols("bizbus.pm.ProjectOp") == ["CREATED", "UPDATED", "COMPLETED", "CLOSED", "DELETED"]
    assert symbols("bizbus.common.ChangeOp") == ["CREATED", "UPDATED", "DELETED"]
    assert symbols("bizbus.oa.ApprovalStatus") == ["PENDING", "APPROVED", "REJECTED", "REVOKED", "CANCELLED"]
    assert symbols("bizbus.finance.CostType") == ["LABOR", "MATERIAL", "SUBCONTRACT", "EXPENSE", "OVERHEAD"]
    assert symbols("bizbus.ops.ErrorClass") == ["RETRYABLE", "PERMANENT", "POISON"]


def field_map(name: str) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in catalog.load(name)["fields"]}


def test_master_data_is_keyed_by_code_and_dated():
    for name in ("bizbus.md.CostCenter", "bizbus.md.Supplier", "bizbus.md.Employee", "bizbus.md.Material"):
        fields = field_map(name)
        assert fields["code"]["type"] == "string"
        assert fields["valid_from"]["type"] == {"type": "int", "logicalType": "date"}
        assert fields["valid_to"]["type"] == ["null", {"type": "int", "logicalType": "date"}]
        assert fields["active"]["type"] == "boolean"
    rate = field_map("bizbus.md.Employee")["hourly_cost_rate"]
    assert "SENSITIVE" in rate["doc"] and "salary" in rate["doc"]
    cw = field_map("bizbus.md.IdCrosswalk")
    assert list(cw)[1:6] == ["entity_type", "source_system", "source_id", "target_system", "target_id"]
    assert cw["valid_to"]["default"] is None


def test_attendance_salary_fields_are_encrypted_bytes():
    fields = field_map("bizbus.hr.Attendance")
    assert fields["payroll_payload"]["type"] == ["null", "bytes"]
    assert "encrypted end to end" in fields["payroll_payload"]["doc"]
    for fname in fields:
        if fname != "payroll_payload":
            assert "salary" not in fname and "pay" not in fname.replace("payroll_key_id", "")


def test_voucher_and_dead_letter_shapes():
    line = catalog.load("bizbus.finance.Voucher")["fields"][7]["type"]["items"]
    assert [f["name"] for f in line["fields"]] == [
        "line_no", "account_code", "cost_center", "project", "debit", "credit", "description"]
    voucher = field_map("bizbus.finance.Voucher")
    assert voucher["reversal_of"]["type"] == ["null", "string"]
    dl = field_map("bizbus.ops.DeadLetter")
    assert dl["key"]["type"] == ["null", "bytes"] and dl["value"]["type"] == ["null", "bytes"]
    header = dl["headers"]["type"]["items"]
    assert [(f["name"], f["type"]) for f in header["fields"]] == [("key", "string"), ("value", ["null", "bytes"])]
    assert (dl["source_partition"]["type"], dl["source_offset"]["type"], dl["attempts"]["type"]) == (
        "int", "long", "int")


# ------------------------------------------------------------------------------------------ samples


def test_every_record_type_has_a_sample():
    assert samples.sample_names() == RECORD_NAMES
    assert catalog.sample("bizbus.pm.TimesheetEntry") == samples.sample("bizbus.pm.TimesheetEntry")
    with pytest.raises(KeyError):
        catalog.sample("bizbus.common.ChangeOp")


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_sample_round_trips_exactly(name):
    record = catalog.sample(name)
    assert [f["name"] for f in catalog.load(name)["fields"]] == list(record), "sample lists every field"
    catalog.validate(name, record)
    assert fastavro_validate(record, catalog.parsed(name), raise_errors=True) is True
    out = roundtrip(name, record)
    assert out == record
    # decimals keep their exact value and the schema's scale (str, not only ==)
    before, after = dict(decimals_in(record)), dict(decimals_in(out))
    assert {k: str(v) for k, v in after.items()} == {k: str(v) for k, v in before.items()}
    for path, value in after.items():
        assert value.as_tuple().exponent in (-2, -4, -6), path


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_sample_written_by_fastavro_is_read_by_apache_avro(name):
    record = catalog.sample(name)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, catalog.parsed(name), record)
    buf.seek(0)
    reader = avro.io.DatumReader(avro.schema.parse(catalog.schema_text(name)))
    assert reader.read(avro.io.BinaryDecoder(buf)) == record


@pytest.mark.parametrize("name", sorted(TOP_LEVEL))
def test_sample_values_have_the_right_python_types(name):
    record = catalog.sample(name)
    meta = record["meta"]
    assert isinstance(meta["occurred_at"], datetime) and meta["occurred_at"].tzinfo == UTC
    assert meta["occurred_at"].microsecond % 1000 == 0
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["event_id"])
    assert meta["source_system"] in {"jira", "dingtalk", "tryton", "kingdee", "glodon", "bizbus"}
    assert meta["correlation_id"]
    for record_name, field in walk_fields(catalog.load(name)):
        if record_name == name and field["name"] in record and record[field["name"]] is not None:
            value = record[field["name"]]
            types = field["type"] if isinstance(field["type"], list) else [field["type"]]
            logical = {t.get("logicalType") for t in types if isinstance(t, dict)}
            if "date" in logical:
                assert type(value) is date
            if "timestamp-millis" in logical:
                assert isinstance(value, datetime) and value.tzinfo is not None
            if "decimal" in logical:
                assert isinstance(value, Decimal)


def test_samples_are_fresh_deterministic_and_linked():
    a, b = catalog.sample("bizbus.finance.Voucher"), catalog.sample("bizbus.finance.Voucher")
    assert a == b and a is not b
    a["lines"].clear()
    assert len(catalog.sample("bizbus.finance.Voucher")["lines"]) == 2
    ids = [catalog.sample(n)["meta"]["event_id"] for n in sorted(TOP_LEVEL)]
    assert len(set(ids)) == len(ids)
    timesheet = catalog.sample("bizbus.pm.TimesheetEntry")
    cost = catalog.sample("bizbus.finance.CostEntry")
    voucher = catalog.sample("bizbus.finance.Voucher")
    assert cost["meta"]["causation_id"] == timesheet["meta"]["event_id"]
    assert voucher["meta"]["causation_id"] == cost["meta"]["event_id"]
    assert timesheet["meta"]["event_id"] == samples.event_id("jira", "worklog", "10042", timesheet["version"])


def test_sample_business_numbers_add_up():
    voucher = catalog.sample("bizbus.finance.Voucher")
    debit = sum(line["debit"] for line in voucher["lines"])
    credit = sum(line["credit"] for line in voucher["lines"])
    assert debit == credit == Decimal("1398.75")
    cost = catalog.sample("bizbus.finance.CostEntry")
    timesheet = catalog.sample("bizbus.pm.TimesheetEntry")
    employee = catalog.sample("bizbus.md.Employee")
    assert cost["amount"] == (timesheet["hours"] * employee["hourly_cost_rate"]).quantize(Decimal("0.01"))
    po = catalog.sample("bizbus.purchase.PurchaseOrder")
    for line in po["lines"]:
        assert line["amount"] == (line["quantity"] * line["unit_price"]).quantize(Decimal("0.01"))
    assert po["total_amount"] == sum(line["amount"] for line in po["lines"]) == Decimal("58650.00")
    assert po["tax_amount"] == (po["total_amount"] * Decimal("0.13")).quantize(Decimal("0.01"))
    level = catalog.sample("bizbus.inventory.InventoryLevel")
    assert level["available"] == level["on_hand"] - level["reserved"]
    assert catalog.sample("bizbus.md.Supplier")["short_name"] == "上海宝钢"


# ------------------------------------------------------------------------------------------ decimals


def voucher_with(debit: Decimal, credit: Decimal) -> dict[str, Any]:
    record = catalog.sample("bizbus.finance.Voucher")
    record["lines"][0]["debit"] = debit
    record["lines"][1]["credit"] = credit
    return record


def test_decimal_sum_stays_exact_through_avro():
    total = Decimal("0.10") + Decimal("0.20")
    out = roundtrip("bizbus.finance.Voucher", voucher_with(total, total))
    assert out["lines"][0]["debit"] == Decimal("0.30")
    assert str(out["lines"][0]["debit"]) == "0.30"
    assert out["lines"][0]["debit"].as_tuple() == Decimal("0.30").as_tuple()
    assert 0.1 + 0.2 != 0.3  # why the schemas never use float


def test_fewer_fractional_digits_are_padded_to_the_scale():
    out = roundtrip("bizbus.finance.Voucher", voucher_with(Decimal("12.5"), Decimal(7)))
    assert str(out["lines"][0]["debit"]) == "12.50"
    assert str(out["lines"][1]["credit"]) == "7.00"


@pytest.mark.parametrize("value", [Decimal("1.005"), Decimal("1.230"), Decimal("-0.001")])
def test_fastavro_refuses_more_fractional_digits_than_the_scale(value):
    """fastavro raises ValueError (not ValidationError, and without the field name); trailing zeros count."""
    record = voucher_with(Decimal("1.00"), value)
    with pytest.raises(ValueError, match="Scale provided in schema does not match the decimal"):
        fastavro_validate(record, catalog.parsed("bizbus.finance.Voucher"), raise_errors=True)
    with pytest.raises(ValueError, match="Scale provided in schema does not match the decimal"):
        fastavro.schemaless_writer(io.BytesIO(), catalog.parsed("bizbus.finance.Voucher"), record)
    with pytest.raises(ValueError, match=r"lines\[1\]\.credit: .* fractional digits but the scale is 2"):
        catalog.validate("bizbus.finance.Voucher", record)


def test_fastavro_refuses_more_significant_digits_than_the_precision():
    record = voucher_with(Decimal(1234567890123456789), Decimal("0.00"))
    with pytest.raises(ValueError, match="precision is bigger than allowed"):
        fastavro_validate(record, catalog.parsed("bizbus.finance.Voucher"), raise_errors=True)
    with pytest.raises(ValueError, match=r"lines\[0\]\.debit: .* precision is 18"):
        catalog.validate("bizbus.finance.Voucher", record)


def test_fastavro_misses_a_scaled_value_beyond_the_precision_and_catalog_catches_it():
    """17 integer digits fit 18 significant digits, but not decimal(18, 2): 19 digits once scaled."""
    big = Decimal(12345678901234567)
    record = voucher_with(big, big)
    assert fastavro_validate(record, catalog.parsed("bizbus.finance.Voucher"), raise_errors=True) is True
    out = roundtrip("bizbus.finance.Voucher", record)
    assert out["lines"][0]["debit"] == big
    assert out["lines"][0]["debit"].as_tuple().exponent == -1  # scale 2 silently lost on read
    with pytest.raises(ValueError, match=r"lines\[0\]\.debit: .* needs 19 digits but the precision is 18"):
        catalog.validate("bizbus.finance.Voucher", record)
    largest = Decimal("9999999999999999.99")
    catalog.validate("bizbus.finance.Voucher", voucher_with(largest, largest))
    assert roundtrip("bizbus.finance.Voucher", voucher_with(largest, largest))["lines"][0]["debit"] == largest


def test_catalog_validate_names_nested_and_nullable_fields():
    record = catalog.sample("bizbus.purchase.PurchaseOrder")
    record["lines"][1]["unit_price"] = Decimal("35.7500001")
    with pytest.raises(catalog.SchemaValidationError, match=r"PurchaseOrder: lines\[1\]\.unit_price: .*scale is 6"):
        catalog.validate("bizbus.purchase.PurchaseOrder", record)
    record = catalog.sample("bizbus.pm.TimesheetEntry")
    record["hours"] = Decimal("12345678.00")
    with pytest.raises(ValueError, match=r"hours: .* precision is 9 \(at most 7 digits before"):
        catalog.validate("bizbus.pm.TimesheetEntry", record)
    record = catalog.sample("bizbus.md.Employee")
    record["hourly_cost_rate"] = Decimal("NaN")
    with pytest.raises(ValueError, match="hourly_cost_rate: NaN is not a finite number"):
        catalog.validate("bizbus.md.Employee", record)
    record["hourly_cost_rate"] = None
    catalog.validate("bizbus.md.Employee", record)


def test_catalog_validate_reports_other_mistakes_as_value_error():
    record = catalog.sample("bizbus.finance.CostEntry")
    record["amount"] = 1398.75
    with pytest.raises(catalog.SchemaValidationError, match="CostEntry.*amount"):
        catalog.validate("bizbus.finance.CostEntry", record)
    record = catalog.sample("bizbus.finance.CostEntry")
    record["cost_type"] = "TRAVEL"
    with pytest.raises(ValueError, match="cost_type"):
        catalog.validate("bizbus.finance.CostEntry", record)
    record = catalog.sample("bizbus.finance.CostEntry")
    del record["project"]
    with pytest.raises(ValueError, match="project"):
        catalog.validate("bizbus.finance.CostEntry", record)


# ------------------------------------------------------------------------------------------ evolution


def test_adding_a_nullable_field_with_default_null_stays_backward_compatible():
    """Data written with an older Voucher (without the trailing optional field) reads with today's."""
    current = catalog.load("bizbus.finance.Voucher")
    older = json.loads(json.dumps(current))
    assert older["fields"][-1]["name"] == "description" and older["fields"][-1]["default"] is None
    older["fields"].pop()
    record = catalog.sample("bizbus.finance.Voucher")
    del record["description"]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(older), record)
    buf.seek(0)
    out = fastavro.schemaless_reader(buf, fastavro.parse_schema(older), catalog.parsed("bizbus.finance.Voucher"))
    assert out == {**record, "description": None}
