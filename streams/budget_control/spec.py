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

BUDGETS, REQUISITIONS, ORDERS = "budget-projects", "budget-requisitions", "budget-orders"


def _cost_entries(ctx: FlowContext) -> Handler:
    budgets, projects, m = ctx.table(BUDGETS), ctx.table(PROJECTS), ctx.mapping
    return Handler(lambda r: apply_cost_entry(r, budgets.get(r["project"]), projects.get, m),
                   lambda r, s: budgets.set(r["project"], s), (BUDGETS,))  # fmt: skip


def _documents(table_name: str, kind: str, number: str) -> Any:
    def build(ctx: FlowContext) -> Handler:
        docs, budgets, projects, m = ctx.table(table_name), ctx.table(BUDGETS), ctx.table(PROJECTS), ctx.mapping

        def store(r: dict[str, Any], s: dict[str, Any]) -> None:
            changed = s.pop(PROJECTS_OUT, None) or {}
            docs.set(r[number], s)
            for code, state in changed.items():
                budgets.set(code, state)

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
    "budget → budget alert OVER / BACK_UNDER and one FREEZE / UNFREEZE command per crossing.",
)  # fmt: skip
