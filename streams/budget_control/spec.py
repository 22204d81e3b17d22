"""The ``budget-control`` flow (F7): its tables, agents and component spec.

Everything that changes a project's running cost or budget is re-keyed by project onto the internal topic
``bizbus.finance.budget-step.v1`` (BudgetStep): the cost-entry agent sends COST steps, the requisition and
purchase-order agents DOCUMENT steps (one per project a document touches), and the flow's own agent on the
project topic BUDGET steps. One agent, ``bizbus-budget-step``, owns the ``budget-projects`` table (per
project: labor, material, the open committed documents, the applied ids, the budget, whether it is over
and its crossing number, the outputs of its last transition), partitioned like the step topic: each
project has exactly one writer, and the step topic's order is the one order every replay sees, so any
number of workers in the consumer group compute the same crossings.

Tables: ``budget-projects`` (above), ``budget-requisitions`` and ``budget-orders`` (per document: the
version handled, its committed amount per project and the steps sent for it), partitioned like their
topics. The routers read the ``projects`` table of the cost-centers flow (an unknown project waits).

The project topic: F1's agent ``bizbus-project`` (left as it is) keeps the ``projects`` table; F7 reads
the same topic through an agent of its own, ``bizbus-budget-project`` (progress table
``progress-budget-project``): the Faust app delivers each record to both (the offset is committed once both
handled it). The agent of bizbus.purchase.order.v1 is ``bizbus-purchase-order`` (the sales order topic's
would be ``bizbus-order`` too).
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
    PROJECT_TOPIC,
    REQUISITION_TOPIC,
    STEP_TOPIC,
    apply_step,
    route_cost_entry,
    route_document,
    route_project,
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


def _nothing(_r: dict[str, Any], _s: dict[str, Any]) -> None:
    """A router keeps no state of its own."""


def _cost_entries(ctx: FlowContext) -> Handler:
    projects = ctx.table(PROJECTS)
    return Handler(lambda r: route_cost_entry(r, projects.get), _nothing, ())


def _projects(ctx: FlowContext) -> Handler:
    return Handler(route_project, _nothing, ())


def _documents(table_name: str, kind: str, number: str) -> Any:
    def build(ctx: FlowContext) -> Handler:
        docs, projects, m = ctx.table(table_name), ctx.table(PROJECTS), ctx.mapping
        return Handler(lambda r: route_document(r, kind, docs.get(r[number]), projects.get, m),
                       lambda r, s: docs.set(r[number], s), (table_name,))  # fmt: skip

    return build


def _steps(ctx: FlowContext) -> Handler:
    budgets, projects, m = ctx.table(BUDGETS), ctx.table(PROJECTS), ctx.mapping
    metrics.init_component(ctx.name, metrics.BUDGET_ALERTS)

    def store(r: dict[str, Any], state: dict[str, Any]) -> None:
        """Store a project state; a crossing up counts in bizbus_budget_alerts_total, both ways are logged."""
        code = r["project"]
        before = budgets.get(code) or {}
        budgets.set(code, state)
        if bool(before.get("over")) != bool(state.get("over")):
            kind = "OVER" if state.get("over") else "BACK_UNDER"
            if kind == "OVER":
                metrics.BUDGET_ALERTS.labels(ctx.name).inc()
            log.warning("budget %s: project %s, crossing %s", kind, code, state.get("crossing"),
                        extra={"component": ctx.name, "correlation_id": code})  # fmt: skip

    return Handler(lambda r: apply_step(r, budgets.get(r["project"]), projects.get, m), store, (BUDGETS,))


FLOW = FlowSpec(
    "budget-control",
    BudgetControlConfig,
    tables=(TableSpec(BUDGETS, STEP_TOPIC), TableSpec(REQUISITIONS, REQUISITION_TOPIC),
            TableSpec(ORDERS, ORDER_TOPIC)),  # fmt: skip
    agents=(AgentDecl(COST_ENTRY_TOPIC, _cost_entries),
            AgentDecl(REQUISITION_TOPIC, _documents(REQUISITIONS, "REQ", "requisition_no")),
            AgentDecl(ORDER_TOPIC, _documents(ORDERS, "PO", "order_no"), name="purchase-order"),
            AgentDecl(PROJECT_TOPIC, _projects, name="budget-project"),
            AgentDecl(STEP_TOPIC, _steps)),  # fmt: skip
    outputs=(STEP_TOPIC, ALERT_TOPIC, FREEZE_TOPIC),
    needs=(COST_CENTERS,),
)
Flow = FLOW.component
SPEC = flow_component_spec(
    FLOW, __name__,
    "F7: running cost per project (labor + material cost entries + committed requisitions and orders) vs its "
    "budget → budget alert OVER / BACK_UNDER and one FREEZE / UNFREEZE command per crossing; a budget change "
    "alone re-evaluates the crossing.", example="deploy/examples/material-cost-and-budget.yaml",
)  # fmt: skip
