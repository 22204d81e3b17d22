"""F4's promise about unknown master data: an approval naming a supplier the bus has never seen becomes a dead
letter with a clear reason; once the supplier arrives, `bizbus dlq replay` sends the approval back to the
flow, which now creates the purchase order — and a second replay changes nothing (same order number, same id).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from bizbus.connectors.runtime.replay import DeadLetterFilter, read_dead_letters, replay
from bizbus.schemas import catalog
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from bizbus import lineage
from bizbus.catalogue import apply, load_catalogue
from bizbus.deadletters import DEAD_LETTER_TOPIC
from bizbus.devstack.stack import register_schemas
from bizbus.host.components import RuntimeContext
from bizbus.host.pipeline import load_pipeline
from bizbus.serde import AvroSerde
from bizbus.settings import load_settings
from tests.chaos.harness import Worker, private_stack, wait_for
from tests.webhook_harness import read_topic

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


def _produce(producer: Producer, serde: AvroSerde, topic: str, schema: str, key: str, value: dict) -> None:
    enc = serde.encoder(f"{topic}-value", catalog.load(schema))
    producer.produce(topic, key=key.encode(), value=enc(value), headers=lineage.headers(value["meta"]))
    assert producer.flush(20) == 0


def _project(key: str) -> dict:
    rec = catalog.sample("bizbus.pm.ProjectChanged")
    rec.update(op="CREATED", project=key, name="Replay test", company="Bizbus Demo Co", cost_center=None,
               actual_end=None, version=1)  # fmt: skip
    rec["meta"] = lineage.meta(lineage.event_id("test", "project", key, 1), key, "jira",
                               datetime(2026, 11, 1, tzinfo=UTC))  # fmt: skip
    return rec


def _supplier(code: str) -> dict:
    rec = catalog.sample("bizbus.md.Supplier")
    rec.update(code=code, name="Late Supplier Ltd", active=True, valid_from=date(2026, 1, 1), valid_to=None, version=1)
    rec["meta"] = lineage.meta(lineage.event_id("mdm", "supplier", code, 1), code, "mdm")
    return rec


def _approval(instance: str, project: str, supplier: str) -> dict:
    rec = catalog.sample("bizbus.oa.ApprovalChanged")
    rec.update(instance_id=instance, template_code="PROC-PURCHASE-01", status="APPROVED", project=project,
               amount=Decimal("455.00"), currency="CNY", business_ref=None, version=2,
               submitted_at=datetime(2026, 11, 3, 9, tzinfo=UTC), finished_at=datetime(2026, 11, 3, 10, tzinfo=UTC),
               form_fields={"供应商编码": supplier, "物料编码": "MAT-STEEL-10", "数量": "10", "单价": "45.50",
                            "项目编号": project, "用途": "replay test"})  # fmt: skip
    rec["meta"] = lineage.meta(lineage.event_id("dingtalk", "instance", instance, 2), instance, "dingtalk",
                               datetime(2026, 11, 3, 10, tzinfo=UTC))  # fmt: skip
    return rec


def test_an_approval_for_an_unknown_supplier_is_replayed_once_the_supplier_arrives(tmp_path: Path) -> None:
    key, instance, supplier = f"R{uuid.uuid4().hex[:5].upper()}", f"pi-{uuid.uuid4().hex[:10]}", "SUP-404"
    with private_stack(tmp_path, {}) as stack:
        settings = load_settings(kafka_bootstrap_servers=stack.bootstrap, schema_registry_url=stack.registry_url)
        cat = load_catalogue(settings.topics_file)
        apply(AdminClient(settings.kafka_config()), cat)
        serde = AvroSerde(settings.registry_config())
        register_schemas(serde, cat)
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(yaml.safe_dump({"version": 1, "name": "replay", "connectors": [], "flows": [
            {"name": "cost-centers", "type": "cost-centers", "config": {}},
            {"name": "approvals", "type": "approvals-to-erp", "config": {"master_data_grace_seconds": 1}}]}))  # fmt: skip
        flows = Worker("flows", stack, pipeline, command=["flows", "run", "--pipeline", str(pipeline)])
        flows.start()
        try:
            producer = Producer(settings.kafka_config())
            _produce(producer, serde, "bizbus.pm.project.v1", "bizbus.pm.ProjectChanged", key, _project(key))
            _produce(producer, serde, "bizbus.oa.approval.v1", "bizbus.oa.ApprovalChanged", instance,
                     _approval(instance, key, supplier))  # fmt: skip

            def dead() -> list:
                return [v for v in read_dead_letters(settings.kafka_config(), serde, DEAD_LETTER_TOPIC, idle=1.0)
                        if v.connector == "approvals"]  # fmt: skip

            wait_for(lambda: len(dead()) == 1, 120, "the approval's dead letter", [flows])
            letter = dead()[0]
            assert letter.error_type.endswith("unknown_master_data") and supplier in letter.error_message

            def orders() -> list:
                return read_topic(settings, serde, "bizbus.purchase.order.v1",
                                  lambda v: v["approval_instance_id"] == instance, idle=1.0, timeout=10)  # fmt: skip

            assert orders() == []
            _produce(producer, serde, "bizbus.md.supplier.v1", "bizbus.md.Supplier", supplier, _supplier(supplier))
            time.sleep(2)  # the supplier table takes it in
            ctx = RuntimeContext(settings, cat, serde)
            pl = load_pipeline(pipeline)
            views = [v for v in dead() if DeadLetterFilter(connector="approvals").matches(v)]
            planned = replay(views, pl, ctx, dry_run=True)
            assert [o.status for o in planned] == ["would resend"]
            done = replay(views, pl, ctx, dry_run=False)
            assert [o.status for o in done] == ["resent"]
            wait_for(lambda: len(orders()) >= 1, 120, "the purchase order after the replay", [flows])
            replay(views, pl, ctx, dry_run=False)  # twice: the flow repeats the same order, nothing new
            time.sleep(3)
            got = orders()
            assert {o["order_no"] for o in got} == {f"OA-{instance}"}
            assert {o["meta"]["event_id"] for o in got} == {got[0]["meta"]["event_id"]}
            assert got[0]["supplier"] == supplier and got[0]["total_amount"] == Decimal("455.00")
        finally:
            flows.stop()
