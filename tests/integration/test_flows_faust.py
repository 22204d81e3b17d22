"""The flows as a real Faust worker (`bizbus flows run`, a subprocess) on the embedded Tansu broker.

Master data, timesheets and approvals are produced with the project's AvroSerde; the test asserts the
exact CostCenter / Voucher / PurchaseOrder outputs and the dead letters. The worker dies twice on the
way: once by its own crash point right after a table write and before the sends (SIGKILL), once by the
test's SIGKILL after it committed; the records produced while it is down need the recovered tables
(a reversal needs the worklog's voucher, a cancellation the approval's order). In the end no output id
appears with two different contents and every expected output exists (identical duplicates are allowed:
sinks dedupe).

A private broker, not the session one: the flows consume shared catalogue topics (timesheets) and write
dead letters other tests count. Takes about 60 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from bizbus.schemas import catalog
from bizbus.streams.runtime.recovery import true_end_offsets
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import catalogue, lineage
from bizbus.devstack.broker import EmbeddedBroker
from bizbus.devstack.procs import free_port
from bizbus.kafka import read_until_quiet
from bizbus.serde import AvroSerde
from bizbus.settings import PROJECT_ROOT

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

T0 = datetime(2026, 3, 13, 2, 0, tzinfo=UTC)
DONE_AT = datetime(2026, 6, 30, 9, 0, tzinfo=UTC)
FLOW_CONFIG = {"master_data_grace_seconds": 1, "stall_restart_seconds": 10}
OUTPUT_TOPICS = ("bizbus.md.cost-center.v1", "bizbus.md.id-crosswalk.v1", "bizbus.finance.voucher.v1",
                 "bizbus.purchase.order.v1", "bizbus.ops.dead-letter.v1")  # fmt: skip


@dataclass
class Env:
    bootstrap: str
    registry_url: str
    tmp: Path
    serde: AvroSerde
    producer: Producer
    cat: catalogue.Catalogue

    def send(self, topic: str, record: dict[str, Any], key: str) -> None:
        spec = self.cat.get(topic)
        value = self.serde.encoder(spec.subject, catalog.load(spec.value_schema))(record)
        self.producer.produce(topic, key=key.encode(), value=value, headers=lineage.headers(record["meta"]))
        assert self.producer.flush(15) == 0

    def read_all(self) -> list[tuple[str, bytes | None, dict[str, Any]]]:
        """Every record on the output topics: (topic, key, decoded value), all partitions from 0 until idle."""
        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "flows-test-reader",
                "enable.auto.commit": False,
            }
        )
        try:
            c.assign(
                [TopicPartition(t, p, 0) for t in OUTPUT_TOPICS for p in range(self.cat.get(t).partitions)]
            )
            return [(m.topic(), m.key(), self.serde.decode(m.value())) for m in read_until_quiet(c, 1.0, poll=0.2)]
        finally:
            c.close()


@pytest.fixture
def env(tmp_path: Path, registry: Any) -> Iterator[Env]:
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp_path / "broker")
    broker.start()
    try:
        cat = catalogue.load_catalogue(PROJECT_ROOT / "deploy" / "topics.yaml")
        states = catalogue.apply(AdminClient({"bootstrap.servers": broker.bootstrap_servers}), cat)
        assert not [s for s in states if s.action.startswith("FAILED")]
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True})
        yield Env(
            broker.bootstrap_servers, registry.url, tmp_path, AvroSerde({"url": registry.url}), producer, cat
        )
    finally:
        broker.stop()


class FlowsWorker:
    """`bizbus flows run` as a child process, logging to a file per start."""

    def __init__(self, env: Env, pipeline: Path) -> None:
        self.env, self.pipeline, self.starts = env, pipeline, 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **extra_env: str) -> None:
        self.starts += 1
        log = open(self.env.tmp / f"worker.{self.starts}.log", "wb")  # noqa: SIM115 (owned by the child)
        environ = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.env.bootstrap, "SCHEMA_REGISTRY_URL": self.env.registry_url,
                   "BIZBUS_HTTP_PORT": "0", "BIZBUS_ADMIN_PORT": "0", "BIZBUS_DATA_DIR": str(self.env.tmp / "data"), "BIZBUS_LOG_LEVEL": "INFO",
                   **extra_env}  # fmt: skip
        cmd = [sys.executable, "-m", "bizbus", "flows", "run", "--pipeline", str(self.pipeline)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=PROJECT_ROOT)
        log.close()

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.logs()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-4000:]
                         for p in sorted(self.env.tmp.glob("worker.*.log")))  # fmt: skip


def wait_for(cond: Callable[[], bool], timeout: float, what: str, worker: FlowsWorker) -> None:
    """Wait for ``cond``; a worker that stopped itself (stall watchdog, exit code 3) is restarted like a
    supervisor would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc is not None and worker.proc.poll() is not None:
            worker.start()
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{worker.logs()}")


# -- records ----------------------------------------------------------------------------------------------


def meta(system: str, entity: str, key: str, version: int, corr: str, at: datetime) -> dict[str, Any]:
    return lineage.meta(lineage.event_id(system, entity, key, version), corr, system, at)


def employee(code: str, version: int, rate: str, start: date) -> dict[str, Any]:
    return {"meta": meta("hr", "employee", code, version, code, T0), "code": code, "name": code, "email": None,
            "department": None, "cost_center": None, "job_title": None, "hourly_cost_rate": Decimal(rate),
            "currency": "CNY", "valid_from": start, "valid_to": None, "active": True, "version": version}  # fmt: skip


def supplier(code: str) -> dict[str, Any]:
    return {"meta": meta("kingdee", "supplier", code, 1, code, T0), "code": code, "name": "上海宝钢", "short_name": None,
            "tax_id": None, "country": None, "contact_name": None, "contact_phone": None, "bank_name": None,
            "bank_account": None, "currency": None, "payment_terms": None, "valid_from": date(2020, 1, 1),
            "valid_to": None, "active": True, "version": 1}  # fmt: skip


def project(code: str, version: int, op: str = "CREATED", at: datetime = T0, **over: Any) -> dict[str, Any]:
    rec = {"meta": meta("jira", "project", code, version, code, at), "op": op, "project": code, "name": "张江办公楼",
           "company": "SH01", "source_status": None, "manager": "E1", "customer": None, "cost_center": None,
           "planned_start": date(2026, 1, 5), "planned_end": None, "actual_end": None, "budget_amount": None,
           "currency": None, "version": version}  # fmt: skip
    rec.update(over)
    return rec


def worklog(wid: str, prj: str, emp: str, hours: str, day: date, version: int = 1, op: str = "CREATED",
            at: datetime = T0) -> dict[str, Any]:  # fmt: skip
    return {"meta": meta("jira", "worklog", wid, version, prj, at), "op": op, "worklog_id": wid, "project": prj,
            "task": None, "employee": emp, "work_date": day, "hours": Decimal(hours), "billable": True,
            "description": None, "version": version}  # fmt: skip


def approval(status: str, version: int) -> dict[str, Any]:
    form = {
        "供应商编码": "S1",
        "物料编码": "M-STEEL-20",
        "数量": "3",
        "单价": "10.005",
        "项目编号": "PRJ-1",
        "用途": "桥架",
    }
    return {"meta": meta("dingtalk", "approval", "A1", version, "A1", T0), "instance_id": "A1",
            "template_code": "PROC-PURCHASE-01", "template_name": "采购申请", "status": status, "applicant": "E1",
            "title": "采购申请", "amount": None, "currency": None, "project": None, "business_ref": None,
            "form_fields": form, "submitted_at": T0, "finished_at": T0, "version": version}  # fmt: skip


# -- the test ---------------------------------------------------------------------------------------------


def by_key(
    records: list[tuple[str, bytes | None, dict[str, Any]]], topic: str
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for t, key, value in records:
        if t == topic:
            out.setdefault((key or b"").decode(), []).append(value)
    return out


def vouchers(env: Env) -> dict[str, list[dict[str, Any]]]:
    return by_key(env.read_all(), "bizbus.finance.voucher.v1")


def dead_letters(env: Env) -> dict[str, dict[str, Any]]:
    """Dead letters by the worklog / instance id of their original record."""
    out = {}
    for t, _key, value in env.read_all():
        if t == "bizbus.ops.dead-letter.v1":
            original = env.serde.decode(value["value"])
            out[original.get("worklog_id") or original.get("instance_id")] = value
    return out


def lines(v: dict[str, Any]) -> list[tuple[str, str | None, Decimal, Decimal]]:
    return [(ln["account_code"], ln["cost_center"], ln["debit"], ln["credit"]) for ln in v["lines"]]


def test_flows_end_to_end_with_crashes(env: Env) -> None:
    pipeline = env.tmp / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"version": 1, "name": "it", "flows": [
        {"name": "cost-centers", "type": "cost-centers", "config": FLOW_CONFIG},
        {"name": "labor-cost", "type": "labor-cost", "config": FLOW_CONFIG},
        {"name": "approvals", "type": "approvals-to-erp", "config": FLOW_CONFIG},
    ]}))  # fmt: skip
    worker = FlowsWorker(env, pipeline)
    crash_log = env.tmp / "crashes.log"
    # run 1 dies by SIGKILL at the 8th record it handles, after the table write and before the sends
    worker.start(BIZBUS_CRASHPOINTS="flows.after-state:@8", BIZBUS_CRASHPOINT_LOG=str(crash_log))
    try:
        # phase A: master data (6 records), then what needs it
        env.send("bizbus.md.employee.v1", employee("E1", 1, "123.456789", date(2026, 1, 1)), "E1")
        env.send("bizbus.md.employee.v1", employee("E2", 1, "200.000000", date(2026, 1, 1)), "E2")
        env.send("bizbus.md.employee.v1", employee("E2", 2, "250.000000", date(2026, 7, 1)), "E2")
        env.send("bizbus.md.supplier.v1", supplier("S1"), "S1")
        env.send("bizbus.pm.project.v1", project("PRJ-1", 1), "PRJ-1")
        env.send("bizbus.pm.project.v1", project("PRJ-2", 1, cost_center="CC-SPECIAL"), "PRJ-2")
        wait_for(lambda: {"CC-PRJ-1", "CC-SPECIAL"} <= set(by_key(env.read_all(), "bizbus.md.cost-center.v1")),
                 90, "the cost centers of phase A", worker)  # fmt: skip
        env.send("bizbus.pm.timesheet.v1", worklog("W1", "PRJ-1", "E1", "7.50", date(2026, 3, 13)), "PRJ-1")
        env.send("bizbus.pm.timesheet.v1", worklog("W2", "PRJ-2", "E2", "8.00", date(2026, 7, 2)), "PRJ-2")
        env.send("bizbus.pm.timesheet.v1", worklog("W9", "PRJ-9", "E1", "1.00", date(2026, 3, 13)), "PRJ-9")
        env.send("bizbus.oa.approval.v1", approval("APPROVED", 2), "A1")
        assert worker.proc is not None
        worker.proc.wait(60)  # the crash point fires
        assert "flows.after-state" in crash_log.read_text(), worker.logs()

        worker.start()  # run 2: recovers, re-processes what was not committed
        wait_for(lambda: {"LAB-W1-1", "LAB-W2-1"} <= set(vouchers(env)) and "W9" in dead_letters(env)
                 and "OA-A1" in by_key(env.read_all(), "bizbus.purchase.order.v1"), 90, "phase A outputs", worker)  # fmt: skip
        time.sleep(4)  # let Faust commit (every 2.8 s): run 3 must then rely on its recovered tables
        worker.kill()

        # phase B, produced while no worker runs: needs the recovered worklog, approval and project state
        env.send("bizbus.pm.timesheet.v1", worklog("W1", "PRJ-1", "E1", "8.00", date(2026, 3, 13), version=2,
                                                   op="UPDATED", at=datetime(2026, 3, 20, 18, 0, tzinfo=UTC)), "PRJ-1")  # fmt: skip
        env.send("bizbus.oa.approval.v1", approval("REVOKED", 3), "A1")
        env.send("bizbus.pm.project.v1", project("PRJ-1", 2, op="COMPLETED", at=DONE_AT, actual_end=date(2026, 6, 30)),
                 "PRJ-1")  # fmt: skip
        worker.start()  # run 3
        wait_for(lambda: {"LAB-W1-2-R", "LAB-W1-2"} <= set(vouchers(env))
                 and len(by_key(env.read_all(), "bizbus.purchase.order.v1")["OA-A1"]) >= 2
                 and any(not v["active"] for v in by_key(env.read_all(), "bizbus.md.cost-center.v1")["CC-PRJ-1"]),
                 90, "phase B outputs", worker)  # fmt: skip

        # phase C, after the completion is known: before it still posts, after it is refused
        env.send("bizbus.pm.timesheet.v1", worklog("W4", "PRJ-1", "E1", "1.00", date(2026, 6, 29),
                                                   at=datetime(2026, 6, 29, 9, 0, tzinfo=UTC)), "PRJ-1")  # fmt: skip
        env.send("bizbus.pm.timesheet.v1", worklog("W3", "PRJ-1", "E1", "2.00", date(2026, 7, 1),
                                                   at=datetime(2026, 7, 1, 9, 0, tzinfo=UTC)), "PRJ-1")  # fmt: skip
        wait_for(
            lambda: "LAB-W4-1" in vouchers(env) and "W3" in dead_letters(env), 60, "phase C outputs", worker
        )
    finally:
        worker.stop()
    check_outputs(env, worker)


def check_outputs(env: Env, worker: FlowsWorker) -> None:
    records = env.read_all()
    # 1. no id with two contents, no business key with two contents
    seen: dict[str, str] = {}
    for topic, _key, value in records:
        if topic == "bizbus.ops.dead-letter.v1":
            continue
        text = json.dumps(value, default=str, sort_keys=True)
        assert seen.setdefault(value["meta"]["event_id"], text) == text, (
            f"{value['meta']['event_id']} differs"
        )
    vs = by_key(records, "bizbus.finance.voucher.v1")
    for number, copies in vs.items():
        assert len({json.dumps(c, default=str, sort_keys=True) for c in copies}) == 1, (
            f"{number} has two contents"
        )
    # 2. exactly the expected vouchers, with the expected amounts
    assert set(vs) == {"LAB-W1-1", "LAB-W2-1", "LAB-W1-2-R", "LAB-W1-2", "LAB-W4-1"}, worker.logs()
    w1 = vs["LAB-W1-1"][0]
    assert (w1["company"], w1["posting_date"], w1["currency"]) == ("SH01", date(2026, 3, 13), "CNY")
    assert lines(w1) == [("6601", "CC-PRJ-1", Decimal("925.93"), Decimal("0.00")),
                         ("2211", None, Decimal("0.00"), Decimal("925.93"))]  # fmt: skip
    assert lines(vs["LAB-W2-1"][0]) == [
        ("6601", "CC-SPECIAL", Decimal("2000.00"), Decimal("0.00")),
        ("2211", None, Decimal("0.00"), Decimal("2000.00")),
    ]  # fmt: skip  (8 h x 250 from July)
    rev = vs["LAB-W1-2-R"][0]
    assert (rev["reversal_of"], rev["posting_date"]) == ("LAB-W1-1", date(2026, 3, 21))
    assert lines(rev) == [("6601", "CC-PRJ-1", Decimal("0.00"), Decimal("925.93")),
                          ("2211", None, Decimal("925.93"), Decimal("0.00"))]  # fmt: skip
    assert lines(vs["LAB-W1-2"][0])[0] == ("6601", "CC-PRJ-1", Decimal("987.65"), Decimal("0.00"))
    assert lines(vs["LAB-W4-1"][0])[0] == ("6601", "CC-PRJ-1", Decimal("123.46"), Decimal("0.00"))
    # 3. purchase order created, then cancelled under the same number
    pos = {(v["op"], v["status"]): v for v in by_key(records, "bizbus.purchase.order.v1")["OA-A1"]}
    assert set(pos) == {("CREATED", "APPROVED"), ("DELETED", "CANCELLED")}
    created = pos[("CREATED", "APPROVED")]
    assert (created["supplier"], created["company"], created["project"], created["total_amount"]) == (
        "S1",
        "SH01",
        "PRJ-1",
        Decimal("30.02"),
    )  # 3 x 10.005 half up
    assert created["lines"][0]["quantity"] == Decimal("3.0000")
    # 4. cost centers: opened, then closed on completion
    ccs = by_key(records, "bizbus.md.cost-center.v1")
    opened = [v for v in ccs["CC-PRJ-1"] if v["active"]][0]
    closed = [v for v in ccs["CC-PRJ-1"] if not v["active"]][0]
    assert (opened["name"], opened["valid_from"], opened["parent_code"]) == (
        "PRJ-1 张江办公楼",
        date(2026, 1, 5),
        "CC",
    )
    assert closed["valid_to"] == date(2026, 6, 30)
    assert ccs["CC-SPECIAL"][0]["project"] == "PRJ-2"
    xw = by_key(records, "bizbus.md.id-crosswalk.v1")
    assert xw["project/jira/PRJ-1/erp/2026-01-05"][0]["target_id"] == "CC-PRJ-1"
    # 5. dead letters: the unknown project and the labor after completion, original bytes kept
    dls = dead_letters(env)
    assert set(dls) == {"W9", "W3"}
    assert (dls["W9"]["connector"], dls["W9"]["error_class"], dls["W9"]["error_type"]) == (
        "labor-cost",
        "PERMANENT",
        "Permanent/unknown_master_data",
    )
    assert "project PRJ-9 is unknown (no ProjectChanged seen)" in dls["W9"]["error_message"]
    assert dls["W9"]["source_topic"] == "bizbus.pm.timesheet.v1" and dls["W9"]["key"] == b"PRJ-9"
    assert {h["key"] for h in dls["W9"]["headers"]} >= {"event_id", "correlation_id", "occurred_at"}
    assert (
        dls["W3"]["error_type"] == "Permanent/cost_center_closed" and "CC-PRJ-1" in dls["W3"]["error_message"]
    )


def test_true_end_offsets_reads_past_a_lagging_end_offset(env: Env) -> None:
    """Faust's table recovery reads up to the end offset the broker reports; this finds the real end."""
    topic = "bizbus.probe.end-offsets.v1"
    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        f.result(15)
    for n in range(30):
        env.producer.produce(topic, key=b"k", value=str(n).encode(), partition=n % 2)
    assert env.producer.flush(15) == 0
    reported = {(topic, 0): 3, (topic, 1): 0}  # as a lagging broker might report them
    assert true_end_offsets({"bootstrap.servers": env.bootstrap}, reported, idle=1.0) == {
        (topic, 0): 15,
        (topic, 1): 15,
    }


def test_records_the_consumer_skipped_are_handled_before_the_next_one(env: Env) -> None:
    """The progress guard: an event beyond the partition's last handled offset first handles the gap."""
    import asyncio
    from types import SimpleNamespace

    from bizbus.streams.runtime.agents import AgentSpec, Runtime, read_range
    from bizbus.streams.runtime.grace import GraceClock
    from bizbus.streams.runtime.results import Result
    from bizbus.streams.runtime.watchdog import pending_partitions

    for n in range(6):
        env.send(
            "bizbus.md.supplier.v1",
            {**supplier(f"S{n}"), "meta": meta("kingdee", "supplier", f"S{n}", 1, "x", T0)},
            "same-key",
        )
    raw = read_range(
        {"bootstrap.servers": env.bootstrap}, "bizbus.md.supplier.v1", partition_of(env, "same-key"), 0, 6
    )
    assert [m.offset for m in raw] == [0, 1, 2, 3, 4, 5]
    seen: list[str] = []
    stored: dict[str, dict[str, Any]] = {}
    progress: dict[bytes, bytes] = {str(raw[0].partition).encode(): b"1"}  # offsets 0 and 1 were handled
    spec = AgentSpec("test", lambda r: seen.append(r["code"]) or Result("ignored", (), {"code": r["code"]}),
                     lambda r, s: stored.update({r["code"]: s}), GraceClock(1, time.monotonic), progress)  # fmt: skip
    rt = Runtime(None, env.cat, env.serde, None, {"bootstrap.servers": env.bootstrap})  # type: ignore[arg-type]
    asyncio.run(rt.handle(spec, SimpleNamespace(message=raw[5])))  # the consumer jumped from 1 to 5
    assert seen == ["S2", "S3", "S4", "S5"] and set(stored) == {"S2", "S3", "S4", "S5"}
    assert progress[str(raw[0].partition).encode()] == b"5"
    conf, tp = {"bootstrap.servers": env.bootstrap}, ("bizbus.md.supplier.v1", raw[0].partition)
    assert pending_partitions(conf, "flows-test-watchdog", {tp: 6}) == set()  # all handled: nothing waits
    assert pending_partitions(conf, "flows-test-watchdog", {tp: 5}) == {tp}
    assert pending_partitions(conf, "flows-test-watchdog", {tp: None}) == {tp}  # no commit: from the start
    asyncio.run(rt.handle(spec, SimpleNamespace(message=raw[3])))  # a redelivery: handled again, no gap
    assert seen[-1] == "S3" and progress[str(raw[0].partition).encode()] == b"5"


def partition_of(env: Env, key: str) -> int:
    c = Consumer(
        {"bootstrap.servers": env.bootstrap, "group.id": "flows-test-partition", "enable.auto.commit": False}
    )
    try:
        c.assign([TopicPartition("bizbus.md.supplier.v1", p, 0) for p in range(3)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for m in c.consume(10, 0.2):
                if m.error() is None and m.key() == key.encode():
                    return m.partition()
        raise AssertionError(f"no record with key {key}")
    finally:
        c.close()
