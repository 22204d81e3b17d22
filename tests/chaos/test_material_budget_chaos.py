"""Proof by violence for F6 (material-cost) and F7 (budget-control): the flows worker is SIGKILLed at
random moments while it works through goods receipts, issues and timesheets (and kills itself at random
right after a table write, before the sends: crash point ``flows.after-state``). Afterwards

* every cost entry id has one content, and per project the cost entries (deduplicated by entry_id) add up
  to exactly the expected labor and material cost;
* F7 counted each of them once: the alert of the last crossing carries exactly the expected labor,
  material and committed amounts;
* the payment-freeze topic holds exactly the commands PRJ/1/FREEZE, PRJ/1/UNFREEZE, PRJ/2/FREEZE per
  project (a command re-sent after a crash is identical: the OA side dedupes by command_id).

Deterministic despite the crashes: each material is received at one price, so its moving average does not
depend on the order of receipts and issues; phase 1 only adds cost (one crossing up per project), phase 2
only deletes issues (one crossing down), phase 3 adds one requisition that lifts each project exactly
0.01 over the alert line, which it crosses only if F7's total is exact. Takes 3 to 6 minutes
(measured on a shared 2-core machine: 480 issues + 120 worklogs, 10 SIGKILLs + 6 crash points, 17 worker starts,
4.6 min; 20 records on the command topic for the 12 commands, the extra 8 identical re-sends).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, date, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.test_flow_material_budget import (
    ALERT,
    COST_ENTRY,
    DEAD,
    FREEZE,
    doc_line,
    goods_issue,
    pipeline,
    read,
    receipt,
    requisition,
)
from tests.integration.test_flows_faust import Env, FlowsWorker, employee, env, project, wait_for, worklog

__all__ = ["env"]  # the fixture
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

PROJECTS = [f"PRJ-{n}" for n in range(4)]
PRICES = {"M0": Decimal("12.50"), "M1": Decimal("7.25"), "M2": Decimal("100.00")}
RECEIPTS = 30  # each: 1,000 of every material
ISSUES = 480
WORKLOGS = 120  # 2 h x 50.00
CONFIG = {"master_data_grace_seconds": 90, "stall_restart_seconds": 20}
AT = datetime(2026, 3, 14, 2, tzinfo=UTC)


GROUP = "bizbus-flows-f6f7-budget-control-cost-centers-labor-cost-material-cost"  # the worker's app id


def caught_up(env: Env, topic: str) -> bool:
    """Whether the worker committed every record of ``topic`` (it handled them all)."""
    c = Consumer({"bootstrap.servers": env.bootstrap, "group.id": GROUP, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in range(env.cat.get(topic).partitions)]
        committed = {tp.partition: tp.offset for tp in c.committed(parts, timeout=10)}
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in committed}
        return all(ends[p] == 0 or committed[p] >= ends[p] for p in committed)
    finally:
        c.close()


def issue_of(n: int) -> tuple[str, str, Decimal]:
    """(project, material, quantity) of issue ``n``."""
    return PROJECTS[n % 4], f"M{n % 3}", Decimal(1 + n % 5)


def test_cost_totals_exact_and_one_freeze_and_unfreeze_per_crossing_under_sigkill(env: Env) -> None:
    rng = random.Random(int(time.time()))
    labor = {p: Decimal(0) for p in PROJECTS}
    material = {p: Decimal(0) for p in PROJECTS}
    for n in range(WORKLOGS):
        labor[PROJECTS[n % 4]] += Decimal("100.00")
    cost_of: dict[int, Decimal] = {}
    for n in range(ISSUES):
        p, m, q = issue_of(n)
        cost_of[n] = q * PRICES[m]
        material[p] += cost_of[n]
    total1 = {p: labor[p] + material[p] for p in PROJECTS}
    # budgets in tens: the alert line (x 1.1) is then whole cents
    budget = {p: ((total1[p] / Decimal("12")).quantize(Decimal("1"), ROUND_DOWN) * 10).quantize(Decimal("0.01")) for p in PROJECTS}
    # phase 2: delete issues of each project (newest first) until it is at or below 90 % of its budget
    deleted: list[int] = []
    material2 = dict(material)
    for n in reversed(range(ISSUES)):
        p = issue_of(n)[0]
        if labor[p] + material2[p] > budget[p] * Decimal("0.9"):
            deleted.append(n)
            material2[p] -= cost_of[n]
    total2 = {p: labor[p] + material2[p] for p in PROJECTS}
    lift = {p: (budget[p] * Decimal("1.1") - total2[p] + Decimal("0.01")).quantize(Decimal("0.01")) for p in PROJECTS}
    assert all(v > 0 for v in lift.values())

    worker = FlowsWorker(env, pipeline(env, ["cost-centers", "labor-cost", "material-cost", "budget-control"], CONFIG))
    crash_log = env.tmp / "crashes.log"
    kills = 0

    def start() -> None:
        worker.start(BIZBUS_CRASHPOINTS="flows.after-state:0.0015", BIZBUS_CRASHPOINT_LOG=str(crash_log))

    def kill_now_and_then(i: int, every: int) -> None:
        """While producing: every ``every`` records, SIGKILL the worker (starting or working) and restart it."""
        nonlocal kills
        if i % every == every - 1:
            time.sleep(rng.uniform(0.5, 2.5))
            if worker.proc is not None and worker.proc.poll() is None:
                worker.kill()
                kills += 1
            start()

    def kill_while_working(times: int) -> None:
        """SIGKILL the worker ``times`` times, each once it is handling records again (new cost entries)."""
        nonlocal kills
        for _ in range(times):
            seen = len(distinct(COST_ENTRY))
            deadline = time.monotonic() + 90
            while len(distinct(COST_ENTRY)) == seen and time.monotonic() < deadline:
                if worker.proc is not None and worker.proc.poll() is not None:
                    start()
                time.sleep(0.3)
            time.sleep(rng.uniform(0.2, 1.5))
            if worker.proc is not None and worker.proc.poll() is None:
                worker.kill()
                kills += 1
            start()

    def distinct(topic: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for _, v in read(env, (topic,))[topic]:
            key = v.get("entry_id") or v.get("command_id") or f"{v['state']}/{v['crossing']}/{v['project']}"
            out.setdefault(key, []).append(v)
        return out

    def commands() -> set[str]:
        return set(distinct(FREEZE))

    start()
    try:
        env.send("bizbus.md.employee.v1", employee("E1", 1, "50.000000", date(2026, 1, 1)), "E1")
        for p in PROJECTS:
            env.send("bizbus.pm.project.v1", project(p, 1, budget_amount=budget[p], currency="CNY"), p)
        for r in range(RECEIPTS):
            lines = [doc_line(i + 1, m, "1000", price=str(price)) for i, (m, price) in enumerate(PRICES.items())]
            env.send("bizbus.inventory.goods-receipt.v1", receipt(f"R{r}", lines), f"R{r}")
        # phase 1: cost only goes up
        for n in range(ISSUES):
            p, m, q = issue_of(n)
            env.send("bizbus.inventory.goods-issue.v1", goods_issue(f"I{n}", [doc_line(1, m, str(q))], p), f"I{n}")
            if n < WORKLOGS:
                env.send("bizbus.pm.timesheet.v1", worklog(f"W{n}", PROJECTS[n % 4], "E1", "2.00", date(2026, 3, 13)),
                         PROJECTS[n % 4])  # fmt: skip
            kill_now_and_then(n, 120)
        kill_while_working(3)
        expected1 = ISSUES + WORKLOGS
        wait_for(lambda: len(distinct(COST_ENTRY)) == expected1 and commands() == {f"{p}/1/FREEZE" for p in PROJECTS},
                 420, "phase 1: every cost entry and one freeze per project", worker)  # fmt: skip
        # phase 2: cost only goes down
        for i, n in enumerate(deleted):
            p, m, q = issue_of(n)
            env.send("bizbus.inventory.goods-issue.v1", goods_issue(f"I{n}", [doc_line(1, m, str(q))], p, version=2,
                                                                     op="DELETED", at=AT), f"I{n}")  # fmt: skip
            kill_now_and_then(i, 60)
        kill_while_working(1)
        wait_for(lambda: len(distinct(COST_ENTRY)) == expected1 + len(deleted)
                 and {f"{p}/1/UNFREEZE" for p in PROJECTS} <= commands() and caught_up(env, COST_ENTRY),
                 420, "phase 2: every reversal counted, one unfreeze each", worker)  # fmt: skip
        # phase 3: one requisition per project lifts it exactly 0.01 over the line, if F7's total is exact
        for p in PROJECTS:
            env.send("bizbus.purchase.requisition.v1", requisition(f"PR-{p}", str(lift[p]), p), f"PR-{p}")
        kill_now_and_then(0, 1)
        wait_for(lambda: {f"{p}/2/FREEZE" for p in PROJECTS} <= commands(), 300, "phase 3: the second freeze", worker)
        time.sleep(3)
    finally:
        worker.stop()

    crashes = len(crash_log.read_text().splitlines()) if crash_log.exists() else 0
    entries = distinct(COST_ENTRY)
    for entry_id, copies in entries.items():
        assert all(c == copies[0] for c in copies), f"{entry_id} has two contents"
    assert len(entries) == ISSUES + WORKLOGS + len(deleted)
    for p in PROJECTS:
        mine = [c[0] for c in entries.values() if c[0]["project"] == p]
        assert sum(e["amount"] for e in mine if e["cost_type"] == "LABOR") == labor[p]
        assert sum(e["amount"] for e in mine if e["cost_type"] == "MATERIAL") == material2[p]
    freezes = distinct(FREEZE)
    assert set(freezes) == {f"{p}/{n}/{a}" for p in PROJECTS for n, a in ((1, "FREEZE"), (1, "UNFREEZE"), (2, "FREEZE"))}
    for command_id, copies in freezes.items():
        assert all(c == copies[0] for c in copies), f"{command_id} has two contents"
    alerts = distinct(ALERT)
    assert Counter(k.split("/")[0] + "/" + k.split("/")[1] for k in alerts) == {"OVER/1": 4, "BACK_UNDER/1": 4, "OVER/2": 4}
    for p in PROJECTS:
        last = alerts[f"OVER/2/{p}"][0]
        assert (last["labor_amount"], last["material_amount"], last["committed_amount"]) == (
            labor[p], material2[p], lift[p].quantize(Decimal("0.01"))), p
        assert last["running_amount"] == (budget[p] * Decimal("1.1")).quantize(Decimal("0.01")) + Decimal("0.01")
    assert not read(env, (DEAD,))[DEAD]
    print(f"SIGKILLs by the test: {kills}, crash points: {crashes}, worker starts: {worker.starts}, "
          f"freeze-topic records: {sum(len(c) for c in freezes.values())} for {len(freezes)} commands")
    assert kills + crashes >= 4
