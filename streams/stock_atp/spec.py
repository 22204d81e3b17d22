"""The ``stock-atp`` flow (F5): its tables, agents and component spec.

Tables: ``materials`` (a GlobalTable of the material master: unit, safety stock, category, cost),
``stock-levels`` (a GlobalTable: the newest InventoryLevel per ``<warehouse>/<material>``, also read by F3),
``atp-orders`` (per sales order: the version checked and the stock keys of its chain, partitioned like the
order topic) and ``atp-stock`` (per ``<warehouse>/<material>``: on hand, the holds of orders, the crossing
state and the applied step ids, partitioned like the internal topic ``bizbus.sales.atp-step.v1``: its one
writer is the step agent). See :mod:`~bizbus.streams.stock_atp.logic` for the design.
"""

from __future__ import annotations

from bizbus.streams.runtime.spec import (
    AgentDecl,
    FlowContext,
    FlowSpec,
    Handler,
    TableSpec,
    flow_component_spec,
    stored_or_stale,
)
from bizbus.streams.stock_atp.config import StockAtpConfig
from bizbus.streams.stock_atp.logic import (
    ALERT_TOPIC,
    DECISION_TOPIC,
    LEVEL_TOPIC,
    MATERIAL_TOPIC,
    ORDER_TOPIC,
    STEP_TOPIC,
    handle_level,
    handle_order,
    handle_step,
    merge_material,
    stock_key,
)

MATERIALS, STOCK_LEVELS, ATP_ORDERS, ATP_STOCK = "materials", "stock-levels", "atp-orders", "atp-stock"


def _materials(ctx: FlowContext) -> Handler:
    materials = ctx.table(MATERIALS)
    return Handler(lambda r: stored_or_stale(merge_material(r, materials.get(r["code"]))),
                   lambda r, s: materials.set(r["code"], s), (MATERIALS,))  # fmt: skip


def _levels(ctx: FlowContext) -> Handler:
    levels, emit = ctx.table(STOCK_LEVELS), ctx.emit
    return Handler(lambda r: handle_level(r, levels.get(stock_key(r["warehouse"], r["material"])), emit),
                   lambda r, s: levels.set(stock_key(r["warehouse"], r["material"]), s), (STOCK_LEVELS,))  # fmt: skip


def _orders(ctx: FlowContext) -> Handler:
    orders, levels, m, emit = ctx.table(ATP_ORDERS), ctx.table(STOCK_LEVELS), ctx.mapping, ctx.emit
    return Handler(lambda r: handle_order(r, orders.get(r["order_no"]), m, emit, levels.get),
                   lambda r, s: orders.set(r["order_no"], s), (ATP_ORDERS,))  # fmt: skip


def _steps(ctx: FlowContext) -> Handler:
    stock, materials, levels = ctx.table(ATP_STOCK), ctx.table(MATERIALS), ctx.table(STOCK_LEVELS)
    config = ctx.config
    assert isinstance(config, StockAtpConfig)
    limit = config.applied_limit
    return Handler(lambda r: handle_step(r, stock.get(r["stock_key"]), materials.get, limit, levels.get),
                   lambda r, s: stock.set(r["stock_key"], s), (ATP_STOCK,))  # fmt: skip


FLOW = FlowSpec(
    "stock-atp",
    StockAtpConfig,
    tables=(TableSpec(MATERIALS, MATERIAL_TOPIC, global_=True), TableSpec(STOCK_LEVELS, LEVEL_TOPIC, global_=True),
            TableSpec(ATP_ORDERS, ORDER_TOPIC), TableSpec(ATP_STOCK, STEP_TOPIC)),  # fmt: skip
    agents=(AgentDecl(MATERIAL_TOPIC, _materials, master_data=True), AgentDecl(LEVEL_TOPIC, _levels),
            AgentDecl(ORDER_TOPIC, _orders), AgentDecl(STEP_TOPIC, _steps)),  # fmt: skip
    outputs=(STEP_TOPIC, DECISION_TOPIC, ALERT_TOPIC),
)
Flow = FLOW.component
SPEC = flow_component_spec(
    FLOW, __name__,
    "F5: sales order → available to promise per warehouse and material (on hand − reserved − safety stock); "
    "an oversell is refused, an accepted order reserves, a cancelled one releases; one replenishment alert per "
    "crossing of the safety stock.", example="deploy/examples/jxc-atp-writeback.yaml",
)  # fmt: skip
