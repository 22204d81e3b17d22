"""The webhook inbox behind bizbus's HTTP server, with a minimal vendor: accepted deliveries become events
once (redeliveries and polled copies are dropped), a bad signature is a 401 with a metric and nothing
produced, a malformed body is a 400 with a dead letter, a change only the poll finds is a counted gap, and a
converter whose vendor is down keeps the row until it comes back."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from bizbus.connectors.runtime.cursor import Position
from bizbus.connectors.runtime.inbox import (
    Accepted,
    Backfill,
    Converter,
    Delivery,
    Event,
    HttpRequest,
    HttpResponse,
    InboxConfig,
    InboxConnector,
    InboxRow,
    PollResult,
    WebhookHandler,
    parse_json_body,
    reject_unless,
    require,
)

from bizbus import lineage
from bizbus.failures import Permanent, Retryable
from tests.webhook_harness import webhook_rig

SECRET = b"s3cret"
TOPIC = "bizbus.pm.timesheet.v1"
POLLED: list[dict[str, Any]] = []  # what the "vendor" answers to a poll
VENDOR_DOWN = {"on": False}


class Handler(WebhookHandler):
    def handle(self, request: HttpRequest) -> Accepted | HttpResponse:
        if request.subpath == "ping":
            return HttpResponse(200, b'{"pong":true}')
        sig = hmac.new(SECRET, request.body, hashlib.sha256).hexdigest()
        reject_unless(hmac.compare_digest(request.headers.get("x-sig", ""), sig), 401, "bad_signature",
                      "signature does not match")  # fmt: skip
        body = parse_json_body(request.body)
        require(body, "id", "hours", "version")
        return Accepted((Delivery(request.headers.get("x-delivery", ""), "entry", body,
                                  f"entry:{body['id']}@{body['version']}"),))  # fmt: skip


class Conv(Converter):
    def convert(self, row: InboxRow) -> list[Event]:
        if VENDOR_DOWN["on"]:
            raise Retryable("vendor down")
        p = row.payload
        if p["hours"] == "bad":
            raise Permanent("hours are not a number", reason="mapping")
        eid = lineage.event_id("test", "entry", p["id"], p["version"])
        value = {"meta": lineage.meta(eid, p["project"], "test", datetime(2026, 11, 2, tzinfo=UTC)), "op": "CREATED",
                 "worklog_id": p["id"], "project": p["project"], "task": None, "employee": "E1",
                 "work_date": date(2026, 11, 2), "hours": Decimal(p["hours"]), "billable": True, "description": None,
                 "version": p["version"]}  # fmt: skip
        return [Event(TOPIC, p["project"], value)]


class Poll(Backfill):
    def poll(self, watermark: Position | None) -> PollResult:
        ds = tuple(Delivery(f"poll-{p['id']}-{p['version']}", "entry", p, f"entry:{p['id']}@{p['version']}")
                   for p in POLLED)  # fmt: skip
        return PollResult(ds, {"n": len(ds)})


class DemoConfig(InboxConfig):
    pass


class DemoInbox(InboxConnector):
    Config = DemoConfig

    def handler(self) -> WebhookHandler:
        return Handler()

    def converter(self) -> Converter:
        return Conv()

    def backfill(self) -> Backfill:
        return Poll()

    def topics(self) -> tuple[str, ...]:
        return (TOPIC,)


def post(rig, body: bytes, delivery: str, sig: str | None = None) -> httpx.Response:
    sig = sig if sig is not None else hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return httpx.post(rig.url, content=body, headers={"x-sig": sig, "x-delivery": delivery}, timeout=10)


@pytest.fixture
def rig(embedded_broker, registry, postgres):
    POLLED.clear()
    VENDOR_DOWN["on"] = False
    with webhook_rig(embedded_broker, registry, DemoInbox, {"poll_interval_seconds": 0.3}) as r:
        yield r


def test_deliveries_once_signature_malformed_and_gaps(rig) -> None:
    project = f"P-{uuid.uuid4().hex[:6]}"
    body = json.dumps({"id": "W1", "project": project, "hours": "2.50", "version": 1}).encode()
    assert post(rig, body, "d-1").status_code == 200
    assert post(rig, body, "d-1").status_code == 200  # a redelivery: answered, not stored again
    assert rig.metric("bizbus_webhook_requests_total", outcome="duplicate") == 1

    bad = json.dumps({"id": "W2", "project": project, "hours": "1.00", "version": 1}).encode()
    r = post(rig, bad, "d-2", sig="0" * 64)
    assert r.status_code == 401 and "signature" in r.json()["error"]
    assert rig.metric("bizbus_webhook_requests_total", outcome="bad_signature") == 1

    r = post(rig, b"{not json", "d-3")
    assert r.status_code == 400
    r = post(rig, json.dumps({"id": "W4"}).encode(), "d-4")
    assert r.status_code == 400 and "'hours'" in r.json()["error"]

    # the poll finds W1 (already delivered: no gap) and W5 (no webhook ever came: a gap)
    POLLED.extend([{"id": "W1", "project": project, "hours": "2.50", "version": 1},
                   {"id": "W5", "project": project, "hours": "4.00", "version": 3}])  # fmt: skip
    events = rig.events(TOPIC, lambda v: v["project"] == project, expect=2)
    assert sorted((e["worklog_id"], e["hours"]) for e in events) == [("W1", Decimal("2.50")), ("W5", Decimal("4.00"))]
    assert rig.metric("bizbus_backfill_gaps_total") == 1
    dead = rig.dead_letters(expect=2)
    assert sorted(d["error_type"] for d in dead) == ["Permanent/malformed"] * 2
    assert {bytes(d["value"]) for d in dead} == {b"{not json", json.dumps({"id": "W4"}).encode()}
    assert httpx.get(rig.url + "/ping", timeout=5).json() == {"pong": True}


def test_a_converter_failure_keeps_the_row_and_a_permanent_one_dead_letters_it(rig) -> None:
    project = f"P-{uuid.uuid4().hex[:6]}"
    VENDOR_DOWN["on"] = True
    for i, hours in enumerate(["bad", "3.25"]):
        body = json.dumps({"id": f"W{i}", "project": project, "hours": hours, "version": 1}).encode()
        assert post(rig, body, f"x-{i}").status_code == 200
    assert rig.events(TOPIC, lambda v: v["project"] == project, idle=1.0) == []
    VENDOR_DOWN["on"] = False
    events = rig.events(TOPIC, lambda v: v["project"] == project, expect=1)
    assert [(e["worklog_id"], e["hours"]) for e in events] == [("W1", Decimal("3.25"))]
    dead = rig.dead_letters(expect=1)
    assert dead[0]["error_type"] == "Permanent/mapping" and b'"hours": "bad"' in bytes(dead[0]["value"])


def test_an_event_that_does_not_fit_its_schema_is_dead_lettered_with_the_inbox_row(rig) -> None:
    """The row's JSON is made only for a dead letter (not for every row); it must still be the whole row."""
    project = f"P-{uuid.uuid4().hex[:6]}"
    for i, hours in enumerate(["1.234", "2.50"]):  # hours are decimal(9, 2): three places do not fit
        body = json.dumps({"id": f"S{i}", "project": project, "hours": hours, "version": 1}).encode()
        assert post(rig, body, f"s-{project}-{i}").status_code == 200
    events = rig.events(TOPIC, lambda v: v["project"] == project, expect=1)
    assert [(e["worklog_id"], e["hours"]) for e in events] == [("S1", Decimal("2.50"))]
    dead = rig.dead_letters(expect=1)
    row = json.loads(bytes(dead[0]["value"]))
    assert dead[0]["error_type"].endswith("schema_mismatch")
    assert row["delivery_id"] == f"s-{project}-0" and row["kind"] == "entry" and row["payload"]["hours"] == "1.234"


def test_an_unavailable_inbox_answers_503_and_the_vendors_retry_is_stored(rig) -> None:
    """The webhook's INSERT fails (the inbox database cannot be reached): the answer is 503, never "ok",
    so the vendor retries; the retry, once the database is back, is stored and converted."""
    project = f"P-{uuid.uuid4().hex[:6]}"
    body = json.dumps({"id": "W9", "project": project, "hours": "1.25", "version": 1}).encode()
    inbox = rig.component._webhook_inbox
    dsn = inbox.dsn
    inbox.dsn = "postgresql://postgres@127.0.0.1:1/postgres"  # nothing listens there
    if inbox._writer is not None:
        inbox._writer.close()
    try:
        r = post(rig, body, "d-9")
        assert r.status_code == 503 and r.json() == {"error": "inbox unavailable, retry later"}
        assert rig.metric("bizbus_webhook_requests_total", outcome="error") == 1
        assert rig.metric("bizbus_webhook_requests_total", outcome="accepted") == 0
    finally:
        inbox.dsn = dsn
    assert post(rig, body, "d-9").status_code == 200
    assert rig.metric("bizbus_webhook_requests_total", outcome="accepted") == 1
    events = rig.events(TOPIC, lambda v: v["project"] == project, expect=1)
    assert [(e["worklog_id"], e["hours"]) for e in events] == [("W9", Decimal("1.25"))]
