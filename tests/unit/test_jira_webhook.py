"""The webhook handler alone: X-Hub-Signature, delivery ids, entity keys, refusals (no server, no Jira)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from bizbus.connectors.runtime.inbox import Accepted, HttpRequest, WebhookRejected
from bizbus.connectors.sources.jira.webhook import JiraWebhookHandler, sign, signature_ok

SAMPLES = Path(__file__).parents[1] / "contract" / "samples" / "jira"
SECRET = b"It's a Secret to Everybody"


def request(body: bytes, *, signature: str | None = "auto", identifier: str | None = "d-1",
            method: str = "POST") -> HttpRequest:  # fmt: skip
    headers = {}
    if signature == "auto":
        signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if signature is not None:
        headers["x-hub-signature"] = signature
    if identifier is not None:
        headers["x-atlassian-webhook-identifier"] = identifier
    return HttpRequest(method, "", {}, headers, body)


def handle(body: bytes | dict[str, Any], **kw: Any) -> Accepted:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = JiraWebhookHandler(SECRET, ["project_archived"]).handle(request(raw, **kw))
    assert isinstance(out, Accepted)
    return out


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"webhookEvent":"jira:issue_updated"}'
    digest = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body) == f"sha256={digest}"
    assert signature_ok(SECRET, body, f"sha256={digest}")
    assert signature_ok(SECRET, body, f"SHA256={digest.upper()}")
    assert not signature_ok(SECRET, body + b" ", f"sha256={digest}")  # re-serialised JSON does not pass
    assert not signature_ok(b"other", body, f"sha256={digest}")
    for bad in (None, "", digest, f"sha1={digest}", "sha256=", "sha256=zz"):
        assert not signature_ok(SECRET, body, bad)


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "garbage"])
def test_missing_or_wrong_signature_is_401(signature: str | None) -> None:
    with pytest.raises(WebhookRejected) as exc:
        JiraWebhookHandler(SECRET, ()).handle(request(sample("worklog_created"), signature=signature))
    assert (exc.value.status, exc.value.reason) == (401, "bad_signature")


@pytest.mark.parametrize(("name", "kind", "key"), [
    ("worklog_created", "jira:worklog_created", "worklog:10100@1793701200123"),
    ("worklog_updated", "jira:worklog_updated", "worklog:10100@1793757600000"),
    ("worklog_deleted", "jira:worklog_deleted", "worklog:10100@deleted"),
    ("issue_created", "jira:issue_created", "issue:10042@1793578530250"),
    ("issue_updated", "jira:issue_updated", "issue:10042@1793581262500"),
    ("issue_deleted", "jira:issue_deleted", "issue:10042@deleted"),
    ("project_created", "jira:project_created", "project:10000@1793494800000"),
    ("project_archived", "jira:project_archived", "project:10000@1797787800000"),
])  # fmt: skip
def test_each_documented_event_becomes_one_delivery(name: str, kind: str, key: str) -> None:
    out = handle(sample(name), identifier=f"id-{name}")
    [d] = out.deliveries
    assert (d.delivery_id, d.kind, d.entity_key) == (f"id-{name}", kind, key)
    assert d.payload == json.loads(sample(name)) and out.response.status == 200


def test_delivery_id_falls_back_to_the_body_hash() -> None:
    body = sample("worklog_created")
    [d] = handle(body, identifier=None).deliveries
    assert d.delivery_id == "sha256:" + hashlib.sha256(body).hexdigest()


def test_other_events_are_answered_and_store_nothing() -> None:
    assert (
        handle({"timestamp": 1, "webhookEvent": "comment_created", "comment": {"id": "1"}}).deliveries == ()
    )
    assert handle({"timestamp": 1, "webhookEvent": "sprint_started"}).deliveries == ()


def test_a_configured_completion_event_is_taken() -> None:
    body = {**json.loads(sample("project_created")), "webhookEvent": "project_restored_archived"}
    raw = json.dumps(body).encode()
    assert JiraWebhookHandler(SECRET, ()).handle(request(raw)).deliveries == ()  # type: ignore[union-attr]
    out = JiraWebhookHandler(SECRET, ["project_restored_archived"]).handle(request(raw))
    assert [d.kind for d in out.deliveries] == ["jira:project_restored_archived"]  # type: ignore[union-attr]


@pytest.mark.parametrize("body", [
    b"{not json", b"[]", b'"text"', json.dumps({"timestamp": 1}).encode(),
    json.dumps({"timestamp": 1, "webhookEvent": ""}).encode(),
    json.dumps({"timestamp": 1, "webhookEvent": "worklog_created"}).encode(),  # no worklog
    json.dumps({"timestamp": 1, "webhookEvent": "worklog_created", "worklog": {"id": "1"}}).encode(),  # no issueId
    json.dumps({"webhookEvent": "project_created", "project": {"id": 1, "key": "P"}}).encode(),  # no timestamp
    json.dumps({"timestamp": 1, "webhookEvent": "jira:issue_updated", "issue": {"id": "1", "key": "P-1",
                "fields": {"updated": "last tuesday"}}}).encode(),
])  # fmt: skip
def test_signed_but_malformed_bodies_are_400(body: bytes) -> None:
    with pytest.raises(WebhookRejected) as exc:
        JiraWebhookHandler(SECRET, ()).handle(request(body))
    assert (exc.value.status, exc.value.reason, exc.value.dead_letter) == (400, "malformed", True)


def test_only_post_is_taken() -> None:
    with pytest.raises(WebhookRejected) as exc:
        JiraWebhookHandler(SECRET, ()).handle(request(b"", method="GET"))
    assert exc.value.status == 405


def test_config_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from bizbus.connectors.sources.jira.config import JiraConfig
    from bizbus.connectors.sources.jira.connector import JiraSource
    from pydantic import ValidationError

    from bizbus.errors import ConfigError

    base = {"base_url": "https://acme.atlassian.net/", "email": "bot@acme.example", "token_env": "JIRA_T",
            "secret_env": "JIRA_S", "company": "C100"}  # fmt: skip
    conf = JiraConfig(**base)
    assert conf.base_url == "https://acme.atlassian.net" and conf.completion_events == ("project_archived",)
    assert (conf.timezone, str(conf.jql_zone), conf.settle_seconds, conf.backfill) == ("Asia/Shanghai",
                                                                                       "Asia/Shanghai", 60, True)  # fmt: skip
    for bad in ({"base_url": "acme.atlassian.net"}, {"timezone": "Mars/Olympus"}, {"secret_env": "s3cr3t-v@lue"},
                {"unknown": 1}, {"settle_seconds": -1}):  # fmt: skip
        with pytest.raises(ValidationError):
            JiraConfig(**{**base, **bad})
    source = JiraSource("jira-x", conf, None)  # type: ignore[arg-type]
    monkeypatch.delenv("JIRA_S", raising=False)
    with pytest.raises(ConfigError, match="JIRA_S"):
        source.handler()
    monkeypatch.setenv("JIRA_S", "the-secret")
    handler = source.handler()
    assert isinstance(handler, JiraWebhookHandler)
    body = b'{"timestamp": 1, "webhookEvent": "sprint_started"}'
    ok = request(body, signature=sign(b"the-secret", body))
    assert handler.handle(ok) == Accepted(deliveries=())
    assert JiraSource("jira-y", JiraConfig(**base, backfill=False), None).backfill() is None  # type: ignore[arg-type]
