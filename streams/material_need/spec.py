"""The ``material-need`` flow (F3): its tables, agents and component spec.

Table: ``needs`` (per need id: the version handled and its requisition), partitioned like the
material-need topic (keyed by project). It reads the ``materials`` and ``stock-levels`` GlobalTables of the
stock-atp flow (F5), which a worker that runs F3 alone keeps without sending anything.
"""

from __future__ import annotations

from bizbus.streams.material_need.config import MaterialNeedConfig
from bizbus.streams.material_need.logic import NEED_TOPIC, REQUISITION_TOPIC, handle_need
from bizbus.streams.runtime.spec import (
    AgentDecl,
    FlowContext,
    FlowSpec,
    Handler,
    TableSpec,
    flow_component_spec,
)
from bizbus.streams.stock_atp.spec import FLOW as STOCK_ATP
from bizbus.streams.stock_atp.spec import MATERIALS, STOCK_LEVELS

NEEDS = "needs"


def _needs(ctx: FlowContext) -> Handler:
    needs, materials, levels, m = ctx.table(NEEDS), ctx.table(MATERIALS), ctx.table(STOCK_LEVELS), ctx.mapping
    return Handler(lambda r: handle_need(r, needs.get(r["need_id"]), materials.get, levels.get, m),
                   lambda r, s: needs.set(r["need_id"], s), (NEEDS,))  # fmt: skip


FLOW = FlowSpec(
    "material-need",
    MaterialNeedConfig,
    tables=(TableSpec(NEEDS, NEED_TOPIC),),
    agents=(AgentDecl(NEED_TOPIC, _needs),),
    outputs=(REQUISITION_TOPIC,),
    needs=(STOCK_ATP,),
)
Flow = FLOW.component
SPEC = flow_component_spec(
    FLOW, __name__,
    "F3: a project's material need × free stock → a purchase requisition for the shortfall only; a changed "
    "need adjusts it (new version), a cancelled one cancels it.", example="deploy/examples/jxc-atp-writeback.yaml",
)  # fmt: skip
