"""Contract tests of the ``feishu`` source: the connector behind bizbus's real HTTP server, embedded broker,
registry and PostgreSQL, talking to the Feishu contract fake (tests/fakes/feishu_api.py) and receiving
callbacks built as Feishu builds them (encrypted, signed, v2 and v1 envelopes).

No backfill: Feishu offers no "changed since" query whose results carry the webhook's change version
(see connectors/sources/feishu/connector.py), so the connector runs the inbox task only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from bizbus.connectors.runtime.inbox import inbox_table

from bizbus import lineage
from bizbus.errors import ConfigError
from tests.fakes.feishu_api import FeishuApi, FeishuEventSender, feishu_encrypt, feishu_signature
from tests.webhook_harness import Rig, webhook_rig

TOPIC = "bizbus.oa.approval.v1"
SAMPLES = Path(__file__).parent / "samples" / "feishu"
TOKEN, KEY = "v-token-" + uuid.uuid4().hex[:8], "encrypt-key-" + uuid.uuid4().hex[:8]
METRIC = "bizbus_webhook_requests_total"


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FeishuApi]:
    with FeishuApi() as fake:
        monkeypatch.setenv("BIZBUS_TEST_FEISHU_SECRET", fake.app_secret)
        monkeypatch.setenv("BIZBUS_TEST_FEISHU_TOKEN", TOKEN)
        monkeypatch.setenv("BIZBUS_TEST_FEISHU_KEY", KEY)
        yield fake


def config(api: FeishuApi, *codes: str, encrypted: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "app_id": api.app_id,
        "app_secret_env": "BIZBUS_TEST_FEISHU_SECRET",
        "verification_token_env": "BIZBUS_TEST_FEISHU_TOKEN",
        **({"encrypt_key_env": "BIZBUS_TEST_FEISHU_KEY"} if encrypted else {}),
        "api_base_url": api.url,
        "approval_codes": list(codes),
        "amount_field": "金额",
        "project_field": "项目编号",
        "business_ref_field": "申请单号",
        **extra,
    }


def approval(api: FeishuApi) -> str:
    code = f"APPROVAL-{uuid.uuid4().hex[:10].upper()}"
    api.add_approval(code, "采购申请")
    return code


def instance(api: FeishuApi, approval_code: str, amount: Any = 1234.5, **kw: Any) -> str:
    code = f"INST-{uuid.uuid4().hex[:12].upper()}"
    form = [{"id": "widget1", "name": "申请单号", "type": "input", "value": f"CGSQ-{code[-6:]}"},
            {"id": "widget2", "name": "金额", "type": "amount", "value": amount}]  # fmt: skip
    api.put_instance(code, approval_code, form=form, **kw)
    return code


def stored(postgres: psycopg.Connection, rig: Rig) -> int:
    row = postgres.execute(f'SELECT count(*) FROM bizbus_state."{inbox_table(rig.name)}"').fetchone()
    assert row is not None
    return int(row[0])


def for_instance(code: str) -> Any:
    return lambda v: v["instance_id"] == code


def test_url_verification_plain_and_encrypted_stores_nothing(api: FeishuApi, embedded_broker: Any, registry: Any,
                                                              postgres: psycopg.Connection) -> None:  # fmt: skip
    with webhook_rig(embedded_broker, registry, "feishu", config(api)) as rig:
        resp = FeishuEventSender(rig.url, TOKEN, KEY).url_verification("ajls384kdjx98XX")
        assert resp.status_code == 200 and resp.json() == {"challenge": "ajls384kdjx98XX"}
        resp = FeishuEventSender(rig.url, "xxxxxx", KEY).url_verification("ajls384kdjx98XX")
        assert resp.status_code == 401
        assert rig.metric(METRIC, outcome="handshake") == 1 and rig.metric(METRIC, outcome="bad_token") == 1
        assert stored(postgres, rig) == 0
    with webhook_rig(embedded_broker, registry, "feishu", config(api, encrypted=False)) as rig:
        message = {**sample("url_verification.json"), "token": TOKEN}  # the documented request, our token
        resp = FeishuEventSender(rig.url, TOKEN).post_message(message)
        assert resp.status_code == 200 and resp.json() == {"challenge": "ajls384kdjx98XX"}
        assert FeishuEventSender(rig.url, TOKEN).instance_status("I", "A", "PENDING", token="wrong").status_code == 401
        assert stored(postgres, rig) == 0


def test_wrong_signature_stale_or_unsigned_is_refused_and_nothing_produced(
    api: FeishuApi, embedded_broker: Any, registry: Any, postgres: psycopg.Connection
) -> None:
    code = approval(api)
    inst = instance(api, code)
    with webhook_rig(embedded_broker, registry, "feishu", config(api, code)) as rig:
        sender = FeishuEventSender(rig.url, TOKEN, KEY)
        message = {"schema": "2.0", "event": {"type": "approval_instance", "approval_code": code,
                   "instance_code": inst, "status": "APPROVED", "operate_time": "1700000000000"},
                   "header": {"event_id": uuid.uuid4().hex, "event_type": "approval_instance", "token": TOKEN}}  # fmt: skip
        assert sender.post_message(message, tamper=True).status_code == 401
        assert sender.post_message(message, sign=False).status_code == 401
        assert sender.post_message(message, timestamp=int(time.time()) - 3600).status_code == 401
        assert rig.metric(METRIC, outcome="bad_signature") == 2
        assert rig.metric(METRIC, outcome="stale") == 1
        assert stored(postgres, rig) == 0
        assert rig.events(TOPIC, for_instance(inst), expect=0, timeout=3, idle=1.5) == []
        assert rig.dead_letters(expect=0, timeout=2, idle=0.5) == []  # 401s are not dead letters


def test_redelivery_and_the_other_envelope_produce_once(api: FeishuApi, embedded_broker: Any, registry: Any) -> None:
    code = approval(api)
    inst = instance(api, code, status="APPROVED", end_time=1700000000000)
    with webhook_rig(embedded_broker, registry, "feishu", config(api, code)) as rig:
        sender = FeishuEventSender(rig.url, TOKEN, KEY)
        assert sender.instance_status(inst, code, "APPROVED", 1700000000000).status_code == 200
        assert sender.redeliver().status_code == 200  # Feishu's retry: same event_id, new signature and IV
        assert sender.redeliver().status_code == 200
        # the same change once more in the v1 envelope, under another delivery id
        assert sender.instance_status(inst, code, "APPROVED", 1700000000000, envelope="v1").status_code == 200
        events = rig.events(TOPIC, for_instance(inst), expect=1)
        assert len(events) == 1
        assert rig.metric(METRIC, outcome="accepted") == 1 and rig.metric(METRIC, outcome="duplicate") == 3
        assert events[0]["meta"]["event_id"] == lineage.event_id("feishu", "approval_instance", inst, "APPROVED",
                                                                  1700000000000)  # fmt: skip


def test_malformed_bodies_are_400_and_dead_lettered(api: FeishuApi, embedded_broker: Any, registry: Any) -> None:
    with webhook_rig(embedded_broker, registry, "feishu", config(api)) as rig:
        sender = FeishuEventSender(rig.url, TOKEN, KEY)
        bodies = [json.dumps({"encrypt": feishu_encrypt("some other key", b'{"schema":"2.0"}')}).encode(),
                  json.dumps({"encrypt": feishu_encrypt(KEY, b'{"schema": "2.0", "event": {}}')}).encode()]  # fmt: skip
        for body in bodies:
            ts, nonce = str(int(time.time())), "8172"
            headers = {"Content-Type": "application/json", "X-Lark-Request-Timestamp": ts,
                       "X-Lark-Request-Nonce": nonce, "X-Lark-Signature": feishu_signature(ts, nonce, KEY, body)}  # fmt: skip
            assert sender.post_raw(body, headers).status_code == 400
        dead = rig.dead_letters(expect=2)
        assert sorted(d["value"] for d in dead) == sorted(bodies)
        assert {d["error_type"] for d in dead} == {"Permanent/malformed"}
        assert rig.metric(METRIC, outcome="malformed") == 2


def test_documented_samples_become_exact_canonical_events(api: FeishuApi, embedded_broker: Any, registry: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    v1, v2, detail = sample("approval_instance_v1.json"), sample("approval_instance_v2.json"), sample("instance_get.json")
    code, inst = v1["event"]["approval_code"], v1["event"]["instance_code"]
    monkeypatch.setenv("BIZBUS_TEST_FEISHU_TOKEN", v1["token"])
    api.add_approval(code, "Payment")
    api.put_instance_data(inst, detail["data"])
    with webhook_rig(embedded_broker, registry, "feishu", config(api, code)) as rig:
        sender = FeishuEventSender(rig.url, v1["token"], KEY)
        assert sender.post_message(v1).status_code == 200
        assert sender.post_message(v2).status_code == 200
        events = sorted(rig.events(TOPIC, for_instance(inst), expect=2), key=lambda v: v["version"])
    assert [(e["status"], e["version"]) for e in events] == [("PENDING", 1666079207003), ("APPROVED", 1666082807003)]
    pending, approved = events
    assert pending["meta"]["event_id"] == lineage.event_id("feishu", "approval_instance", inst, "PENDING", 1666079207003)
    assert pending["meta"]["correlation_id"] == "CGSQ000123" and pending["meta"]["source_system"] == "feishu"
    assert pending["meta"]["occurred_at"] == datetime(2022, 10, 18, 7, 46, 47, 3000, tzinfo=UTC)
    assert {k: approved[k] for k in approved if k not in ("meta", "form_fields")} == {
        "instance_id": "81D31358-93AF-92D6-7425-01A5D67C4E71",
        "template_code": "7C468A54-8745-2245-9675-08B7C63E7A85",
        "template_name": "Payment",
        "status": "APPROVED",
        "applicant": "f3ta757q",
        "title": None,
        "amount": Decimal("1234.56"),
        "currency": "CNY",
        "project": "P-2026-001",
        "business_ref": "CGSQ000123",
        "submitted_at": datetime(2019, 7, 31, 16, 28, 52, 967000, tzinfo=UTC),
        "finished_at": datetime(2022, 10, 18, 8, 46, 47, 3000, tzinfo=UTC),
        "version": 1666082807003,
    }
    assert pending["finished_at"] is None
    assert approved["form_fields"]["联系人"] == '["f8ca557e"]' and approved["form_fields"]["数量"] == "12"


def test_subscribe_at_setup_is_idempotent_and_auth_failure_is_clear(api: FeishuApi, embedded_broker: Any,
                                                                    registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    a, b = approval(api), approval(api)
    with webhook_rig(embedded_broker, registry, "feishu", config(api, a, b, a)):
        assert api.subscriptions == {a, b}
        assert api.subscribe_answers == [(a, 0), (b, 0)]
    with webhook_rig(embedded_broker, registry, "feishu", config(api, a, b)):  # a restart: already subscribed
        assert api.subscribe_answers[2:] == [(a, 1390007), (b, 1390007)]
    unknown = config(api, "NO-SUCH-APPROVAL")
    with pytest.raises(ConfigError, match="NO-SUCH-APPROVAL"), webhook_rig(embedded_broker, registry, "feishu", unknown):
        pass
    monkeypatch.setenv("BIZBUS_TEST_FEISHU_SECRET", "a wrong secret")
    refused = pytest.raises(ConfigError, match=r"10014.*BIZBUS_TEST_FEISHU_SECRET")
    with refused as info, webhook_rig(embedded_broker, registry, "feishu", config(api, a)):
        pass
    assert "a wrong secret" not in str(info.value)


def test_reverted_is_revoked_and_rate_limit_and_token_expiry_are_retried(
    api: FeishuApi, embedded_broker: Any, registry: Any
) -> None:
    code = approval(api)
    inst = instance(api, code, amount="880", status="APPROVED", end_time=1700000000000)
    with webhook_rig(embedded_broker, registry, "feishu", config(api, code)) as rig:
        sender = FeishuEventSender(rig.url, TOKEN, KEY)
        api.throttle(n=2, reset_seconds=1)
        assert sender.instance_status(inst, code, "APPROVED", 1700000000000).status_code == 200
        first = rig.events(TOPIC, for_instance(inst), expect=1, idle=0.5)
        tokens = api.calls("token")
        api.expire_tokens()
        assert sender.instance_status(inst, code, "REVERTED", 1700000600000, envelope="v1").status_code == 200
        events = rig.events(TOPIC, for_instance(inst), expect=2)
    assert len(first) == 1 and api.calls("throttled") == 2  # two reads were answered 429, then retried
    assert [(e["status"], e["version"], e["amount"]) for e in events] == [
        ("APPROVED", 1700000000000, Decimal("880.00")),
        ("REVOKED", 1700000600000, Decimal("880.00")),
    ]
    assert api.calls("token") == tokens + 1  # the expired token was replaced once


def test_unknown_instance_is_dead_lettered_other_events_ignored_no_backfill(
    api: FeishuApi, embedded_broker: Any, registry: Any, postgres: psycopg.Connection
) -> None:
    code = approval(api)
    missing = f"INST-MISSING-{uuid.uuid4().hex[:8]}"
    with webhook_rig(embedded_broker, registry, "feishu", config(api, code)) as rig:
        assert [s.shard for s in rig.component.task_specs(4)] == ["inbox"]
        sender = FeishuEventSender(rig.url, TOKEN, KEY)
        task = {"schema": "2.0", "header": {"event_id": uuid.uuid4().hex, "event_type": "approval_task", "token": TOKEN},
                "event": {"type": "approval_task", "instance_code": missing, "status": "PENDING"}}  # fmt: skip
        assert sender.post_message(task).status_code == 200
        assert stored(postgres, rig) == 0
        assert sender.instance_status(missing, code, "APPROVED").status_code == 200
        dead = rig.dead_letters(expect=1)
    assert len(dead) == 1 and dead[0]["error_type"] == "Permanent/not_found" and dead[0]["error_class"] == "PERMANENT"
    assert missing in json.loads(dead[0]["value"])["payload"]["event"]["instance_code"]


def test_the_fake_answers_like_feishu_without_a_token(api: FeishuApi) -> None:
    resp = httpx.get(f"{api.url}/open-apis/approval/v4/instances/X")
    assert resp.status_code == 400 and resp.json()["code"] == 99991661
