"""The ``approvals-to-erp`` flow (F4): its tables, agents and component spec.

Tables: ``suppliers`` (a GlobalTable) and ``approvals`` (per approval instance: the version handled and
the order created), partitioned like the approval topic. It reads the ``projects`` table of the
cost-centers flow.
"""

from __future__ import annotations

from bizbus.streams.approvals.config import ApprovalsConfig
from bizbus.streams.approvals.logic import (
    APPROVAL_TOPIC,
    PURCHASE_ORDER_TOPIC,
    SUPPLIER_TOPIC,
    handle_approval,
    merge_supplier,
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
    stored_or_stale,
)

SUPPLIERS, APPROVALS = "suppliers", "approvals"


def _suppliers(ctx: FlowContext) -> Handler:
    suppliers = ctx.table(SUPPLIERS)
    return Handler(lambda r: stored_or_stale(merge_supplier(r, suppliers.get(r["code"]))),
                   lambda r, s: suppliers.set(r["code"], s), (SUPPLIERS,))  # fmt: skip


def _approvals(ctx: FlowContext) -> Handler:
    projects, suppliers, approvals, m = ctx.table(PROJECTS), ctx.table(SUPPLIERS), ctx.table(APPROVALS), ctx.mapping
    return Handler(lambda r: handle_approval(r, approvals.get(r["instance_id"]), projects.get, suppliers.get, m),
                   lambda r, s: approvals.set(r["instance_id"], s), (APPROVALS,))  # fmt: skip


FLOW = FlowSpec(
    "approvals-to-erp",
    ApprovalsConfig,
    tables=(TableSpec(SUPPLIERS, SUPPLIER_TOPIC, global_=True), TableSpec(APPROVALS, APPROVAL_TOPIC)),
    agents=(AgentDecl(SUPPLIER_TOPIC, _suppliers, master_data=True), AgentDecl(APPROVAL_TOPIC, _approvals)),
    outputs=(PURCHASE_ORDER_TOPIC,),
    needs=(COST_CENTERS,),
)
Flow = FLOW.component
SPEC = flow_component_spec(
    FLOW, __name__,
    "F4: an approved OA purchase request → purchase order; revoked after approval → the order is cancelled.", example="deploy/examples/projects-to-tryton.yaml",
)  # fmt: skip
