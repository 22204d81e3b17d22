"""Unit tests for bizbus.schemas.compat (Avro schema resolution / compatibility)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from bizbus.schemas.compat import (
    COMPATIBILITY_LEVELS,
    InvalidSchema,
    canonical_form,
    check_compatibility,
    parse_schema,
    reader_writer_incompatibilities,
)


def rec(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def fld(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(name: str, *symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": name, "symbols": list(symbols), **extra}


def decimal(precision: int, scale: int, base: Any = "bytes") -> dict[str, Any]:
    """A decimal on bytes, or on a fixed when `base` is a fixed schema."""
    base = base if isinstance(base, dict) else {"type": base}
    return {**base, "logicalType": "decimal", "precision": precision, "scale": scale}


def incompat(reader: Any, writer: Any) -> list[str]:
    return reader_writer_incompatibilities(reader, writer)


# --------------------------------------------------------------------------------------------- parsing


def test_invalid_schema_is_a_value_error() -> None:
    assert issubclass(InvalidSchema, ValueError)


def test_malformed_json_reports_position() -> None:
    with pytest.raises(InvalidSchema, match=r"invalid JSON at line 1 column \d+"):
        parse_schema('{"type": "record", "name": "R", "fields": [')


def test_unknown_type_is_named() -> None:
    with pytest.raises(InvalidSchema, match=r"/fields/amount/type: unknown type 'Money'"):
        parse_schema(rec("Payment", fld("amount", "Money")))


def test_complex_type_name_as_string_is_invalid() -> None:
    with pytest.raises(InvalidSchema, match="must be written as a JSON object"):
        parse_schema(rec("R", fld("xs", "array")))


def test_invalid_default_names_field_and_type() -> None:
    with pytest.raises(InvalidSchema, match=r"/fields/count: default \"x\" is not valid for type 'int'"):
        parse_schema(rec("R", fld("count", "int", default="x")))


@pytest.mark.parametrize(
    ("type_", "default"),
    [("int", 2**31), ("long", 2**63), ("int", True), ("boolean", 0), ("null", 0), ("string", None),
     ("bytes", "\u20ac"), ({"type": "fixed", "name": "F", "size": 2}, "abc"), (enum("E", "A"), "B"),
     ({"type": "array", "items": "int"}, [1, "x"]), ({"type": "map", "values": "int"}, {"a": "b"}),
     (rec("S", fld("x", "int")), {})],
)
def test_invalid_defaults_by_type(type_: Any, default: Any) -> None:
    with pytest.raises(InvalidSchema, match="/fields/f: default"):
        parse_schema(rec("R", fld("f", type_, default=default)))


@pytest.mark.parametrize(
    ("type_", "default"),
    [("int", -(2**31)), ("long", 2**62), ("double", 1), ("float", "NaN"), ("bytes", "\u00ff"),
     ({"type": "fixed", "name": "F", "size": 2}, "ab"), (enum("E", "A"), "A"),
     (rec("S", fld("x", "int"), fld("y", "int", default=0)), {"x": 1}),
     ({"type": "int", "logicalType": "date"}, 0), (["null", "int"], None)],
)
def test_valid_defaults_by_type(type_: Any, default: Any) -> None:
    parse_schema(rec("R", fld("f", type_, default=default)))


def test_union_default_must_match_first_branch() -> None:
    parse_schema(rec("R", fld("a", ["int", "null"], default=1)))
    with pytest.raises(InvalidSchema, match="/fields/a: .*first branch"):
        parse_schema(rec("R", fld("a", ["null", "int"], default=1)))


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (rec("R", {"name": "a"}), "field 'a' has no 'type'"),
        (rec("R", fld("a", "int"), fld("a", "long")), "duplicate field name 'a'"),
        (enum("E", "A", "A"), "duplicate symbols"),
        (enum("E", "1A"), "symbols"),
        (enum("E", "A", default="B"), "enum default 'B'"),
        ({"type": "fixed", "name": "F"}, "requires a non-negative integer 'size'"),
        ({"type": "array"}, "array requires 'items'"),
        ({"type": "map"}, "map requires 'values'"),
        ({"type": "record", "name": "R"}, "requires a 'fields' array"),
        ({"type": "record", "name": "1R", "fields": []}, "invalid record name"),
        ({"type": "record", "name": "int", "fields": []}, "invalid record name"),
        (["int", "int"], "more than once"),
        (["null", ["int"]], "may not directly contain another union"),
        ([rec("R"), rec("R")], "defined more than once"),
        (decimal(4, 6), "scale"),
        ({"type": "bytes", "logicalType": "decimal", "precision": -1}, "precision"),
        (rec("R", fld("a", "int", order="sideways")), "'order'"),
        (42, "expected a type name"),
    ],
)
def test_invalid_schemas(schema: Any, message: str) -> None:
    with pytest.raises(InvalidSchema, match=message):
        parse_schema(schema)


def test_unknown_logical_type_is_ignored() -> None:
    assert parse_schema({"type": "string", "logicalType": "bogus"}) == {"type": "string", "logicalType": "bogus"}


def test_parse_accepts_text_bare_names_and_bytes() -> None:
    assert parse_schema('"int"') == "int"
    assert parse_schema("int") == "int"
    assert parse_schema(b'{"type": "long"}') == "long"
    assert parse_schema(json.dumps(rec("R", fld("a", "int"))))["fields"][0]["type"] == "int"


def test_parse_expands_namespaces_and_aliases() -> None:
    schema = {
        "type": "record", "name": "Payment", "namespace": "com.acme", "aliases": ["OldPayment"],
        "fields": [
            fld("amount", rec("Money", fld("units", "long"))),
            fld("fee", "Money"),
            fld("other", {"type": "fixed", "name": "org.x.Id", "size": 4}),
            fld("id2", "org.x.Id"),
            fld("id3", {"type": "record", "name": "Inner", "namespace": "", "fields": []}),
        ],
    }
    parsed = parse_schema(schema)
    assert parsed["name"] == "com.acme.Payment"
    assert "namespace" not in parsed
    assert parsed["aliases"] == ["com.acme.OldPayment"]
    types = [f["type"] for f in parsed["fields"]]
    assert types[0]["name"] == "com.acme.Money"
    assert types[1] == "com.acme.Money"
    assert types[2]["name"] == "org.x.Id"
    assert types[3] == "org.x.Id"
    assert types[4]["name"] == "Inner"


def test_parse_recursive_type() -> None:
    node = rec("Node", fld("value", "int"), fld("next", ["null", "Node"], default=None))
    assert parse_schema(node)["fields"][1]["type"] == ["null", "Node"]


def test_parse_is_idempotent() -> None:
    schema = {"type": "record", "name": "R", "namespace": "n", "fields": [fld("a", enum("E", "X"))]}
    once = parse_schema(schema)
    assert parse_schema(once) == once


def test_canonical_form() -> None:
    a = {"type": "record", "name": "Payment", "namespace": "com.acme", "doc": "a payment",
         "fields": [fld("amount", decimal(10, 2), doc="x"), fld("state", enum("State", "OK"))]}
    b = '{"name":"com.acme.Payment","type":"record","fields":[{"type":{"type":"bytes"},"name":"amount"},' \
        '{"name":"state","type":{"type":"enum","name":"State","symbols":["OK"]}}]}'
    expected = ('{"name":"com.acme.Payment","type":"record","fields":[{"name":"amount","type":"bytes"},'
                '{"name":"state","type":{"name":"com.acme.State","type":"enum","symbols":["OK"]}}]}')
    assert canonical_form(a) == expected
    assert canonical_form(b) == expected
    assert canonical_form({"type": "int"}) == '"int"'


def test_canonical_form_rejects_invalid() -> None:
    with pytest.raises(InvalidSchema):
        canonical_form('{"type": "nope"}')


# -------------------------------------------------------------------------------- primitive promotions

PROMOTIONS = [("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
              ("float", "double"), ("string", "bytes"), ("bytes", "string")]
NOT_PROMOTIONS = [("long", "int"), ("double", "float"), ("float", "long"), ("double", "int"),
                  ("int", "string"), ("boolean", "int"), ("null", "string"), ("string", "int")]


@pytest.mark.parametrize(("writer", "reader"), PROMOTIONS)
def test_promotions_are_compatible(writer: str, reader: str) -> None:
    assert incompat(reader, writer) == []
    assert incompat(rec("R", fld("v", reader)), rec("R", fld("v", writer))) == []


@pytest.mark.parametrize(("writer", "reader"), NOT_PROMOTIONS)
def test_other_primitive_changes_are_incompatible(writer: str, reader: str) -> None:
    assert incompat(reader, writer) == [f"/: writer type '{writer}' cannot be read as '{reader}'"]


def test_primitive_mismatch_in_field_names_path() -> None:
    reasons = incompat(rec("R", fld("amount", "long")), rec("R", fld("amount", "string")))
    assert reasons == ["/fields/amount/type: writer type 'string' cannot be read as 'long'"]


def test_identical_primitives_are_compatible() -> None:
    for name in ("null", "boolean", "int", "long", "float", "double", "bytes", "string"):
        assert incompat(name, name) == []


def test_accepts_json_text() -> None:
    assert incompat('"long"', '"int"') == []
    assert incompat('"int"', '"long"')


# ------------------------------------------------------------------------------------------- records


def test_record_fields_added_with_default_and_removed_are_compatible() -> None:
    writer = rec("R", fld("id", "string"), fld("legacy", "int"))
    reader = rec("R", fld("id", "string"), fld("currency", "string", default="EUR"),
                 fld("note", ["null", "string"], default=None))
    assert incompat(reader, writer) == []


def test_record_reader_field_without_default_missing_in_writer() -> None:
    reasons = incompat(rec("R", fld("id", "string"), fld("currency", "string")), rec("R", fld("id", "string")))
    assert reasons == ["/fields/currency: reader field has no default and is missing in writer"]


def test_record_names_must_match() -> None:
    reasons = incompat(rec("Payment", fld("id", "int")), rec("Invoice", fld("id", "int")))
    assert len(reasons) == 1
    assert "'Invoice'" in reasons[0] and "'Payment'" in reasons[0]


def test_record_reader_alias_matches_writer_name() -> None:
    reader = rec("Payment", fld("id", "int"), namespace="com.acme", aliases=["Invoice"])
    writer = rec("Invoice", fld("id", "int"), namespace="com.acme")
    assert incompat(reader, writer) == []
    # aliases only apply to the reader
    assert incompat(writer, reader)


def test_record_names_match_unqualified_as_the_spec_says() -> None:
    """Avro spec: 'both schemas are records with the same (unqualified) name'."""
    writer = rec("Payment", fld("id", "int"), namespace="com.acme.v1")
    same = rec("Payment", fld("id", "int"), namespace="com.acme.v1")
    moved = rec("Payment", fld("id", "int"), namespace="com.acme.v2")
    renamed = rec("Payout", fld("id", "int"), namespace="com.acme.v1")
    aliased = rec("Payout", fld("id", "int"), namespace="com.acme.v2", aliases=["com.acme.v1.Payment"])
    assert incompat(same, writer) == []
    assert incompat(rec("com.acme.v1.Payment", fld("id", "int")), writer) == []
    assert incompat(moved, writer) == []
    assert incompat(renamed, writer) == [
        "/: writer record 'com.acme.v1.Payment' does not match reader name 'com.acme.v1.Payout' or its aliases"]
    assert incompat(aliased, writer) == []


def test_nested_names_inherit_enclosing_namespace() -> None:
    writer = rec("Outer", fld("money", rec("Money", fld("units", "long"))), namespace="a")
    reader_same = rec("Outer", fld("money", rec("a.Money", fld("units", "long"))), namespace="a")
    reader_other = rec("a.Outer", fld("money", rec("Money", fld("units", "long"), namespace="b")))
    assert incompat(reader_same, writer) == []
    assert parse_schema(writer)["fields"][0]["type"]["name"] == "a.Money"
    # another namespace, same unqualified name: readable (spec), unlike another name
    assert incompat(reader_other, writer) == []
    reader_renamed = rec("a.Outer", fld("money", rec("Cash", fld("units", "long"))))
    reasons = incompat(reader_renamed, writer)
    assert len(reasons) == 1 and reasons[0].startswith("/fields/money/type: ") and "'a.Cash'" in reasons[0]


def test_record_field_alias_matches_writer_field() -> None:
    writer = rec("R", fld("amount_cents", "long"))
    reader = rec("R", fld("amount", "long", aliases=["amount_cents"]))
    assert incompat(reader, writer) == []
    assert incompat(rec("R", fld("amount", "long")), writer) == [
        "/fields/amount: reader field has no default and is missing in writer"]


def test_record_matched_fields_are_checked_recursively() -> None:
    writer = rec("R", fld("inner", rec("I", fld("n", "int"), fld("s", "string"))))
    good = rec("R", fld("inner", rec("I", fld("n", "long"))))
    bad = rec("R", fld("inner", rec("I", fld("n", "int"), fld("s", "int"))))
    assert incompat(good, writer) == []
    assert incompat(bad, writer) == ["/fields/inner/type/fields/s/type: writer type 'string' cannot be read as 'int'"]


def test_shared_named_type_reported_at_each_path() -> None:
    money_w = rec("Money", fld("units", "string"))
    writer = rec("R", fld("a", money_w), fld("b", "Money"))
    reader = rec("R", fld("a", rec("Money", fld("units", "long"))), fld("b", "Money"))
    assert incompat(reader, writer) == [
        "/fields/a/type/fields/units/type: writer type 'string' cannot be read as 'long'",
        "/fields/b/type/fields/units/type: writer type 'string' cannot be read as 'long'",
    ]


# --------------------------------------------------------------------------------------------- enums


def test_enum_reader_superset_is_compatible() -> None:
    assert incompat(enum("State", "NEW", "PAID", "VOID"), enum("State", "NEW", "PAID")) == []


def test_enum_writer_symbol_missing_in_reader() -> None:
    reasons = incompat(rec("R", fld("s", enum("State", "NEW"))), rec("R", fld("s", enum("State", "NEW", "VOID"))))
    assert len(reasons) == 1
    assert reasons[0].startswith("/fields/s/type/symbols: ") and "'VOID'" in reasons[0]


def test_enum_reader_default_absorbs_unknown_symbols() -> None:
    assert incompat(enum("State", "NEW", "UNKNOWN", default="UNKNOWN"), enum("State", "NEW", "VOID")) == []


def test_enum_names_must_match_or_alias() -> None:
    assert "'Status'" in incompat(enum("State", "A"), enum("Status", "A"))[0]
    assert incompat(enum("State", "A", aliases=["Status"]), enum("Status", "A")) == []


# --------------------------------------------------------------------------------------------- fixed


def fixed(name: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"type": "fixed", "name": name, "size": size, **extra}


def test_fixed_same_name_and_size_is_compatible() -> None:
    assert incompat(fixed("Id", 16), fixed("Id", 16)) == []
    assert incompat(fixed("Id", 16, aliases=["Uuid"]), fixed("Uuid", 16)) == []


def test_fixed_size_change_is_incompatible() -> None:
    assert incompat(fixed("Id", 16), fixed("Id", 8)) == ["/size: writer fixed size 8 differs from reader size 16"]


def test_fixed_name_change_is_incompatible() -> None:
    reasons = incompat(fixed("Id", 16), fixed("Uuid", 16))
    assert len(reasons) == 1 and "'Uuid'" in reasons[0]


def test_fixed_and_bytes_do_not_mix() -> None:
    assert incompat("bytes", fixed("Id", 4)) == ["/: writer type 'fixed Id' cannot be read as 'bytes'"]


# ---------------------------------------------------------------------------------------- arrays/maps


def test_array_items() -> None:
    assert incompat({"type": "array", "items": "long"}, {"type": "array", "items": "int"}) == []
    assert incompat({"type": "array", "items": "int"}, {"type": "array", "items": "long"}) == [
        "/items: writer type 'long' cannot be read as 'int'"]


def test_map_values() -> None:
    assert incompat({"type": "map", "values": "double"}, {"type": "map", "values": "float"}) == []
    assert incompat({"type": "map", "values": "float"}, {"type": "map", "values": "double"}) == [
        "/values: writer type 'double' cannot be read as 'float'"]


def test_array_is_not_a_map() -> None:
    assert incompat({"type": "map", "values": "int"}, {"type": "array", "items": "int"}) == [
        "/: writer type 'array' cannot be read as 'map'"]


# -------------------------------------------------------------------------------------------- unions


def test_writer_union_subset_of_reader_union() -> None:
    assert incompat(["null", "string", "long"], ["null", "int"]) == []


def test_writer_union_branch_unreadable() -> None:
    reasons = incompat(rec("R", fld("x", ["null", "long"])), rec("R", fld("x", ["null", "string"])))
    assert reasons == ["/fields/x/type/1: writer type 'string' matches no branch of reader 'union [null, long]'"]


def test_reader_union_accepts_writer_non_union() -> None:
    assert incompat(["null", "long"], "int") == []
    assert incompat(["null", "string"], "bytes") == []
    assert incompat(["null", "string"], "int") == [
        "/: writer type 'int' matches no branch of reader 'union [null, string]'"]


def test_reader_union_prefers_exact_match_over_promotion() -> None:
    # int writer: 'int' branch is exact even though 'long' (promotion) comes first
    assert incompat(["long", "int"], "int") == []
    # the exact array branch is chosen and checked recursively
    reader = ["null", {"type": "array", "items": "int"}]
    assert incompat(reader, {"type": "array", "items": "string"}) == [
        "/items: writer type 'string' cannot be read as 'int'"]


def test_reader_union_selects_named_branch_by_name() -> None:
    a, b = rec("A", fld("x", "int")), rec("B", fld("y", "string"))
    assert incompat([a, b], rec("B", fld("y", "string"))) == []
    reasons = incompat([a, b], rec("B", fld("y", "int")))
    assert reasons == ["/fields/y/type: writer type 'int' cannot be read as 'string'"]
    assert "matches no branch" in incompat([a, b], rec("C", fld("y", "int")))[0]


def test_writer_union_reader_non_union() -> None:
    assert incompat("long", ["int", "long"]) == []
    assert incompat("long", ["null", "long"]) == ["/0: writer type 'null' cannot be read as 'long'"]


def test_optional_field_made_required_and_back() -> None:
    optional = rec("R", fld("note", ["null", "string"], default=None))
    required = rec("R", fld("note", "string"))
    assert incompat(optional, required) == []
    assert incompat(required, optional) == ["/fields/note/type/0: writer type 'null' cannot be read as 'string'"]


# ------------------------------------------------------------------------------------ recursive types


def linked_list(value_type: str, *extra: dict[str, Any]) -> dict[str, Any]:
    return rec("Node", fld("value", value_type), fld("next", ["null", "Node"], default=None), *extra)


def test_recursive_type_compatible() -> None:
    assert incompat(linked_list("long", fld("tag", "string", default="")), linked_list("int")) == []


def test_recursive_type_incompatible_terminates() -> None:
    assert incompat(linked_list("int"), linked_list("long")) == [
        "/fields/value/type: writer type 'long' cannot be read as 'int'"]


def test_mutually_recursive_types() -> None:
    def tree(leaf: str) -> dict[str, Any]:
        forest = {"type": "array", "items": "Tree"}
        return rec("Tree", fld("label", leaf), fld("children", rec("Forest", fld("trees", forest))))

    assert incompat(tree("long"), tree("int")) == []
    assert incompat(tree("int"), tree("long")) == ["/fields/label/type: writer type 'long' cannot be read as 'int'"]


# -------------------------------------------------------------------------------------- logical types


def test_decimal_same_precision_and_scale_is_compatible() -> None:
    assert incompat(decimal(10, 2), decimal(10, 2)) == []
    assert incompat(decimal(10, 2, fixed("D", 8)), decimal(10, 2, fixed("D", 8))) == []


def test_decimal_precision_or_scale_change_is_incompatible() -> None:
    reasons = incompat(rec("R", fld("amount", decimal(12, 2))), rec("R", fld("amount", decimal(10, 2))))
    assert reasons == [
        "/fields/amount/type: decimal precision/scale changed: 'bytes (decimal 10,2)' read as 'bytes (decimal 12,2)'"]
    assert "decimal precision/scale changed" in incompat(decimal(10, 3), decimal(10, 2))[0]
    assert "decimal precision/scale changed" in incompat(decimal(10, 3, fixed("D", 8)),
                                                         decimal(10, 2, fixed("D", 8)))[0]


def test_decimal_bytes_vs_fixed_is_incompatible() -> None:
    assert "cannot be read as" in incompat(decimal(10, 2), decimal(10, 2, fixed("D", 8)))[0]


def test_other_logical_types_resolve_by_underlying_type() -> None:
    ts_millis = {"type": "long", "logicalType": "timestamp-millis"}
    ts_micros = {"type": "long", "logicalType": "timestamp-micros"}
    date = {"type": "int", "logicalType": "date"}
    uuid = {"type": "string", "logicalType": "uuid"}
    assert incompat(ts_micros, ts_millis) == []
    assert incompat("long", date) == []
    assert incompat(uuid, "string") == []
    assert incompat(date, ts_millis) == ["/: writer type 'long (timestamp-millis)' cannot be read as 'int (date)'"]


# ---------------------------------------------------------------------------------- compatibility levels

V1 = rec("Payment", fld("id", "string"), fld("amount", "long"))
WITH_DEFAULTED_FIELD = rec("Payment", fld("id", "string"), fld("amount", "long"),
                           fld("currency", "string", default="EUR"))
WITH_REQUIRED_FIELD = rec("Payment", fld("id", "string"), fld("amount", "long"), fld("currency", "string"))
WITHOUT_AMOUNT = rec("Payment", fld("id", "string"))
AMOUNT_DEFAULTED = rec("Payment", fld("id", "string"), fld("amount", "long", default=0))
MISSING_CURRENCY = "/fields/currency: reader field has no default and is missing in writer"
MISSING_AMOUNT = "/fields/amount: reader field has no default and is missing in writer"


def test_levels_constant() -> None:
    assert COMPATIBILITY_LEVELS == ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
                                    "FULL", "FULL_TRANSITIVE")


def test_none_accepts_anything() -> None:
    assert check_compatibility(WITH_DEFAULTED_FIELD, [V1], "NONE") == []
    assert check_compatibility("string", [V1], "NONE") == []


def test_empty_history_is_compatible() -> None:
    for level in COMPATIBILITY_LEVELS:
        assert check_compatibility(V1, [], level) == []


def test_unknown_level_raises() -> None:
    with pytest.raises(ValueError, match="unknown compatibility level 'SIDEWAYS'"):
        check_compatibility(V1, [V1], "SIDEWAYS")


def test_invalid_previous_schema_names_version() -> None:
    with pytest.raises(InvalidSchema, match="previous version 1: "):
        check_compatibility(V1, ['{"type": "nope"}'], "BACKWARD")


def test_backward() -> None:
    assert check_compatibility(WITH_DEFAULTED_FIELD, [V1], "BACKWARD") == []
    assert check_compatibility(WITH_REQUIRED_FIELD, [V1], "BACKWARD") == [
        f"reader new vs writer version 1: {MISSING_CURRENCY}"]


def test_forward() -> None:
    assert check_compatibility(WITH_REQUIRED_FIELD, [V1], "FORWARD") == []
    assert check_compatibility(WITHOUT_AMOUNT, [V1], "FORWARD") == [
        f"reader version 1 vs writer new: {MISSING_AMOUNT}"]


def test_full() -> None:
    assert check_compatibility(WITH_DEFAULTED_FIELD, [V1], "FULL") == []
    assert check_compatibility(WITH_REQUIRED_FIELD, [V1], "FULL") == [
        f"reader new vs writer version 1: {MISSING_CURRENCY}"]
    assert check_compatibility(WITHOUT_AMOUNT, [V1], "FULL") == [f"reader version 1 vs writer new: {MISSING_AMOUNT}"]


def test_full_reports_both_directions() -> None:
    new = rec("Payment", fld("id", "int"), fld("amount", "long"))
    reasons = check_compatibility(new, [V1], "FULL")
    assert reasons == [
        "reader new vs writer version 1: /fields/id/type: writer type 'string' cannot be read as 'int'",
        "reader version 1 vs writer new: /fields/id/type: writer type 'int' cannot be read as 'string'",
    ]


def test_non_transitive_checks_only_latest() -> None:
    history = [rec("Payment", fld("id", "int")), V1]  # the first version is irrelevant without _TRANSITIVE
    assert check_compatibility(WITH_DEFAULTED_FIELD, history, "BACKWARD") == []
    assert check_compatibility(WITH_DEFAULTED_FIELD, history, "FORWARD") == []


def test_backward_transitive() -> None:
    history = [WITHOUT_AMOUNT, AMOUNT_DEFAULTED]
    new = V1  # amount now required: readable from v2 data, not from v1 data
    assert check_compatibility(new, history, "BACKWARD") == []
    assert check_compatibility(new, history, "BACKWARD_TRANSITIVE") == [
        f"reader new vs writer version 1: {MISSING_AMOUNT}"]
    assert check_compatibility(WITH_DEFAULTED_FIELD, [WITHOUT_AMOUNT, V1], "BACKWARD_TRANSITIVE") == [
        f"reader new vs writer version 1: {MISSING_AMOUNT}"]
    assert check_compatibility(AMOUNT_DEFAULTED, [WITHOUT_AMOUNT, V1], "BACKWARD_TRANSITIVE") == []


def test_forward_transitive() -> None:
    history = [V1, AMOUNT_DEFAULTED]
    new = WITHOUT_AMOUNT  # v2 readers default amount, v1 readers cannot
    assert check_compatibility(new, history, "FORWARD") == []
    assert check_compatibility(new, history, "FORWARD_TRANSITIVE") == [
        f"reader version 1 vs writer new: {MISSING_AMOUNT}"]
    assert check_compatibility(WITH_DEFAULTED_FIELD, history, "FORWARD_TRANSITIVE") == []


def test_full_transitive() -> None:
    history = [V1, AMOUNT_DEFAULTED]
    assert check_compatibility(WITHOUT_AMOUNT, history, "FULL") == []
    assert check_compatibility(WITHOUT_AMOUNT, history, "FULL_TRANSITIVE") == [
        f"reader version 1 vs writer new: {MISSING_AMOUNT}"]
    assert check_compatibility(WITH_DEFAULTED_FIELD, history, "FULL_TRANSITIVE") == []


def test_transitive_catches_v1_break_over_three_versions() -> None:
    v1 = rec("Payment", fld("id", "string"))
    v2 = rec("Payment", fld("id", "string"), fld("currency", "string", default="EUR"))
    v3 = rec("Payment", fld("id", "string"), fld("currency", "string"))
    assert check_compatibility(v3, [v1, v2], "BACKWARD") == []
    assert check_compatibility(v3, [v1, v2], "BACKWARD_TRANSITIVE") == [
        f"reader new vs writer version 1: {MISSING_CURRENCY}"]
    assert check_compatibility(v3, [v1, v2], "FULL_TRANSITIVE") == [
        f"reader new vs writer version 1: {MISSING_CURRENCY}"]


def test_check_compatibility_accepts_json_text() -> None:
    assert check_compatibility(json.dumps(WITH_DEFAULTED_FIELD), [json.dumps(V1)], "FULL_TRANSITIVE") == []
