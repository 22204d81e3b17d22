"""F6: moving average cost from goods receipts; goods issue to a project → MATERIAL cost entries and a
balanced voucher; reversal on change and delete; redelivery counted once; no cost → wait / dead letter."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from bizbus.schemas import catalog
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.material_cost.config import MaterialCostMapping
from bizbus.streams.material_cost.logic import (
    COST_ENTRY_TOPIC,
    MATERIALS,
    STEP_TOPIC,
    VOUCHER_TOPIC,
    apply_issue_step,
    apply_receipt_step,
    average,
    is_balanced,
    issue_cost,
    issue_state_key,
    route_issue,
    route_receipt,
    valuation_key,
)
from bizbus.streams.runtime.crosswalk import start_interval
from bizbus.streams.runtime.results import Missing, Reject, Result

from bizbus import lineage
from tests.step_routing import route_steps

M = MaterialCostMapping()
AT = datetime(2026, 3, 14, 2, 0, tzinfo=UTC)
PROJECT = ProjectState("PRJ-1", 1, "CREATED", "张江办公楼", "SH01",
                       intervals=tuple(start_interval([], "CC-PRJ-1", date(2026, 1, 1))[0]))  # fmt: skip
KEY = "SH01/WH1/M-STEEL"


def line(no: int, qty: str, amount: str | None = None, price: str | None = None, material: str = "M-STEEL",
         project: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"line_no": no, "material": material, "material_name": None, "quantity": Decimal(qty), "unit": "t",
            "unit_price": Decimal(price) if price else None, "amount": Decimal(amount) if amount else None,
            "tax_rate": None, "project": project, "need_by": None, "description": None}  # fmt: skip


def receipt(no: str, lines: list[dict[str, Any]], version: int = 1, op: str = "CREATED", warehouse: str = "WH1",
            currency: str = "CNY") -> dict[str, Any]:  # fmt: skip
    return {"meta": lineage.meta(lineage.event_id("erp", "receipt", no, version), no, "erp", AT), "op": op,
            "receipt_no": no, "company": "SH01", "warehouse": warehouse, "supplier": "S1", "purchase_order_no": None,
            "project": None, "posting_date": date(2026, 3, 13), "currency": currency, "lines": lines,
            "version": version}  # fmt: skip


def issue(no: str, lines: list[dict[str, Any]], version: int = 1, op: str = "CREATED", project: str | None = "PRJ-1",
          warehouse: str = "WH1", at: datetime = AT) -> dict[str, Any]:  # fmt: skip
    return {"meta": lineage.meta(lineage.event_id("erp", "issue", no, version), no, "erp", at), "op": op,
            "issue_no": no, "company": "SH01", "warehouse": warehouse, "project": project, "cost_center": None,
            "recipient": None, "sales_order_no": None, "posting_date": date(2026, 3, 14), "currency": "CNY",
            "lines": lines, "version": version}  # fmt: skip


class World:
    """The flow's tables as dicts; the routers send MaterialCostSteps, the step topic is a FIFO and the step
    agent (the one writer of the moving averages and of the issues' booked states) applies them in order."""

    def __init__(self, m: MaterialCostMapping = M) -> None:
        self.m = m
        self.costs: dict[str, dict[str, Any]] = {}
        self.receipts: dict[str, dict[str, Any]] = {}
        self.routes: dict[str, dict[str, Any]] = {}
        self.issues: dict[str, dict[str, Any]] = {}
        self.projects = {"PRJ-1": PROJECT}
        self.steps: list[dict[str, Any]] = []

    def _route(self, v: Any) -> Any:
        """Apply the steps a router sent (tests/step_routing.route_steps)."""
        return route_steps(v, STEP_TOPIC, "bizbus.finance.MaterialCostStep", "step_key", self.steps, self.step)

    def step(self, step: dict[str, Any]) -> Any:
        if step["kind"] == "RECEIPT":
            v = apply_receipt_step(step, self.costs.get, self.m)
        else:
            v = apply_issue_step(step, self.issues.get(issue_state_key(step)), self.costs.get, self.m)
        if isinstance(v, Result) and v.state is not None:
            state = dict(v.state)
            self.costs.update(state.pop(MATERIALS, {}))
            if step["kind"] != "RECEIPT":
                self.issues[issue_state_key(step)] = state
        if isinstance(v, Result):
            for out in v.outputs:
                if out.topic == VOUCHER_TOPIC:
                    catalog.validate("bizbus.finance.Voucher", out.value)
                    assert is_balanced(out.value) and out.key == out.value["voucher_no"]
                else:
                    assert out.topic == COST_ENTRY_TOPIC and out.key == out.value["project"]
                    catalog.validate("bizbus.finance.CostEntry", out.value)
        return v

    def receive(self, r: dict[str, Any]) -> Any:
        v = route_receipt(r, self.receipts.get(r["receipt_no"]), self.m)
        if isinstance(v, Result) and v.state is not None:
            self.receipts[r["receipt_no"]] = v.state
        return self._route(v)

    def issue(self, r: dict[str, Any]) -> Any:
        v = route_issue(r, self.routes.get(r["issue_no"]), self.on_hand, self.projects.get, self.m)
        if isinstance(v, Result) and v.state is not None:
            self.routes[r["issue_no"]] = v.state
        return self._route(v)

    def on_hand(self, key: str) -> bool:
        return average(self.costs.get(key)) is not None

    def at(self, key: str = KEY) -> tuple[Decimal, Decimal]:
        s = self.costs[key]
        return s["qty"], s["value"]


def test_receipts_make_a_moving_average_and_an_issue_books_at_it() -> None:
    w = World()
    w.receive(receipt("R1", [line(1, "10", "1000.00")]))
    w.receive(receipt("R2", [line(1, "10", price="130.000000")]))  # amount from quantity x price
    assert w.at() == (Decimal(20), Decimal("2300.00")) and average(w.costs[KEY]) == Decimal("115")
    res = w.issue(issue("I1", [line(1, "5")]))
    assert res.outcome == "emitted"
    entry, voucher = (o.value for o in res.outputs)
    assert (entry["entry_id"], entry["cost_type"], entry["amount"], entry["cost_center"], entry["project"]) == (
        "MAT-I1-1-1", "MATERIAL", Decimal("575.00"), "CC-PRJ-1", "PRJ-1")
    assert (entry["quantity"], entry["rate"], entry["material"]) == (Decimal(5), Decimal("115.000000"), "M-STEEL")
    assert voucher["voucher_no"] == "MAT-I1-1" and voucher["reversal_of"] is None
    assert [(ln["account_code"], ln["cost_center"], ln["debit"], ln["credit"]) for ln in voucher["lines"]] == [
        ("5401.01", "CC-PRJ-1", Decimal("575.00"), Decimal("0.00")), ("1403", None, Decimal("0.00"), Decimal("575.00"))]
    # the issue takes quantity and value out, the average stays
    assert w.at() == (Decimal(15), Decimal("1725.00")) and average(w.costs[KEY]) == Decimal("115")
    # a later receipt moves the average: (1725 + 10 x 160) / 25 = 133
    w.receive(receipt("R3", [line(1, "10", "1600.00")]))
    assert average(w.costs[KEY]) == Decimal("133")


def test_rounding_and_the_last_issue_takes_the_rest_of_the_value() -> None:
    state = {"qty": Decimal(7), "value": Decimal("1000.00")}
    assert issue_cost(state, Decimal(3)) == Decimal("428.57")  # 3 x 142.857142...
    assert issue_cost({"qty": Decimal(4), "value": Decimal("571.43")}, Decimal(4)) == Decimal("571.43")
    assert issue_cost(None, Decimal(1)) is None and issue_cost({"qty": Decimal(0), "value": Decimal(0)}, Decimal(1)) is None
    w = World()
    w.receive(receipt("R1", [line(1, "7", "1000.00")]))
    w.issue(issue("I1", [line(1, "3")]))
    w.issue(issue("I2", [line(1, "4")]))
    assert w.at() == (Decimal(0), Decimal("0.00"))  # nothing left behind by rounding
    assert w.issues["SH01/WH1#I2"]["booked"][0]["cost"] == Decimal("571.43")


def test_a_changed_issue_is_reversed_at_its_cost_then_valued_again() -> None:
    w = World()
    w.receive(receipt("R1", [line(1, "10", "1000.00")]))
    first = w.issue(issue("I1", [line(1, "4")]))
    w.receive(receipt("R2", [line(1, "4", "720.00")]))  # 6 @ 100 + 4 @ 180 = 10 @ 132
    changed = w.issue(issue("I1", [line(1, "5")], version=2, op="UPDATED", at=datetime(2026, 3, 20, 18, 0, tzinfo=UTC)))
    rev_entry, rev_voucher, entry, voucher = (o.value for o in changed.outputs)
    assert (rev_entry["entry_id"], rev_entry["amount"], rev_entry["reversal_of"], rev_entry["quantity"]) == (
        "MAT-I1-2-R-1", Decimal("-400.00"), "MAT-I1-1-1", Decimal(-4))
    assert rev_voucher["voucher_no"] == "MAT-I1-2-R" and rev_voucher["reversal_of"] == "MAT-I1-1"
    assert rev_voucher["posting_date"] == date(2026, 3, 21)  # the change day in Asia/Shanghai
    orig = first.outputs[1].value
    assert [(ln["debit"], ln["credit"]) for ln in rev_voucher["lines"]] == [(ln["credit"], ln["debit"]) for ln in orig["lines"]]
    # back to stock at 400: 14 t, 1720.00 (avg 122.857142...), then 5 t out at that average
    assert entry["amount"] == Decimal("614.29") and voucher["voucher_no"] == "MAT-I1-2"
    assert w.at() == (Decimal(9), Decimal("1105.71"))
    deleted = w.issue(issue("I1", [line(1, "5")], version=3, op="DELETED"))
    assert [o.key for o in deleted.outputs] == ["PRJ-1", "MAT-I1-3-R"]
    assert w.at() == (Decimal(14), Decimal("1720.00"))


def test_a_changed_receipt_takes_back_what_it_added() -> None:
    w = World()
    w.receive(receipt("R1", [line(1, "10", "1000.00")]))
    w.receive(receipt("R2", [line(1, "10", "1200.00")]))
    w.receive(receipt("R1", [line(1, "10", "1100.00")], version=2, op="UPDATED"))
    assert w.at() == (Decimal(20), Decimal("2300.00"))
    w.receive(receipt("R2", [], version=2, op="DELETED"))
    assert w.at() == (Decimal(10), Decimal("1100.00"))
    assert w.receive(receipt("R1", [line(1, "10", "1000.00")], version=1)).outcome == "skipped_stale"


def test_a_receipt_or_issue_delivered_again_is_counted_once() -> None:
    w = World()
    r1 = receipt("R1", [line(1, "10", "1000.00")])
    w.receive(r1)
    # the crash case: the moving average was written, the receipt's own state was not
    w.receipts.clear()
    w.receive(r1)
    assert w.at() == (Decimal(10), Decimal("1000.00"))
    # the other case: the receipt's state was written, the moving average was not
    w.costs.clear()
    w.receive(r1)
    assert w.at() == (Decimal(10), Decimal("1000.00"))
    i1 = issue("I1", [line(1, "4")])
    first = w.issue(i1)
    again = w.issue(i1)  # same version: re-sends what was recorded, does not take stock twice
    assert again.outcome == "reemitted" and [o.key for o in again.outputs] == [o.key for o in first.outputs]
    assert w.at() == (Decimal(6), Decimal("600.00"))
    before = w.at()
    w.costs[KEY] = {**w.costs[KEY], "qty": Decimal(10), "value": Decimal("1000.00"),
                    "applied": [a for a in w.costs[KEY]["applied"] if a != w.steps[-1]["meta"]["event_id"]]}  # lost write
    w.issue(i1)
    assert w.at() == before  # the recorded effect applied again


def test_no_cost_and_unknown_project_wait_then_dead_letter() -> None:
    w = World()
    missing = w.issue(issue("I1", [line(1, "4")]))
    assert isinstance(missing, Missing) and missing.key == f"cost:{KEY}" and "no goods receipt" in missing.message
    w.receive(receipt("R1", [line(1, "10", "1000.00")]))
    unknown = w.issue(issue("I2", [line(1, "1")], project="PRJ-9"))
    assert isinstance(unknown, Missing) and unknown.key == "project:PRJ-9"
    sales = w.issue(issue("I3", [line(1, "1")], project=None))  # not for a project: not F6's
    assert sales.outcome == "ignored" and w.at() == (Decimal(10), Decimal("1000.00"))


def test_bad_input_is_refused() -> None:
    w = World()
    assert isinstance(w.receive(receipt("R1", [line(1, "10")])), Reject)  # unpriced
    assert isinstance(w.receive(receipt("R1", [line(1, "-1", "5.00")])), Reject)
    w.receive(receipt("R2", [line(1, "10", "1000.00")]))
    assert isinstance(w.receive(receipt("R3", [line(1, "1", "5.00")], currency="USD")), Reject)
    neg = w.issue(issue("I1", [line(1, "-2")]))
    assert isinstance(neg, Reject) and neg.reason == "invalid_input"


def test_valuation_scope_warehouse_or_company() -> None:
    assert valuation_key("SH01", "WH1", "M", "warehouse") == "SH01/WH1/M"
    assert valuation_key("SH01", "WH1", "M", "company") == "SH01/*/M"
    w = World(MaterialCostMapping(valuation_scope="company"))
    w.receive(receipt("R1", [line(1, "10", "1000.00")], warehouse="WH1"))
    w.receive(receipt("R2", [line(1, "10", "2000.00")], warehouse="WH2"))
    res = w.issue(issue("I1", [line(1, "2")], warehouse="WH1"))
    assert res.outputs[0].value["amount"] == Decimal("300.00")  # pooled average 150
    per_wh = World()
    per_wh.receive(receipt("R1", [line(1, "10", "1000.00")], warehouse="WH1"))
    per_wh.receive(receipt("R2", [line(1, "10", "2000.00")], warehouse="WH2"))
    assert per_wh.issue(issue("I1", [line(1, "2")], warehouse="WH1")).outputs[0].value["amount"] == Decimal("200.00")


def test_lines_for_several_projects_one_balanced_voucher() -> None:
    w = World()
    w.projects["PRJ-2"] = ProjectState("PRJ-2", 1, "CREATED", "x", "SH01",
                                       intervals=tuple(start_interval([], "CC-PRJ-2", date(2026, 1, 1))[0]))  # fmt: skip
    w.receive(receipt("R1", [line(1, "10", "1000.00"), line(2, "3", "10.00", material="M-BOLT")]))
    res = w.issue(issue("I1", [line(1, "1"), line(2, "1", material="M-BOLT", project="PRJ-2")]))
    entries = [o.value for o in res.outputs if o.topic == COST_ENTRY_TOPIC]
    assert [(e["project"], e["cost_center"], e["amount"]) for e in entries] == [
        ("PRJ-1", "CC-PRJ-1", Decimal("100.00")), ("PRJ-2", "CC-PRJ-2", Decimal("3.33"))]
    voucher = res.outputs[-1].value
    assert voucher["lines"][-1]["credit"] == Decimal("103.33") and len(voucher["lines"]) == 3


def test_an_issue_after_the_project_closed_is_refused() -> None:
    from dataclasses import replace

    w = World()
    w.receive(receipt("R1", [line(1, "10", "1000.00")]))
    w.projects["PRJ-1"] = replace(PROJECT, closed_at=datetime(2026, 3, 14, 1, 0, tzinfo=UTC), closed_on=date(2026, 3, 14),
                                  closed_op="COMPLETED")  # fmt: skip
    late = w.issue(issue("I1", [line(1, "1")]))
    assert isinstance(late, Reject) and late.reason == "cost_center_closed"
    early = w.issue(issue("I2", [line(1, "1")], at=datetime(2026, 3, 14, 0, 30, tzinfo=UTC)))
    assert early.outcome == "emitted"


def test_a_step_applied_to_the_averages_but_not_to_the_issue_state_is_valued_as_the_first_time() -> None:
    """A crash that wrote the moving average (this issue took all 7 t) but not the issue's state: the step
    delivered again is valued from the cost the average recorded for it, not from what is left."""
    w = World()
    w.receive(receipt("R1", [line(1, "7", "1000.00")]))
    first = w.issue(issue("I1", [line(1, "3"), line(2, "4")]))
    assert [o.value["amount"] for o in first.outputs if o.topic == COST_ENTRY_TOPIC] == [Decimal("428.57"), Decimal("571.43")]
    del w.issues["SH01/WH1#I1"]
    again = w.step(w.steps[-1])
    assert [o.value for o in again.outputs] == [o.value for o in first.outputs]
    assert w.at() == (Decimal(0), Decimal("0.00"))


def test_the_step_order_decides_a_race_for_the_last_units_the_same_way_every_time() -> None:
    """Two issues for the last 10 t: whichever step comes first takes the stock at the average; the second
    finds nothing on hand and is dead-lettered (keyed by the step key, replayable once stock is there)."""
    w = World()
    w.receive(receipt("R1", [line(1, "10", "1000.00")]))
    a = route_issue(issue("IA", [line(1, "10")]), None, w.on_hand, w.projects.get, M)
    b = route_issue(issue("IB", [line(1, "10")]), None, w.on_hand, w.projects.get, M)  # routed before IA applied
    assert w._route(a).outcome == "emitted"
    refused = w._route(b)
    assert isinstance(refused, Reject) and refused.reason == "unknown_master_data" and KEY in refused.message
    w.receive(receipt("R2", [line(1, "5", "600.00")]))
    replayed = w.step(b.outputs[0].value)
    assert [o.value["amount"] for o in replayed.outputs if o.topic == COST_ENTRY_TOPIC] == [Decimal("1200.00")]  # the replay: 10 at 120


def test_an_issue_moved_to_another_warehouse_is_reversed_where_it_was() -> None:
    w = World()
    w.receive(receipt("R1", [line(1, "10", "1000.00")], warehouse="WH1"))
    w.receive(receipt("R2", [line(1, "10", "2000.00")], warehouse="WH2"))
    w.issue(issue("I1", [line(1, "2")], warehouse="WH1"))
    moved = w.issue(issue("I1", [line(1, "2")], version=2, op="UPDATED", warehouse="WH2"))
    assert [s["kind"] for s in w.steps[-2:]] == ["REVERSE", "ISSUE"]
    assert [(o.key, o.value.get("amount")) for o in moved.outputs if o.topic == COST_ENTRY_TOPIC] == [
        ("PRJ-1", Decimal("-200.00")), ("PRJ-1", Decimal("400.00"))]
    assert w.at() == (Decimal(10), Decimal("1000.00")) and w.at("SH01/WH2/M-STEEL") == (Decimal(8), Decimal("1600.00"))
