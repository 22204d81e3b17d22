"""Contract tests of the ``dingtalk`` source: the connector behind bizbus's HTTP server (embedded broker,
registry, PostgreSQL inbox) against the DingTalk fake (tests/fakes/dingtalk_api.py), which encrypts, signs
and answers as DingTalk's published documentation says."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from bizbus.connectors.sources.dingtalk.mapping import TOPIC

from bizbus import lineage
from tests.fakes.dingtalk_api import DingTalkApi, DingTalkCallbackSender
from tests.webhook_harness import Rig, webhook_rig

SAMPLES = Path(__file__).parent / "samples" / "dingtalk"
TOKEN, AES_KEY = "bizbusCallbackToken7", "Qm9yZWFsaXNUaGVDb2xkTm9ydGhXaW5kMjAyNjExMjM"
APP_KEY, APP_SECRET, CORP_ID = "dingbizbusapp", "app-secret-for-tests", "ding9f50b15bxxxx16741"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture
def fake() -> Iterator[DingTalkApi]:
    with DingTalkApi(app_key=APP_KEY, app_secret=APP_SECRET) as api:
        yield api


def config(fake: DingTalkApi, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> dict[str, Any]:
    """The connector's config against ``fake`` (its secrets put in the environment)."""
    monkeypatch.setenv("DINGTALK_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("DINGTALK_TEST_AES_KEY", AES_KEY)
    monkeypatch.setenv("DINGTALK_TEST_APP_SECRET", APP_SECRET)
    return {"token_env": "DINGTALK_TEST_TOKEN", "aes_key_env": "DINGTALK_TEST_AES_KEY", "corp_id": CORP_ID,
            "app_key": APP_KEY, "app_secret_env": "DINGTALK_TEST_APP_SECRET", "api_base_url": fake.url,
            "amount_field": "金额", "project_field": "项目编号", "business_ref_field": "申请单号",
            "templates": {"PROC-PURCHASE": "采购申请", "Pro-xxx": "请假"}, "timeout_seconds": 5, **extra}  # fmt: skip


@pytest.fixture
def rig(
    embedded_broker, registry, postgres, fake: DingTalkApi, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rig]:
    with webhook_rig(embedded_broker, registry, "dingtalk", config(fake, monkeypatch)) as r:
        yield r


@pytest.fixture
def sender(rig: Rig, fake: DingTalkApi) -> DingTalkCallbackSender:
    return DingTalkCallbackSender(rig.url, TOKEN, AES_KEY, CORP_ID, api=fake)


def of(instance_id: str) -> Any:
    return lambda v: v["instance_id"] == instance_id


def test_signature_stale_malformed_replay_and_check_url(rig: Rig, sender: DingTalkCallbackSender,
                                                        fake: DingTalkApi) -> None:  # fmt: skip
    assert rig.component.backfill() is None  # webhooks only: no poll, so no gaps are counted
    resp = sender.check_url()
    assert sender.reply_is_success(resp)
    assert rig.metric("bizbus_webhook_requests_total", outcome="handshake") == 1

    forged_id, pid = f"PI-{uuid.uuid4().hex[:10]}", f"PI-{uuid.uuid4().hex[:10]}"
    query, body = sender.request_for(sender.instance_event(forged_id, "PROC-PURCHASE", "start"))
    resp = sender.post({**query, "msg_signature": "f" * 40}, body)
    assert resp.status_code == 401 and "signature" in resp.json()["error"]
    assert rig.metric("bizbus_webhook_requests_total", outcome="bad_signature") == 1

    old = str(int((datetime.now(UTC).timestamp() - 7200) * 1000))
    resp = sender.send(sender.instance_event(forged_id, "PROC-PURCHASE", "start"), timestamp=old)
    assert resp.status_code == 401 and rig.metric("bizbus_webhook_requests_total", outcome="stale") == 1

    garbage, ts = "bm90IGRpbmd0YWxrIGNpcGhlcnRleHQ=", str(int(datetime.now(UTC).timestamp() * 1000))
    q = {
        "msg_signature": sender.sign(ts, "n0nce", garbage),
        "timestamp": ts,
        "nonce": "n0nce",
    }  # signed garbage
    malformed = [
        sender.post(query, b"{not json"),
        sender.post(q, json.dumps({"encrypt": garbage}).encode()),
        sender.send({"EventType": "check_url"}, owner="dingsomeoneelse"),
    ]
    assert [r.status_code for r in malformed] == [400, 400, 400]
    assert rig.metric("bizbus_webhook_requests_total", outcome="malformed") == 3

    fake.add_instance(pid, process_code="PROC-PURCHASE", originator="E0042", form={"项目编号": "P-REPLAY"})
    assert sender.reply_is_success(sender.instance_started(pid, "PROC-PURCHASE"))
    assert sender.reply_is_success(sender.replay())  # the identical request again
    assert sender.reply_is_success(sender.redeliver())  # DingTalk's retry: same event, new cipher text
    assert rig.metric("bizbus_webhook_requests_total", outcome="accepted") == 1
    assert rig.metric("bizbus_webhook_requests_total", outcome="duplicate") == 2

    events = rig.events(TOPIC, lambda v: v["instance_id"] in (pid, forged_id), expect=1)
    assert [(e["instance_id"], e["status"]) for e in events] == [(pid, "PENDING")]
    dead = rig.dead_letters(expect=3)
    assert sorted(d["error_type"] for d in dead) == ["Permanent/malformed"] * 3
    assert b"{not json" in {bytes(d["value"]) for d in dead}
    assert rig.metric("bizbus_webhook_seconds_count") >= 9  # every answer's time is recorded


def test_approved_then_revoked_carries_the_exact_form(rig: Rig, sender: DingTalkCallbackSender,
                                                       fake: DingTalkApi) -> None:  # fmt: skip
    pid, project = f"PI-{uuid.uuid4().hex[:10]}", f"P-{uuid.uuid4().hex[:6]}"
    lines = [{"物料编码": "MAT-STEEL-10", "数量": "10", "单价": "45.50"}]
    fake.add_instance(pid, process_code="PROC-PURCHASE", originator="E0042", title="王芳提交的采购申请",
                      form={"供应商编码": "SUP-001", "物料编码": "MAT-STEEL-10", "数量": "10", "单价": "45.50",
                            "金额": "455.00", "项目编号": project, "申请单号": "PR-7", "明细": lines})  # fmt: skip
    sent = []
    for send in (lambda: sender.instance_started(pid, "PROC-PURCHASE"),
                 lambda: sender.task_finished(pid, "PROC-PURCHASE", "agree"),
                 lambda: sender.instance_finished(pid, "PROC-PURCHASE", "agree"),
                 lambda: sender.instance_terminated(pid, "PROC-PURCHASE")):  # fmt: skip
        assert sender.reply_is_success(send())
        sent.append(sender.last_event)
    assert (
        rig.metric("bizbus_webhook_requests_total", outcome="accepted") == 3
    )  # the task change is not stored

    events = sorted(rig.events(TOPIC, of(pid), expect=3), key=lambda v: v["version"])
    assert [e["status"] for e in events] == ["PENDING", "APPROVED", "REVOKED"]
    assert events[0]["version"] < events[1]["version"] < events[2]["version"]
    approved, finish = events[1], sent[2]
    assert approved["meta"]["event_id"] == lineage.event_id("dingtalk", "instance", pid, "APPROVED",
                                                            finish["finishTime"])  # fmt: skip
    assert approved["meta"]["correlation_id"] == "PR-7" and approved["meta"]["source_system"] == "dingtalk"
    assert {k: v for k, v in approved.items() if k != "meta"} == {
        "instance_id": pid, "template_code": "PROC-PURCHASE", "template_name": "采购申请", "status": "APPROVED",
        "applicant": "E0042", "title": "王芳提交的采购申请", "amount": Decimal("455.00"), "currency": "CNY",
        "project": project, "business_ref": "PR-7",
        "form_fields": {"供应商编码": "SUP-001", "物料编码": "MAT-STEEL-10", "数量": "10", "单价": "45.50",
                        "金额": "455.00", "项目编号": project, "申请单号": "PR-7",
                        "明细": json.dumps(lines, ensure_ascii=False)},
        "submitted_at": datetime.fromtimestamp(sent[0]["createTime"] / 1000, UTC),
        "finished_at": datetime.fromtimestamp(finish["finishTime"] / 1000, UTC), "version": finish["finishTime"],
    }  # fmt: skip
    revoked = events[2]
    assert revoked["finished_at"] == datetime.fromtimestamp(sent[3]["finishTime"] / 1000, UTC)
    assert revoked["amount"] == Decimal("455.00") and revoked["form_fields"] == approved["form_fields"]


def test_token_refresh_throttling_and_unknown_instances(rig: Rig, sender: DingTalkCallbackSender,
                                                        fake: DingTalkApi) -> None:  # fmt: skip
    pid, missing = f"PI-{uuid.uuid4().hex[:10]}", f"PI-{uuid.uuid4().hex[:10]}"
    fake.add_instance(pid, process_code="PROC-PURCHASE", originator="E0042", form={"项目编号": "P-T"})
    fake.throttle(
        2
    )  # the first two reads hit the QPS limit (403 Forbidden.AccessDenied.QpsLimitForAppkeyAndApi)
    assert sender.reply_is_success(sender.instance_started(pid, "PROC-PURCHASE"))
    assert [e["status"] for e in rig.events(TOPIC, of(pid), expect=1, idle=0.2)] == ["PENDING"]

    fake.expire_tokens()  # the cached access token is refused now: the converter fetches a new one
    assert sender.reply_is_success(sender.instance_finished(pid, "PROC-PURCHASE", "refuse"))
    statuses = sorted(e["status"] for e in rig.events(TOPIC, of(pid), expect=2, idle=0.2))
    assert statuses == ["PENDING", "REJECTED"]
    assert fake.token_requests == 2

    assert sender.reply_is_success(sender.send(sender.instance_event(missing, "PROC-PURCHASE", "start")))
    dead = rig.dead_letters(expect=1)
    assert [d["error_type"] for d in dead] == ["Permanent/unknown_instance"]
    assert missing.encode() in bytes(dead[0]["value"])
    assert [s for i, s in fake.instance_requests if i == pid] == [403, 403, 200, 400, 200]
    assert rig.events(TOPIC, of(missing), idle=0.2) == []


def test_documented_samples_parse_into_canonical_events(rig: Rig, sender: DingTalkCallbackSender,
                                                         fake: DingTalkApi) -> None:  # fmt: skip
    doc = sample("process_instance.json")
    finish, legacy = (
        sample("bpms_instance_change_finish.json"),
        sample("bpms_instance_change_refuse_legacy.json"),
    )
    for event in (finish, legacy):
        fake.put_raw(event["processInstanceId"], doc["result"], success=doc["success"])
    for name in ("check_url.json", "bpms_task_change_finish.json"):
        resp = sender.send(json.dumps(sample(name), ensure_ascii=False))
        assert sender.reply_is_success(resp), name
    for event in (finish, legacy):
        assert sender.reply_is_success(sender.send(event))
    assert rig.metric("bizbus_webhook_requests_total", outcome="accepted") == 2

    got = {e["instance_id"]: e for e in rig.events(TOPIC, lambda v: v["instance_id"] in (
        finish["processInstanceId"], legacy["processInstanceId"]), expect=2)}  # fmt: skip
    common = {"template_code": "Pro-xxx", "template_name": "请假", "applicant": "manager1",
              "title": "xx提交的请假申请", "amount": None, "currency": None, "project": None, "business_ref": None,
              "form_fields": {"组件1": "示例值"}}  # fmt: skip
    approved, rejected = got["9Qgx5QqjR7axMwxxxx"], got["ad253df6-e175caf-xxxxxxxxxxxx"]
    assert {k: v for k, v in approved.items() if k != "meta"} == {
        **common, "instance_id": "9Qgx5QqjR7axMwxxxx", "status": "APPROVED", "version": 1663143335567,
        "submitted_at": datetime(2017, 5, 24, 2, 18, 25, tzinfo=UTC),
        "finished_at": datetime(2017, 5, 24, 2, 17, 52, tzinfo=UTC),
    }  # fmt: skip
    assert {k: v for k, v in rejected.items() if k != "meta"} == {
        **common, "instance_id": "ad253df6-e175caf-xxxxxxxxxxxx", "status": "REJECTED", "version": 1495592305000,
        "submitted_at": datetime(2017, 5, 24, 2, 17, 52, tzinfo=UTC),
        "finished_at": datetime(2017, 5, 24, 2, 18, 25, tzinfo=UTC),
    }  # fmt: skip
    assert approved["meta"]["event_id"] == lineage.event_id("dingtalk", "instance", "9Qgx5QqjR7axMwxxxx",
                                                            "APPROVED", 1663143335567)  # fmt: skip
    assert rejected["meta"]["occurred_at"] == datetime(2017, 5, 24, 2, 18, 25, tzinfo=UTC)
    assert httpx.get(rig.url, timeout=5).status_code == 405  # DingTalk only POSTs
