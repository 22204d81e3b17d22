"""Feishu approval_instance event + instance detail -> bizbus.oa.ApprovalChanged (pure mapping)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from bizbus.connectors.sources.feishu.mapping import STATUS, FormMapping, approval_changed
from bizbus.schemas import catalog

from bizbus import lineage

SAMPLES = Path(__file__).resolve().parents[1] / "contract" / "samples" / "feishu"
MAPPING = FormMapping(amount_field="金额", project_field="项目编号", business_ref_field="申请单号", default_currency="CNY")


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def instance(**changes: Any) -> dict[str, Any]:
    return {**sample("instance_get.json")["data"], **changes}


def widgets(*items: dict[str, Any]) -> str:
    return json.dumps(list(items), ensure_ascii=False)


def event(status: str = "APPROVED", operate_time: Any = "1666082807003") -> dict[str, Any]:
    return {**sample("approval_instance_v2.json")["event"], "status": status, "operate_time": operate_time}


def test_documented_samples_map_to_exact_values() -> None:
    ev = approval_changed(sample("approval_instance_v1.json")["event"], instance(), MAPPING)
    assert (ev.topic, ev.key) == ("bizbus.oa.approval.v1", "81D31358-93AF-92D6-7425-01A5D67C4E71")
    v = ev.value
    assert v["meta"] == {
        "event_id": lineage.event_id("feishu", "approval_instance", "81D31358-93AF-92D6-7425-01A5D67C4E71",
                                     "PENDING", 1666079207003),  # fmt: skip
        "causation_id": None,
        "correlation_id": "CGSQ000123",
        "source_system": "feishu",
        "occurred_at": datetime(2022, 10, 18, 7, 46, 47, 3000, tzinfo=UTC),
        "trace": {"feishu_serial_number": "202102060002"},
    }
    assert {k: v[k] for k in v if k not in ("meta", "form_fields")} == {
        "instance_id": "81D31358-93AF-92D6-7425-01A5D67C4E71",
        "template_code": "7C468A54-8745-2245-9675-08B7C63E7A85",
        "template_name": "Payment",
        "status": "PENDING",
        "applicant": "f3ta757q",
        "title": None,
        "amount": Decimal("1234.56"),
        "currency": "CNY",
        "project": "P-2026-001",
        "business_ref": "CGSQ000123",
        "submitted_at": datetime(2019, 7, 31, 16, 28, 52, 967000, tzinfo=UTC),
        "finished_at": None,  # a PENDING change, although the instance read later has finished
        "version": 1666079207003,
    }
    assert v["form_fields"] == {
        "申请单号": "CGSQ000123", "项目编号": "P-2026-001", "金额": "1234.56", "数量": "12",
        "联系人": '["f8ca557e"]', "用途": "工地钢筋采购",
        "期间": '{"start":"2019-10-01T08:12:01+08:00","end":"2019-10-02T08:12:01+08:00","interval":2.0}',
    }  # fmt: skip
    catalog.validate("bizbus.oa.ApprovalChanged", v)

    approved = approval_changed(sample("approval_instance_v2.json")["event"], instance(), MAPPING).value
    assert approved["status"] == "APPROVED" and approved["version"] == 1666082807003
    assert approved["finished_at"] == datetime(2022, 10, 18, 8, 46, 47, 3000, tzinfo=UTC)
    assert approved["meta"]["event_id"] != v["meta"]["event_id"]
    catalog.validate("bizbus.oa.ApprovalChanged", approved)


@pytest.mark.parametrize(
    ("feishu", "canonical"),
    [("PENDING", "PENDING"), ("APPROVED", "APPROVED"), ("REJECTED", "REJECTED"), ("REVERTED", "REVOKED"),
     ("CANCELED", "CANCELLED"), ("DELETED", "CANCELLED"), ("OVERTIME_CLOSE", "CANCELLED"),
     ("OVERTIME_RECOVER", "PENDING")],
)  # fmt: skip
def test_status_mapping(feishu: str, canonical: str) -> None:
    v = approval_changed(event(feishu), instance(), MAPPING).value
    assert v["status"] == canonical
    catalog.validate("bizbus.oa.ApprovalChanged", v)
    assert set(STATUS.values()) <= set(catalog.load("bizbus.oa.ApprovalStatus")["symbols"])


def test_reverted_with_int64_operate_time_is_revoked_and_deterministic() -> None:
    a = approval_changed(event("REVERTED", 1666090000000), instance(), MAPPING).value
    b = approval_changed(event("REVERTED", "1666090000000"), instance(), MAPPING).value
    assert a["status"] == "REVOKED" and a["version"] == 1666090000000
    assert a["meta"]["event_id"] == b["meta"]["event_id"]  # a replay or the other envelope: same id


def test_unknown_status_and_bad_times_are_value_errors() -> None:
    with pytest.raises(ValueError, match="status"):
        approval_changed(event("SOMETHING_NEW"), instance(), MAPPING)
    with pytest.raises(ValueError, match="operate_time"):
        approval_changed(event(operate_time="soon"), instance(), MAPPING)
    with pytest.raises(ValueError, match="start_time"):
        approval_changed(event(), instance(start_time="0"), MAPPING)
    with pytest.raises(ValueError, match="applicant"):
        approval_changed(event(), instance(user_id="", open_id=""), MAPPING)
    assert approval_changed(event(), instance(user_id=""), MAPPING).value["applicant"].startswith("ou_")


@pytest.mark.parametrize(
    ("widget", "amount", "currency"),
    [
        ({"value": 1234.5}, Decimal("1234.50"), "CNY"),
        ({"value": 0.1}, Decimal("0.10"), "CNY"),
        ({"value": "1,234.56"}, Decimal("1234.56"), "CNY"),
        ({"value": 99, "currency": "USD"}, Decimal("99.00"), "USD"),
        ({"value": 10, "option": {"currency": "HKD"}}, Decimal("10.00"), "HKD"),
        ({"value": None}, None, None),
    ],
)
def test_amounts_are_exact_decimals(widget: dict[str, Any], amount: Decimal | None, currency: str | None) -> None:
    form = widgets({"id": "w", "name": "金额", "type": "amount", **widget})
    v = approval_changed(event(), instance(form=form), MAPPING).value
    assert (v["amount"], v["currency"]) == (amount, currency)
    catalog.validate("bizbus.oa.ApprovalChanged", v)


@pytest.mark.parametrize("value", [1234.567, "abc", [1], True])
def test_amounts_that_cannot_be_money_are_refused_not_rounded(value: Any) -> None:
    form = widgets({"id": "w", "name": "金额", "type": "amount", "value": value})
    with pytest.raises(ValueError, match="金额"):
        approval_changed(event(), instance(form=form), MAPPING)


def test_unmapped_or_absent_fields_stay_empty_and_duplicate_names_are_kept() -> None:
    form = widgets({"id": "a", "name": "备注", "type": "input", "value": "x"},
                   {"id": "b", "name": "备注", "type": "input", "value": "y"})[:-1]  # fmt: skip
    form += ', {"id": "c", "name": "", "type": "number", "value": 0.10}]'  # the number as Feishu wrote it
    v = approval_changed(event(), instance(form=form), MAPPING).value
    assert v["form_fields"] == {"备注": "x", "备注#b": "y", "c": "0.10"}
    assert (v["amount"], v["currency"], v["project"], v["business_ref"]) == (None, None, None, None)
    assert v["meta"]["correlation_id"] == v["instance_id"]
    assert approval_changed(event(), instance(form=""), FormMapping()).value["form_fields"] == {}


def test_a_form_that_is_not_json_widgets_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        approval_changed(event(), instance(form="[{"), MAPPING)
    with pytest.raises(ValueError):
        approval_changed(event(), instance(form='{"id": "w"}'), MAPPING)
