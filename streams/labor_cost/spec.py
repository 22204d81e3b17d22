"""The ``labor-cost`` flow (F2): its tables, agents and component spec.

Tables: ``employees`` (a GlobalTable of dated rates), ``worklogs`` (per worklog: the version handled and
its voucher, kept as the bytes sent) and ``project-costs`` (the per-project roll-up of
:class:`~bizbus.streams.labor_cost.costs.ProjectCosts`), both partitioned like the timesheet topic (keyed
by project). It reads the ``projects`` table of the cost-centers flow.
"""

from __future__ import annotations

import logging
from typing import Any

from bizbus.streams.cost_centers.spec import FLOW as COST_CENTERS
from bizbus.streams.cost_centers.spec import PROJECTS
from bizbus.streams.labor_cost.config import LaborCostConfig
from bizbus.streams.labor_cost.costs import ProjectCosts
from bizbus.streams.labor_cost.logic import (
    COST_ENTRY_TOPIC,
    EMPLOYEE_TOPIC,
    TIMESHEET_TOPIC,
    VOUCHER_TOPIC,
    labor_verdict,
    merge_employee,
    stored_state,
)
from bizbus.streams.runtime.spec import (
    AgentDecl,
    FlowContext,
    FlowSpec,
    Handler,
    TableSpec,
    flow_component_spec,
    stored_or_stale,
)

from bizbus import metrics

log = logging.getLogger("bizbus.flows")

EMPLOYEES, WORKLOGS, PROJECT_COSTS = "employees", "worklogs", "project-costs"


def _employees(ctx: FlowContext) -> Handler:
    employees = ctx.table(EMPLOYEES)
    return Handler(lambda r: stored_or_stale(merge_employee(r, employees.get(r["code"]))),
                   lambda r, s: employees.set(r["code"], s), (EMPLOYEES,))  # fmt: skip


def _timesheets(ctx: FlowContext) -> Handler:
    projects, employees, worklogs = ctx.table(PROJECTS), ctx.table(EMPLOYEES), ctx.table(WORKLOGS)
    costs = ProjectCosts(ctx.table(PROJECT_COSTS))
    name, m, decode = ctx.name, ctx.mapping, ctx.decode
    config = ctx.config
    assert isinstance(config, LaborCostConfig)
    percent, cost_entries = config.budget_alert_percent, config.cost_entries
    metrics.init_component(name, metrics.BUDGET_ALERTS)

    def decide(r: dict[str, Any]) -> Any:
        return labor_verdict(r, worklogs.get(r["worklog_id"]), decode, projects.get, employees.get, m, cost_entries)

    def store(r: dict[str, Any], s: dict[str, Any]) -> None:
        previous = worklogs.get(r["worklog_id"])
        worklogs.set(r["worklog_id"], stored_state(s))
        alert = costs.update(r["project"], projects.get(r["project"]), r["worklog_id"], s.get("voucher"), percent,
                             previous)  # fmt: skip
        if alert is not None:
            metrics.BUDGET_ALERTS.labels(name).inc()
            log.warning("budget alert: %s", alert.message, extra={"component": name, "correlation_id": r["project"]})

    return Handler(decide, store, (WORKLOGS, PROJECT_COSTS))


FLOW = FlowSpec(
    "labor-cost",
    LaborCostConfig,
    tables=(TableSpec(EMPLOYEES, EMPLOYEE_TOPIC, global_=True), TableSpec(WORKLOGS, TIMESHEET_TOPIC),
            TableSpec(PROJECT_COSTS, TIMESHEET_TOPIC)),  # fmt: skip
    agents=(AgentDecl(EMPLOYEE_TOPIC, _employees, master_data=True), AgentDecl(TIMESHEET_TOPIC, _timesheets)),
    outputs=(VOUCHER_TOPIC, COST_ENTRY_TOPIC),
    needs=(COST_CENTERS,),
)
Flow = FLOW.component
SPEC = flow_component_spec(
    FLOW, __name__,
    "F2: timesheet hours × employee rate → balanced labor-cost voucher; a changed or deleted worklog is "
    "reversed (红字) first.", example="deploy/examples/projects-to-tryton.yaml",
)  # fmt: skip
