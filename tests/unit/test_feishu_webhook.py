"""The Feishu webhook handler as a pure function: HttpRequest in, Accepted / HttpResponse / WebhookRejected out."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from bizbus.connectors.runtime.inbox import Accepted, HttpRequest, HttpResponse, WebhookRejected
from bizbus.connectors.sources.feishu.webhook import FeishuWebhook

from tests.fakes.feishu_api import feishu_encrypt, feishu_signature

TOKEN, KEY = "41a9425ea7df4536a7623e38fa321bae", "encrypt-key-1"
NOW = 1_700_000_000.0


def v2(status: str = "APPROVED", operate_time: Any = "1666082807003", token: str = TOKEN,
       event_type: str = "approval_instance", event_id: str = "5e3702a84e847582be8db7fb73283c02") -> dict[str, Any]:  # fmt: skip
    return {
        "schema": "2.0",
        "header": {"event_id": event_id, "event_type": event_type, "create_time": "1666082807003",
                   "token": token, "app_id": "cli_xxx", "tenant_key": "xxx"},
        "event": {"type": "approval_instance", "approval_code": "APPROVAL-1", "instance_code": "INST-1",
                  "status": status, "operate_time": operate_time, "instance_operate_time": "1666082807003"},
    }  # fmt: skip


def v1(status: str = "REVERTED", operate_time: Any = 1666082807003) -> dict[str, Any]:
    return {"ts": "1666082807.7171419", "uuid": "bc447199585340d1f3728d26b1c0297a", "token": TOKEN,
            "type": "event_callback",
            "event": {"app_id": "cli_xxx", "tenant_key": "xxx", "type": "approval_instance",
                      "approval_code": "APPROVAL-1", "instance_code": "INST-1", "status": status,
                      "operate_time": operate_time, "instance_operate_time": str(operate_time)}}  # fmt: skip


def request(message: Any, *, key: str | None = KEY, sign: bool = True, sign_key: str | None = None,
            ts: float = NOW, method: str = "POST", raw: bytes | None = None) -> HttpRequest:  # fmt: skip
    body = raw if raw is not None else json.dumps(message, ensure_ascii=False).encode()
    if key and raw is None:
        body = json.dumps({"encrypt": feishu_encrypt(key, body)}).encode()
    headers = {"content-type": "application/json"}
    if sign:
        stamp = str(int(ts))
        headers |= {"x-lark-request-timestamp": stamp, "x-lark-request-nonce": "1234567",
                    "x-lark-signature": feishu_signature(stamp, "1234567", sign_key or key or KEY, body)}  # fmt: skip
    return HttpRequest(method, "", {}, headers, body)


def handler(key: str | None = KEY) -> FeishuWebhook:
    return FeishuWebhook(TOKEN, key, max_skew=300, clock=lambda: NOW)


def rejected(req: HttpRequest, h: FeishuWebhook | None = None) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as info:
        (h or handler()).handle(req)
    return info.value


def test_encrypted_signed_v2_event_is_one_delivery_without_the_token() -> None:
    out = handler().handle(request(v2()))
    assert isinstance(out, Accepted) and out.response.status == 200
    (d,) = out.deliveries
    assert d.delivery_id == "5e3702a84e847582be8db7fb73283c02"
    assert d.kind == "approval_instance"
    assert d.entity_key == "instance:INST-1@APPROVED/1666082807003"
    assert d.payload["event"]["instance_code"] == "INST-1" and d.payload["schema"] == "2.0"
    assert TOKEN not in json.dumps(d.payload)


def test_v1_envelope_with_int64_operate_time_names_the_change_like_v2() -> None:
    (d1,) = handler().handle(request(v1("APPROVED", 1666082807003))).deliveries  # type: ignore[union-attr]
    (d2,) = handler().handle(request(v2("APPROVED", "1666082807003"))).deliveries  # type: ignore[union-attr]
    assert d1.delivery_id == "bc447199585340d1f3728d26b1c0297a"
    assert d1.entity_key == d2.entity_key  # the same change in both envelopes is stored once


def test_url_verification_echoes_the_challenge_as_plain_json_also_when_encrypted() -> None:
    challenge = {"challenge": "ajls384kdjx98XX", "token": TOKEN, "type": "url_verification"}
    for req in (request(challenge, sign=False), request(challenge, key=None, sign=False)):
        out = handler().handle(req)
        assert isinstance(out, HttpResponse) and out.status == 200
        assert json.loads(out.body) == {"challenge": "ajls384kdjx98XX"}
    err = rejected(request({**challenge, "token": "xxxxxx"}, sign=False))
    assert (err.status, err.reason) == (401, "bad_token")


@pytest.mark.parametrize(
    ("req", "status", "reason"),
    [
        (request(v2(), sign_key="another key"), 401, "bad_signature"),
        (request(v2(), sign=False), 401, "bad_signature"),
        (request(None, sign=False, raw=b"garbage"), 401, "bad_signature"),  # unsigned garbage is no dead letter
        (request(v2(), ts=NOW - 301), 401, "stale"),
        (request(v2(), ts=NOW + 301), 401, "stale"),
        (request(v2(token="wrong")), 401, "bad_token"),
        (request(None, raw=b'{"schema": "2.0", '), 400, "malformed"),
        (request(None, raw=b'{"encrypt": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}'), 400, "malformed"),
        (request({"schema": "2.0", "header": {"event_type": "approval_instance"}, "event": {}}), 400, "malformed"),
        (request({**v2(), "event": {"type": "approval_instance", "status": "APPROVED"}}), 400, "malformed"),
        (request(v2(operate_time="yesterday")), 400, "malformed"),
        (request(v2(), method="GET"), 405, "method"),
    ],
)
def test_refusals(req: HttpRequest, status: int, reason: str) -> None:
    err = rejected(req)
    assert (err.status, err.reason) == (status, reason)


def test_signed_with_our_key_but_encrypted_with_another_is_malformed() -> None:
    body = json.dumps({"encrypt": feishu_encrypt("another key", json.dumps(v2()).encode())}).encode()
    stamp = str(int(NOW))
    headers = {"x-lark-request-timestamp": stamp, "x-lark-request-nonce": "n",
               "x-lark-signature": feishu_signature(stamp, "n", KEY, body)}  # fmt: skip
    err = rejected(HttpRequest("POST", "", {}, headers, body))
    assert (err.status, err.reason) == (400, "malformed")


def test_other_event_types_are_answered_and_not_stored() -> None:
    out = handler().handle(request(v2(event_type="approval_task")))
    assert isinstance(out, Accepted) and out.deliveries == () and out.response.status == 200


def test_without_encrypt_key_plain_events_are_taken_and_encrypted_ones_refused() -> None:
    plain = handler(key=None)
    out = plain.handle(request(v1(), key=None, sign=False))
    assert isinstance(out, Accepted) and out.deliveries[0].entity_key == "instance:INST-1@REVERTED/1666082807003"
    err = rejected(request(v2()), plain)
    assert (err.status, err.reason) == (400, "malformed")
    err = rejected(request(v2(token="nope"), key=None, sign=False), plain)
    assert (err.status, err.reason) == (401, "bad_token")


def test_real_clock_accepts_a_fresh_request() -> None:
    h = FeishuWebhook(TOKEN, KEY, max_skew=300)
    assert isinstance(h.handle(request(v2(), ts=time.time())), Accepted)
