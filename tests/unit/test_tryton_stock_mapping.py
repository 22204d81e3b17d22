"""Pure rules of the Tryton sink's stock, sale and analytic targets: requisition -> request values and actions,
cost entry -> balanced voucher, order decision -> sale buttons and fields. No server here
(tests/integration/test_tryton_stock.py runs a real Tryton)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from bizbus.connectors.sinks.tryton import mapping as m
from bizbus.schemas import catalog

from bizbus.failures import Permanent


def requisition(status: str = "APPROVED", op: str = "CREATED", lines: list[tuple[int, str, str]] | None = None,
                ) -> dict[str, Any]:  # fmt: skip
    v = catalog.sample("bizbus.purchase.PurchaseRequisition")
    v.update(requisition_no="PR-9", status=status, op=op, version=4, project="P1", request_date=dt.date(2026, 3, 1))
    v["lines"] = [{"line_no": n, "material": mat, "material_name": None, "quantity": Decimal(q), "unit": "u",
                   "unit_price": None, "amount": None, "tax_rate": None, "project": None, "need_by": None,
                   "description": None} for n, mat, q in (lines or [(1, "MAT-A", "3")])]  # fmt: skip
    return v


def test_the_new_kinds_are_recognized_by_their_fields() -> None:
    assert m.record_kind(catalog.sample("bizbus.purchase.PurchaseRequisition")) == "requisition"
    assert m.record_kind(catalog.sample("bizbus.finance.CostEntry")) == "cost_entry"
    assert m.record_kind(catalog.sample("bizbus.sales.OrderDecision")) == "order_decision"
    # a sales order itself is not something this sink writes
    with pytest.raises(Permanent, match="OrderDecision"):
        m.record_kind(catalog.sample("bizbus.sales.SalesOrder"))


@pytest.mark.parametrize(("status", "op", "action"), [
    ("APPROVED", "CREATED", "upsert"), ("APPROVED", "UPDATED", "upsert"), ("CANCELLED", "UPDATED", "cancel"),
    ("REJECTED", "UPDATED", "cancel"), ("APPROVED", "DELETED", "cancel"), ("SUBMITTED", "CREATED", "skip"),
    ("DRAFT", "CREATED", "skip"), ("CLOSED", "UPDATED", "skip"),
])  # fmt: skip
def test_requisition_action(status: str, op: str, action: str) -> None:
    assert m.requisition_action(requisition(status, op), ("APPROVED",)) == action
    assert m.requisition_action(requisition("SUBMITTED"), ("APPROVED", "SUBMITTED")) == "upsert"


def test_request_values_and_checks() -> None:
    v = requisition(lines=[(2, "MAT-A", "3.5")])
    v["lines"][0]["need_by"] = dt.date(2026, 4, 2)
    values = m.request_values(v, v["lines"][0], product_id=7, unit_id=1, warehouse_id=3, company_id=1)
    assert values == {
        "bizbus_ref": "PR-9/2", "bizbus_version": 4, "product": 7, "quantity": 3.5, "unit": 1,
        "computed_quantity": 3.5, "computed_unit": 1, "warehouse": 3, "company": 1,
        "purchase_date": dt.date(2026, 3, 1), "supply_date": dt.date(2026, 4, 2),
        "description": "MAT-A (requisition PR-9 line 2 for project P1)",
    }  # fmt: skip
    v["lines"][0].update(description="supplier:SUP-7", material_name="Steel")
    assert m.request_supplier(v["lines"][0]) == "SUP-7"
    values = m.request_values(v, v["lines"][0], product_id=7, unit_id=1, warehouse_id=3, company_id=1, party_id=9)
    assert (values["party"], values["description"]) == (9, "Steel: supplier:SUP-7 (requisition PR-9 line 2 for "
                                                           "project P1)")  # fmt: skip
    assert m.request_supplier({"description": "urgent"}) is None and m.request_supplier({}) is None
    m.check_requisition(v)
    with pytest.raises(Permanent, match="line number twice"):
        m.check_requisition(requisition(lines=[(1, "A", "1"), (1, "B", "1")]))
    with pytest.raises(Permanent, match="not positive"):
        m.check_requisition(requisition(lines=[(1, "A", "-1")]))
    with pytest.raises(Permanent, match="no lines"):
        m.check_requisition({**requisition(), "lines": []})
    assert m.missing_request_data(requisition(lines=[(1, "A", "1"), (2, "B", "1")]), {"A": {}}, {}) == (
        "requisition PR-9: Tryton does not know unit u, material B")


def cost_entry(amount: str, **changes: Any) -> dict[str, Any]:
    v = catalog.sample("bizbus.finance.CostEntry")
    v.update(entry_id="GI-1/1", amount=Decimal(amount), cost_type="MATERIAL", project="P1", cost_center="CC-P1",
             material="MAT-A", quantity=Decimal("4.0000"), unit="t", description=None, reversal_of=None)  # fmt: skip
    v.update(changes)
    return v


def test_a_cost_entry_is_a_balanced_two_line_voucher_and_a_reversal_swaps_sides() -> None:
    v = m.cost_entry_voucher(cost_entry("120.50"), "5401.01", "1403", "CC-P1")
    assert v["voucher_no"] == "CE/GI-1/1" and v["reversal_of"] is None
    assert [(x["account_code"], x["cost_center"], x["debit"], x["credit"]) for x in v["lines"]] == [
        ("5401.01", "CC-P1", Decimal("120.50"), Decimal(0)), ("1403", None, Decimal(0), Decimal("120.50"))]  # fmt: skip
    assert v["lines"][0]["description"] == "MAT-A 4 t material cost GI-1/1"
    m.check_voucher(v, "CNY")  # balanced, one side per line
    r = m.cost_entry_voucher(cost_entry("-120.50", entry_id="GI-1/1-R", reversal_of="GI-1/1"), "5401.01", "1403", "X")
    assert r["reversal_of"] == "CE/GI-1/1"
    assert [(x["debit"], x["credit"]) for x in r["lines"]] == [(0, Decimal("120.50")), (Decimal("120.50"), 0)]
    with pytest.raises(Permanent, match="amount 0"):
        m.cost_entry_voucher(cost_entry("0.00"), "5401.01", "1403", "CC-P1")


@pytest.mark.parametrize(("state", "decision", "steps"), [
    ("draft", "ACCEPTED", ("quote", "confirm")), ("quotation", "ACCEPTED", ("confirm",)),
    ("cancelled", "ACCEPTED", ("draft", "quote", "confirm")), ("confirmed", "ACCEPTED", ()),
    ("processing", "ACCEPTED", ()), ("draft", "REFUSED", ("cancel",)), ("quotation", "RELEASED", ("cancel",)),
    ("confirmed", "RELEASED", ("draft", "cancel")), ("cancelled", "REFUSED", ()),
])  # fmt: skip
def test_sale_steps(state: str, decision: str, steps: tuple[str, ...]) -> None:
    assert m.sale_steps("SO-1", state, decision) == steps
    assert all(s in m.SALE_STEPS for s in steps)
    assert list(steps) == sorted(steps, key=m.SALE_STEPS.index)  # the writer runs them in SALE_STEPS order


def test_a_sale_in_shipment_cannot_be_cancelled() -> None:
    with pytest.raises(Permanent, match="processing") as info:
        m.sale_steps("SO-1", "processing", "RELEASED")
    assert info.value.reason == "not_modifiable"


def test_decision_order_and_values() -> None:
    assert m.decision_key(2, "ACCEPTED") > m.decision_key(1, "RELEASED")
    assert m.decision_key(2, "RELEASED") > m.decision_key(2, "ACCEPTED")
    assert m.decision_key(None, None) < m.decision_key(0, "ACCEPTED")
    d = catalog.sample("bizbus.sales.OrderDecision")
    d.update(decision="REFUSED", order_version=3, reason=None, shortfalls={"MAT-B": "2", "MAT-A": "1.5"})
    assert m.decision_values(d) == {"bizbus_version": 3, "bizbus_decision": "REFUSED",
                                    "bizbus_reason": "refused: MAT-A lacks 1.5, MAT-B lacks 2"}  # fmt: skip
    d.update(decision="ACCEPTED", reason="ignored")
    assert m.decision_values(d)["bizbus_reason"] is None
