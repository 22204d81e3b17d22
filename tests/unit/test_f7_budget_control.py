"""F7: running cost (labor + material cost entries + committed documents) against the budget; crossing
detection with hysteresis; exactly one FREEZE / UNFREEZE per crossing, also when inputs come again."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from bizbus.schemas import catalog
from bizbus.streams.budget_control.config import BudgetControlMapping
from bizbus.streams.budget_control.logic import (
    ALERT_TOPIC,
    FREEZE_TOPIC,
    STEP_TOPIC,
    apply_step,
    crossing,
    document_amounts,
    prune_docs,
    route_cost_entry,
    route_document,
    route_project,
    running,
)
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.runtime.results import Missing, Reject, Result

from bizbus import lineage
from tests.step_routing import route_steps

M = BudgetControlMapping()
AT = datetime(2026, 3, 14, 2, 0, tzinfo=UTC)
PROJECT = ProjectState("PRJ-1", 1, "CREATED", "张江办公楼", "SH01", budget=Decimal("1000.00"), currency="CNY")


def cost(entry_id: str, amount: str, cost_type: str = "LABOR", project: str = "PRJ-1", currency: str = "CNY",
         reversal_of: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"meta": lineage.meta(lineage.event_id("bizbus", "cost", entry_id), project, "bizbus", AT),
            "entry_id": entry_id, "company": "SH01", "project": project, "cost_center": "CC-PRJ-1",
            "cost_type": cost_type, "amount": Decimal(amount), "currency": currency, "posting_date": date(2026, 3, 14),
            "source_ref": {"system": "bizbus", "document_type": "x", "document_no": entry_id, "line_no": None},
            "quantity": None, "unit": None, "rate": None, "employee": None, "material": None,
            "reversal_of": reversal_of, "description": None}  # fmt: skip


def doc_line(no: int, amount: str | None, project: str | None = None, qty: str = "1", price: str | None = None) -> dict[str, Any]:
    return {"line_no": no, "material": "M", "material_name": None, "quantity": Decimal(qty), "unit": "t",
            "unit_price": Decimal(price) if price else None, "amount": Decimal(amount) if amount else None,
            "tax_rate": None, "project": project, "need_by": None, "description": None}  # fmt: skip


def requisition(no: str, total: str | None, status: str = "APPROVED", version: int = 1, op: str = "CREATED",
                project: str | None = "PRJ-1", lines: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"meta": lineage.meta(lineage.event_id("bizbus", "req", no, version), no, "bizbus", AT), "op": op,
            "requisition_no": no, "company": "SH01", "status": status, "requester": None, "project": project,
            "cost_center": None, "request_date": date(2026, 3, 14), "currency": "CNY",
            "lines": lines if lines is not None else [doc_line(1, total)],
            "total_amount": Decimal(total) if total else None, "approval_instance_id": None, "reason": None,
            "version": version}  # fmt: skip


def order(no: str, total: str, status: str = "APPROVED", version: int = 1, op: str = "CREATED",
          requisition_no: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"meta": lineage.meta(lineage.event_id("bizbus", "po", no, version), no, "bizbus", AT), "op": op,
            "status": status, "order_no": no, "company": "SH01", "supplier": "S1", "order_date": date(2026, 3, 14),
            "delivery_date": None, "currency": "CNY", "exchange_rate": None, "project": "PRJ-1",
            "requisition_no": requisition_no, "warehouse": None, "lines": [doc_line(1, total)],
            "total_amount": Decimal(total), "tax_amount": None, "approval_instance_id": None, "version": version}  # fmt: skip


class World:
    """The flow's wiring without Faust: the routers send BudgetSteps, the step topic is a FIFO, the step agent
    (the one writer of each project's state) applies them in that order."""

    def __init__(self, m: BudgetControlMapping = M, project: ProjectState = PROJECT) -> None:
        self.m = m
        self.budgets: dict[str, dict[str, Any]] = {}
        self.docs: dict[str, dict[str, Any]] = {}
        self.projects = {project.project: project}
        self.sent: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []

    def _out(self, v: Any) -> Any:
        if isinstance(v, Result):
            for o in v.outputs:
                assert o.topic in (ALERT_TOPIC, FREEZE_TOPIC) and o.key == o.value["project"]
                catalog.validate("bizbus.finance.BudgetAlert" if o.topic == ALERT_TOPIC else "bizbus.oa.PaymentFreezeCommand",
                                 o.value)  # fmt: skip
                self.sent.append(o.value)
        return v

    def _route(self, v: Any) -> Any:
        """Apply the steps a router sent (tests/step_routing.route_steps)."""
        return route_steps(v, STEP_TOPIC, "bizbus.finance.BudgetStep", "project", self.steps, self.step)

    def step(self, step: dict[str, Any]) -> Any:
        s = apply_step(step, self.budgets.get(step["project"]), self.projects.get, self.m)
        if isinstance(s, Result) and s.state is not None:
            self.budgets[step["project"]] = s.state
        return self._out(s)

    def cost(self, e: dict[str, Any]) -> Any:
        return self._route(route_cost_entry(e, self.projects.get))

    def budget(self, p: dict[str, Any]) -> Any:
        return self._route(route_project(p))

    def doc(self, d: dict[str, Any], kind: str) -> Any:
        number = d["requisition_no"] if kind == "REQ" else d["order_no"]
        v = route_document(d, kind, self.docs.get(f"{kind}:{number}"), self.projects.get, self.m)
        if isinstance(v, Result) and v.state is not None:
            self.docs[f"{kind}:{number}"] = v.state
        return self._route(v)

    def commands(self) -> list[tuple[str, str]]:
        return [(c["command_id"], c["action"]) for c in self.sent if "command_id" in c]

    def totals(self) -> tuple[Decimal, ...]:
        return running(self.budgets.get("PRJ-1") or {})


def project_changed(budget: str | None, version: int, code: str = "PRJ-1") -> dict[str, Any]:
    return {"meta": lineage.meta(lineage.event_id("pm", "project", code, version), code, "pm", AT), "op": "UPDATED",
            "project": code, "company": "SH01", "budget_amount": Decimal(budget) if budget else None,
            "currency": "CNY", "version": version}  # fmt: skip


def test_crossing_rules_with_hysteresis() -> None:
    b = Decimal(1000)
    assert crossing(False, Decimal("1100.00"), b, M) is None  # at the line is not over it
    assert crossing(False, Decimal("1100.01"), b, M) == "OVER"
    assert crossing(True, Decimal("1090.00"), b, M) is None  # inside the hysteresis band: stays over
    assert crossing(True, Decimal("1080.00"), b, M) == "BACK_UNDER"
    assert crossing(False, Decimal("5000"), None, M) is None and crossing(False, Decimal("5000"), Decimal(0), M) is None
    no_band = BudgetControlMapping(alert_percent="10", hysteresis_percent="0")
    assert crossing(True, Decimal("1100.00"), b, no_band) == "BACK_UNDER"


def test_over_freezes_once_back_under_unfreezes_once_and_a_second_crossing_counts_on() -> None:
    w = World()
    w.cost(cost("LAB-1", "600.00"))
    w.cost(cost("MAT-1", "400.00", "MATERIAL"))
    assert w.commands() == []
    over = w.cost(cost("LAB-2", "150.00"))  # 1150 > 1100
    alert, command = (o.value for o in over.outputs)
    assert (alert["state"], alert["crossing"], alert["labor_amount"], alert["material_amount"], alert["running_amount"],
            alert["budget_amount"], alert["threshold_percent"]) == (
        "OVER", 1, Decimal("750.00"), Decimal("400.00"), Decimal("1150.00"), Decimal("1000.00"), Decimal("10.0000"))  # fmt: skip
    assert (command["command_id"], command["action"], command["alert_id"]) == ("PRJ-1/1/FREEZE", "FREEZE",
                                                                               alert["meta"]["event_id"])  # fmt: skip
    w.cost(cost("LAB-3", "10.00"))  # still over: nothing new
    w.cost(cost("LAB-2-R", "-150.00", reversal_of="LAB-2"))  # 1010: in the band (<= 1080 needed)... yes under
    w.cost(cost("MAT-2", "100.00", "MATERIAL"))  # 1110: over again → crossing 2
    w.cost(cost("MAT-2-R", "-100.00", "MATERIAL"))
    assert w.commands() == [("PRJ-1/1/FREEZE", "FREEZE"), ("PRJ-1/1/UNFREEZE", "UNFREEZE"),
                            ("PRJ-1/2/FREEZE", "FREEZE"), ("PRJ-1/2/UNFREEZE", "UNFREEZE")]  # fmt: skip
    assert [a["state"] for a in w.sent if "state" in a] == ["OVER", "BACK_UNDER", "OVER", "BACK_UNDER"]


def test_hysteresis_keeps_a_wavering_cost_frozen() -> None:
    w = World()
    w.cost(cost("A", "1101.00"))
    w.cost(cost("B", "-15.00"))  # 1086: above the back-under line 1080
    w.cost(cost("C", "20.00"))  # 1106
    w.cost(cost("D", "-20.00"))
    assert w.commands() == [("PRJ-1/1/FREEZE", "FREEZE")]
    w.cost(cost("E", "-6.00"))  # 1080: at the back-under line
    assert w.commands()[-1] == ("PRJ-1/1/UNFREEZE", "UNFREEZE")


def test_a_cost_entry_delivered_again_counts_once_and_resends_its_transition() -> None:
    w = World()
    w.cost(cost("A", "1000.00"))
    e = cost("B", "200.00")
    first = w.cost(e)
    again = w.cost(e)
    assert again.outcome == "reemitted" and again.outputs == first.outputs and again.state is None
    assert w.totals()[3] == Decimal("1200.00")
    assert w.cost(cost("A", "1000.00")).outcome == "skipped_stale"  # applied, caused nothing
    assert {c for c, _ in w.commands()} == {"PRJ-1/1/FREEZE"}


def test_the_same_crossing_decided_again_after_a_lost_state_has_the_same_identity() -> None:
    w = World()
    w.cost(cost("A", "1000.00"))
    before = dict(w.budgets["PRJ-1"])
    first = w.cost(cost("B", "200.00"))
    w.budgets["PRJ-1"] = before  # the state write was lost, the outputs went out
    second = w.cost(cost("B", "200.00"))
    assert [o.value for o in second.outputs] == [o.value for o in first.outputs]


def test_committed_requisitions_and_orders() -> None:
    w = World()
    w.doc(requisition("PR-1", "300.00", status="DRAFT"), "REQ")
    assert w.totals()[2] == Decimal("0.00")
    w.doc(requisition("PR-1", "300.00", status="APPROVED", version=2), "REQ")
    assert w.totals()[2] == Decimal("300.00")
    w.doc(order("PO-1", "320.00", requisition_no="PR-1"), "PO")  # the order replaces the requisition
    assert w.totals()[2] == Decimal("320.00")
    w.doc(requisition("PR-1", "310.00", status="APPROVED", version=3), "REQ")  # still covered by PO-1
    assert w.totals()[2] == Decimal("320.00")
    w.doc(order("PO-1", "320.00", status="CANCELLED", op="DELETED", version=2, requisition_no="PR-1"), "PO")
    assert w.totals()[2] == Decimal("310.00")  # the requisition counts again
    w.doc(requisition("PR-1", "310.00", status="CLOSED", version=4), "REQ")
    assert w.totals()[2] == Decimal("0.00")
    # the same version again changes nothing; an older one is stale
    w.doc(requisition("PR-2", "50.00"), "REQ")
    w.doc(requisition("PR-2", "50.00"), "REQ")
    assert w.totals()[2] == Decimal("50.00")
    assert w.doc(requisition("PR-1", "999.00", version=1), "REQ").outcome == "skipped_stale"


def test_committed_plus_costs_cross_and_the_order_closing_brings_it_back() -> None:
    w = World()
    w.cost(cost("L", "900.00"))
    over = w.doc(order("PO-1", "300.00"), "PO")
    assert [o.value.get("command_id") for o in over.outputs] == [None, "PRJ-1/1/FREEZE"]
    assert over.outputs[0].value["committed_amount"] == Decimal("300.00")
    w.doc(order("PO-1", "300.00", status="CLOSED", version=2), "PO")
    assert w.commands()[-1] == ("PRJ-1/1/UNFREEZE", "UNFREEZE")


def test_document_amounts_per_project() -> None:
    assert document_amounts(requisition("X", "100.00")) == {"PRJ-1": Decimal("100.00")}
    split = requisition("X", None, lines=[doc_line(1, None, "PRJ-1", qty="2", price="10.5"), doc_line(2, "7.00", "PRJ-2"),
                                          doc_line(3, "1.00")])  # fmt: skip
    assert document_amounts(split) == {"PRJ-1": Decimal("22.00"), "PRJ-2": Decimal("7.00")}
    assert document_amounts(requisition("X", "5.00", project=None)) == {}


def test_unknown_project_waits_other_currency_and_cost_types() -> None:
    w = World()
    assert isinstance(w.cost(cost("A", "1.00", project="PRJ-9")), Missing)
    assert isinstance(w.doc(requisition("PR-9", "1.00", project="PRJ-9"), "REQ"), Missing)
    w.cost(cost("A", "1.00"))
    assert isinstance(w.cost(cost("B", "1.00", currency="USD")), Reject)
    assert w.cost(cost("C", "5000.00", cost_type="OVERHEAD")).outcome == "ignored"
    assert w.commands() == []
    no_budget = World(project=ProjectState("PRJ-1", 1, "CREATED", "x", "SH01"))
    no_budget.cost(cost("A", "99999.00"))
    assert no_budget.commands() == [] and no_budget.totals()[0] == Decimal("99999.00")


def test_a_document_moved_to_another_project_leaves_the_first() -> None:
    w = World()
    w.projects["PRJ-2"] = ProjectState("PRJ-2", 1, "CREATED", "x", "SH01", budget=Decimal("100.00"), currency="CNY")
    w.doc(requisition("PR-1", "500.00"), "REQ")
    moved = w.doc(requisition("PR-1", "500.00", version=2, project="PRJ-2"), "REQ")
    assert w.totals()[2] == Decimal("0.00") and running(w.budgets["PRJ-2"])[2] == Decimal("500.00")
    assert [o.value["command_id"] for o in moved.outputs if o.topic == FREEZE_TOPIC] == ["PRJ-2/1/FREEZE"]


def test_a_budget_change_alone_raises_and_clears_the_alert() -> None:
    w = World()
    w.cost(cost("A", "1050.00"))  # under 1100
    assert w.commands() == []
    raised = w.budget(project_changed("900.00", 2))  # line 990 < 1050: over, with no cost record
    assert [o.value.get("command_id") for o in raised.outputs] == [None, "PRJ-1/1/FREEZE"]
    assert raised.outputs[0].value["budget_amount"] == Decimal("900.00")
    assert w.budget(project_changed("1.00", 1)).outcome == "skipped_stale"  # an older version changes nothing
    w.budget(project_changed("950.00", 3))  # back-under line 1026 < 1050: stays frozen
    assert w.commands() == [("PRJ-1/1/FREEZE", "FREEZE")]
    cleared = w.budget(project_changed("2000.00", 4))
    assert [o.value.get("command_id") for o in cleared.outputs] == [None, "PRJ-1/1/UNFREEZE"]
    assert w.budget(project_changed(None, 5)).outputs == ()  # no budget: never alerts
    assert w.step(w.steps[1]).outcome == "skipped_stale"  # the freezing step again: applied, not the last transition
    again = w.step(w.steps[4])  # the unfreezing step delivered again: the same outputs (the sink dedupes)
    assert again.outcome == "reemitted" and again.outputs == cleared.outputs
    assert w.commands() == [("PRJ-1/1/FREEZE", "FREEZE"), ("PRJ-1/1/UNFREEZE", "UNFREEZE"), ("PRJ-1/1/UNFREEZE", "UNFREEZE")]


def test_a_project_state_keeps_its_open_documents_and_a_bounded_id_list_only() -> None:
    w = World(BudgetControlMapping(applied_ids_kept=16))
    for i in range(60):
        w.doc(requisition(f"PR-{i}", "10.00"), "REQ")
        w.doc(requisition(f"PR-{i}", "10.00", status="CLOSED", version=2), "REQ")
        w.cost(cost(f"L-{i}", "1.00"))
    w.doc(requisition("PR-OPEN", "5.00"), "REQ")
    state = w.budgets["PRJ-1"]
    assert set(state["docs"]) == {"REQ:PR-OPEN"} and len(state["applied"]) <= 16
    assert w.totals()[2:] == (Decimal("5.00"), Decimal("65.00"))
    assert prune_docs({"REQ:A": {"amount": Decimal(0), "covered_by": "PO-1"}, "PO:B": {"amount": Decimal(0)}}) == {
        "REQ:A": {"amount": Decimal(0), "covered_by": "PO-1"}}
