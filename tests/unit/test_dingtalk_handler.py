"""The DingTalk webhook handler on its own (no server, no inbox): requests built by the contract fake's
sender (an implementation of DingTalk's side written from the docs, not from the handler)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from bizbus.connectors.runtime.inbox import Accepted, HttpRequest, HttpResponse, WebhookRejected
from bizbus.connectors.sources.dingtalk.webhook import KIND_INSTANCE, DingTalkHandler

from bizbus.errors import ConfigError
from tests.fakes.dingtalk_api import DingTalkCallbackSender

TOKEN, AES_KEY, CORP, APP = (
    "cb-token-1",
    "0123456789abcdefghijABCDEFGHIJ0123456789xyz",
    "dingcorp123",
    "dingappkey",
)
NOW = 1_790_000_000.0


def handler(max_skew: float = 3600) -> DingTalkHandler:
    return DingTalkHandler(TOKEN, AES_KEY, (CORP, APP), max_skew, clock=lambda: NOW)


def sender(owner: str = CORP, **kw: Any) -> DingTalkCallbackSender:
    return DingTalkCallbackSender("http://unused", TOKEN, AES_KEY, owner, **kw)


def request(query: dict[str, str], body: bytes, method: str = "POST") -> HttpRequest:
    return HttpRequest(method, "", query, {"content-type": "application/json"}, body)


def signed(event: dict[str, Any] | str, s: DingTalkCallbackSender | None = None, at: float = NOW,
           **kw: Any) -> HttpRequest:  # fmt: skip
    return request(*(s or sender()).request_for(event, timestamp=str(int(at * 1000)), **kw))


def reply_plaintext(resp: HttpResponse, s: DingTalkCallbackSender | None = None) -> str:
    assert resp.status == 200 and resp.content_type == "application/json"
    return (s or sender()).decrypt_reply(httpx.Response(200, content=resp.body))


def rejected(req: HttpRequest, h: DingTalkHandler | None = None) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as err:
        (h or handler()).handle(req)
    return err.value


def test_instance_change_becomes_one_delivery_and_the_answer_is_the_encrypted_success() -> None:
    s = sender()
    event = s.instance_event("PI-1", "PROC-PR", "finish", "agree")
    out = handler().handle(signed(event, s))
    assert isinstance(out, Accepted) and len(out.deliveries) == 1
    d = out.deliveries[0]
    assert (d.delivery_id, d.kind, d.entity_key) == (f"dingtalk:{event['eventId']}", KIND_INSTANCE,
                                                     "instance:PI-1@finish/agree")  # fmt: skip
    assert d.payload == event
    assert reply_plaintext(out.response, s) == "success"


def test_app_key_owner_and_the_docs_signature_parameter_are_accepted() -> None:
    s = sender(APP, signature_param="signature")  # the docs' URL example: ?signature=&timestamp=&nonce=
    out = handler().handle(signed(s.instance_event("PI-2", "P", "start"), s))
    assert isinstance(out, Accepted) and out.deliveries[0].entity_key == "instance:PI-2@start/"
    assert reply_plaintext(out.response, s) == "success"  # the answer carries the owner key it came with


def test_check_url_is_answered_and_nothing_is_stored() -> None:
    out = handler().handle(signed({"EventType": "check_url"}))
    assert isinstance(out, HttpResponse) and reply_plaintext(out) == "success"


@pytest.mark.parametrize("event", [
    {"EventType": "bpms_task_change", "processInstanceId": "PI-3", "type": "finish", "result": "agree", "taskId": 1},
    {"EventType": "user_add_org", "UserId": ["u1"], "CorpId": CORP},
    {"EventType": "bpms_instance_change", "processInstanceId": "PI-3", "type": "comment"},
])  # fmt: skip
def test_other_events_are_answered_but_not_stored(event: dict[str, Any]) -> None:
    out = handler().handle(signed(event))
    assert isinstance(out, Accepted) and out.deliveries == () and reply_plaintext(out.response) == "success"


def test_wrong_or_missing_signature_is_401() -> None:
    query, body = sender().request_for({"EventType": "check_url"}, timestamp=str(int(NOW * 1000)))
    err = rejected(request({**query, "msg_signature": "0" * 40}, body))
    assert (err.status, err.reason) == (401, "bad_signature")
    assert rejected(request({k: v for k, v in query.items() if k != "nonce"}, body)).reason == "bad_signature"
    other_token = DingTalkCallbackSender("http://unused", "another-token", AES_KEY, CORP)
    assert rejected(signed({"EventType": "check_url"}, other_token)).reason == "bad_signature"
    tampered = json.dumps({"encrypt": json.loads(body)["encrypt"][:-4] + "AAA="})  # signed value changed
    assert rejected(request(query, tampered.encode())).reason == "bad_signature"


def test_old_or_future_timestamps_are_401_stale() -> None:
    assert rejected(signed({"EventType": "check_url"}, at=NOW - 3601)).reason == "stale"
    assert rejected(signed({"EventType": "check_url"}, at=NOW + 3601)).reason == "stale"
    assert isinstance(handler().handle(signed({"EventType": "check_url"}, at=NOW - 3500)), HttpResponse)
    assert rejected(signed({"EventType": "check_url"}, at=NOW - 100), handler(max_skew=60)).reason == "stale"
    seconds = request(*sender().request_for({"EventType": "check_url"}, timestamp=str(int(NOW))))
    assert isinstance(handler().handle(seconds), HttpResponse)  # a timestamp in seconds is understood too
    assert rejected(request(*sender().request_for("{}", timestamp="soon"))).reason == "stale"


def test_malformed_requests_are_400() -> None:
    s = sender()
    query, _ = s.request_for("{}")
    assert rejected(request(query, b"{not json")).status == 400
    assert rejected(request(query, b'{"data": 1}')).reason == "malformed"
    # correctly signed, but not DingTalk's encryption (garbage, or another aes_key)
    garbage = "QUJDREVGR0hJSktMTU5PUA=="
    ts, nonce = str(int(NOW * 1000)), "n0nce"
    q = {"msg_signature": s.sign(ts, nonce, garbage), "timestamp": ts, "nonce": nonce}
    err = rejected(request(q, json.dumps({"encrypt": garbage}).encode()))
    assert (err.status, err.reason) == (400, "malformed") and "decrypt" in err.message
    foreign = DingTalkCallbackSender("http://unused", TOKEN, "Z" * 43, CORP)
    assert rejected(signed({"EventType": "check_url"}, foreign)).reason == "malformed"
    assert "another corp" in rejected(signed({"EventType": "check_url"}, sender("dingstranger"))).message
    assert "not a JSON object" in rejected(signed('["a"]')).message
    assert rejected(signed("no json at all")).reason == "malformed"
    assert (
        "processInstanceId"
        in rejected(signed({"EventType": "bpms_instance_change", "type": "start"})).message
    )
    assert rejected(request(query, b"", method="GET")).status == 405


def test_a_redelivery_repeats_the_delivery_id_for_events_with_and_without_an_event_id() -> None:
    s = sender()
    event = s.instance_event("PI-4", "P", "terminate")
    first, again = (handler().handle(signed(event, s)) for _ in range(2))
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert first.deliveries == again.deliveries
    legacy = {k: v for k, v in event.items() if k not in ("eventId", "BizId", "EventTime", "CorpId")}
    one, two = (handler().handle(signed(legacy, s)) for _ in range(2))
    assert isinstance(one, Accepted) and isinstance(two, Accepted)
    assert one.deliveries[0].delivery_id == two.deliveries[0].delivery_id != first.deliveries[0].delivery_id


def test_secrets_are_checked_when_the_handler_is_built() -> None:
    with pytest.raises(ConfigError, match="43 characters"):
        DingTalkHandler(TOKEN, "short", (CORP,), 3600)
