"""The ``material-cost`` flow (F6): its tables, agents and component spec.

Receipts and issues are re-keyed by step key (``<company>/<warehouse>``) onto the internal topic
``bizbus.finance.material-cost-step.v1`` (see :mod:`~bizbus.streams.material_cost.logic`); its one agent,
``bizbus-material-cost-step``, is the only writer of the moving averages and of the issues' booked states,
so the flow runs in any number of workers of one consumer group.

Tables: ``material-costs`` (per valuation key: quantity on hand, inventory value, currency, the step ids
applied and the costs of the issue steps among them; partitioned like the step topic, read and written by
the step agent only), ``material-on-hand`` (per valuation key: whether it has an average with stock; a
GlobalTable the step agent writes beside it, read by the issue router to wait for a receipt: a gate only,
the valuation reads the exact partitioned table),
``material-issues`` (per ``<step key>#<issue>``: the version handled, its booked lines, voucher and the
outputs sent; partitioned like the step topic), ``material-receipts`` (per receipt: the version routed
and what it booked) and ``material-issue-routes`` (per issue: the version and step key routed),
partitioned like their topics. It reads the ``projects`` table of the cost-centers flow.
"""

from __future__ import annotations

from typing import Any

from bizbus.streams.cost_centers.spec import FLOW as COST_CENTERS
from bizbus.streams.cost_centers.spec import PROJECTS
from bizbus.streams.material_cost.config import MaterialCostConfig
from bizbus.streams.material_cost.logic import (
    COST_ENTRY_TOPIC,
    ISSUE_TOPIC,
    MATERIALS,
    RECEIPT_TOPIC,
    STEP_TOPIC,
    VOUCHER_TOPIC,
    apply_issue_step,
    apply_receipt_step,
    average,
    issue_state_key,
    route_issue,
    route_receipt,
)
from bizbus.streams.runtime.results import Verdict
from bizbus.streams.runtime.spec import (
    AgentDecl,
    FlowContext,
    FlowSpec,
    Handler,
    TableSpec,
    flow_component_spec,
)

MATERIAL_COSTS, ON_HAND, ISSUES = "material-costs", "material-on-hand", "material-issues"
RECEIPTS, ROUTES = "material-receipts", "material-issue-routes"


def _receipts(ctx: FlowContext) -> Handler:
    receipts, m = ctx.table(RECEIPTS), ctx.mapping
    return Handler(lambda r: route_receipt(r, receipts.get(r["receipt_no"]), m),
                   lambda r, s: receipts.set(r["receipt_no"], s), (RECEIPTS,))  # fmt: skip


def _issues(ctx: FlowContext) -> Handler:
    routes, gate, projects, m = ctx.table(ROUTES), ctx.table(ON_HAND), ctx.table(PROJECTS), ctx.mapping
    return Handler(lambda r: route_issue(r, routes.get(r["issue_no"]), lambda k: bool((gate.get(k) or {}).get("on_hand")),
                                         projects.get, m),
                   lambda r, s: routes.set(r["issue_no"], s), (ROUTES,))  # fmt: skip


def _steps(ctx: FlowContext) -> Handler:
    issues, costs, gate, m = ctx.table(ISSUES), ctx.table(MATERIAL_COSTS), ctx.table(ON_HAND), ctx.mapping

    def decide(step: dict[str, Any]) -> Verdict:
        if step["kind"] == "RECEIPT":
            return apply_receipt_step(step, costs.get, m)
        return apply_issue_step(step, issues.get(issue_state_key(step)), costs.get, m)

    def store(step: dict[str, Any], s: dict[str, Any]) -> None:
        """The moving averages the step changed, and (issue steps) the issue's state at the step key."""
        s = dict(s)
        for k, v in (s.pop(MATERIALS, None) or {}).items():
            costs.set(k, v)
            gate.set(k, {"on_hand": average(v) is not None})
        if step["kind"] != "RECEIPT":
            issues.set(issue_state_key(step), s)

    return Handler(decide, store, (MATERIAL_COSTS, ON_HAND, ISSUES))


FLOW = FlowSpec(
    "material-cost",
    MaterialCostConfig,
    tables=(TableSpec(MATERIAL_COSTS, STEP_TOPIC), TableSpec(ON_HAND, STEP_TOPIC, global_=True), TableSpec(ISSUES, STEP_TOPIC),
            TableSpec(RECEIPTS, RECEIPT_TOPIC), TableSpec(ROUTES, ISSUE_TOPIC)),  # fmt: skip
    agents=(AgentDecl(RECEIPT_TOPIC, _receipts), AgentDecl(ISSUE_TOPIC, _issues), AgentDecl(STEP_TOPIC, _steps)),
    outputs=(STEP_TOPIC, COST_ENTRY_TOPIC, VOUCHER_TOPIC),
    needs=(COST_CENTERS,),
)
Flow = FLOW.component
SPEC = flow_component_spec(
    FLOW, __name__,
    "F6: goods receipts keep a moving average cost per material; a goods issue to a project → MATERIAL cost "
    "entry on its cost center + balanced voucher; a changed or deleted issue is reversed (红字) first.", example="deploy/examples/material-cost-and-budget.yaml",
)  # fmt: skip
