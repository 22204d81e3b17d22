"""The Tryton sink's stock, purchase request, sale and analytic targets against a REAL Tryton 8.2 (the session's
seeded template with stock, purchase_request, sale, analytic_account and bizbus_ref; a copy per test):

* PurchaseRequisition -> one ``purchase.request`` per line (created through ``bizbus_create`` of the
  bizbus_ref module, since Tryton refuses creates of requests from clients), updated and cancelled by later
  versions of the requisition;
* material CostEntry -> a posted account move whose expense line carries the project's analytic line;
* F5 OrderDecision -> the Tryton sale whose reference is the order number confirmed or cancelled with reason;

each exactly once across re-deliveries and crashes, and bad input failing alone with the key.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from bizbus.schemas import catalog

from bizbus import lineage
from bizbus.failures import Fatal, Retryable
from tests.integration.test_tryton_sink import cost_center, counts, eid, flat, make_writer, records, voucher
from tests.tryton_env import TrytonServer

REQUEST, SALE, MOVE = "model.purchase.request", "model.sale.sale", "model.account.move"
MARCH = date(2026, 3, 14)


def _meta(value: dict[str, Any], *parts: object) -> dict[str, Any]:
    value["meta"]["event_id"] = lineage.event_id("tryton-stock-test", *parts)
    value["meta"]["correlation_id"] = str(parts[1])
    return value


def requisition(no: str, version: int = 1, status: str = "SUBMITTED", op: str = "CREATED",
                lines: list[tuple[int, str, str, str]] | None = None, project: str | None = "P-ZJ") -> dict[str, Any]:  # fmt: skip
    """``lines``: (line_no, material, quantity, unit)."""
    v = catalog.sample("bizbus.purchase.PurchaseRequisition")
    v.update(requisition_no=no, version=version, status=status, op=op, project=project, currency="CNY",
             request_date=MARCH)  # fmt: skip
    v["lines"] = [
        {"line_no": n, "material": mat, "material_name": None, "quantity": Decimal(qty), "unit": unit,
         "unit_price": None, "amount": None, "tax_rate": None, "project": project, "need_by": date(2026, 4, 1),
         "description": None}
        for n, mat, qty, unit in (lines if lines is not None else [(1, "MAT-STEEL-10", "10", "u")])
    ]  # fmt: skip
    return _meta(v, "requisition", no, version, status, op)


def cost_entry(entry_id: str, amount: str, cost_type: str = "MATERIAL", cc: str = "CC-P1", project: str = "P1",
               reversal_of: str | None = None) -> dict[str, Any]:  # fmt: skip
    v = catalog.sample("bizbus.finance.CostEntry")
    v.update(entry_id=entry_id, amount=Decimal(amount), cost_type=cost_type, cost_center=cc, project=project,
             currency="CNY", posting_date=MARCH, material="MAT-STEEL-10", quantity=Decimal("10"), unit="u",
             reversal_of=reversal_of, description=None, employee=None, rate=None)  # fmt: skip
    return _meta(v, "cost_entry", entry_id)


def decision(no: str, kind: str, version: int = 1, reason: str | None = None) -> dict[str, Any]:
    v = catalog.sample("bizbus.sales.OrderDecision")
    v.update(order_no=no, decision=kind, order_version=version, reason=reason, warehouse="WH",
             shortfalls={"MAT-STEEL-10": "4"} if kind == "REFUSED" else {})  # fmt: skip
    return _meta(v, "decision", no, version, kind)


def requests(server: TrytonServer, no: str) -> dict[str, dict[str, Any]]:
    rows = server.rpc.call(REQUEST, "search_read", [("bizbus_ref", "like", f"{no}/%")], 0, None, None,
                           ["bizbus_ref", "bizbus_version", "state", "product.code", "quantity", "unit.symbol",
                            "warehouse.code", "company", "supply_date", "purchase_date", "description",
                            "party.code"])  # fmt: skip
    return {r["bizbus_ref"]: r for r in flat(rows)}


def summary(server: TrytonServer, no: str) -> dict[str, tuple[Any, ...]]:
    return {ref: (r["product.code"], r["quantity"], r["unit.symbol"], r["warehouse.code"], r["state"],
                  r["bizbus_version"]) for ref, r in requests(server, no).items()}  # fmt: skip


def make_sale(server: TrytonServer, reference: str, quantity: float = 5) -> int:
    rpc = server.rpc
    party = rpc.call("model.party.party", "search_read", [("code", "=", "CUST-001")], 0, None, None, ["addresses"])[0]
    product = rpc.call("model.product.product", "search_read", [("code", "=", "MAT-STEEL-10")], 0, None, None,
                       ["default_uom"])[0]  # fmt: skip
    warehouse = rpc.call("model.stock.location", "search", [("code", "=", "WH"), ("type", "=", "warehouse")])[0]
    currency = rpc.call("model.currency.currency", "search", [("code", "=", "CNY")])[0]
    (sale_id,) = rpc.call(SALE, "create", [{
        "party": party["id"], "invoice_address": party["addresses"][0], "shipment_address": party["addresses"][0],
        "reference": reference, "warehouse": warehouse, "currency": currency, "sale_date": MARCH,
        "invoice_method": "manual", "shipment_method": "order",
        "lines": [("create", [{"type": "line", "product": product["id"], "quantity": quantity,
                               "unit": product["default_uom"], "unit_price": Decimal("60")}])]}])  # fmt: skip
    return int(sale_id)


def _documents(document: str) -> float:
    from prometheus_client import REGISTRY

    labels = {"component": "tryton-test", "document": document}
    return REGISTRY.get_sample_value("bizbus_documents_total", labels) or 0.0


def sales(server: TrytonServer, *refs: str) -> dict[str, dict[str, Any]]:
    rows = server.rpc.call(SALE, "search_read", [("reference", "in", list(refs))], 0, None, None,
                           ["reference", "state", "bizbus_ref", "bizbus_version", "bizbus_decision", "bizbus_reason",
                            "shipments"], context={"active_test": False})  # fmt: skip
    return {r["reference"]: r for r in sorted(rows, key=lambda r: r["bizbus_ref"] is not None)}


# -- requisitions -> purchase requests ----------------------------------------------------------------------


def test_requisitions_become_purchase_requests_updated_and_cancelled_once(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    pr1 = requisition("PR-1", lines=[(1, "MAT-STEEL-10", "10", "u"), (2, "MAT-CABLE-4", "25", "u")])
    pr1["lines"][0]["description"] = "supplier:SUP-002"  # as F3 suggests a supplier
    pr1["lines"][1]["description"] = "supplier:SUP-404"  # one Tryton does not know: left for the purchaser
    pr2 = requisition("PR-2", status="APPROVED", lines=[(1, "SVC-INSTALL", "3", "u")])
    submitted = requisition("PR-3", status="DRAFT")
    res = w.write(records(pr1, pr2, submitted))
    assert counts(res) == (2, 1, 0), res.failed
    assert summary(tryton, "PR-1") == {
        "PR-1/1": ("MAT-STEEL-10", 10.0, "u", "WH", "draft", 1),
        "PR-1/2": ("MAT-CABLE-4", 25.0, "u", "WH", "draft", 1),
    }
    assert summary(tryton, "PR-2") == {"PR-2/1": ("SVC-INSTALL", 3.0, "u", "WH", "draft", 1)}
    assert summary(tryton, "PR-3") == {}  # a draft: no request yet
    one = requests(tryton, "PR-1")["PR-1/1"]
    assert (one["party.code"], requests(tryton, "PR-1")["PR-1/2"].get("party.code")) == ("SUP-002", None)
    assert (one["supply_date"], one["purchase_date"]) == (date(2026, 4, 1), MARCH)
    assert "requisition PR-1 line 1" in one["description"] and "P-ZJ" in one["description"]
    # Tryton itself still refuses a client's create: the bizbus door is the only way in
    with pytest.raises(Exception, match="(?i)request"):
        tryton.rpc.call(REQUEST, "create", [{"product": one["id"], "quantity": 1.0, "company": one["company"]}])

    # a re-delivery of everything: nothing new
    assert counts(w.write(records(pr1, pr2, submitted))) == (0, 3, 0)
    # version 2: line 1 changes its quantity, line 2 disappears, line 3 is new -> update, cancel, create
    v2 = requisition("PR-1", version=2, op="UPDATED",
                     lines=[(1, "MAT-STEEL-10", "12", "u"), (3, "MAT-CABLE-4", "7", "u")])  # fmt: skip
    res = w.write(records(pr1, v2))
    assert counts(res) == (1, 1, 0), res.failed
    assert summary(tryton, "PR-1") == {
        "PR-1/1": ("MAT-STEEL-10", 12.0, "u", "WH", "draft", 2),
        "PR-1/2": ("MAT-CABLE-4", 25.0, "u", "WH", "cancelled", 2),
        "PR-1/3": ("MAT-CABLE-4", 7.0, "u", "WH", "draft", 2),
    }
    # versions 3 (quantity) and 4 (cancelled) of PR-1 and a rejected PR-2 in one batch: the newest wins
    v3 = requisition("PR-1", version=3, op="UPDATED", lines=[(1, "MAT-STEEL-10", "99", "u")])
    v4 = requisition("PR-1", version=4, op="UPDATED", status="CANCELLED", lines=[])
    rejected = requisition("PR-2", version=2, op="UPDATED", status="REJECTED")
    assert counts(w.write(records(v3, v4, rejected))) == (2, 1, 0)  # v3 is superseded by v4
    assert summary(tryton, "PR-1") == {
        "PR-1/1": ("MAT-STEEL-10", 12.0, "u", "WH", "cancelled", 4),
        "PR-1/2": ("MAT-CABLE-4", 25.0, "u", "WH", "cancelled", 4),
        "PR-1/3": ("MAT-CABLE-4", 7.0, "u", "WH", "cancelled", 4),
    }
    assert {r["state"] for r in requests(tryton, "PR-2").values()} == {"cancelled"}
    # the whole history again, in any order: all duplicates, and Tryton holds exactly four requests
    history = [pr1, v2, v3, v4, pr2, rejected, submitted]
    assert counts(w.write(records(*reversed(history)))) == (0, 7, 0)
    assert tryton.rpc.call(REQUEST, "search_count", [("bizbus_ref", "like", "PR-%")]) == 4
    w.close()


def test_bad_requisitions_fail_alone_with_their_key(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    good = requisition("PR-OK")
    unknown = requisition("PR-BAD", lines=[(1, "MAT-NOPE", "1", "u"), (2, "MAT-STEEL-10", "1", "furlong")])
    zero = requisition("PR-ZERO", lines=[(1, "MAT-STEEL-10", "0", "u")])
    half = requisition("PR-HALF", lines=[(1, "MAT-STEEL-10", "2.5", "u")])  # the unit "u" has no decimals
    result = w.write(records(good, unknown, zero, half))
    assert (result.applied, result.duplicates) == (1, 0)
    assert {k: e.reason for k, e in result.failed.items()} == {
        eid(unknown): "unknown_master_data", eid(zero): "validation", eid(half): "erp_rejected"}  # fmt: skip
    assert "Quantity" in str(result.failed[eid(half)])  # Tryton's own words
    assert "material MAT-NOPE" in str(result.failed[eid(unknown)])
    assert "unit furlong" in str(result.failed[eid(unknown)])
    assert set(summary(tryton, "PR-OK")) == {"PR-OK/1"} and summary(tryton, "PR-BAD") == {}
    # a request already turned into a purchase (by Tryton's own wizard) cannot be cancelled by bizbus
    req_id = requests(tryton, "PR-OK")["PR-OK/1"]["id"]
    supplier = tryton.rpc.call("model.party.party", "search", [("code", "=", "SUP-001")])[0]
    tryton.rpc.call(REQUEST, "write", [req_id], {"party": supplier})
    _run_create_purchase_wizard(tryton, [req_id])
    assert requests(tryton, "PR-OK")["PR-OK/1"]["state"] == "purchased"
    cancel = requisition("PR-OK", version=2, status="CANCELLED", op="UPDATED")
    result = w.write(records(cancel))
    assert result.failed[eid(cancel)].reason == "not_cancellable"
    assert "PR-OK/1" in str(result.failed[eid(cancel)])
    w.close()


def _run_create_purchase_wizard(tryton: TrytonServer, ids: list[int]) -> None:
    """Tryton's own "Create Purchase" wizard on requests, as a purchaser clicks it."""
    rpc = tryton.rpc
    wiz, start, _end = rpc.call("wizard.purchase.request.create_purchase", "create")
    ctx = {"active_model": "purchase.request", "active_ids": ids, "active_id": ids[0]}
    rpc.call("wizard.purchase.request.create_purchase", "execute", wiz, {}, start, context=ctx)
    rpc.call("wizard.purchase.request.create_purchase", "delete", wiz)


# -- material cost entries -> analytic moves ---------------------------------------------------------------


def test_material_cost_entries_post_moves_on_the_project_analytic_account(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    assert counts(w.write(records(cost_center("CC-P1")))) == (1, 0, 0)
    issue = cost_entry("GI-100/1", "455.00")
    second = cost_entry("GI-101/1", "12.34")
    labor = cost_entry("TS-9", "80.00", cost_type="LABOR")
    reversal = cost_entry("GI-100/1-R", "-455.00", reversal_of="GI-100/1")
    batch = records(issue, second, labor, reversal)
    assert counts(w.write(batch)) == (3, 1, 0)  # labor is posted from F2's vouchers, not from its cost entry

    got = {r["bizbus_ref"]: r for r in tryton.rpc.call(MOVE, "search_read", [("bizbus_ref", "like", "CE/%")], 0,
                                                        None, None, ["bizbus_ref", "state", "date", "description"])}  # fmt: skip
    assert sorted(got) == ["CE/GI-100/1", "CE/GI-100/1-R", "CE/GI-101/1"]
    assert {r["state"] for r in got.values()} == {"posted"} and {r["date"] for r in got.values()} == {MARCH}
    assert "reversal of CE/GI-100/1" in got["CE/GI-100/1-R"]["description"]
    lines = flat(tryton.rpc.call("model.account.move.line", "search_read",
                                 [("move.bizbus_ref", "like", "CE/%")], 0, None, None,
                                 ["move.bizbus_ref", "account.code", "debit", "credit"]))  # fmt: skip
    assert sorted((x["move.bizbus_ref"], x["account.code"], x["debit"], x["credit"]) for x in lines) == [
        ("CE/GI-100/1", "1403", Decimal("0"), Decimal("455.00")),
        ("CE/GI-100/1", "5401.01", Decimal("455.00"), Decimal("0")),
        ("CE/GI-100/1-R", "1403", Decimal("455.00"), Decimal("0")),
        ("CE/GI-100/1-R", "5401.01", Decimal("0"), Decimal("455.00")),
        ("CE/GI-101/1", "1403", Decimal("0"), Decimal("12.34")),
        ("CE/GI-101/1", "5401.01", Decimal("12.34"), Decimal("0")),
    ]
    alines = flat(tryton.rpc.call("model.analytic_account.line", "search_read",
                                  [("move_line.move.bizbus_ref", "like", "CE/%")], 0, None, None,
                                  ["move_line.move.bizbus_ref", "move_line.account.code", "account.code", "debit",
                                   "credit"]))  # fmt: skip
    assert sorted((a["move_line.move.bizbus_ref"], a["move_line.account.code"], a["account.code"], a["debit"],
                   a["credit"]) for a in alines) == [
        ("CE/GI-100/1", "5401.01", "CC-P1", Decimal("455.00"), Decimal("0")),
        ("CE/GI-100/1-R", "5401.01", "CC-P1", Decimal("0"), Decimal("455.00")),
        ("CE/GI-101/1", "5401.01", "CC-P1", Decimal("12.34"), Decimal("0")),
    ]  # fmt: skip
    # the analytic account's balance is the material cost of the project: 12.34 after the reversal (Tryton
    # reports an analytic balance as credit - debit, so a cost shows negative)
    balance = tryton.rpc.call("model.analytic_account.account", "search_read", [("code", "=", "CC-P1")], 0, None,
                              None, ["balance"])[0]["balance"]  # fmt: skip
    assert balance == Decimal("-12.34")

    assert counts(w.write(batch)) == (0, 4, 0)  # re-delivery: nothing twice
    assert tryton.rpc.call(MOVE, "search_count", [("bizbus_ref", "like", "CE/%")]) == 3

    # the F6 voucher shape on the voucher topic goes the same way (for pipelines that post vouchers instead)
    f6 = voucher("F6-GI-102", [("5401.01", "CC-P1", "30.00", "0.00"), ("1403", None, "0.00", "30.00")])
    assert counts(w.write(records(f6, f6))) == (1, 1, 0)

    # an unknown project analytic account waits (it may come on the cost-center topic), then dead-letters;
    # a closed one and a foreign currency fail at once
    with pytest.raises(Retryable) as info:
        w.write(records(cost_entry("GI-200/1", "5.00", cc="CC-NOPE")))
    assert info.value.reason == "missing_reference" and "CC-NOPE" in str(info.value)
    w.write(records(cost_center("CC-OLD", active=False)))
    closed = cost_entry("GI-201/1", "5.00", cc="CC-OLD")
    usd = cost_entry("GI-202/1", "5.00")
    usd["currency"] = "USD"
    result = w.write(records(closed, usd))
    assert {k: e.reason for k, e in result.failed.items()} == {
        eid(closed): "cost_center_closed", eid(usd): "unsupported_currency"}  # fmt: skip
    w.close()


def test_a_cost_entry_analytic_account_by_project_pattern(tryton: TrytonServer) -> None:
    w = make_writer(tryton, cost_entry_analytic="CC-{project}")
    w.write(records(cost_center("CC-P7")))
    assert counts(w.write(records(cost_entry("GI-7/1", "70.00", cc="ignored", project="P7")))) == (1, 0, 0)
    alines = flat(tryton.rpc.call("model.analytic_account.line", "search_read",
                                  [("move_line.move.bizbus_ref", "=", "CE/GI-7/1")], 0, None, None,
                                  ["account.code", "debit"]))  # fmt: skip
    assert [(a["account.code"], a["debit"]) for a in alines] == [("CC-P7", Decimal("70.00"))]
    w.close()


# -- F5 order decisions -> Tryton sales ----------------------------------------------------------------------


def test_order_decisions_confirm_or_cancel_the_tryton_sale_once(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    for ref in ("SO-1", "SO-2", "SO-3", "SO-4"):
        make_sale(tryton, ref)
    tryton.rpc.call(SALE, "quote", tryton.rpc.call(SALE, "search", [("reference", "=", "SO-2")]))
    accepted = decision("SO-1", "ACCEPTED")
    refused = decision("SO-2", "REFUSED", reason="MAT-STEEL-10 lacks 4 u in WH")
    accepted3, released3 = decision("SO-3", "ACCEPTED"), decision("SO-3", "RELEASED", version=2)
    unknown = decision("SO-404", "ACCEPTED")
    before = {d: _documents(d) for d in ("sale_confirmed", "sale_cancelled")}
    result = w.write(records(accepted, refused, accepted3, released3, unknown))
    assert {d: _documents(d) - n for d, n in before.items()} == {"sale_confirmed": 1, "sale_cancelled": 2}
    assert (result.applied, result.duplicates) == (3, 1)  # SO-3's accept is superseded by its release
    assert {k: e.reason for k, e in result.failed.items()} == {eid(unknown): "unknown_sale"}
    got = sales(tryton, "SO-1", "SO-2", "SO-3", "SO-4")
    assert got["SO-1"]["state"] == "processing" and len(got["SO-1"]["shipments"]) == 1  # confirmed, shipment made
    assert (got["SO-1"]["bizbus_decision"], got["SO-1"]["bizbus_version"], got["SO-1"]["bizbus_reason"]) == (
        "ACCEPTED", 1, None)  # fmt: skip
    assert (got["SO-2"]["state"], got["SO-2"]["bizbus_decision"], got["SO-2"]["bizbus_reason"]) == (
        "cancelled", "REFUSED", "MAT-STEEL-10 lacks 4 u in WH")  # fmt: skip
    assert (got["SO-3"]["state"], got["SO-3"]["bizbus_decision"], got["SO-3"]["bizbus_version"]) == (
        "cancelled", "RELEASED", 2)  # fmt: skip
    assert got["SO-4"]["state"] == "draft" and got["SO-4"]["bizbus_decision"] is None

    # re-deliveries and stale decisions change nothing; one shipment, not two
    assert counts(w.write(records(accepted, refused, accepted3, released3))) == (0, 4, 0)
    assert len(sales(tryton, "SO-1")["SO-1"]["shipments"]) == 1

    # a refusal without words gets the shortfalls as its reason; a refused order accepted in a later version
    # is drafted again and confirmed
    refused4 = decision("SO-4", "REFUSED")
    assert counts(w.write(records(refused4))) == (1, 0, 0)
    assert sales(tryton, "SO-4")["SO-4"]["bizbus_reason"] == "refused: MAT-STEEL-10 lacks 4"
    assert counts(w.write(records(decision("SO-4", "ACCEPTED", version=2)))) == (1, 0, 0)
    assert sales(tryton, "SO-4")["SO-4"]["state"] == "processing"

    # the sale a decision was applied to carries the order number in bizbus_ref: a copy made in Tryton later
    # (same reference, no bizbus_ref) does not make the next decision ambiguous; two unanswered sales do
    assert sales(tryton, "SO-2")["SO-2"]["bizbus_ref"] == "SO-2"
    tryton.rpc.call(SALE, "copy", tryton.rpc.call(SALE, "search", [("bizbus_ref", "=", "SO-2")]), {"reference": "SO-2"})
    assert counts(w.write(records(decision("SO-2", "RELEASED", version=2)))) == (1, 0, 0)
    assert tryton.rpc.call(SALE, "search_count", [("reference", "=", "SO-2"), ("state", "=", "draft")]) == 1
    make_sale(tryton, "SO-AMB"), make_sale(tryton, "SO-AMB")
    amb = decision("SO-AMB", "ACCEPTED")
    assert w.write(records(amb)).failed[eid(amb)].reason == "ambiguous_sale"

    # a sale already being shipped cannot be released by bizbus: a dead letter with Tryton's state in it
    late = decision("SO-1", "RELEASED", version=2)
    result = w.write(records(late))
    assert result.failed[eid(late)].reason == "not_modifiable" and "processing" in str(result.failed[eid(late)])
    w.close()


def test_a_crash_between_tryton_and_the_offset_commit_is_resolved_by_lookup(tryton: TrytonServer) -> None:
    """What a crash leaves behind, for each new kind, and the re-delivery that must finish it once."""
    w = make_writer(tryton)
    w.write(records(cost_center("CC-P1")))
    # 1. everything written, offsets not committed: a new writer (the restarted worker) sees duplicates only
    batch = records(requisition("PR-C"), cost_entry("GI-C/1", "9.99"), decision("SO-C", "ACCEPTED"))
    make_sale(tryton, "SO-C")
    assert counts(w.write(batch)) == (3, 0, 0)
    w.close()
    w = make_writer(tryton)
    assert counts(w.write(batch)) == (0, 3, 0)
    assert tryton.rpc.call(REQUEST, "search_count", [("bizbus_ref", "like", "PR-C/%")]) == 1
    assert tryton.rpc.call(MOVE, "search_count", [("bizbus_ref", "=", "CE/GI-C/1")]) == 1
    # 2. the decision's fields written, the crash before the buttons ran: the re-delivery runs them
    sale_id = make_sale(tryton, "SO-D")
    tryton.rpc.call(SALE, "write", [sale_id], {"bizbus_version": 1, "bizbus_decision": "ACCEPTED"})
    assert counts(w.write(records(decision("SO-D", "ACCEPTED")))) == (1, 0, 0)
    assert sales(tryton, "SO-D")["SO-D"]["state"] == "processing"
    # 3. the cost entry's move created, the crash before it was posted: posted, not doubled
    from bizbus.connectors.sinks.tryton import mapping as m

    entry = cost_entry("GI-E/1", "1.50")
    journal = tryton.rpc.call("model.account.journal", "search", [("code", "=", "MISC")])[0]
    accounts = {a["code"]: a["id"] for a in tryton.rpc.call("model.account.account", "search_read",
                [("code", "in", ["5401.01", "1403"])], 0, None, None, ["code"])}  # fmt: skip
    cc = tryton.rpc.call("model.analytic_account.account", "search", [("code", "=", "CC-P1")])[0]
    tryton.rpc.call(MOVE, "create", [m.move_values(m.cost_entry_voucher(entry, "5401.01", "1403", "CC-P1"), journal,
                                                   accounts, {"CC-P1": cc})])  # fmt: skip
    assert counts(w.write(records(entry))) == (1, 0, 0)
    moves = tryton.rpc.call(MOVE, "search_read", [("bizbus_ref", "=", "CE/GI-E/1")], 0, None, None, ["state"])
    assert [x["state"] for x in moves] == ["posted"]
    w.close()


def test_plan_describes_the_new_kinds_and_writes_nothing(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    w.write(records(cost_center("CC-P1")))
    make_sale(tryton, "SO-P")
    plan = w.plan(records(requisition("PR-P"), cost_entry("GI-P/1", "3.00"), decision("SO-P", "REFUSED", reason="no")))
    assert [p.action for p in plan] == ["create", "create", "create"]
    assert plan[0].detail.startswith("requisition PR-P version 1: create 1")
    assert plan[1].detail.startswith("create and post move CE/GI-P/1")
    assert plan[2].detail.startswith("cancel sale SO-P (draft -> cancel)")
    assert summary(tryton, "PR-P") == {} and sales(tryton, "SO-P")["SO-P"]["state"] == "draft"
    w.close()


def test_a_database_without_the_bizbus_fields_stops_the_sink_with_the_remedy(tryton: TrytonServer) -> None:
    w = make_writer(tryton)
    w.require_fields("model.sale.sale", ["bizbus_version"])  # there: nothing happens
    with pytest.raises(Fatal, match="update bizbus_ref") as info:
        w.require_fields("model.sale.sale", ["bizbus_version", "bizbus_not_there"])
    assert info.value.reason == "config" and "bizbus_not_there" in str(info.value)
    with pytest.raises(Fatal, match="activate the modules"):
        w.require_fields("model.stock.not_a_model", ["bizbus_ref"])
    w.close()


def test_config_names_the_new_topics_and_mappings() -> None:
    from bizbus.connectors.sinks.tryton.config import OPTIONAL_TOPICS, TrytonSinkConfig

    cfg = TrytonSinkConfig(url="http://127.0.0.1:8000/bizbus/", password_env="X", topics=OPTIONAL_TOPICS,
                           cost_accounts={"MATERIAL": {"debit_account": "5401", "credit_account": "1403"}})  # fmt: skip
    assert cfg.cost_accounts["MATERIAL"].debit_account == "5401" and cfg.warehouse == "WH"
    with pytest.raises(ValueError, match="cost_entry_analytic"):
        TrytonSinkConfig(url="http://127.0.0.1:8000/bizbus/", password_env="X", cost_entry_analytic="CC-{nope}")


def test_f3_requisitions_as_the_flow_makes_them_become_requests(tryton: TrytonServer) -> None:
    """F3's own logic (streams/material_need) makes the requisitions: a need short of stock, a bigger need, a need
    covered after a receipt -> one request, its quantity updated, then cancelled; the suggested supplier is set."""
    from datetime import UTC, datetime

    from bizbus.streams.material_need.config import MaterialNeedMapping
    from bizbus.streams.material_need.logic import handle_need

    mapping = MaterialNeedMapping(company="SH01", default_warehouse="WH", supplier_by_material={"MAT-STEEL-10": "SUP-001"})
    materials = {"MAT-STEEL-10": {"code": "MAT-STEEL-10", "name": "Steel rebar 10 mm", "unit": "u", "category": None,
                                  "safety_stock": "2", "standard_cost": "45.5", "currency": "CNY", "active": True,
                                  "version": 1}}  # fmt: skip

    def need(quantity: str, version: int) -> dict[str, Any]:
        meta = lineage.meta(lineage.event_id("pm", "need", "N7", version), "P-ZJ", "pm",
                            datetime(2026, 3, 14, 2, 0, tzinfo=UTC))  # fmt: skip
        return {"meta": meta, "op": "UPDATED" if version > 1 else "CREATED", "need_id": "N7", "project": "P-ZJ",
                "task": None, "material": "MAT-STEEL-10", "quantity": Decimal(quantity), "unit": "u",
                "need_by": date(2026, 4, 1), "warehouse": None, "version": version}  # fmt: skip

    w = make_writer(tryton)
    state: dict[str, Any] | None = None
    stock = {"WH/MAT-STEEL-10": {"available": "5", "safety_stock": "0", "unit": "u"}}
    expected = [(("MAT-STEEL-10", 7.0, "u", "WH", "draft", 1)),  # 10 needed, 5 - 2 safety free: short by 7
                (("MAT-STEEL-10", 17.0, "u", "WH", "draft", 2)),  # 20 needed
                (("MAT-STEEL-10", 17.0, "u", "WH", "cancelled", 3))]  # 50 arrived: covered  # fmt: skip
    for (quantity, version), want in zip([("10", 1), ("20", 2), ("20", 3)], expected, strict=True):
        if version == 3:
            stock["WH/MAT-STEEL-10"]["available"] = "50"
        res = handle_need(need(quantity, version), state, materials.get, stock.get, mapping)
        state = res.state
        (out,) = res.outputs
        catalog.validate("bizbus.purchase.PurchaseRequisition", out.value)
        assert counts(w.write(records(out.value))) == (1, 0, 0)
        assert counts(w.write(records(out.value))) == (0, 1, 0)  # redelivered: nothing more
        (ref,) = summary(tryton, out.value["requisition_no"])
        assert summary(tryton, out.value["requisition_no"])[ref] == want
    got = requests(tryton, "PR-N7")["PR-N7/1"]
    assert got["party.code"] == "SUP-001" and got["supply_date"] == date(2026, 4, 1)
    w.close()


def test_f6_cost_entries_as_the_flow_makes_them_post_what_its_voucher_says(tryton: TrytonServer) -> None:
    """F6's own logic (streams/material_cost) books a goods issue at the moving average, then a changed issue
    (reversal + new entry); the sink posts its cost entries; Tryton's lines equal F6's own vouchers."""
    from bizbus.streams.material_cost.logic import COST_ENTRY_TOPIC, VOUCHER_TOPIC

    from tests.unit.test_f6_material_cost import World, issue, line, receipt

    world = World()
    world.receive(receipt("R1", [line(1, "10", "1000.00")]))
    world.receive(receipt("R2", [line(1, "10", price="130.000000")]))  # average 115
    outputs = list(world.issue(issue("I1", [line(1, "5")])).outputs)  # 575.00
    outputs += world.issue(issue("I1", [line(1, "3")], version=2, op="UPDATED")).outputs  # reversed, 345.00
    entries = [o.value for o in outputs if o.topic == COST_ENTRY_TOPIC]
    vouchers = [o.value for o in outputs if o.topic == VOUCHER_TOPIC]
    assert [e["amount"] for e in entries] == [Decimal("575.00"), Decimal("-575.00"), Decimal("345.00")]

    w = make_writer(tryton)
    w.write(records(cost_center("CC-PRJ-1")))
    assert counts(w.write(records(*entries))) == (3, 0, 0)
    assert counts(w.write(records(*entries))) == (0, 3, 0)
    refs = [f"CE/{e['entry_id']}" for e in entries]
    lines = flat(tryton.rpc.call("model.account.move.line", "search_read", [("move.bizbus_ref", "in", refs)], 0,
                                 None, None, ["account.code", "debit", "credit", "analytic_lines"]))  # fmt: skip
    booked = sorted((x["account.code"], x["debit"], x["credit"]) for x in lines)
    from_vouchers = sorted((ln["account_code"], ln["debit"], ln["credit"]) for v in vouchers for ln in v["lines"])
    assert booked == from_vouchers  # the same books as F6's vouchers on the voucher topic would make
    alines = flat(tryton.rpc.call("model.analytic_account.line", "search_read",
                                  [("move_line.move.bizbus_ref", "in", refs)], 0, None, None,
                                  ["account.code", "debit", "credit"]))  # fmt: skip
    assert {a["account.code"] for a in alines} == {"CC-PRJ-1"}
    assert sum(a["debit"] - a["credit"] for a in alines) == Decimal("345.00")  # the project's material cost
    w.close()
