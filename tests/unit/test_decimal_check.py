"""The compiled decimal check of serde (encode() runs it on every record of a schema with money)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bizbus.serde import AvroSerde, RecordInvalid, decimal_check, decimal_problems

MONEY = {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}
LINE = {"type": "record", "name": "Line", "namespace": "t", "fields": [
    {"name": "no", "type": "int"},
    {"name": "debit", "type": MONEY},
    {"name": "credit", "type": ["null", MONEY], "default": None},
]}  # fmt: skip
DOC = {"type": "record", "name": "Doc", "namespace": "t", "fields": [
    {"name": "title", "type": "string"},
    {"name": "lines", "type": {"type": "array", "items": LINE}},
    {"name": "extra", "type": {"type": "array", "items": "t.Line"}},  # by full name
    {"name": "by_code", "type": {"type": "map", "values": "Line"}},  # by short name
    {"name": "total", "type": ["null", "string", MONEY]},
]}  # fmt: skip
NODE = {"type": "record", "name": "Node", "fields": [
    {"name": "amount", "type": MONEY},
    {"name": "child", "type": ["null", "Node"], "default": None},
]}  # fmt: skip


def line(debit: str, credit: str | None = None) -> dict[str, Any]:
    return {"no": 1, "debit": Decimal(debit), "credit": Decimal(credit) if credit is not None else None}


def doc(**over: Any) -> dict[str, Any]:
    base = {"title": "x", "lines": [line("1.00")], "extra": [], "by_code": {}, "total": None}
    return {**base, **over}


def test_a_fitting_record_has_no_problem() -> None:
    assert decimal_problems(DOC, doc(lines=[line("9999.99", "0.01")], total=Decimal("1.5"))) == []


def test_every_misfit_is_named_by_its_path() -> None:
    record = doc(lines=[line("1.00"), line("1.001")], extra=[line("1", "10000.00")],
                 by_code={"A": line("123456.00")}, total=Decimal("0.125"))  # fmt: skip
    found = decimal_problems(DOC, record)
    assert [p.split(": ")[0] for p in found] == ["lines[1].debit", "extra[0].credit", "by_code['A'].debit", "total"]
    assert "3 fractional digits but the scale is 2" in found[0]
    assert "needs 5 digits but the precision is 6" not in found[1]  # 10000.00 is 7 digits
    assert "needs 7 digits but the precision is 6" in found[1]


def test_a_string_in_a_union_with_a_decimal_is_not_checked() -> None:
    assert decimal_problems(DOC, doc(total="0.125")) == []


def test_a_recursive_type_is_checked_at_every_depth() -> None:
    record = {"amount": Decimal("1.00"), "child": {"amount": Decimal("2.00"), "child": {"amount": Decimal("NaN")}}}
    assert decimal_problems(NODE, record) == ["child.child.amount: NaN is not a finite number"]


def test_a_schema_without_decimals_compiles_to_nothing() -> None:
    assert decimal_check({"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}) is None


def test_encode_refuses_an_overflowing_amount_with_its_field(registry: Any) -> None:
    serde = AvroSerde({"url": registry.url})
    encode = serde.encoder("t-value", DOC)
    assert serde.decode(encode(doc()))["lines"][0]["debit"] == Decimal("1.00")
    with pytest.raises(RecordInvalid) as err:
        encode(doc(lines=[line("12345678")]))
    assert err.value.field == "lines[0].debit"


def test_the_quick_check_flags_what_may_overflow_and_leaves_extra_digits_to_fastavro() -> None:
    quick = decimal_check(DOC, quick=True)
    assert quick is not None
    assert quick(doc(lines=[line("9999.99", "0.01")], total=Decimal("-9999.99"))) == []
    assert quick(doc(lines=[line("1.001")])) == []  # fastavro refuses it; encode() then names the field
    assert len(quick(doc(lines=[line("1.00"), line("10000.00")]))) == 1
    assert len(quick(doc(total=Decimal("NaN")))) == 1


def test_encode_names_the_field_of_an_amount_with_too_many_fractional_digits(registry: Any) -> None:
    serde = AvroSerde({"url": registry.url})
    encode = serde.encoder("t-value", DOC)
    with pytest.raises(RecordInvalid) as err:
        encode(doc(lines=[line("1.00"), line("2.00", "0.125")]))
    assert err.value.field == "lines[1].credit"
    assert "3 fractional digits but the scale is 2" in str(err.value)
    with pytest.raises(RecordInvalid) as err:
        encode(doc(by_code={"A": line("NaN")}))
    assert err.value.field == "by_code['A'].debit"
