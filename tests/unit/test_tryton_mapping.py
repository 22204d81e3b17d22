"""Pure parts of the Tryton sink: record -> Tryton values, checks before a write, Tryton's JSON, error mapping,
config. No server here (tests/integration/test_tryton_sink.py runs a real Tryton)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from bizbus.connectors.sinks.tryton import mapping as m
from bizbus.connectors.sinks.tryton.api import TrytonRejected, decode_object, encode, error_of, rpc_endpoint
from bizbus.connectors.sinks.tryton.config import TrytonSinkConfig
from bizbus.connectors.sinks.tryton.writer import Outcomes
from bizbus.schemas import catalog
from pydantic import ValidationError

from bizbus.failures import Fatal, Permanent, Retryable


def voucher(*lines: tuple[str, str | None, str, str], currency: str = "CNY") -> dict[str, Any]:
    v = catalog.sample("bizbus.finance.Voucher")
    v.update(voucher_no="V-1", currency=currency, posting_date=dt.date(2026, 3, 14), description=None)
    v["lines"] = [{"line_no": i, "account_code": a, "cost_center": cc, "project": None, "debit": Decimal(d),
                   "credit": Decimal(c), "description": f"l{i}"} for i, (a, cc, d, c) in enumerate(lines, 1)]  # fmt: skip
    return v


BALANCED = (("6601", "CC-ZJ", "1398.75", "0.00"), ("2211", None, "0.00", "1398.75"))


# -- kinds, decimals ------------------------------------------------------------------------------------


def test_record_kind_recognizes_the_three_schemas_and_refuses_others() -> None:
    assert m.record_kind(catalog.sample("bizbus.md.CostCenter")) == "cost_center"
    assert m.record_kind(catalog.sample("bizbus.finance.Voucher")) == "voucher"
    assert m.record_kind(catalog.sample("bizbus.purchase.PurchaseOrder")) == "purchase_order"
    with pytest.raises(Permanent) as info:
        m.record_kind(catalog.sample("bizbus.pm.TimesheetEntry"))
    assert info.value.reason == "unsupported_record"


@pytest.mark.parametrize(
    ("value", "text"),
    [("45.500000", "45.5"), ("100.00", "100"), ("0.00", "0"), ("0.000100", "0.0001"), ("1200", "1200")],
)
def test_tidy_drops_trailing_zeros_without_changing_the_value(value: str, text: str) -> None:
    got = m.tidy(Decimal(value))
    assert got == Decimal(value) and format(got, "f") == text


# -- vouchers -------------------------------------------------------------------------------------------


def test_a_balanced_voucher_passes_and_maps_to_a_move_with_analytic_lines() -> None:
    v = voucher(*BALANCED)
    v["reversal_of"] = "V-0"
    m.check_voucher(v, "CNY")
    values = m.move_values(v, 5, {"6601": 136, "2211": 138}, {"CC-ZJ": 7})
    assert (values["bizbus_ref"], values["journal"], values["date"]) == ("V-1", 5, dt.date(2026, 3, 14))
    assert values["description"] == "V-1 (reversal of V-0)" and "period" not in values
    (op, lines), = values["lines"]  # fmt: skip
    assert op == "create"
    assert [(x["account"], x["debit"], x["credit"]) for x in lines] == [
        (136, Decimal("1398.75"), Decimal("0")), (138, Decimal("0"), Decimal("1398.75"))]  # fmt: skip
    assert all(isinstance(x["debit"], Decimal) for x in lines)
    assert lines[0]["analytic_lines"] == [("create", [{"account": 7, "debit": Decimal("1398.75"),
                                                       "credit": Decimal("0"), "date": dt.date(2026, 3, 14)}])]  # fmt: skip
    assert "analytic_lines" not in lines[1]


@pytest.mark.parametrize(
    ("lines", "currency", "reason", "text"),
    [
        ((("6601", None, "100.00", "0.00"), ("2211", None, "0.00", "99.99")), "CNY", "unbalanced",
         "debit 100.00 != credit 99.99"),
        ((("6601", None, "5.00", "5.00"), ("2211", None, "0.00", "0.00")), "CNY", "validation", "exactly one"),
        ((("6601", None, "-5.00", "0.00"), ("2211", None, "0.00", "-5.00")), "CNY", "validation", "negative"),
        ((), "CNY", "validation", "no lines"),
        (BALANCED, "USD", "unsupported_currency", "USD"),
    ],
)  # fmt: skip
def test_a_voucher_tryton_must_not_post_is_refused_first(
    lines: tuple[Any, ...], currency: str, reason: str, text: str
) -> None:
    with pytest.raises(Permanent) as info:
        m.check_voucher(voucher(*lines, currency=currency), "CNY")
    assert info.value.reason == reason and text in str(info.value)


# -- cost centers, purchases --------------------------------------------------------------------------------


def test_cost_center_values_and_changes() -> None:
    cc = catalog.sample("bizbus.md.CostCenter")
    cc.update(code="CC-1", name="One", active=False, version=7)
    values = m.cost_center_values(cc, root_id=1, parent_id=4)
    assert values == {"name": "One", "code": "CC-1", "type": "normal", "root": 1, "parent": 4, "state": "closed",
                      "bizbus_ref": "CC-1", "bizbus_version": 7}  # fmt: skip
    current = {"name": "One", "code": "CC-1", "parent": {"id": 4}, "state": "opened"}
    assert m.changed_fields(current, {"name": "One", "parent": 4, "state": "closed"}) == {"state": "closed"}
    cc["parent_code"] = "CC-1"
    with pytest.raises(Permanent, match="names itself as parent"):
        m.cost_center_values(cc, 1, 1)


def test_purchase_values_keep_prices_exact_and_name_what_is_missing() -> None:
    po = catalog.sample("bizbus.purchase.PurchaseOrder")
    po["lines"][0].update(material="MAT-STEEL-10", unit="u", quantity=Decimal("10.0000"),
                          unit_price=Decimal("45.500000"), description=None, material_name="rebar")  # fmt: skip
    po["lines"][1].update(material="SVC-INSTALL", unit="u", unit_price=None, description="install")
    products = {"MAT-STEEL-10": {"id": 1}, "SVC-INSTALL": {"id": 2}}
    values = m.purchase_values(po, {"id": 3, "addresses": [9]}, 1, products, {"u": 1})
    assert (values["party"], values["invoice_address"], values["currency"]) == (3, 9, 1)
    assert values["purchase_date"] == po["order_date"] and values["bizbus_ref"] == po["order_no"]
    (_, lines), = values["lines"]  # fmt: skip
    assert lines[0] == {"type": "line", "product": 1, "quantity": 10.0, "unit": 1, "description": "rebar",
                        "unit_price": Decimal("45.5")}  # fmt: skip
    assert "unit_price" not in lines[1] and lines[1]["description"] == "install"
    assert m.missing_master_data(po, {po["supplier"]: {}}, products, {"u": 1}, {"CNY": 1}) is None
    missing = m.missing_master_data(po, {}, {"MAT-STEEL-10": {}}, {}, {"CNY": 1})
    assert missing is not None
    assert (
        f"supplier {po['supplier']}" in missing and "material SVC-INSTALL" in missing and "unit u" in missing
    )


@pytest.mark.parametrize(
    ("op", "status", "cancel"),
    [("CREATED", "APPROVED", False), ("UPDATED", "DRAFT", False), ("UPDATED", "CANCELLED", True),
     ("DELETED", "APPROVED", True)],
)  # fmt: skip
def test_deleted_or_cancelled_orders_are_cancellations(op: str, status: str, cancel: bool) -> None:
    assert m.is_cancel({"op": op, "status": status}) is cancel


def test_outcomes_keep_one_verdict_per_record() -> None:
    out = Outcomes()
    out.plan(["a", "b"], "create")
    out.done(["a", "b"])
    out.fail(["b"], Permanent("refused", reason="erp_rejected"))
    out.fail(["c"], Retryable("later", reason="missing_reference"))
    assert out.applied == {"a"} and set(out.failed) == {"b"} and set(out.waiting) == {"c"}
    assert out.planned == {"a": "create"}


# -- Tryton's JSON and errors --------------------------------------------------------------------------------


def test_tryton_json_round_trips_money_and_dates_exactly() -> None:
    value = {"amount": Decimal("1398.75"), "day": dt.date(2026, 3, 14),
             "at": dt.datetime(2026, 3, 14, 10, 12, 5, 123000), "raw": b"\x00\x01", "ids": (1, 2)}  # fmt: skip
    wire = json.dumps(encode(value))
    assert '{"__class__": "Decimal", "decimal": "1398.75"}' in wire
    assert json.loads(wire, object_hook=decode_object) == {**value, "ids": [1, 2]}


def test_tryton_error_answers_map_onto_the_taxonomy() -> None:
    rejected = error_of(["UserError", ["To continue, you must reopen the period.", "", None]])
    assert isinstance(rejected, TrytonRejected) and rejected.error_class == "permanent"
    assert (rejected.reason, str(rejected)) == ("erp_rejected", "To continue, you must reopen the period.")
    warning = error_of(["UserWarning", ["key", "Cancel the move?", "It is in a closed period."]])
    assert warning.error_class == "permanent" and str(warning) == "Cancel the move? It is in a closed period."
    assert error_of(["ConcurrencyException", "Records were modified"]).reason == "erp_conflict"
    assert isinstance(error_of(["LoginException", ["totp", "Code", "char"]]), Fatal)
    crash = error_of(["KeyError: 'x'", "Traceback (most recent call last): ..."])
    assert crash.error_class == "retryable" and "Traceback" not in str(crash)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [("http://127.0.0.1:8000/bizbus/", "http://127.0.0.1:8000/bizbus/rpc/"),
     ("https://erp.example.com/prod", "https://erp.example.com/prod/rpc/"),
     ("http://h:8000/db/rpc/", "http://h:8000/db/rpc/")],
)  # fmt: skip
def test_rpc_endpoint_is_the_database_s_rpc_path(url: str, endpoint: str) -> None:
    assert rpc_endpoint(url)[0] == endpoint


# -- config -------------------------------------------------------------------------------------------------


def test_config_defaults_are_documented_and_frozen() -> None:
    cfg = TrytonSinkConfig.model_validate(
        {"url": "http://127.0.0.1:8000/bizbus/", "password_env": "TRYTON_PW"}
    )
    assert (cfg.user, cfg.journal_code, cfg.analytic_root, cfg.company) == ("admin", "MISC", "CC", None)
    assert cfg.topics == ("bizbus.md.cost-center.v1", "bizbus.finance.voucher.v1", "bizbus.purchase.order.v1")
    assert all(f.description for f in TrytonSinkConfig.model_fields.values())
    with pytest.raises(ValidationError):
        cfg.url = "http://elsewhere/db/"  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes",
    [{"url": "ftp://x/db/"}, {"url": "http://u:secret-pw@h/db/"}, {"url": "http://h:8000/"},
     {"url": "http://h/a/b/"}, {"password_env": "s3cr3t pw!"}, {"password": "x"}, {"topics": []}],
)  # fmt: skip
def test_config_refuses_mistakes_without_echoing_secrets(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        TrytonSinkConfig.model_validate(
            {"url": "http://127.0.0.1:8000/bizbus/", "password_env": "P", **changes}
        )
    assert "secret-pw" not in str(info.value) and "s3cr3t" not in str(info.value)
