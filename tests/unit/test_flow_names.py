"""The live names of the flows worker: Faust app id (= consumer group and changelog prefix), table and
agent names, changelog topics, the metric label of every agent and the output topics. A deployment has
state stored under each of them; a rename orphans it, so any change here must come with a migration.

The flows are built from their specs (found through the component registry), declared on a real Faust
app, and nothing is contacted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bizbus.streams.runtime.agents import Runtime
from bizbus.streams.runtime.app import create_app
from bizbus.streams.runtime.plan import plan_flows
from bizbus.streams.runtime.register import declare, output_topics

from bizbus.catalogue import load_catalogue
from bizbus.host.pipeline import load_pipeline
from bizbus.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = load_catalogue(ROOT / "deploy" / "topics.yaml")
TYPES = {"cc": "cost-centers", "lab": "labor-cost", "oa": "approvals-to-erp", "mat": "material-cost",
         "bud": "budget-control", "atp": "stock-atp", "need": "material-need"}

PROJECT, EMPLOYEE, TIMESHEET = "bizbus.pm.project.v1", "bizbus.md.employee.v1", "bizbus.pm.timesheet.v1"
SUPPLIER, APPROVAL = "bizbus.md.supplier.v1", "bizbus.oa.approval.v1"
COST_CENTER, CROSSWALK = "bizbus.md.cost-center.v1", "bizbus.md.id-crosswalk.v1"
VOUCHER, ORDER = "bizbus.finance.voucher.v1", "bizbus.purchase.order.v1"
COST_ENTRY, RECEIPT, ISSUE = "bizbus.finance.cost-entry.v1", "bizbus.inventory.goods-receipt.v1", "bizbus.inventory.goods-issue.v1"
REQUISITION, BUDGET_ALERT, FREEZE = "bizbus.purchase.requisition.v1", "bizbus.finance.budget-alert.v1", "bizbus.oa.payment-freeze.v1"
MATERIAL, LEVEL, SALES, STEP = "bizbus.md.material.v1", "bizbus.inventory.level.v1", "bizbus.sales.order.v1", "bizbus.sales.atp-step.v1"
NEED = "bizbus.pm.material-need.v1"
DECISION, ALERT = "bizbus.sales.order-decision.v1", "bizbus.inventory.replenishment-alert.v1"
BUDGET_STEP, MATERIAL_STEP = "bizbus.finance.budget-step.v1", "bizbus.finance.material-cost-step.v1"

# table -> GlobalTable?
F1_TABLES = {"projects": True, "progress-project": False}
F2_TABLES = {"employees": True, "worklogs": False, "project-costs": False, "progress-employee": False,
             "progress-timesheet": False}  # fmt: skip
F4_TABLES = {"suppliers": True, "approvals": False, "progress-supplier": False, "progress-approval": False}
F6_TABLES = {"material-costs": False, "material-on-hand": True, "material-receipts": False, "material-issues": False,
             "material-issue-routes": False, "progress-goods-receipt": False, "progress-goods-issue": False,
             "progress-material-cost-step": False}  # fmt: skip
F7_TABLES = {"budget-projects": False, "budget-requisitions": False, "budget-orders": False,
             "progress-cost-entry": False, "progress-requisition": False, "progress-purchase-order": False,
             "progress-budget-project": False, "progress-budget-step": False}  # fmt: skip
F5_TABLES = {"materials": True, "stock-levels": True, "atp-orders": False, "atp-stock": False, "progress-material": False,
             "progress-level": False, "progress-order": False, "progress-atp-step": False}  # fmt: skip
F5_AGENTS = {"bizbus-material", "bizbus-level", "bizbus-order", "bizbus-atp-step"}
F3_TABLES = {"needs": False, "progress-material-need": False}

CASES = {
    # flows of the pipeline: (tables, agents, {source topic: (metric label, tables its batches write)}, outputs)
    ("lab",): ({**F1_TABLES, **F2_TABLES}, {"bizbus-project", "bizbus-employee", "bizbus-timesheet"},
               {PROJECT: ("master-data", ["projects"]), EMPLOYEE: ("master-data", ["employees"]),
                TIMESHEET: ("lab", ["worklogs", "project-costs"])}, [VOUCHER, COST_ENTRY]),
    ("oa",): ({**F1_TABLES, **F4_TABLES}, {"bizbus-project", "bizbus-supplier", "bizbus-approval"},
              {PROJECT: ("master-data", ["projects"]), SUPPLIER: ("master-data", ["suppliers"]),
               APPROVAL: ("oa", ["approvals"])}, [ORDER]),
    ("cc",): (F1_TABLES, {"bizbus-project"}, {PROJECT: ("cc", ["projects"])}, [COST_CENTER, CROSSWALK]),
    ("cc", "lab", "oa"): (
        {**F1_TABLES, **F2_TABLES, **F4_TABLES},
        {"bizbus-project", "bizbus-employee", "bizbus-timesheet", "bizbus-supplier", "bizbus-approval"},
        {PROJECT: ("cc", ["projects"]), EMPLOYEE: ("master-data", ["employees"]),
         TIMESHEET: ("lab", ["worklogs", "project-costs"]), SUPPLIER: ("master-data", ["suppliers"]),
         APPROVAL: ("oa", ["approvals"])},
        [COST_CENTER, CROSSWALK, VOUCHER, COST_ENTRY, ORDER]),
    ("mat",): ({**F1_TABLES, **F6_TABLES}, {"bizbus-project", "bizbus-goods-receipt", "bizbus-goods-issue",
                                             "bizbus-material-cost-step"},
               {PROJECT: ("master-data", ["projects"]), RECEIPT: ("mat", ["material-receipts"]),
                ISSUE: ("mat", ["material-issue-routes"]),
                MATERIAL_STEP: ("mat", ["material-costs", "material-on-hand", "material-issues"])}, [MATERIAL_STEP, COST_ENTRY, VOUCHER]),
    ("bud",): ({**F1_TABLES, **F7_TABLES}, {"bizbus-project", "bizbus-cost-entry", "bizbus-requisition",
                                             "bizbus-purchase-order", "bizbus-budget-project", "bizbus-budget-step"},
               {PROJECT: ("master-data", ["projects"]), COST_ENTRY: ("bud", []),
                REQUISITION: ("bud", ["budget-requisitions"]), ORDER: ("bud", ["budget-orders"]),
                f"{PROJECT}#budget-project": ("bud", []), BUDGET_STEP: ("bud", ["budget-projects"])},
               [BUDGET_STEP, BUDGET_ALERT, FREEZE]),
    ("atp",): (F5_TABLES, F5_AGENTS,
               {MATERIAL: ("master-data", ["materials"]), LEVEL: ("atp", ["stock-levels"]),
                SALES: ("atp", ["atp-orders"]), STEP: ("atp", ["atp-stock"])}, [STEP, DECISION, ALERT]),
    ("need",): ({**F5_TABLES, **F3_TABLES}, {*F5_AGENTS, "bizbus-material-need"},
                {MATERIAL: ("master-data", ["materials"]), LEVEL: ("master-data", ["stock-levels"]),
                 SALES: ("master-data", ["atp-orders"]), STEP: ("master-data", ["atp-stock"]),
                 NEED: ("need", ["needs"])}, [REQUISITION]),
    ("atp", "need"): ({**F5_TABLES, **F3_TABLES}, {*F5_AGENTS, "bizbus-material-need"},
                      {MATERIAL: ("master-data", ["materials"]), LEVEL: ("atp", ["stock-levels"]),
                       SALES: ("atp", ["atp-orders"]), STEP: ("atp", ["atp-stock"]), NEED: ("need", ["needs"])},
                      [STEP, DECISION, ALERT, REQUISITION]),
}  # fmt: skip


def declared(tmp_path: Path, pipeline: Path) -> tuple[Any, dict[str, Any], list[str]]:
    plan = plan_flows(load_pipeline(pipeline))
    app = create_app(Settings(data_dir=tmp_path), plan)
    rt = Runtime(app, CATALOGUE, None, None, {})  # type: ignore[arg-type]  # never set up: nothing contacted
    return app, declare(app, plan, CATALOGUE, rt), output_topics(plan)


@pytest.mark.parametrize("flows", list(CASES))
def test_tables_agents_labels_and_app_id_keep_their_live_names(tmp_path: Path, flows: tuple[str, ...]) -> None:
    tables, agents, labels, outputs = CASES[flows]
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("version: 1\nname: t\nflows:\n" + "".join(f"  - {{name: {n}, type: {TYPES[n]}}}\n" for n in flows))
    app, specs, outs = declared(tmp_path, pipeline)
    app_id = f"bizbus-flows-t-{'-'.join(flows)}"
    assert app.conf.id == app_id  # the consumer group id and the prefix of every changelog topic
    assert {name: type(t).__name__ == "GlobalTable" for name, t in app.tables.items()} == tables
    assert {name: t.changelog_topic.get_topic_name() for name, t in app.tables.items()} == {
        name: f"{app_id}-{name}-changelog" for name in tables
    }
    assert set(app.agents) == agents
    assert {topic: (s.flow, [t.table.name for t in s.tables]) for topic, s in specs.items()} == labels
    assert outs == outputs


def test_the_deployed_pipelines_keep_their_app_ids(tmp_path: Path) -> None:
    """The group the KEDA and HPA examples scale on (deploy/k8s) and the demo's."""
    for path, app_id in [
        (ROOT / "deploy" / "k8s" / "config" / "pipeline.yaml", "bizbus-flows-projects-to-erp-approvals-cost-centers-labor-cost"),
        (ROOT / "deploy" / "examples" / "projects-to-tryton.yaml",
         "bizbus-flows-projects-to-tryton-approvals-cost-centers-labor-cost"),
    ]:  # fmt: skip
        app, specs, _ = declared(tmp_path, path)
        assert app.conf.id == app_id and set(specs) == {PROJECT, EMPLOYEE, TIMESHEET, SUPPLIER, APPROVAL}


def test_the_component_specs_name_the_topics_a_flow_worker_reads_and_writes() -> None:
    from bizbus.host.components import COMPONENT_TYPES

    def topics(name: str) -> tuple[set[str], set[str]]:
        spec = COMPONENT_TYPES[name]
        config = spec.config_model()()
        assert spec.kind == "flow" and spec.load().flow.name == name  # type: ignore[attr-defined]
        return set(spec.reads(config)), set(spec.writes(config))

    assert topics("cost-centers") == ({PROJECT}, {COST_CENTER, CROSSWALK})
    assert topics("labor-cost") == ({PROJECT, EMPLOYEE, TIMESHEET}, {VOUCHER, COST_ENTRY})  # the projects are kept too
    assert topics("approvals-to-erp") == ({PROJECT, SUPPLIER, APPROVAL}, {ORDER})
    assert topics("material-cost") == ({PROJECT, RECEIPT, ISSUE, MATERIAL_STEP}, {MATERIAL_STEP, COST_ENTRY, VOUCHER})
    assert topics("budget-control") == ({PROJECT, COST_ENTRY, REQUISITION, ORDER, BUDGET_STEP}, {BUDGET_STEP, BUDGET_ALERT, FREEZE})
    assert topics("stock-atp") == ({MATERIAL, LEVEL, SALES, STEP}, {STEP, DECISION, ALERT})
    assert topics("material-need") == ({MATERIAL, LEVEL, SALES, STEP, NEED}, {REQUISITION})  # F5's tables are kept



def test_all_flows_in_one_worker_declare_without_a_name_clash(tmp_path: Path) -> None:
    """Agents are named by their topic's third part: purchase.order gets its own name (sales.order is ``order``)."""
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("version: 1\nname: t\nflows:\n" + "".join(f"  - {{name: {n}, type: {t}}}\n" for n, t in TYPES.items()))
    app, specs, outs = declared(tmp_path, pipeline)
    assert len(app.agents) == len(specs) == 18
    assert set(outs) == {COST_CENTER, CROSSWALK, VOUCHER, COST_ENTRY, ORDER, MATERIAL_STEP, BUDGET_STEP, BUDGET_ALERT, FREEZE,
                         STEP, DECISION, ALERT, REQUISITION}
