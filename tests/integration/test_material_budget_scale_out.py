"""F6 (material-cost) and F7 (budget-control) in TWO `bizbus flows run` workers of one consumer group, one of
them SIGKILLed while they work: the flows no longer assume one process (their states are owned by the
agents of the step topics bizbus.finance.material-cost-step.v1 and bizbus.finance.budget-step.v1).

Receipts of three materials in four warehouses (one price per material, so the moving averages do not
depend on any order), 160 goods issues of two lines each (two materials: one voucher per issue), spread
over four projects. Phase 1 only adds cost: one crossing up per project; worker 0 is SIGKILLed in the
middle of it (worker 1 takes its partitions over after the session timeout) and started again. Phase 2
deletes issues: one crossing down per project. Phase 3 is a budget change alone (ProjectChanged with a
lower budget, no cost record): the crossing up again, from F7's own agent on the project topic.

Asserted: every cost entry id has one content and the entries add up exactly per project; every issue
has one balanced voucher; the payment-freeze topic holds exactly PRJ/1/FREEZE, PRJ/1/UNFREEZE,
PRJ/2/FREEZE per project, each with one content; the last alert carries exactly the material amount;
nothing dead-lettered; both workers were assigned step-topic partitions. Takes 2 to 4 minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from bizbus.streams.material_cost.logic import is_balanced

from tests.integration.test_flow_material_budget import (
    ALERT,
    COST_ENTRY,
    DEAD,
    FREEZE,
    VOUCHER,
    doc_line,
    goods_issue,
    pipeline,
    read,
    receipt,
)
from tests.integration.test_flows_faust import PROJECT_ROOT, Env, FlowsWorker, env, project

__all__ = ["env"]  # the fixture
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]

PROJECTS = [f"PRJ-{n}" for n in range(4)]
WAREHOUSES = [f"WH{n}" for n in range(4)]
PRICES = {"M0": Decimal("12.50"), "M1": Decimal("7.25"), "M2": Decimal("100.00")}
ISSUES = 160
CONFIG = {"master_data_grace_seconds": 60, "stall_restart_seconds": 30}
AT = datetime(2026, 3, 14, 2, tzinfo=UTC)
STEP_TOPICS = ("bizbus.finance.material-cost-step.v1", "bizbus.finance.budget-step.v1")


class Worker(FlowsWorker):
    """A flows worker with its own log files and data dir (two of them share the test's broker)."""

    def __init__(self, env: Env, pipeline_path: Any, name: str) -> None:
        super().__init__(env, pipeline_path)
        self.name = name

    def start(self, **extra_env: str) -> None:
        self.starts += 1
        log = open(self.env.tmp / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115 (owned by the child)
        environ = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.env.bootstrap, "SCHEMA_REGISTRY_URL": self.env.registry_url,
                   "BIZBUS_HTTP_PORT": "0", "BIZBUS_ADMIN_PORT": "0", "BIZBUS_DATA_DIR": str(self.env.tmp / self.name),
                   "BIZBUS_LOG_LEVEL": "INFO", **extra_env}  # fmt: skip
        cmd = [sys.executable, "-m", "bizbus", "flows", "run", "--pipeline", str(self.pipeline)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=PROJECT_ROOT)
        log.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.env.tmp.glob(f"{self.name}.*.log")))  # fmt: skip

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.env.tmp.glob(f"{self.name}.*.log")))


def issue_of(n: int) -> tuple[str, str, list[tuple[str, Decimal]]]:
    """(project, warehouse, [(material, quantity)] two lines) of issue ``n``."""
    return PROJECTS[n % 4], WAREHOUSES[(n // 4) % 4], [(f"M{n % 3}", Decimal(1 + n % 5)), (f"M{(n + 1) % 3}", Decimal(1))]


def issue_record(n: int, version: int = 1, op: str = "CREATED") -> dict[str, Any]:
    p, wh, lines = issue_of(n)
    rec = goods_issue(f"I{n}", [doc_line(i + 1, m, str(q)) for i, (m, q) in enumerate(lines)], p, version=version,
                      op=op, at=AT if op == "DELETED" else datetime(2026, 3, 13, 2, tzinfo=UTC))  # fmt: skip
    return {**rec, "warehouse": wh}


def wait(cond: Any, timeout: float, what: str, workers: list[Worker]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            if w.proc is not None and w.proc.poll() is not None and w.proc.returncode != -9:
                w.start()  # stopped itself (stall watchdog): restarted as a supervisor would
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(w.logs() for w in workers))


def test_two_workers_exact_costs_and_one_command_per_crossing_with_a_sigkill(env: Env) -> None:
    cost_of = {n: sum((q * PRICES[m] for m, q in issue_of(n)[2]), Decimal(0)) for n in range(ISSUES)}
    material = {p: Decimal(0) for p in PROJECTS}
    for n in range(ISSUES):
        material[issue_of(n)[0]] += cost_of[n]
    # budgets in tens (the alert line x 1.1 is whole cents); phase 1 ends ≈ 20 % over
    budget = {p: ((material[p] / Decimal("12")).quantize(Decimal("1"), ROUND_DOWN) * 10).quantize(Decimal("0.01"))
              for p in PROJECTS}  # fmt: skip
    deleted: list[int] = []
    material2 = dict(material)
    for n in reversed(range(ISSUES)):
        p = issue_of(n)[0]
        if material2[p] > budget[p] * Decimal("0.9"):
            deleted.append(n)
            material2[p] -= cost_of[n]
    # phase 3: the budget whose alert line is just under the remaining cost
    budget3 = {p: ((material2[p] / Decimal("1.1")) - Decimal("1")).quantize(Decimal("0.01"), ROUND_DOWN) for p in PROJECTS}

    path = pipeline(env, ["cost-centers", "material-cost", "budget-control"], CONFIG)
    workers = [Worker(env, path, f"flows{i}") for i in range(2)]

    def distinct(topic: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for _, v in read(env, (topic,))[topic]:
            key = v.get("entry_id") or v.get("command_id") or v.get("voucher_no") or f"{v['state']}/{v['crossing']}/{v['project']}"
            out.setdefault(key, []).append(v)
        return out

    try:
        for w in workers:
            w.start()
        for p in PROJECTS:
            env.send("bizbus.pm.project.v1", project(p, 1, budget_amount=budget[p], currency="CNY"), p)
        for r, wh in enumerate(WAREHOUSES):
            lines = [doc_line(i + 1, m, "1000", price=str(price)) for i, (m, price) in enumerate(PRICES.items())]
            env.send("bizbus.inventory.goods-receipt.v1", {**receipt(f"R{r}", lines), "warehouse": wh}, f"R{r}")
        for n in range(ISSUES):
            env.send("bizbus.inventory.goods-issue.v1", issue_record(n), f"I{n}")
            if n == ISSUES // 2:  # worker 0 dies while both work; worker 1 takes its partitions over
                wait(lambda: len(distinct(COST_ENTRY)) > 20, 180, "the first cost entries", workers)
                workers[0].kill()
        expected1 = 2 * ISSUES
        wait(lambda: len(distinct(COST_ENTRY)) == expected1 and set(distinct(FREEZE)) == {f"{p}/1/FREEZE" for p in PROJECTS},
             300, "phase 1 (one worker left): every cost entry and one freeze per project", workers[1:])  # fmt: skip
        workers[0].start()
        time.sleep(8)  # it joins the group again (a rebalance)
        for n in deleted:
            env.send("bizbus.inventory.goods-issue.v1", issue_record(n, 2, "DELETED"), f"I{n}")
        wait(lambda: len(distinct(COST_ENTRY)) == expected1 + 2 * len(deleted)
             and {f"{p}/1/UNFREEZE" for p in PROJECTS} <= set(distinct(FREEZE)),
             300, "phase 2: every reversal, one unfreeze each", workers)  # fmt: skip
        for p in PROJECTS:  # a budget change alone
            env.send("bizbus.pm.project.v1", project(p, 2, budget_amount=budget3[p], currency="CNY"), p)
        wait(lambda: {f"{p}/2/FREEZE" for p in PROJECTS} <= set(distinct(FREEZE)), 180, "phase 3: the budget change",
             workers)  # fmt: skip
        time.sleep(3)
    finally:
        for w in workers:
            w.stop()

    entries = distinct(COST_ENTRY)
    for entry_id, copies in entries.items():
        assert all(c == copies[0] for c in copies), f"{entry_id} has two contents"
    assert len(entries) == 2 * (ISSUES + len(deleted))
    for p in PROJECTS:
        assert sum(c[0]["amount"] for c in entries.values() if c[0]["project"] == p) == material2[p], p
    vouchers = distinct(VOUCHER)
    assert len(vouchers) == ISSUES + len(deleted)
    assert all(is_balanced(c[0]) and all(v == c[0] for v in c) for c in vouchers.values())
    assert all(len(c[0]["lines"]) == 3 for k, c in vouchers.items() if not k.endswith("-R"))  # two materials, one voucher
    freezes = distinct(FREEZE)
    assert set(freezes) == {f"{p}/{n}/{a}" for p in PROJECTS for n, a in ((1, "FREEZE"), (1, "UNFREEZE"), (2, "FREEZE"))}
    for command_id, copies in freezes.items():
        assert all(c == copies[0] for c in copies), f"{command_id} has two contents"
    alerts = distinct(ALERT)
    for p in PROJECTS:
        last = alerts[f"OVER/2/{p}"][0]
        assert (last["material_amount"], last["budget_amount"]) == (material2[p], budget3[p]), p
    assert not read(env, (DEAD,))[DEAD]
    for w in workers:  # both owned step partitions at some point
        assert any(t in line for line in w.log_text().splitlines() if "newly assigned partitions" in line
                   for t in STEP_TOPICS), w.logs()
