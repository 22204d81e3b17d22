"""F3 (material-need) and F5 (stock-atp) as a real Faust worker (`bizbus flows run`) on the embedded broker.

Materials, stock levels, sales orders and material needs are produced with the project's AvroSerde; the
test asserts the exact decisions, alerts, requisitions and dead letters. The worker dies by its own crash
point after a table write and before the sends (SIGKILL) on the way, and by the test's SIGKILL between
two phases. Two orders racing for the last units of two materials come from two different order
partitions: exactly one is ACCEPTED.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from bizbus.schemas import catalog
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bizbus import catalogue, lineage
from bizbus.devstack.broker import EmbeddedBroker
from bizbus.devstack.procs import free_port
from bizbus.kafka import read_until_quiet
from bizbus.serde import AvroSerde
from bizbus.settings import PROJECT_ROOT
from tests.integration.test_flows_faust import FlowsWorker, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
FLOW_CONFIG = {"master_data_grace_seconds": 1, "stall_restart_seconds": 10}
DECISION, ALERT = "bizbus.sales.order-decision.v1", "bizbus.inventory.replenishment-alert.v1"
REQUISITION, DLQ = "bizbus.purchase.requisition.v1", "bizbus.ops.dead-letter.v1"
ORDER, LEVEL, MATERIAL, NEED = "bizbus.sales.order.v1", "bizbus.inventory.level.v1", "bizbus.md.material.v1", "bizbus.pm.material-need.v1"
OUTPUT_TOPICS = (DECISION, ALERT, REQUISITION, DLQ)


@dataclass
class Env:
    bootstrap: str
    registry_url: str
    tmp: Path
    serde: AvroSerde
    producer: Producer
    cat: catalogue.Catalogue

    def send(self, topic: str, record: dict[str, Any], key: str, partition: int | None = None) -> None:
        spec = self.cat.get(topic)
        value = self.serde.encoder(spec.subject, catalog.load(spec.value_schema))(record)
        extra = {} if partition is None else {"partition": partition}
        self.producer.produce(topic, key=key.encode(), value=value, headers=lineage.headers(record["meta"]), **extra)
        assert self.producer.flush(15) == 0

    def read(self, topics: tuple[str, ...] = OUTPUT_TOPICS) -> list[tuple[str, str, dict[str, Any]]]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "atp-test-reader", "enable.auto.commit": False})
        try:
            c.assign([TopicPartition(t, p, 0) for t in topics for p in range(self.cat.get(t).partitions)])
            return [(m.topic(), (m.key() or b"").decode(), self.serde.decode(m.value()))
                    for m in read_until_quiet(c, 1.0, poll=0.2)]  # fmt: skip
        finally:
            c.close()

    def of(self, topic: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for _t, key, value in self.read((topic,)):
            out.setdefault(key, []).append(value)
        return out


def make_env(tmp_path: Path, registry: Any) -> Iterator[Env]:
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp_path / "broker")
    broker.start()
    try:
        cat = catalogue.load_catalogue(PROJECT_ROOT / "deploy" / "topics.yaml")
        states = catalogue.apply(AdminClient({"bootstrap.servers": broker.bootstrap_servers}), cat)
        assert not [s for s in states if s.action.startswith("FAILED")]
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True})
        yield Env(broker.bootstrap_servers, registry.url, tmp_path, AvroSerde({"url": registry.url}), producer, cat)
    finally:
        broker.stop()


@pytest.fixture
def env(tmp_path: Path, registry: Any) -> Iterator[Env]:
    yield from make_env(tmp_path, registry)


def pipeline(env: Env, **mappings: Path) -> Path:
    path = env.tmp / "pipeline.yaml"
    flows = [{"name": "atp", "type": "stock-atp", "config": {**FLOW_CONFIG, "mapping": str(mappings["atp"])}},
             {"name": "need", "type": "material-need", "config": {**FLOW_CONFIG, "mapping": str(mappings["need"])}}]  # fmt: skip
    path.write_text(yaml.safe_dump({"version": 1, "name": "atp-it", "flows": flows}))
    return path


def mappings(env: Env) -> dict[str, Path]:
    atp, need = env.tmp / "f5.yaml", env.tmp / "f3.yaml"
    atp.write_text(yaml.safe_dump({"units": ["pcs", "t"], "conversions": {"box": {"unit": "pcs", "factor": "10"}}}))
    need.write_text(yaml.safe_dump({"company": "SH01", "default_warehouse": "WH1", "default_supplier": "SUP-1",
                                    "supplier_by_category": {"steel": "SUP-3"}}))  # fmt: skip
    return {"atp": atp, "need": need}


# -- records ----------------------------------------------------------------------------------------------


def meta(system: str, entity: str, key: str, version: int, corr: str, at: datetime = T0) -> dict[str, Any]:
    return lineage.meta(lineage.event_id(system, entity, key, version), corr, system, at)


def material(code: str, unit: str = "pcs", category: str | None = None, safety: str | None = None) -> dict[str, Any]:
    return {"meta": meta("mdm", "material", code, 1, code), "code": code, "name": code, "specification": None,
            "unit": unit, "category": category, "standard_cost": Decimal("2.5"), "currency": "CNY",
            "safety_stock": None if safety is None else Decimal(safety), "valid_from": date(2026, 1, 1),
            "valid_to": None, "active": True, "version": 1}  # fmt: skip


def level(mat: str, on_hand: str, safety: str = "0", n: int = 1, unit: str = "pcs", wh: str = "WH1") -> dict[str, Any]:
    key, at = f"{wh}/{mat}", T0 + timedelta(minutes=n)
    return {"meta": meta("jxc", "stock", key, n, key, at), "warehouse": wh, "material": mat, "unit": unit,
            "on_hand": Decimal(on_hand), "reserved": Decimal("0"), "available": Decimal(on_hand),
            "safety_stock": Decimal(safety), "as_of": at}  # fmt: skip


def line(no: int, mat: str, quantity: str, unit: str = "pcs") -> dict[str, Any]:
    return {"line_no": no, "material": mat, "material_name": None, "quantity": Decimal(quantity), "unit": unit,
            "unit_price": None, "amount": None, "tax_rate": None, "project": None, "need_by": None, "description": None}  # fmt: skip


def order(no: str, lines: list[dict[str, Any]], version: int = 1, status: str = "SUBMITTED",
          op: str = "CREATED") -> dict[str, Any]:  # fmt: skip
    return {"meta": meta("jxc", "sales_order", no, version, no, T0 + timedelta(hours=version)), "op": op,
            "order_no": no, "company": "SH01", "status": status, "customer": "C1", "order_date": T0.date(),
            "delivery_date": None, "warehouse": "WH1", "currency": "CNY", "lines": lines,
            "total_amount": Decimal("0.00"), "tax_amount": None, "salesperson": None, "version": version}  # fmt: skip


def need(nid: str, mat: str, quantity: str, version: int = 1, op: str = "CREATED", unit: str = "t") -> dict[str, Any]:
    return {"meta": meta("pm", "need", nid, version, "PRJ-1"), "op": op, "need_id": nid, "project": "PRJ-1",
            "task": None, "material": mat, "quantity": Decimal(quantity), "unit": unit, "need_by": date(2027, 1, 15),
            "warehouse": None, "version": version}  # fmt: skip


def decisions(env: Env) -> dict[tuple[str, int], set[str]]:
    out: dict[tuple[str, int], set[str]] = {}
    for key, vs in env.of(DECISION).items():
        for v in vs:
            out.setdefault((key, v["order_version"]), set()).add(v["decision"])
    return out


def dead_letter_keys(env: Env) -> dict[str, dict[str, Any]]:
    return {(v["key"] or b"").decode(): v for vs in env.of(DLQ).values() for v in vs}


# -- the test ---------------------------------------------------------------------------------------------


def test_stock_atp_and_material_need_end_to_end_with_crashes(env: Env) -> None:
    worker = FlowsWorker(env, pipeline(env, **mappings(env)))
    crash_log = env.tmp / "crashes.log"
    worker.start(BIZBUS_CRASHPOINTS="flows.after-state:@12", BIZBUS_CRASHPOINT_LOG=str(crash_log))
    try:
        for code, unit, cat in (("M1", "pcs", None), ("M2", "pcs", None), ("M3", "pcs", None), ("STEEL", "t", "steel")):
            env.send(MATERIAL, material(code, unit, cat, safety="1" if code == "STEEL" else None), code)
        env.send(LEVEL, level("M1", "5"), "WH1/M1")
        env.send(LEVEL, level("M2", "4"), "WH1/M2")
        env.send(LEVEL, level("M3", "20", safety="4"), "WH1/M3")
        env.send(LEVEL, level("STEEL", "8", unit="t"), "WH1/STEEL")
        # the race: each could be served alone (M1 5, M2 4), not both; from two order partitions
        env.send(ORDER, order("SO-A", [line(1, "M2", "2"), line(2, "M1", "3")]), "SO-A", partition=0)
        env.send(ORDER, order("SO-B", [line(1, "M1", "2"), line(2, "M2", "3")]), "SO-B", partition=1)
        env.send(ORDER, order("SO-C", [line(1, "M3", "1", "box")]), "SO-C", partition=2)  # 10 pcs of ATP 20-4=16
        env.send(ORDER, order("SO-D", [line(1, "M3", "6")]), "SO-D", partition=2)
        env.send(ORDER, order("SO-X", [line(1, "M3", "1", "barrel")]), "SO-X", partition=0)  # unknown unit
        env.send(ORDER, order("SO-Z", [line(1, "NOLEVEL", "1")]), "SO-Z", partition=1)  # no level: waits, dead letter
        env.send(NEED, need("N1", "STEEL", "10"), "PRJ-1")  # free 8 - 1 = 7: short 3
        env.send(NEED, need("N9", "NOPE", "1"), "PRJ-9")  # unknown material
        assert worker.proc is not None
        worker.proc.wait(60)  # the crash point fires
        assert "flows.after-state" in crash_log.read_text(), worker.logs()

        worker.start()
        wait_for(lambda: {("SO-A", 1), ("SO-B", 1), ("SO-C", 1), ("SO-D", 1)} <= set(decisions(env))
                 and {"SO-X", "SO-Z", "PRJ-9"} <= set(dead_letter_keys(env)) and "PR-N1" in env.of(REQUISITION),
                 120, "phase A outputs", worker)  # fmt: skip
        time.sleep(4)  # let Faust commit: the next run relies on its recovered tables
        worker.kill()

        # phase B while no worker runs: needs the recovered holds, orders and needs
        winner = "SO-A" if decisions(env)[("SO-A", 1)] == {"ACCEPTED"} else "SO-B"
        env.send(ORDER, order(winner, [], version=2, status="CANCELLED", op="UPDATED"), winner, partition=1)
        env.send(LEVEL, level("M3", "17", safety="4", n=2), "WH1/M3")  # 17 - 16 held = 1 < 4: BELOW
        env.send(NEED, need("N1", "STEEL", "12", version=2, op="UPDATED"), "PRJ-1")  # short 5: version 2
        env.send(NEED, need("N2", "STEEL", "3"), "PRJ-1")  # covered: nothing
        worker.start()
        wait_for(lambda: (winner, 2) in decisions(env) and env.of(ALERT)
                 and len({v["version"] for v in env.of(REQUISITION).get("PR-N1", [])}) == 2, 120, "phase B outputs",
                 worker)  # fmt: skip
        # after the release (the cancel and a new order from other partitions would race): all of M1 and M2
        env.send(ORDER, order("SO-E", [line(1, "M1", "5"), line(2, "M2", "4")]), "SO-E", partition=2)
        env.send(ORDER, order("SO-D", [], version=2, status="CANCELLED", op="UPDATED"), "SO-D", partition=2)  # RECOVERED
        env.send(NEED, need("N1", "STEEL", "12", version=3, op="DELETED"), "PRJ-1")  # cancels PR-N1
        wait_for(lambda: ("SO-E", 1) in decisions(env) and len(env.of(ALERT).get("WH1/M3", [])) >= 2 and len({v["version"] for v in env.of(REQUISITION)
                 .get("PR-N1", [])}) == 3, 90, "phase C outputs", worker)  # fmt: skip
    finally:
        worker.stop()
    check(env, worker, winner)


def check(env: Env, worker: FlowsWorker, winner: str) -> None:
    records = env.read()
    seen: dict[str, str] = {}
    for topic, _key, value in records:  # an id never has two contents
        if topic != DLQ:
            text = json.dumps(value, default=str, sort_keys=True)
            assert seen.setdefault(value["meta"]["event_id"], text) == text
    loser = "SO-B" if winner == "SO-A" else "SO-A"
    assert decisions(env) == {
        (winner, 1): {"ACCEPTED"}, (loser, 1): {"REFUSED"}, (winner, 2): {"RELEASED"}, ("SO-C", 1): {"ACCEPTED"},
        ("SO-D", 1): {"ACCEPTED"}, ("SO-E", 1): {"ACCEPTED"}, ("SO-D", 2): {"RELEASED"},
    }, worker.logs()  # fmt: skip
    refused = env.of(DECISION)[loser][0]
    assert refused["shortfalls"] == {"M2": "1.0000"} and "M2 in WH1" in refused["reason"]
    alerts = [(v["state"], v["crossing"], v["available"], v["safety_stock"]) for v in env.of(ALERT)["WH1/M3"]]
    assert sorted(set(alerts)) == [("BELOW", 1, Decimal("1.0000"), Decimal("4.0000")),
                                   ("RECOVERED", 1, Decimal("7.0000"), Decimal("4.0000"))]  # fmt: skip
    reqs = {v["version"]: v for v in env.of(REQUISITION)["PR-N1"]}
    assert set(env.of(REQUISITION)) == {"PR-N1"}
    assert [(reqs[n]["status"], reqs[n]["lines"][0]["quantity"]) for n in (1, 2, 3)] == [
        ("SUBMITTED", Decimal("3.0000")), ("SUBMITTED", Decimal("5.0000")), ("CANCELLED", Decimal("5.0000"))]  # fmt: skip
    assert reqs[1]["lines"][0]["description"] == "supplier:SUP-3" and reqs[1]["company"] == "SH01"
    dls = dead_letter_keys(env)
    assert set(dls) == {"SO-X", "SO-Z", "PRJ-9"}
    assert dls["SO-Z"]["error_type"] == "Permanent/unknown_master_data" and "WH1/NOLEVEL" in dls["SO-Z"]["error_message"]
    assert dls["SO-X"]["error_type"] == "Permanent/unknown_unit" and "barrel" in dls["SO-X"]["error_message"]
    assert dls["SO-X"]["connector"] == "atp" and dls["SO-X"]["source_topic"] == ORDER
    assert dls["PRJ-9"]["error_type"] == "Permanent/unknown_master_data" and "NOPE" in dls["PRJ-9"]["error_message"]


def test_material_need_alone_keeps_the_stock_tables_and_sends_only_requisitions(env: Env) -> None:
    """A worker of F3 alone keeps F5's materials and stock levels (F5 kept for its tables, sending nothing)."""
    maps = mappings(env)
    path = env.tmp / "need-only.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "name": "need-only", "flows": [
        {"name": "need", "type": "material-need", "config": {**FLOW_CONFIG, "mapping": str(maps["need"])}}]}))  # fmt: skip
    worker = FlowsWorker(env, path)
    worker.start()
    try:
        env.send(MATERIAL, material("STEEL", "t", "steel"), "STEEL")
        env.send(LEVEL, level("STEEL", "4", unit="t"), "WH1/STEEL")
        env.send(ORDER, order("SO-1", [line(1, "STEEL", "1", "t")]), "SO-1")  # F5 is not run: no decision
        env.send(NEED, need("N1", "STEEL", "10"), "PRJ-1")
        wait_for(lambda: "PR-N1" in env.of(REQUISITION), 90, "the requisition", worker)
        time.sleep(2)
    finally:
        worker.stop()
    assert [v["lines"][0]["quantity"] for v in env.of(REQUISITION)["PR-N1"]] == [Decimal("6.0000")]
    assert env.of(DECISION) == {} and env.read(("bizbus.sales.atp-step.v1",)) == []
