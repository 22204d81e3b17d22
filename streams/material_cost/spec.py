"""The ``material-cost`` flow (F6): its tables, agents and component spec.

Tables: ``material-costs`` (per valuation key: quantity on hand, inventory value, currency and the input
event ids applied; written by receipts and issues, so its changelog partition is fixed by the key:
``by_key``), ``material-receipts`` (per receipt: the version handled and what it added) and ``material-issues`` (per issue:
the version handled, its booked lines, voucher and the outputs sent), partitioned like their topics. It
reads the ``projects`` table of the cost-centers flow. One worker (``replicas: 1``): the moving averages
are read by the agents of two topics.
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
    VOUCHER_TOPIC,
    handle_issue,
    handle_receipt,
)
from bizbus.streams.runtime.spec import (
    AgentDecl,
    FlowContext,
    FlowSpec,
    Handler,
    TableSpec,
    flow_component_spec,
)

MATERIAL_COSTS, RECEIPTS, ISSUES = "material-costs", "material-receipts", "material-issues"


def _split(table: Any, costs: Any, key: str, s: dict[str, Any]) -> None:
    """Store a document's state and the moving averages its verdict changed."""
    changed = s.pop(MATERIALS, None) or {}
    table.set(key, s)
    for k, v in changed.items():
        costs.set(k, v)


def _receipts(ctx: FlowContext) -> Handler:
    receipts, costs, m = ctx.table(RECEIPTS), ctx.table(MATERIAL_COSTS), ctx.mapping
    return Handler(lambda r: handle_receipt(r, receipts.get(r["receipt_no"]), costs.get, m),
                   lambda r, s: _split(receipts, costs, r["receipt_no"], s), (RECEIPTS, MATERIAL_COSTS))  # fmt: skip


def _issues(ctx: FlowContext) -> Handler:
    issues, costs, projects, m = ctx.table(ISSUES), ctx.table(MATERIAL_COSTS), ctx.table(PROJECTS), ctx.mapping
    return Handler(lambda r: handle_issue(r, issues.get(r["issue_no"]), costs.get, projects.get, m),
                   lambda r, s: _split(issues, costs, r["issue_no"], s), (ISSUES, MATERIAL_COSTS))  # fmt: skip


FLOW = FlowSpec(
    "material-cost",
    MaterialCostConfig,
    tables=(TableSpec(MATERIAL_COSTS, RECEIPT_TOPIC, by_key=True), TableSpec(RECEIPTS, RECEIPT_TOPIC),
            TableSpec(ISSUES, ISSUE_TOPIC)),  # fmt: skip
    agents=(AgentDecl(RECEIPT_TOPIC, _receipts), AgentDecl(ISSUE_TOPIC, _issues)),
    outputs=(COST_ENTRY_TOPIC, VOUCHER_TOPIC),
    needs=(COST_CENTERS,),
)
Flow = FLOW.component
SPEC = flow_component_spec(
    FLOW, __name__,
    "F6: goods receipts keep a moving average cost per material; a goods issue to a project → MATERIAL cost "
    "entry on its cost center + balanced voucher; a changed or deleted issue is reversed (红字) first.", example="deploy/examples/material-cost-and-budget.yaml",
)  # fmt: skip
