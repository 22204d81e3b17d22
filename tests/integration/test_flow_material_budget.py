"""F6 (material-cost), F7 (budget-control) and F2's LABOR cost entries in a real Faust worker
(`bizbus flows run`, a subprocess) on the embedded Tansu broker; the test asserts the exact outputs.

A receipt makes a moving average, an issue to the project books it (MATERIAL cost entry + voucher), a
timesheet books labor (voucher + LABOR cost entry), an approved requisition is committed: together they
cross the budget line (OVER, one FREEZE). The worker is SIGKILLed; while it is down the issue is deleted
(reversal voucher and negative cost entry, from the recovered tables), which brings the project back under
(BACK_UNDER, one UNFREEZE). Then budget changes alone freeze (600) and unfreeze (1000) the project again
(crossing 2). An issue of a material without any receipt waits out the grace period and goes
to the dead letters with its key. Takes about a minute.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import yaml
from bizbus.streams.material_cost.logic import is_balanced
from confluent_kafka import Consumer, TopicPartition

from bizbus.kafka import read_until_quiet
from tests.integration.test_flows_faust import (
    Env,
    FlowsWorker,
    employee,
    env,
    meta,
    project,
    wait_for,
    worklog,
)

__all__ = ["env"]  # the fixture
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

T0 = datetime(2026, 3, 13, 2, 0, tzinfo=UTC)
FLOW_CONFIG = {"master_data_grace_seconds": 2, "stall_restart_seconds": 10}
VOUCHER, COST_ENTRY = "bizbus.finance.voucher.v1", "bizbus.finance.cost-entry.v1"
ALERT, FREEZE, DEAD = "bizbus.finance.budget-alert.v1", "bizbus.oa.payment-freeze.v1", "bizbus.ops.dead-letter.v1"
TOPICS = (VOUCHER, COST_ENTRY, ALERT, FREEZE, DEAD)


def read(env: Env, topics: tuple[str, ...] = TOPICS) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """(key, value) per topic, every partition from offset 0 until idle."""
    c = Consumer({"bootstrap.servers": env.bootstrap, "group.id": "f6f7-reader", "enable.auto.commit": False})
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {t: [] for t in topics}
    try:
        c.assign([TopicPartition(t, p, 0) for t in topics for p in range(env.cat.get(t).partitions)])
        for m in read_until_quiet(c, 1.0, poll=0.2):
            out[m.topic()].append(((m.key() or b"").decode(), env.serde.decode(m.value())))
    finally:
        c.close()
    return out


def doc_line(no: int, material: str, qty: str, amount: str | None = None, price: str | None = None) -> dict[str, Any]:
    return {"line_no": no, "material": material, "material_name": None, "quantity": Decimal(qty), "unit": "t",
            "unit_price": Decimal(price) if price else None, "amount": Decimal(amount) if amount else None,
            "tax_rate": None, "project": None, "need_by": None, "description": None}  # fmt: skip


def receipt(no: str, lines: list[dict[str, Any]], version: int = 1) -> dict[str, Any]:
    return {"meta": meta("erp", "receipt", no, version, no, T0), "op": "CREATED", "receipt_no": no,
            "company": "SH01", "warehouse": "WH1", "supplier": "S1", "purchase_order_no": None, "project": None,
            "posting_date": date(2026, 3, 13), "currency": "CNY", "lines": lines, "version": version}  # fmt: skip


def goods_issue(no: str, lines: list[dict[str, Any]], project_code: str = "PRJ-1", version: int = 1,
                op: str = "CREATED", at: datetime = T0) -> dict[str, Any]:  # fmt: skip
    return {"meta": meta("erp", "issue", no, version, no, at), "op": op, "issue_no": no, "company": "SH01",
            "warehouse": "WH1", "project": project_code, "cost_center": None, "recipient": None,
            "sales_order_no": None, "posting_date": date(2026, 3, 14), "currency": "CNY", "lines": lines,
            "version": version}  # fmt: skip


def requisition(no: str, total: str, project_code: str = "PRJ-1", status: str = "APPROVED", version: int = 1) -> dict[str, Any]:
    return {"meta": meta("bizbus", "requisition", no, version, no, T0), "op": "CREATED", "requisition_no": no,
            "company": "SH01", "status": status, "requester": None, "project": project_code, "cost_center": None,
            "request_date": date(2026, 3, 14), "currency": "CNY", "lines": [doc_line(1, "M-STEEL", "1", total)],
            "total_amount": Decimal(total), "approval_instance_id": None, "reason": None, "version": version}  # fmt: skip


def pipeline(env: Env, flows: list[str], config: dict[str, Any]) -> Any:
    path = env.tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "name": "f6f7", "flows": [
        {"name": f, "type": f, "config": config} for f in flows]}))  # fmt: skip
    return path


@pytest.fixture
def worker(env: Env) -> Iterator[FlowsWorker]:
    w = FlowsWorker(env, pipeline(env, ["cost-centers", "labor-cost", "material-cost", "budget-control"], FLOW_CONFIG))
    try:
        yield w
    finally:
        w.stop()


def test_material_cost_labor_and_committed_cross_the_budget_once_each_way(env: Env, worker: FlowsWorker) -> None:
    worker.start()
    env.send("bizbus.md.employee.v1", employee("E1", 1, "100.000000", date(2026, 1, 1)), "E1")
    env.send("bizbus.pm.project.v1", project("PRJ-1", 1, budget_amount=Decimal("1000.00"), currency="CNY"), "PRJ-1")
    env.send("bizbus.inventory.goods-receipt.v1", receipt("R1", [doc_line(1, "M-STEEL", "10", "1000.00")]), "R1")
    env.send("bizbus.inventory.goods-receipt.v1", receipt("R2", [doc_line(1, "M-STEEL", "10", price="130")]), "R2")
    wait_for(lambda: any(k == "CC-PRJ-1" for k, _ in read(env, ("bizbus.md.cost-center.v1",))["bizbus.md.cost-center.v1"]),
             90, "the project's cost center", worker)  # fmt: skip
    time.sleep(2)  # the receipts are handled (they send nothing)
    env.send("bizbus.inventory.goods-issue.v1", goods_issue("I1", [doc_line(1, "M-STEEL", "4")]), "I1")  # 4 x 115
    env.send("bizbus.pm.timesheet.v1", worklog("W1", "PRJ-1", "E1", "5.00", date(2026, 3, 13)), "PRJ-1")  # 500
    env.send("bizbus.purchase.requisition.v1", requisition("PR-1", "250.00"), "PR-1")  # 460 + 500 + 250 = 1210
    env.send("bizbus.inventory.goods-issue.v1", goods_issue("I9", [doc_line(1, "M-NONE", "1")]), "I9")
    wait_for(lambda: any(v["action"] == "FREEZE" for _, v in read(env)[FREEZE]) and read(env)[DEAD],
             90, "the freeze and the dead letter", worker)  # fmt: skip
    time.sleep(4)  # Faust commits (every 2.8 s): the next run must rely on its recovered tables
    worker.kill()
    # while no worker runs: the issue is deleted → reversal at its cost → 750 ≤ 1080: back under
    env.send("bizbus.inventory.goods-issue.v1", goods_issue("I1", [doc_line(1, "M-STEEL", "4")], version=2,
                                                             op="DELETED", at=datetime(2026, 3, 20, 18, tzinfo=UTC)), "I1")  # fmt: skip
    worker.start()
    wait_for(lambda: any(v["action"] == "UNFREEZE" for _, v in read(env)[FREEZE]), 90, "the unfreeze", worker)
    # a budget change alone (F7's own agent on the project topic): 750 > 600 x 1.1 freezes, 750 <= 1080 unfreezes
    env.send("bizbus.pm.project.v1", project("PRJ-1", 2, budget_amount=Decimal("600.00"), currency="CNY"), "PRJ-1")
    wait_for(lambda: "PRJ-1/2/FREEZE" in {v["command_id"] for _, v in read(env)[FREEZE]}, 90, "the budget's freeze", worker)
    env.send("bizbus.pm.project.v1", project("PRJ-1", 3, budget_amount=Decimal("1000.00"), currency="CNY"), "PRJ-1")
    wait_for(lambda: "PRJ-1/2/UNFREEZE" in {v["command_id"] for _, v in read(env)[FREEZE]}, 90, "the budget's unfreeze",
             worker)  # fmt: skip
    time.sleep(3)
    got = read(env)

    vouchers = {v["voucher_no"]: v for _, v in got[VOUCHER]}
    assert set(vouchers) == {"MAT-I1-1", "LAB-W1-1", "MAT-I1-2-R"}, worker.logs()
    assert all(is_balanced(v) for v in vouchers.values())
    mat = vouchers["MAT-I1-1"]
    assert [(ln["account_code"], ln["cost_center"], ln["project"], ln["debit"], ln["credit"]) for ln in mat["lines"]] == [
        ("5401.01", "CC-PRJ-1", "PRJ-1", Decimal("460.00"), Decimal("0.00")),
        ("1403", None, None, Decimal("0.00"), Decimal("460.00"))]  # fmt: skip
    rev = vouchers["MAT-I1-2-R"]
    assert (rev["reversal_of"], rev["posting_date"], rev["lines"][0]["credit"]) == ("MAT-I1-1", date(2026, 3, 21),
                                                                                    Decimal("460.00"))  # fmt: skip
    entries = {v["entry_id"]: v for _, v in got[COST_ENTRY]}
    assert {k: (v["cost_type"], v["amount"], v["cost_center"]) for k, v in entries.items()} == {
        "MAT-I1-1-1": ("MATERIAL", Decimal("460.00"), "CC-PRJ-1"),
        "LAB-W1-1": ("LABOR", Decimal("500.00"), "CC-PRJ-1"),
        "MAT-I1-2-R-1": ("MATERIAL", Decimal("-460.00"), "CC-PRJ-1"),
    }
    assert all(k == "PRJ-1" for k, _ in got[COST_ENTRY])
    alerts = {(v["state"], v["crossing"]): v for _, v in got[ALERT]}
    assert set(alerts) == {("OVER", 1), ("BACK_UNDER", 1), ("OVER", 2), ("BACK_UNDER", 2)}
    assert [(alerts[k]["budget_amount"], alerts[k]["running_amount"]) for k in (("OVER", 2), ("BACK_UNDER", 2))] == [
        (Decimal("600.00"), Decimal("750.00")), (Decimal("1000.00"), Decimal("750.00"))]
    over, under = alerts[("OVER", 1)], alerts[("BACK_UNDER", 1)]
    assert (over["labor_amount"], over["material_amount"], over["committed_amount"], over["running_amount"]) == (
        Decimal("500.00"), Decimal("460.00"), Decimal("250.00"), Decimal("1210.00"))
    assert (under["material_amount"], under["running_amount"]) == (Decimal("0.00"), Decimal("750.00"))
    commands = {v["command_id"]: v for _, v in got[FREEZE]}
    assert set(commands) == {"PRJ-1/1/FREEZE", "PRJ-1/1/UNFREEZE", "PRJ-1/2/FREEZE", "PRJ-1/2/UNFREEZE"}
    assert commands["PRJ-1/1/FREEZE"]["alert_id"] == over["meta"]["event_id"]
    # a command handled again after a restart is re-sent identical (the OA sink dedupes by command_id)
    for _, v in got[FREEZE]:
        assert v == commands[v["command_id"]]
    dls = [v for _, v in got[DEAD]]
    assert [(d["connector"], d["key"], d["error_type"]) for d in dls] == [
        ("material-cost", b"I9", "Permanent/unknown_master_data")]
    assert "SH01/WH1/M-NONE" in dls[0]["error_message"]
