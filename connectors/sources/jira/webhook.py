"""The push side: verify Jira's ``X-Hub-Signature`` and turn one webhook body into one inbox delivery.

Fast and local (no Jira API call): signature, JSON, the event's entity version. The delivery id is
``X-Atlassian-Webhook-Identifier`` (unchanged across Jira's retries), else the SHA-256 of the body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from bizbus.connectors.runtime.inbox import (
    Accepted,
    Delivery,
    HttpRequest,
    HttpResponse,
    WebhookHandler,
    WebhookRejected,
    parse_json_body,
    reject_unless,
)

from .mapping import (
    ISSUE_EVENTS,
    PROJECT_EVENTS,
    WORKLOG_EVENTS,
    MappingError,
    issue_key,
    issue_version,
    need,
    project_key,
    timestamp_ms,
    worklog_key,
    worklog_version,
)

SIGNATURE_HEADER = "x-hub-signature"
DELIVERY_HEADER = "x-atlassian-webhook-identifier"


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature`` value Jira sends: ``sha256=<hex HMAC-SHA256(secret, raw body)>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of an ``X-Hub-Signature`` header (method name case-insensitive)."""
    if not header:
        return False
    method, _, digest = header.strip().partition("=")
    if method.lower() != "sha256" or not digest:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), digest.strip().lower().encode())


def handled_events(completion_events: Iterable[str]) -> frozenset[str]:
    extra = {e for e in completion_events if e.startswith("project_")}
    return frozenset({*ISSUE_EVENTS, *WORKLOG_EVENTS, *PROJECT_EVENTS, *extra})


def delivery_for(body: Mapping[str, Any], delivery_id: str, handled: frozenset[str]) -> Delivery | None:
    """The inbox delivery of one verified body; None for an event bizbus does not take.

    Raises ``MappingError`` when a handled event lacks what identifies its entity version."""
    event = str(body["webhookEvent"])
    if event not in handled:
        return None
    ts = timestamp_ms(body)
    kind = event if event.startswith("jira:") else f"jira:{event}"
    if event in ISSUE_EVENTS:
        issue = need(body, "issue", "body")
        ident = need(issue, "id", "issue")
        need(issue, "key", "issue")
        key = issue_key(ident, None if event == "jira:issue_deleted" else issue_version(issue, ts))
    elif event in WORKLOG_EVENTS:
        worklog = need(body, "worklog", "body")
        ident = need(worklog, "id", "worklog")
        need(worklog, "issueId", "worklog")
        key = worklog_key(ident, None if event == "worklog_deleted" else worklog_version(worklog, ts))
    else:
        project = need(body, "project", "body")
        need(project, "key", "project")
        key = project_key(project.get("id", project["key"]), ts)
    return Delivery(delivery_id=delivery_id, kind=kind, payload=body, entity_key=key)


class JiraWebhookHandler(WebhookHandler):
    """``POST /webhooks/<connector>``: 401 bad/missing signature, 400 not a Jira event, else one delivery."""

    def __init__(self, secret: bytes, completion_events: Iterable[str]) -> None:
        self._secret = secret
        self.handled = handled_events(completion_events)

    def precheck(self, method: str, subpath: str, query: Mapping[str, str], headers: Mapping[str, str]) -> None:
        """Before the body is read: a POST carrying a signature (it is checked against the body later)."""
        reject_unless(method == "POST", 405, "method_not_allowed", "Jira webhooks are POST requests")
        reject_unless(bool(headers.get(SIGNATURE_HEADER)), 401, "bad_signature", "X-Hub-Signature is missing")

    def handle(self, request: HttpRequest) -> Accepted | HttpResponse:
        reject_unless(request.method == "POST", 405, "method_not_allowed", "Jira webhooks are POST requests")
        reject_unless(signature_ok(self._secret, request.body, request.headers.get(SIGNATURE_HEADER)), 401,
                      "bad_signature", "X-Hub-Signature is missing or does not match the body")  # fmt: skip
        body = parse_json_body(request.body)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("webhookEvent"), str)
            or not body["webhookEvent"]
        ):
            raise WebhookRejected(400, "malformed", "body is not a Jira webhook event (no webhookEvent)")
        delivery_id = (
            request.headers.get(DELIVERY_HEADER) or "sha256:" + hashlib.sha256(request.body).hexdigest()
        )
        try:
            delivery = delivery_for(body, delivery_id, self.handled)
        except MappingError as exc:
            raise WebhookRejected(400, "malformed", f"{body['webhookEvent']}: {exc}") from None
        return Accepted(deliveries=(delivery,) if delivery else ())
