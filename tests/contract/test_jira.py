"""The ``jira`` connector behind bizbus's HTTP server (real broker, registry, PostgreSQL) against the Jira
contract fake and Jira's signed webhooks: refusals, redeliveries, the documented payloads as exact canonical
events, the issue lookup, and the backfill finding a lost webhook exactly once (counted as a gap)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from bizbus.connectors.sources.jira.state import state_tables

from bizbus import lineage
from tests.fakes.jira_api import JiraCloudFake, JiraWebhookSender
from tests.webhook_harness import Rig, webhook_rig

SAMPLES = Path(__file__).parent / "samples" / "jira"
PROJECTS, TASKS, TIMESHEETS = "bizbus.pm.project.v1", "bizbus.pm.task.v1", "bizbus.pm.timesheet.v1"
SECRET = "webhook-secret-" + uuid.uuid4().hex[:8]
LEAD = "5b10a2844c20165700ede21g"
WORKER = "712020:2a9b3c4d-5e6f-4a1b-9c8d-7e6f5a4b3c2d"


@pytest.fixture
def jira(monkeypatch: pytest.MonkeyPatch) -> Iterator[JiraCloudFake]:
    monkeypatch.setenv("BIZBUS_TEST_JIRA_SECRET", SECRET)
    monkeypatch.setenv("BIZBUS_TEST_JIRA_TOKEN", "api-token")
    with JiraCloudFake(
        token="api-token", page_size=2, hide_recent_seconds=0, user_timezone="Asia/Shanghai"
    ) as fake:
        yield fake


def config(jira: JiraCloudFake, **extra: Any) -> dict[str, Any]:
    return {"base_url": jira.url, "email": jira.email, "token_env": "BIZBUS_TEST_JIRA_TOKEN",
            "secret_env": "BIZBUS_TEST_JIRA_SECRET", "company": "C100", "backfill": False, **extra}  # fmt: skip


@pytest.fixture
def rig_for(embedded_broker: Any, registry: Any, postgres: Any) -> Iterator[Any]:
    """``with rig_for(config) as rig``; afterwards the converter's own state tables are dropped too."""
    names: list[str] = []

    @contextmanager
    def start(conf: dict[str, Any]) -> Iterator[Rig]:
        with webhook_rig(embedded_broker, registry, "jira", conf) as rig:
            names.append(rig.name)
            yield rig

    yield start
    for name in names:
        for table in state_tables(name):
            postgres.execute(f'DROP TABLE IF EXISTS bizbus_state."{table}"')


def unique(prefix: str = "P") -> str:
    return prefix + uuid.uuid4().hex[:6].upper()


def without_meta(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != "meta"}


def test_refusals_redeliveries_ignored_events_and_the_issue_lookup(jira: JiraCloudFake, rig_for: Any) -> None:
    key = unique()
    jira.add_project(key, "Lookup")
    issue = jira.add_issue(key, "never announced")  # no issue webhook: the converter must ask Jira
    good = jira.add_worklog(issue["id"], "acc-good", 5400, "2026-11-02T09:00:00.000+0800", comment="slab")
    forged = jira.add_worklog(issue["id"], "acc-forged", 3600, "2026-11-02T09:00:00.000+0800")
    with rig_for(config(jira)) as rig:
        sender = JiraWebhookSender(rig.url, SECRET)
        wrong = JiraWebhookSender(rig.url, "not-the-secret")
        assert wrong.worklog_created(forged).status_code == 401
        assert sender.send(sender.build("worklog_created", worklog=forged), signature="").status_code == 401
        assert rig.metric("bizbus_webhook_requests_total", outcome="bad_signature") == 2

        first = sender.build("worklog_created", worklog=good)
        assert sender.send(first).status_code == 200
        assert sender.redeliver(first).status_code == 200  # Jira's retry: same identifier
        assert rig.metric("bizbus_webhook_requests_total", outcome="duplicate") == 1
        assert sender.send(sender.build("comment_created", comment={"id": "1"})).status_code == 200

        for body in (b"{not json", json.dumps({"timestamp": 1, "issue": {}}).encode()):
            r = httpx.post(
                rig.url, content=body, headers={"X-Hub-Signature": sender.signature(body)}, timeout=10
            )
            assert r.status_code == 400

        orphan = {**good, "id": "990001", "issueId": "990000"}  # an issue this site does not have
        assert sender.worklog_created(orphan).status_code == 200

        events = rig.events(TIMESHEETS, lambda v: v["project"] == key, expect=1)
        assert [(e["worklog_id"], e["task"], e["employee"], e["hours"], e["description"]) for e in events] == [
            (good["id"], issue["key"], "acc-good", Decimal("1.50"), "slab")]  # fmt: skip
        assert len(jira.seen("GET", f"/rest/api/3/issue/{issue['id']}")) == 1
        dead = rig.dead_letters(expect=3)
        assert sorted(d["error_type"] for d in dead) == ["Permanent/malformed"] * 2 + [
            "Permanent/unknown_issue"
        ]
        assert {bytes(d["value"]) for d in dead if d["error_type"] == "Permanent/malformed"} == {
            b"{not json", json.dumps({"timestamp": 1, "issue": {}}).encode()}  # fmt: skip
        assert rig.metric("bizbus_webhook_requests_total", outcome="malformed") == 2


def sample(name: str, key: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{name}.json").read_text().replace("BIZ", key))


def test_documented_payloads_become_exact_canonical_events(jira: JiraCloudFake, rig_for: Any) -> None:
    key = unique("S")
    order = ["project_created", "project_updated", "issue_created", "issue_updated", "worklog_created",
             "worklog_updated", "worklog_deleted", "project_archived", "issue_deleted"]  # fmt: skip
    with rig_for(config(jira)) as rig:
        sender = JiraWebhookSender(rig.url, SECRET)
        for name in order:
            body = sample(name, key)
            r = sender.send(sender.build(body.pop("webhookEvent"), **body))
            assert r.status_code == 200, (name, r.text)
        projects = rig.events(PROJECTS, lambda v: v["project"] == key, expect=3)
        tasks = rig.events(TASKS, lambda v: v["project"] == key, expect=3, idle=0.2)
        entries = rig.events(TIMESHEETS, lambda v: v["project"] == key, expect=3, idle=0.2)
    base = {"project": key, "name": "Tower A construction (phase 1)", "company": "C100", "source_status": None,
            "manager": LEAD, "customer": None, "cost_center": None, "planned_start": None, "planned_end": None,
            "budget_amount": None, "currency": None}  # fmt: skip
    assert [without_meta(p) for p in projects] == [
        {**base, "op": "CREATED", "name": "Tower A construction", "actual_end": None, "version": 1793494800000},
        {**base, "op": "UPDATED", "actual_end": None, "version": 1793859165321},
        {**base, "op": "COMPLETED", "actual_end": date(2026, 12, 21), "version": 1797787800000}]  # fmt: skip
    task = {"task": f"{key}-7", "project": key, "parent_task": f"{key}-5", "title": "Pour foundation slab",
            "assignee": WORKER, "estimated_hours": Decimal("10.00"), "due_date": date(2026, 11, 20), "completed_at": None}  # fmt: skip
    assert [without_meta(t) for t in tasks] == [
        {**task, "op": "CREATED", "status": "To Do", "version": 1793578530250},
        {**task, "op": "UPDATED", "status": "In Progress", "version": 1793581262500},
        {**task, "op": "DELETED", "status": "In Progress", "version": 1796090400000}]  # fmt: skip
    entry = {"worklog_id": "10100", "project": key, "task": f"{key}-7", "employee": WORKER,
             "work_date": date(2026, 11, 3), "billable": True, "description": "Formwork and rebar check"}  # fmt: skip
    assert [without_meta(e) for e in entries] == [
        {**entry, "op": "CREATED", "hours": Decimal("7.50"), "version": 1793701200123},
        {**entry, "op": "UPDATED", "hours": Decimal("2.78"), "version": 1793757600000},
        {**entry, "op": "DELETED", "hours": Decimal("2.78"), "version": 1793954710555}]  # fmt: skip
    assert entries[0]["meta"] == {
        "event_id": lineage.event_id("jira", "worklog", "10100", 1793701200123), "causation_id": None,
        "correlation_id": key, "source_system": "jira",
        "occurred_at": datetime(2026, 11, 3, 10, 20, 0, 123000, tzinfo=UTC), "trace": {"connector": rig.name}}  # fmt: skip
    assert jira.requests == []  # the issue rows came first: no lookup was needed


def test_a_lost_webhook_is_found_by_the_backfill_once_and_counted(jira: JiraCloudFake, rig_for: Any) -> None:
    key = unique("G")
    conf = config(jira, backfill=True, settle_seconds=1, poll_interval_seconds=0.3,
                  start=str((datetime.now(UTC) - timedelta(days=1)).date()))  # fmt: skip
    with rig_for(conf) as rig:
        sender = JiraWebhookSender(rig.url, SECRET)
        # everything below happens well within the settle delay, as in Jira: webhooks follow the change
        jira.add_project(key, "Gaps")
        issue = jira.add_issue(key, "find me")
        sent = jira.add_worklog(issue["id"], "acc-1", 7200, "2026-11-02T09:00:00.000+0800")
        lost = jira.add_worklog(
            issue["id"], "acc-2", 1800, "2026-11-02T14:00:00.000+0800"
        )  # its webhook is lost
        assert sender.issue_updated(jira.issue_json(issue["id"])).status_code == 200
        assert sender.worklog_created(sent).status_code == 200

        events = rig.events(TIMESHEETS, lambda v: v["project"] == key, expect=2)
        assert sorted((e["worklog_id"], e["op"], e["hours"]) for e in events) == sorted(
            [(sent["id"], "CREATED", Decimal("2.00")), (lost["id"], "CREATED", Decimal("0.50"))])  # fmt: skip
        assert len(rig.events(TASKS, lambda v: v["project"] == key, expect=1, idle=0.2)) == 1
        assert rig.metric("bizbus_backfill_gaps_total") == 1

        # a deletion whose webhook is lost too: the backfill knows only the id, the rest was remembered
        jira.delete_worklog(lost["id"])
        assert sender.issue_updated(jira.issue_json(issue["id"])).status_code == 200
        deleted = rig.events(TIMESHEETS, lambda v: v["project"] == key and v["op"] == "DELETED", expect=1)
        assert [(d["worklog_id"], d["employee"], d["hours"], d["work_date"]) for d in deleted] == [
            (lost["id"], "acc-2", Decimal("0.50"), date(2026, 11, 2))]  # fmt: skip
        assert rig.metric("bizbus_backfill_gaps_total") == 2
        assert jira.seen("GET", "/rest/api/3/search") == []  # the removed endpoint is never called
        assert len(rig.events(TIMESHEETS, lambda v: v["project"] == key, idle=0.5)) == 3  # nothing twice


def test_a_throttled_issue_lookup_is_retried(jira: JiraCloudFake, rig_for: Any) -> None:
    key = unique("T")
    jira.add_project(key, "Throttle")
    issue = jira.add_issue(key, "busy")
    worklog = jira.add_worklog(issue["id"], "acc-1", 900, "2026-11-02T09:00:00.000+0800")
    jira.throttle_next(1, retry_after=1)
    with rig_for(config(jira)) as rig:
        assert JiraWebhookSender(rig.url, SECRET).worklog_created(worklog).status_code == 200
        [event] = rig.events(TIMESHEETS, lambda v: v["project"] == key, expect=1)
        assert event["hours"] == Decimal("0.25")
        assert [r.status for r in jira.seen("GET", f"/rest/api/3/issue/{issue['id']}")] == [429, 200]
