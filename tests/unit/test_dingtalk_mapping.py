"""DingTalk payload -> inbox delivery -> canonical ApprovalChanged (pure functions), and the classification
of DingTalk's API errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from bizbus.connectors.sources.dingtalk.api import api_error
from bizbus.connectors.sources.dingtalk.config import DingTalkConfig
from bizbus.connectors.sources.dingtalk.mapping import (
    approval_changed,
    approval_status,
    form_fields,
    parse_amount,
    version,
)
from bizbus.connectors.sources.dingtalk.webhook import delivery_id, entity_key
from bizbus.schemas import catalog

from bizbus import lineage
from bizbus.failures import BackOff, Fatal, Permanent, Retryable
from bizbus.serde import decimal_problems

SAMPLES = Path(__file__).parents[1] / "contract/samples/dingtalk"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


def config(**kw: object) -> DingTalkConfig:
    base = {"token_env": "T", "aes_key_env": "A", "app_key": "dingapp", "app_secret_env": "S"}
    return DingTalkConfig.model_validate({**base, **kw})


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    "kind, result, status",
    [("start", None, "PENDING"), ("finish", "agree", "APPROVED"), ("finish", "refuse", "REJECTED"),
     ("terminate", None, "REVOKED"), ("delete", None, "CANCELLED"), ("finish", "redirect", None),
     ("comment", None, None)],
)  # fmt: skip
def test_status_of_an_instance_event(kind: str, result: str | None, status: str | None) -> None:
    event = {"type": kind, **({"result": result} if result else {})}
    assert approval_status(event) == status


def test_delivery_id_is_the_event_id_else_a_stable_hash() -> None:
    assert delivery_id(sample("bpms_instance_change_finish.json")) == "dingtalk:c7c7120f2c07419**ebdba0318c8"
    legacy = sample("bpms_instance_change_refuse_legacy.json")
    reordered = dict(reversed(list(legacy.items())))
    assert delivery_id(legacy) == delivery_id(reordered)
    assert delivery_id(legacy).startswith("dingtalk:sha256:")
    assert delivery_id(legacy) != delivery_id({**legacy, "result": "agree"})


def test_entity_key_names_the_instance_and_the_change() -> None:
    assert (
        entity_key(sample("bpms_instance_change_finish.json")) == "instance:9Qgx5QqjR7axMwxxxx@finish/agree"
    )
    assert entity_key({"processInstanceId": "X", "type": "terminate"}) == "instance:X@terminate/"


def test_version_grows_from_start_to_finish_to_terminate() -> None:
    t0, t1 = ms(2026, 11, 2, 9), ms(2026, 11, 2, 10)
    start = {"type": "start", "createTime": t0, "EventTime": t0 + 5}
    finish = {"type": "finish", "result": "agree", "createTime": t0, "finishTime": t1, "EventTime": t1}
    terminate_same_times = {"type": "terminate", "createTime": t0, "finishTime": t1}  # legacy: no EventTime
    assert version(start) < version(finish) < version(terminate_same_times)
    assert version(finish) == t1
    with pytest.raises(Permanent) as err:
        version({"type": "start"})
    assert err.value.reason == "no_version"


def test_form_fields_are_strings_with_tables_as_json() -> None:
    comps = [{"id": "TextField-1", "name": "供应商编码", "value": "SUP-001", "componentType": "TextField"},
             {"id": "TableField-2", "name": "明细", "value": '[{"物料":"M1"}]', "componentType": "TableField"},
             {"id": "X-3", "name": "附加", "value": [{"a": 1}], "componentType": "DDAttachment"},
             {"id": "N-4", "name": "数量", "value": 10, "componentType": "NumberField"},
             {"id": "E-5", "name": "空", "value": None},
             {"id": "T-6", "name": "供应商编码", "value": "SUP-002"}]  # fmt: skip
    assert form_fields(comps) == {"供应商编码": "SUP-001", "明细": '[{"物料":"M1"}]', "附加": '[{"a":1}]',
                                  "数量": "10", "供应商编码#T-6": "SUP-002"}  # fmt: skip
    assert form_fields(None) == {}


@pytest.mark.parametrize(
    "text, expected",
    [("58,650.00", Decimal("58650.00")), ("¥45.5", Decimal("45.50")), ("455", Decimal("455.00")),
     (" 1 234.50 元", Decimal("1234.50")), ("", None)],
)  # fmt: skip
def test_amounts(text: str, expected: Decimal | None) -> None:
    value = parse_amount(text, "金额")
    assert value == expected
    if value is not None:
        assert value.as_tuple().exponent == -2


@pytest.mark.parametrize("text", ["abc", "1.005", "NaN", "Infinity"])
def test_bad_amounts_are_permanent(text: str) -> None:
    with pytest.raises(Permanent) as err:
        parse_amount(text, "金额")
    assert err.value.reason == "invalid_amount"


def test_documented_event_and_instance_map_to_exact_values() -> None:
    event = sample("bpms_instance_change_finish.json")
    instance = sample("process_instance.json")["result"]
    ev = approval_changed(event, instance, config(templates={"Pro-xxx": "请假"}, project_field="组件1"))
    assert ev.topic == "bizbus.oa.approval.v1" and ev.key == "9Qgx5QqjR7axMwxxxx"
    v = ev.value
    expected_id = lineage.event_id("dingtalk", "instance", "9Qgx5QqjR7axMwxxxx", "APPROVED", 1663143335567)
    assert v["meta"]["event_id"] == expected_id
    assert v["meta"]["source_system"] == "dingtalk" and v["meta"]["correlation_id"] == "示例值"
    assert v["meta"]["occurred_at"] == datetime(2022, 9, 14, 8, 15, 35, 567000, tzinfo=UTC)
    assert {k: v[k] for k in v if k != "meta"} == {
        "instance_id": "9Qgx5QqjR7axMwxxxx", "template_code": "Pro-xxx", "template_name": "请假",
        "status": "APPROVED", "applicant": "manager1", "title": "xx提交的请假申请", "amount": None,
        "currency": None, "project": "示例值", "business_ref": None, "form_fields": {"组件1": "示例值"},
        "submitted_at": datetime(2017, 5, 24, 2, 18, 25, tzinfo=UTC),
        "finished_at": datetime(2017, 5, 24, 2, 17, 52, tzinfo=UTC), "version": 1663143335567,
    }  # fmt: skip


def test_purchase_form_with_amount_project_and_reference_fits_the_schema() -> None:
    t0, t1 = ms(2026, 11, 2, 9), ms(2026, 11, 3, 15, 30)
    event = {"EventType": "bpms_instance_change", "processInstanceId": "PI-7", "processCode": "PROC-PR",
             "type": "finish", "result": "agree", "createTime": t0, "finishTime": t1, "staffId": "E0042"}  # fmt: skip
    instance = {"originatorUserId": "E0042", "title": "王芳提交的采购申请", "status": "COMPLETED", "result": "agree",
                "formComponentValues": [{"name": "金额", "value": "58,650.00"}, {"name": "项目编号", "value": "P2025-001"},
                                        {"name": "申请单号", "value": "PR-2025-0031"}]}  # fmt: skip
    cfg = config(amount_field="金额", project_field="项目编号", business_ref_field="申请单号")
    v = approval_changed(event, instance, cfg).value
    assert (v["amount"], v["currency"], v["project"], v["business_ref"]) == (Decimal("58650.00"), "CNY", "P2025-001",
                                                                             "PR-2025-0031")  # fmt: skip
    assert v["meta"]["correlation_id"] == "PR-2025-0031"
    assert v["finished_at"] == datetime(2026, 11, 3, 15, 30, tzinfo=UTC) and v["version"] == t1
    assert decimal_problems(catalog.load("bizbus.oa.ApprovalChanged"), v) == []


def test_start_is_pending_without_finish_and_terminate_is_revoked() -> None:
    t0 = ms(2026, 11, 2, 9)
    base = {"processInstanceId": "PI-8", "processCode": "P", "createTime": t0, "staffId": "E1"}
    start = approval_changed({**base, "type": "start"}, {"originatorUserId": "E1"}, config()).value
    assert (start["status"], start["finished_at"], start["template_name"]) == ("PENDING", None, None)
    revoked = approval_changed({**base, "type": "terminate", "finishTime": t0 + 60_000}, {}, config()).value
    assert revoked["status"] == "REVOKED" and revoked["applicant"] == "E1"
    assert revoked["meta"]["event_id"] != start["meta"]["event_id"]
    # the instance API's minute-precision times stand in for missing event times
    v = approval_changed({"processInstanceId": "PI-9", "processCode": "P", "type": "start", "EventTime": t0},
                         {"originatorUserId": "E1", "createTime": "2026-11-02T08:59Z"}, config()).value  # fmt: skip
    assert v["submitted_at"] == datetime(2026, 11, 2, 8, 59, tzinfo=UTC)


def test_incomplete_events_are_permanent() -> None:
    with pytest.raises(Permanent) as err:
        approval_changed({"processInstanceId": "X", "type": "start", "createTime": 1}, {}, config())
    assert err.value.reason == "incomplete_event"


@pytest.mark.parametrize(
    "status, code, kind, reason",
    [(400, "processInstanceNotExist", Permanent, "unknown_instance"),
     (404, "", Permanent, "unknown_instance"),
     (403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", BackOff, "throttled"),
     (403, "Forbidden.AccessDenied.QpsLimitForApi", BackOff, "throttled"),
     (429, "", BackOff, "throttled"),
     (403, "Forbidden.AccessDenied.ApiCountLimitForOrg", BackOff, "quota"),
     (500, "systemError", Retryable, "http_5xx"),
     (400, "InvalidAuthentication", Fatal, "auth"),
     (400, "invalidClientIdOrSecret", Fatal, "auth"),
     (403, "Forbidden.AccessDenied.AccessTokenPermissionDenied", Fatal, "auth"),
     (400, "invalidParameter", Permanent, "api_error")],
)  # fmt: skip
def test_api_errors_are_classified(status: int, code: str, kind: type, reason: str) -> None:
    err = api_error(status, code, "msg", "instance X")
    assert type(err) is kind and err.reason == reason
    if isinstance(err, BackOff):
        assert err.retry_after and err.retry_after >= 1.0
    assert api_error(429, "", "m", "x", retry_after="7").retry_after == 7.0  # type: ignore[attr-defined]
