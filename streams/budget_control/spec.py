"""The ``budget-control`` flow (F7): its tables, agents and component spec.

Tables: ``budget-projects`` (per project: labor, material, the committed documents, the cost entry ids
applied, whether it is over and its crossing number, the outputs of its last transition; written by the
agents of three topics, so its changelog partition is fixed by the key: ``by_key``),
``budget-requisitions`` and ``budget-orders`` (per document: the version handled and its committed amount
per project), partitioned like their topics. It reads the ``projects`` table of the cost-centers flow. One
worker (``replicas: 1``). The agent of bizbus.purchase.order.v1 is ``bizbus-purchase-order`` (the sales
order topic's would be ``bizbus-order`` too).
"""

from __future__ import annotations

import logging
from typing import Any

from bizbus.streams.budget_control.config import BudgetControlConfig
from bizbus.streams.budget_control.logic import (
    ALERT_TOPIC,
    COST_ENTRY_TOPIC,
    FREEZE_TOPIC,
    ORDER_TOPIC,
    PROJECTS_OUT,
    REQUISITION_TOPIC,
    apply_cost_entry,
    apply_document,
)
from bizbus.streams.cost_centers.spec import FLOW as COST_CENTERS
from bizbus.streams.cost_centers.spec import PROJECTS
from bizbus.streams.runtime.spec import (
    AgentDecl,
    FlowContext,
    FlowSpec,
    Handler,
    TableSpec,
    flow_component_spec,
)

from bizbus import metrics

log = logging.getLogger("bizbus.flows")

BUDGETS, REQUISITIONS, ORDERS = "budget-projects", "budget-requisitions", "budget-orders"


def _put(ctx: FlowContext, budgets: Any, code: str, state: dict[str, Any]) -> None:
    """Store a project state; a crossing up counts in bizbus_budget_alerts_total and both ways are logged."""
    before = budgets.get(code) or {}
    budgets.set(code, state)
    if bool(before.get("over")) != bool(state.get("over")):
        kind = "OVER" if state.get("over") else "BACK_UNDER"
        if kind == "OVER":
            metrics.BUDGET_ALERTS.labels(ctx.name).inc()
        log.warning("budget %s: project %s, crossing %s", kind, code, state.get("crossing"),
                    extra={"component": ctx.name, "correlation_id": code})  # fmt: skip


def _cost_entries(ctx: FlowContext) -> Handler:
    budgets, projects, m = ctx.table(BUDGETS), ctx.table(PROJECTS), ctx.mapping
    metrics.init_component(ctx.name, metrics.BUDGET_ALERTS)
    return Handler(lambda r: apply_cost_entry(r, budgets.get(r["project"]), projects.get, m),
                   lambda r, s: _put(ctx, budgets, r["project"], s), (BUDGETS,))  # fmt: skip


def _documents(table_name: str, kind: str, number: str) -> Any:
    def build(ctx: FlowContext) -> Handler:
        docs, budgets, projects, m = ctx.table(table_name), ctx.table(BUDGETS), ctx.table(PROJECTS), ctx.mapping

        def store(r: dict[str, Any], s: dict[str, Any]) -> None:
            changed = s.pop(PROJECTS_OUT, None) or {}
            docs.set(r[number], s)
            for code, state in changed.items():
                _put(ctx, budgets, code, state)

        return Handler(lambda r: apply_document(r, kind, docs.get(r[number]), budgets.get, projects.get, m), store,
                       (table_name, BUDGETS))  # fmt: skip

    return build


FLOW = FlowSpec(
    "budget-control",
    BudgetControlConfig,
    tables=(TableSpec(BUDGETS, COST_ENTRY_TOPIC, by_key=True), TableSpec(REQUISITIONS, REQUISITION_TOPIC),
            TableSpec(ORDERS, ORDER_TOPIC)),  # fmt: skip
    agents=(AgentDecl(COST_ENTRY_TOPIC, _cost_entries),
            AgentDecl(REQUISITION_TOPIC, _documents(REQUISITIONS, "REQ", "requisition_no")),
            AgentDecl(ORDER_TOPIC, _documents(ORDERS, "PO", "order_no"), name="purchase-order")),  # fmt: skip
    outputs=(ALERT_TOPIC, FREEZE_TOPIC),
    needs=(COST_CENTERS,),
)
Flow = FLOW.component
SPEC = flow_component_spec(
    FLOW, __name__,
    "F7: running cost per project (labor + material cost entries + committed requisitions and orders) vs its "
    "budget → budget alert OVER / BACK_UNDER and one FREEZE / UNFREEZE command per crossing.", example="deploy/examples/material-cost-and-budget.yaml",
)  # fmt: skip
