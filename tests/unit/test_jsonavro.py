"""JSON records as people write them, converted for Avro by the schema."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from bizbus.schemas import catalog

from bizbus.jsonavro import from_json

SCHEMA = {
    "type": "record", "name": "Line", "namespace": "t",
    "fields": [
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "again", "type": ["null", "Kind"], "default": None},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}  # fmt: skip


def test_converts_money_time_and_named_references() -> None:
    out = from_json(SCHEMA, {"amount": "0.10", "at": "2026-11-23T08:00:00Z", "day": "2026-11-23", "kind": "A", "again": "B"})
    assert out["amount"] == Decimal("0.10") and str(out["amount"]) == "0.10"
    assert out["at"] == datetime(2026, 11, 23, 8, tzinfo=UTC)
    assert out["day"] == date(2026, 11, 23)
    assert out["again"] == "B" and "note" not in out  # defaults are left to the writer


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"amount": True, "at": 0, "day": 0, "kind": "A"}, "amount: expected a decimal"),
        ({"amount": "x1", "at": 0, "day": 0, "kind": "A"}, "amount: 'x1' is not a decimal number"),
        ({"amount": "1", "at": "yesterday", "day": 0, "kind": "A"}, "at: 'yesterday' is not an RFC 3339"),
        ({"amount": "1", "at": 0, "day": 0, "kind": "C"}, "kind: 'C' is not one of A, B"),
        ({"amount": "1", "at": 0, "day": 0}, "kind: required field is missing"),
        ({"amount": "1", "at": 0, "day": 0, "kind": "A", "colour": "red"}, "unknown field(s) colour"),
        ({"amount": "1", "at": 0, "day": 0, "kind": "A", "note": 5}, "note: expected string, got int 5"),
    ],
)
def test_bad_values_name_the_field(record: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        from_json(SCHEMA, record)
    assert message in str(err.value)


def test_canonical_sample_survives_a_json_round_trip() -> None:
    import json

    sample = catalog.sample("bizbus.finance.Voucher")
    as_json = json.loads(json.dumps(sample, default=str))
    back = from_json(catalog.load("bizbus.finance.Voucher"), as_json)
    assert back["lines"] == sample["lines"]
    assert back["meta"]["occurred_at"] == sample["meta"]["occurred_at"]
