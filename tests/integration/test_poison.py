"""Poison is isolated (issue 18, finding 5): a signed webhook whose content the converter cannot handle is
retried a bounded number of times, visibly (``problem()``, ``bizbus_source_retrying``), then dead-lettered
with its inbox coordinates, and the webhooks behind it arrive; an event larger than the broker takes is a
dead letter (``record_too_large``) that itself fits; a body nested too deeply to parse is a 400 with a dead
letter and a metric, never a 500, and so is a body the inbox (jsonb) refuses; a polled change the inbox
refuses is a dead letter and the poll goes on. Real HTTP server, PostgreSQL inbox and embedded broker."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from hashlib import sha256
from pathlib import Path
from typing import Any

import httpx
import pytest
from bizbus.connectors.runtime.inbox import (
    Accepted,
    Converter,
    Delivery,
    Event,
    HttpRequest,
    HttpResponse,
    InboxReader,
    InboxRow,
    WebhookHandler,
    inbox_table,
)

from tests.contract.test_jira import SECRET, TIMESHEETS, config, jira, rig_for, unique  # noqa: F401 - fixtures
from tests.fakes.jira_api import JiraCloudFake, JiraWebhookSender
from tests.integration.test_inbox import POLLED, TOPIC, Conv, DemoInbox, Handler, post
from tests.webhook_harness import Rig, webhook_rig


def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {check}")


def inbox_ids(postgres: Any, rig: Rig) -> list[int]:
    rows = postgres.execute(f'SELECT id FROM bizbus_state."{inbox_table(rig.name)}" ORDER BY id').fetchall()
    return [r[0] for r in rows]


def test_a_worklog_the_converter_fails_on_is_retried_visibly_then_dead_lettered_and_the_next_arrives(
    jira: JiraCloudFake, rig_for: Any, postgres: Any  # noqa: F811 - the contract test's fixtures
) -> None:
    key = unique()
    jira.add_project(key, "Poison")
    issue = jira.add_issue(key, "work")
    bad = jira.add_worklog(issue["id"], "acc-bad", 3600, "2026-11-02T09:00:00.000+0800")
    # a comment of the wrong shape deep inside (a paragraph whose content is a number): the mapping raises a
    # TypeError, which classify() calls retryable only because it does not know it
    bad["comment"] = {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": 5}]}
    huge = jira.add_worklog(issue["id"], "acc-huge", 3600, "2026-11-02T09:00:00.000+0800")
    huge["timeSpentSeconds"] = 10**30  # out of range: a mapping error, dead-lettered at once
    good = jira.add_worklog(issue["id"], "acc-good", 5400, "2026-11-02T09:00:00.000+0800")
    with rig_for(config(jira, max_attempts=3)) as rig:
        task = rig.component.runtimes[0].task
        sender = JiraWebhookSender(rig.url, SECRET)
        assert sender.worklog_created(bad).status_code == 200
        problem = wait_for(task.problem, timeout=30)
        first = inbox_ids(postgres, rig)[0]
        assert f"row {first} (jira:worklog_created) failed" in problem and "of 3 attempts" in problem
        assert "TypeError" in problem
        assert rig.metric("bizbus_source_retrying") >= 1
        assert rig.metric("bizbus_retries_total", reason="unexpected") >= 1
        assert sender.worklog_created(huge).status_code == 200
        assert sender.worklog_created(good).status_code == 200

        events = rig.events(TIMESHEETS, lambda v: v["project"] == key, expect=1)
        assert [(e["worklog_id"], e["employee"], e["hours"]) for e in events] == [
            (good["id"], "acc-good", Decimal("1.50"))]  # fmt: skip
        dead = sorted(rig.dead_letters(expect=2), key=lambda d: d["source_offset"])
        ids = inbox_ids(postgres, rig)
        assert [(d["source_topic"], d["source_offset"]) for d in dead] == [(f"inbox:{rig.name}", i) for i in ids[:2]]
        assert [(d["error_class"], d["error_type"], d["attempts"]) for d in dead] == [
            ("RETRYABLE", "Retryable/unexpected", 3), ("PERMANENT", "Permanent/mapping", 1)]  # fmt: skip
        assert "TypeError" in dead[0]["error_message"] and "out of range" in dead[1]["error_message"]
        assert json.loads(bytes(dead[0]["value"]))["payload"]["worklog"]["id"] == bad["id"]
        assert task.problem() is None and rig.metric("bizbus_source_retrying") == 0
        assert [rt.state for rt in rig.component.runtimes] == ["running"]


def test_a_body_nested_too_deeply_is_a_400_with_a_dead_letter_and_a_metric(
    jira: JiraCloudFake, rig_for: Any  # noqa: F811 - the contract test's fixtures
) -> None:
    with rig_for(config(jira)) as rig:
        sender = JiraWebhookSender(rig.url, SECRET)
        deep = b'{"webhookEvent": "worklog_created", "timestamp": 1, "worklog": ' + b"[" * 100_000 + b"]" * 100_000
        deep += b"}"
        nul = json.dumps({"webhookEvent": "worklog_created", "timestamp": 1, "worklog": {
            "id": "1", "issueId": "2", "updated": "2026-11-02T09:00:00.000+0800", "comment": "a\u0000b"}}).encode()
        # fields of the wrong type: the handler itself raises (AttributeError), a bug that must not be a 500
        odd = json.dumps({"webhookEvent": "jira:issue_updated", "timestamp": 1,
                          "issue": {"id": "1", "key": "K-1", "fields": "oops"}}).encode()  # fmt: skip
        for body in (deep, nul, odd):
            r = httpx.post(rig.url, content=body, headers={"X-Hub-Signature": sender.signature(body)}, timeout=30)
            assert r.status_code == 400, r.text
        deeper = deep.replace(b"[", b"[ ", 1)  # another body that nests as deep
        r = httpx.post(rig.url, content=deeper, headers={"X-Hub-Signature": sender.signature(deeper)}, timeout=30)
        assert r.status_code == 400, r.text
        assert rig.metric("bizbus_webhook_requests_total", outcome="malformed") == 4
        dead = rig.dead_letters(expect=4)
        assert {bytes(d["value"]) for d in dead} == {deep, nul, deeper, odd}
        assert "AttributeError" in next(d["error_message"] for d in dead if bytes(d["value"]) == odd)
        assert {d["error_type"] for d in dead} == {"Permanent/malformed"}


class WideConv(Conv):
    """The demo converter, with the payload's ``text`` as the entry's description (as wide as it is)."""

    def convert(self, row: InboxRow) -> list[Event]:
        events = super().convert(row)
        for e in events:
            e.value["description"] = row.payload.get("text")
        return events


class WideInbox(DemoInbox):
    def converter(self) -> Converter:
        return WideConv()

    def backfill(self) -> None:  # type: ignore[override]
        return None


@pytest.fixture
def small_broker_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Producers of the rig take at most 60,000 bytes per message (message.max.bytes)."""
    props = tmp_path / "client.properties"
    props.write_text("message.max.bytes=60000\n")
    monkeypatch.setenv("BIZBUS_KAFKA_CLIENT_CONFIG_FILE", str(props))
    return 60_000


def test_an_event_larger_than_the_broker_takes_is_a_dead_letter_that_fits_and_the_source_goes_on(
    embedded_broker: Any, registry: Any, postgres: Any, small_broker_messages: int
) -> None:
    project = f"P-{uuid.uuid4().hex[:6]}"
    with webhook_rig(embedded_broker, registry, WideInbox, {}) as rig:
        task = rig.component.runtimes[0].task
        assert task.max_message_bytes == small_broker_messages
        wide = json.dumps({"id": "W1", "project": project, "hours": "1.00", "version": 1, "text": "x" * 100_000})
        assert post(rig, wide.encode(), f"{project}-1").status_code == 200
        events = rig.events(TOPIC, lambda v: v["project"] == project, expect=0, idle=2.0)
        assert events == []
        # produce()'s own refusal (the size check before it switched off): the same dead letter
        task.max_message_bytes = 10**9
        also = json.dumps({"id": "W2", "project": project, "hours": "1.00", "version": 1, "text": "y" * 70_000})
        assert post(rig, also.encode(), f"{project}-2").status_code == 200
        ok = json.dumps({"id": "W3", "project": project, "hours": "2.00", "version": 1, "text": "fine"})
        assert post(rig, ok.encode(), f"{project}-3").status_code == 200

        events = rig.events(TOPIC, lambda v: v["project"] == project, expect=1)
        assert [(e["worklog_id"], e["description"]) for e in events] == [("W3", "fine")]
        dead = sorted(rig.dead_letters(expect=2), key=lambda d: d["source_offset"])
        ids = inbox_ids(postgres, rig)
        assert [(d["source_topic"], d["source_offset"], d["error_type"]) for d in dead] == [
            (f"inbox:{rig.name}", ids[0], "Permanent/record_too_large"),
            (f"inbox:{rig.name}", ids[1], "Permanent/record_too_large")]  # fmt: skip
        row_text = postgres.execute(
            f'SELECT payload::text FROM bizbus_state."{inbox_table(rig.name)}" WHERE id = %s', (ids[0],)
        ).fetchone()[0]
        assert json.loads(row_text)["text"] == "x" * 100_000  # the whole original stays in the inbox
        # the row was larger than a dead letter may be: a truncated copy, its size, digest and coordinates
        raw = InboxReader._raw(InboxRow(ids[0], f"{project}-1", "entry", {}, None, "webhook", datetime.now(UTC), row_text))
        assert bytes(dead[0]["value"]) == raw[: small_broker_messages // 2]
        note = f"value truncated to {small_broker_messages // 2} of {len(raw)} bytes, sha256 {sha256(raw).hexdigest()}"
        assert note in dead[0]["error_message"] and f"inbox:{rig.name}[0]@{ids[0]}" in dead[0]["error_message"]
        assert "message.max.bytes" in dead[0]["error_message"]
        assert "the producer refused the record" in dead[1]["error_message"]
        assert [rt.state for rt in rig.component.runtimes] == ["running"]



class RawHandler(Handler):
    """The demo handler, plus ``/raw``: the body's text stored as is, not through parse_json_body (a vendor
    handler that forgot), so what PostgreSQL's jsonb refuses reaches the inbox."""

    def handle(self, request: HttpRequest) -> Accepted | HttpResponse:
        if request.subpath == "raw":
            text = request.body.decode("utf-8", "surrogateescape")
            return Accepted((Delivery(request.headers.get("x-delivery", ""), "entry", {"text": text}),))
        return super().handle(request)


class RawInbox(DemoInbox):
    def handler(self) -> WebhookHandler:
        return RawHandler()


def test_what_the_inbox_cannot_store_is_a_400_or_a_dead_letter_of_the_poll_and_the_rest_is_stored(
    embedded_broker: Any, registry: Any, postgres: Any
) -> None:
    project = f"P-{uuid.uuid4().hex[:6]}"
    POLLED.clear()
    POLLED.extend([{"id": "B1", "project": project, "hours": "1.00", "version": 1, "note": "a\u0000b"},
                   {"id": "G1", "project": project, "hours": "2.00", "version": 1}])  # fmt: skip
    with webhook_rig(embedded_broker, registry, RawInbox, {"poll_interval_seconds": 0.3}) as rig:
        for n, body in enumerate((b"a\x00b", b"\xff\xfe")):  # a NUL character; bytes that are no UTF-8
            r = httpx.post(rig.url + "/raw", content=body, headers={"x-delivery": f"{project}-{n}"}, timeout=10)
            assert r.status_code == 400, r.text
        r = httpx.post(rig.url + "/raw", content=b"c\x00d", headers={"x-delivery": f"{project}-2"}, timeout=10)
        assert r.status_code == 400, r.text
        assert rig.metric("bizbus_webhook_requests_total", outcome="malformed") == 3

        events = rig.events(TOPIC, lambda v: v["project"] == project, expect=1)
        assert [(e["worklog_id"], e["hours"]) for e in events] == [("G1", Decimal("2.00"))]
        dead = rig.dead_letters(expect=4)
        assert sorted(bytes(d["value"]) for d in dead if d["source_topic"] == f"webhook:{rig.name}") == [
            b"a\x00b", b"c\x00d", b"\xff\xfe"]  # fmt: skip
        polled = [d for d in dead if d["source_topic"] == f"backfill:{rig.name}"]
        # the demo's poll finds B1 again every time (it ignores its watermark): the same dead letter (same id)
        assert {(d["key"], d["error_type"], d["meta"]["event_id"]) for d in polled} == {
            (b"entry:B1@1", "Permanent/malformed", polled[0]["meta"]["event_id"])}  # fmt: skip
        assert json.loads(bytes(polled[0]["value"]))["payload"]["note"] == "a\u0000b"
        assert rig.metric("bizbus_backfill_gaps_total") == 1  # G1 only
        assert inbox_ids(postgres, rig) == [1]
        assert [rt.state for rt in rig.component.runtimes] == ["running", "running"]
    POLLED.clear()
