"""The ``cost-centers`` flow (F1 + F8 close): its tables, agent and component spec.

It owns the ``projects`` table (a GlobalTable: the labor-cost and approvals flows read it as
:class:`~bizbus.streams.cost_centers.state.ProjectState`); a worker that runs one of those without this
flow still keeps the table, under the ``master-data`` label and sending nothing.
"""

from __future__ import annotations

from bizbus.streams.cost_centers.config import CostCentersConfig
from bizbus.streams.cost_centers.logic import COST_CENTER_TOPIC, CROSSWALK_TOPIC, PROJECT_TOPIC, apply_project
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.runtime.spec import (
    AgentDecl,
    FlowContext,
    FlowSpec,
    Handler,
    TableSpec,
    flow_component_spec,
)

PROJECTS = "projects"


def _projects(ctx: FlowContext) -> Handler:
    projects, m, emit = ctx.table(PROJECTS), ctx.mapping, ctx.emit
    return Handler(lambda r: apply_project(r, projects.get(r["project"]), m, emit),
                   lambda r, s: projects.set(r["project"], s), (PROJECTS,))  # fmt: skip


FLOW = FlowSpec(
    "cost-centers",
    CostCentersConfig,
    tables=(TableSpec(PROJECTS, PROJECT_TOPIC, global_=True, load=ProjectState.from_state),),
    agents=(AgentDecl(PROJECT_TOPIC, _projects),),
    outputs=(COST_CENTER_TOPIC, CROSSWALK_TOPIC),
)
Flow = FLOW.component
SPEC = flow_component_spec(
    FLOW, __name__,
    "F1 + F8: projects open, update and (on completion) close their cost center; dated project → cost "
    "center crosswalk.", example="deploy/examples/projects-to-tryton.yaml",
)  # fmt: skip
