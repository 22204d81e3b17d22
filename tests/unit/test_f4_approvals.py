"""F4: ApprovalChanged → PurchaseOrder created on APPROVED, cancelled on REVOKED; ignored otherwise."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from bizbus.schemas import catalog
from bizbus.streams.approvals.config import ApprovalsConfig, ApprovalsMapping
from bizbus.streams.approvals.logic import PURCHASE_ORDER_TOPIC, handle_approval, merge_supplier
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.runtime.results import Missing, Reject, Result

from bizbus import lineage

M: ApprovalsMapping = ApprovalsConfig().loaded_mapping()  # the packaged sample mapping
FINISHED = datetime(2026, 3, 18, 16, 20, tzinfo=UTC)  # 19 March in Shanghai
FORM = {"供应商编码": "SUP-0001", "物料编码": "M-STEEL-20", "数量": "12.5", "单价": "4120.004", "项目编号": "PRJ-1",
        "用途": "二层桥架用料"}  # fmt: skip
PROJECTS = {
    "PRJ-1": ProjectState("PRJ-1", 1, "CREATED", "张江", "SH01"),
    "PRJ-2": ProjectState("PRJ-2", 1, "CREATED", "亦庄", "BJ02"),
}
SUPPLIERS = {"SUP-0001": {"code": "SUP-0001", "active": True, "version": 1}}


def approval(
    status: str = "APPROVED", version: int = 4, template: str = "PROC-PURCHASE-01", **over: Any
) -> dict[str, Any]:
    rec = {"meta": lineage.meta(lineage.event_id("dingtalk", "approval", "INST-1", version), "INST-1", "dingtalk", FINISHED),
           "instance_id": "INST-1", "template_code": template, "template_name": "采购申请", "status": status,
           "applicant": "E0042", "title": "王芳提交的采购申请", "amount": None, "currency": None, "project": None,
           "business_ref": "PR-0031", "form_fields": dict(FORM), "submitted_at": FINISHED,
           "finished_at": FINISHED if status != "PENDING" else None, "version": version}  # fmt: skip
    rec.update(over)
    return rec


def run(rec: dict[str, Any], state: dict[str, Any] | None = None, projects: dict | None = None,
        suppliers: dict | None = None, m: ApprovalsMapping = M) -> Any:  # fmt: skip
    verdict = handle_approval(rec, state, (PROJECTS if projects is None else projects).get,
                              (SUPPLIERS if suppliers is None else suppliers).get, m)  # fmt: skip
    if isinstance(verdict, Result):
        for out in verdict.outputs:
            assert out.topic == PURCHASE_ORDER_TOPIC and out.key == out.value["order_no"]
            catalog.validate("bizbus.purchase.PurchaseOrder", out.value)
    return verdict


def test_approved_creates_the_purchase_order() -> None:
    rec = approval()
    res = run(rec)
    assert res.outcome == "emitted"
    po = res.outputs[0].value
    assert {k: v for k, v in po.items() if k != "meta"} == {
        "op": "CREATED",
        "order_no": "OA-INST-1",
        "company": "SH01",
        "status": "APPROVED",
        "supplier": "SUP-0001",
        "order_date": date(2026, 3, 19),
        "delivery_date": None,
        "currency": "CNY",
        "exchange_rate": None,
        "project": "PRJ-1",
        "requisition_no": "PR-0031",
        "warehouse": None,
        "lines": [
            {
                "line_no": 1,
                "material": "M-STEEL-20",
                "material_name": None,
                "quantity": Decimal("12.5000"),
                "unit": "u",
                "unit_price": Decimal("4120.004000"),
                "amount": Decimal("51500.05"),
                "tax_rate": None,
                "project": "PRJ-1",
                "need_by": None,
                "description": "二层桥架用料",
            }
        ],
        "total_amount": Decimal("51500.05"),
        "tax_amount": None,
        "approval_instance_id": "INST-1",
        "version": 4,
    }  # fmt: skip  (12.5 × 4120.004 = 51500.05)
    assert po["meta"]["event_id"] == lineage.derived_id(rec["meta"]["event_id"], "po-create")
    assert (po["meta"]["correlation_id"], po["meta"]["causation_id"]) == ("INST-1", rec["meta"]["event_id"])


def test_same_input_twice_gives_identical_outputs() -> None:
    assert run(approval()) == run(approval())


def test_event_project_amount_and_currency_win_over_the_form() -> None:
    po = run(approval(project="PRJ-2", amount=Decimal("50000.00"), currency="USD")).outputs[0].value
    assert (po["project"], po["company"], po["total_amount"], po["currency"]) == (
        "PRJ-2",
        "BJ02",
        Decimal("50000.00"),
        "USD",
    )
    assert po["lines"][0]["amount"] == Decimal("50000.00")


def test_revoked_after_approval_cancels_the_same_order() -> None:
    created = run(approval())
    rec = approval(status="REVOKED", version=5)
    res = run(rec, created.state)
    po = res.outputs[0].value
    assert (po["op"], po["status"], po["order_no"], po["version"]) == ("DELETED", "CANCELLED", "OA-INST-1", 5)
    assert po["lines"] == created.outputs[0].value["lines"] and po["total_amount"] == Decimal("51500.05")
    assert po["meta"]["event_id"] == lineage.derived_id(rec["meta"]["event_id"], "po-cancel")
    assert run(approval(status="CANCELLED", version=6), res.state).outcome == "ignored"  # cancelled once


@pytest.mark.parametrize("status", ["REVOKED", "PENDING", "REJECTED", "CANCELLED"])
def test_statuses_without_an_order_are_ignored(status: str) -> None:
    res = run(approval(status=status))
    assert res.outcome == "ignored" and res.outputs == () and res.state["order"] is None


def test_a_second_approval_creates_nothing_again() -> None:
    created = run(approval())
    assert run(approval(version=9), created.state).outcome == "ignored"


def test_unknown_template_is_no_mapping_when_approved_and_ignored_otherwise() -> None:
    verdict = run(approval(template="PROC-UNKNOWN-9"))
    assert (
        isinstance(verdict, Reject) and verdict.reason == "no_mapping" and "PROC-UNKNOWN-9" in verdict.message
    )
    assert run(approval(template="PROC-UNKNOWN-9", status="PENDING")).outcome == "ignored"
    assert run(approval(template="PROC-LEAVE-01")).outcome == "ignored"  # listed in ignored_templates


def test_unknown_supplier_or_project_is_missing_master_data() -> None:
    assert run(approval(), suppliers={}) == Missing(
        "supplier:SUP-0001", "supplier SUP-0001 is unknown (no Supplier record seen)"
    )
    assert run(approval(), projects={}) == Missing(
        "project:PRJ-1", "project PRJ-1 is unknown (no ProjectChanged seen)"
    )


@pytest.mark.parametrize(
    ("field", "value"), [("数量", "abc"), ("单价", ""), ("数量", "-1"), ("供应商编码", " ")]
)
def test_a_broken_form_is_refused(field: str, value: str) -> None:
    verdict = run(approval(form_fields={**FORM, field: value}))
    assert isinstance(verdict, Reject) and verdict.reason == "invalid_form" and field in verdict.message


def test_versions_stale_equal_greater() -> None:
    created = run(approval(version=4))
    assert run(approval(version=3), created.state) == Result("skipped_stale")
    again = handle_approval(approval(version=4), created.state, {}.get, {}.get, M)
    assert again.outcome == "reemitted" and again.outputs == created.outputs
    assert run(approval(status="REVOKED", version=5), created.state).outcome == "emitted"


def test_revoke_seen_before_a_replayed_approval_leaves_no_order() -> None:
    revoked = run(approval(status="REVOKED", version=5))  # the approval itself was dead-lettered
    assert run(approval(version=4), revoked.state) == Result("skipped_stale")


def test_merge_supplier_keeps_the_latest_version() -> None:
    rec = {"code": "S1", "name": "宝钢", "active": True, "version": 3}
    state = merge_supplier(rec, None)
    assert state == {"code": "S1", "name": "宝钢", "active": True, "version": 3}
    assert merge_supplier({**rec, "version": 2}, state) is None
