"""The ``redmine`` source end to end (fake Redmine -> poll -> inbox -> converter -> topics), against the
contract fake built from Redmine's REST documentation (Redmine itself cannot be installed here).

Redmine has no webhooks, so there are no signature / redelivery / malformed-body tests: everything comes
from the poll. Takes about 30 s (one connector per test; reading a topic waits 0.5-1.5 s for stragglers).
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import fastavro
import psycopg
import pytest
from bizbus.connectors.runtime.inbox import InboxRow
from bizbus.connectors.sources.redmine.api import RedmineClient
from bizbus.connectors.sources.redmine.backfill import RedminePoller
from bizbus.connectors.sources.redmine.config import RedmineConfig
from bizbus.connectors.sources.redmine.convert import RedmineConverter
from bizbus.connectors.sources.redmine.state import RedmineState
from bizbus.schemas import catalog

from bizbus import lineage
from bizbus.failures import Fatal
from tests.fakes.redmine_api import FakeRedmine
from tests.webhook_harness import DSN, Rig, webhook_rig

SAMPLES = Path(__file__).parent / "samples" / "redmine"
PROJECTS, TASKS, SHEETS = "bizbus.pm.project.v1", "bizbus.pm.task.v1", "bizbus.pm.timesheet.v1"
TZ = ZoneInfo("Asia/Shanghai")
TODAY = datetime.now(TZ).date()


def ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def drop_state(name: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "bizbus_state"."redmine_entries_{name.replace("-", "_")}"')


@pytest.fixture
def fake() -> Iterator[FakeRedmine]:
    with FakeRedmine(api_key="rk-" + uuid.uuid4().hex) as rm:
        yield rm


@pytest.fixture
def key_env(fake: FakeRedmine, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"REDMINE_KEY_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(name, fake.api_key)
    return name


@contextmanager
def redmine(embedded_broker: Any, registry: Any, fake: FakeRedmine, key_env: str, **config: Any) -> Iterator[Rig]:
    name = f"redmine-{uuid.uuid4().hex[:8]}"
    cfg = {"base_url": fake.url, "api_key_env": key_env, "company": "C01", "poll_interval_seconds": 0.5, **config}
    try:
        with webhook_rig(embedded_broker, registry, "redmine", cfg, name=name) as rig:
            yield rig
    finally:
        drop_state(name)


def polls(rig: Rig) -> float:
    return rig.metric("bizbus_backfill_polls_total", outcome="ok")


def of(ident: str) -> Callable[[dict[str, Any]], bool]:
    return lambda v: v["project"] == ident


def setup_project(fake: FakeRedmine) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    ident = f"prj-{uuid.uuid4().hex[:6]}"
    p = fake.add_project(ident, "地铁三号线")
    i = fake.add_issue(p["id"], "钢筋下料", assigned_to_id=7, estimated_hours=12.5, due_date="2026-12-20")
    t1 = fake.add_time_entry(p["id"], user_id=7, hours=1.5, spent_on=TODAY - timedelta(days=2), issue_id=i["id"],
                             comments="现场放样")  # fmt: skip
    t2 = fake.add_time_entry(p["id"], user_id=8, hours=0.333, spent_on=TODAY - timedelta(days=1))
    return ident, p, i, t1, t2


def test_first_poll_then_nothing_new(embedded_broker: Any, registry: Any, fake: FakeRedmine, key_env: str) -> None:
    ident, p, i, t1, t2 = setup_project(fake)
    with redmine(embedded_broker, registry, fake, key_env) as rig:
        (proj,) = rig.events(PROJECTS, of(ident), expect=1)
        (task,) = rig.events(TASKS, of(ident), expect=1)
        sheets = sorted(rig.events(SHEETS, of(ident), expect=2), key=lambda v: v["worklog_id"])
        assert proj["op"] == "CREATED" and (proj["name"], proj["company"], proj["source_status"]) == (
            "地铁三号线", "C01", "active")
        assert proj["version"] == ms(p["updated_on"]) and proj["actual_end"] is None
        assert proj["meta"]["event_id"] == lineage.event_id("redmine", "project", p["id"], ms(p["updated_on"]))
        assert (proj["meta"]["source_system"], proj["meta"]["correlation_id"]) == ("redmine", ident)
        assert (task["op"], task["task"], task["title"], task["status"], task["assignee"]) == (
            "CREATED", str(i["id"]), "钢筋下料", "New", "7")
        assert task["estimated_hours"] == Decimal("12.50") and task["due_date"] == date(2026, 12, 20)
        assert task["version"] == ms(i["updated_on"])
        a, b = sheets
        assert (a["op"], a["worklog_id"], a["task"], a["employee"], a["description"]) == (
            "CREATED", str(t1["id"]), str(i["id"]), "7", "现场放样")
        assert (a["work_date"], a["hours"], a["version"]) == (TODAY - timedelta(days=2), Decimal("1.50"),
                                                              ms(t1["updated_on"]))  # fmt: skip
        assert (b["op"], b["task"], b["employee"], b["hours"], b["work_date"]) == (
            "CREATED", None, "8", Decimal("0.33"), TODAY - timedelta(days=1))
        assert a["meta"]["occurred_at"] == datetime.fromisoformat(t1["updated_on"].replace("Z", "+00:00"))
        seen = polls(rig)
        wait_for(lambda: polls(rig) >= seen + 2, "two more polls")
        assert len(rig.events(PROJECTS, of(ident), idle=0.5)) == 1
        assert len(rig.events(TASKS, of(ident), idle=0.5)) == 1
        assert len(rig.events(SHEETS, of(ident), idle=0.5)) == 2


def test_edit_and_delete_time_entry_once(embedded_broker: Any, registry: Any, fake: FakeRedmine, key_env: str) -> None:
    ident, p, i, t1, t2 = setup_project(fake)
    with redmine(embedded_broker, registry, fake, key_env) as rig:
        rig.events(SHEETS, of(ident), expect=2, idle=0.5)
        edited = fake.update_time_entry(t1["id"], hours=2.75, comments="放样复核")
        fake.delete_time_entry(t2["id"])
        sheets = rig.events(SHEETS, of(ident), expect=4)
        assert len(sheets) == 4
        (upd,) = [s for s in sheets if s["op"] == "UPDATED"]
        assert (upd["worklog_id"], upd["hours"], upd["description"], upd["version"]) == (
            str(t1["id"]), Decimal("2.75"), "放样复核", ms(edited["updated_on"]))
        assert upd["version"] > ms(t1["updated_on"])
        (gone,) = [s for s in sheets if s["op"] == "DELETED"]
        assert (gone["worklog_id"], gone["hours"], gone["employee"], gone["work_date"]) == (
            str(t2["id"]), Decimal("0.33"), "8", TODAY - timedelta(days=1))
        assert gone["meta"]["event_id"] == lineage.event_id("redmine", "time_entry", t2["id"], "DELETED")
        seen = polls(rig)
        wait_for(lambda: polls(rig) >= seen + 2, "two more polls")
        assert len(rig.events(SHEETS, of(ident), idle=0.5)) == 4


def test_closed_project_is_completed(embedded_broker: Any, registry: Any, fake: FakeRedmine, key_env: str) -> None:
    ident = f"prj-{uuid.uuid4().hex[:6]}"
    quiet = fake.add_project(ident, "Closed from the project settings")
    edited_ident = f"prj-{uuid.uuid4().hex[:6]}"
    edited = fake.add_project(edited_ident, "Closed with an edit")
    with redmine(embedded_broker, registry, fake, key_env) as rig:
        rig.events(PROJECTS, lambda v: v["project"] in (ident, edited_ident), expect=2, idle=0.5)
        fake.close_project(quiet["id"])  # Redmine's Project#close: updated_on stays as it was
        after = fake.update_project(edited["id"], status=9)  # archived together with a change
        (done,) = [e for e in rig.events(PROJECTS, of(ident), expect=2) if e["op"] == "COMPLETED"]
        assert done["source_status"] == "closed" and done["version"] > ms(quiet["updated_on"])
        assert done["actual_end"] == datetime.fromtimestamp(done["version"] / 1000, TZ).date()
        (arch,) = [e for e in rig.events(PROJECTS, of(edited_ident), expect=2) if e["op"] == "COMPLETED"]
        assert arch["source_status"] == "archived" and arch["version"] == ms(after["updated_on"])
        assert arch["actual_end"] == datetime.fromtimestamp(ms(after["updated_on"]) / 1000, TZ).date()


def test_wrong_api_key_is_fatal(embedded_broker: Any, registry: Any, fake: FakeRedmine, key_env: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    ident, *_ = setup_project(fake)
    monkeypatch.setenv(key_env, "not-the-key")
    with redmine(embedded_broker, registry, fake, key_env) as rig:
        (backfill,) = [rt for rt in rig.component.runtimes if rt.spec.shard == "backfill"]
        wait_for(lambda: backfill.error is not None, "the backfill task to fail")
        assert isinstance(backfill.error, Fatal) and backfill.error.reason == "auth"
        assert key_env in str(backfill.error) and "not-the-key" not in str(backfill.error)
        assert rig.component.states()[backfill.spec.task_id] == "failed"
        assert rig.events(PROJECTS, of(ident), idle=0.5) == []
        assert rig.events(SHEETS, of(ident), idle=0.5) == []


def test_documented_samples_parse(fake: FakeRedmine, postgres: psycopg.Connection) -> None:
    for kind in ("projects", "issues", "time_entries"):
        body = json.loads((SAMPLES / f"{kind}.json").read_text())
        assert body["total_count"] == len(body[kind]) and (body["offset"], body["limit"]) == (0, 25)
        getattr(fake, kind).update({x["id"]: x for x in body[kind]})
    c = RedmineConfig(base_url=fake.url, api_key_env="UNUSED", company="C01")
    name = f"redmine-samples-{uuid.uuid4().hex[:6]}"
    poller = RedminePoller(name, RedmineClient(fake.url, fake.api_key, "UNUSED", 5),
                           RedmineState(c.state_dsn, c.state_schema, name), c)  # fmt: skip
    converter = RedmineConverter(RedmineClient(fake.url, fake.api_key, "UNUSED", 5), "C01", TZ)
    poller.setup()
    try:
        found = poller.poll(None)
        events = [e for n, d in enumerate(found.deliveries) for e in converter.convert(
            InboxRow(n, d.delivery_id, d.kind, d.payload, d.entity_key, "poll", datetime.now(UTC)))]  # fmt: skip
    finally:
        poller.close()
        converter.close()
        drop_state(name)
    got = {(e.topic, e.value.get("worklog_id") or e.value.get("task") or e.value["project"]): e for e in events}
    assert len(got) == len(events) == 6
    for e in events:
        schema = {PROJECTS: "bizbus.pm.ProjectChanged", TASKS: "bizbus.pm.TaskChanged", SHEETS: "bizbus.pm.TimesheetEntry"}
        fastavro.schemaless_writer(io.BytesIO(), catalog.parsed(schema[e.topic]), e.value)
    redmine_p = got[(PROJECTS, "redmine")]
    assert redmine_p.key == "redmine" and redmine_p.value["op"] == "CREATED"
    assert redmine_p.value["version"] == ms("2009-03-15T11:35:11Z") and redmine_p.value["name"] == "Redmine"
    plugins = got[(PROJECTS, "redmine-plugins")].value
    assert (plugins["op"], plugins["source_status"], plugins["actual_end"]) == ("COMPLETED", "closed",
                                                                                 date(2024, 4, 1))  # fmt: skip
    feature = got[(TASKS, "4326")]
    assert feature.key == "redmine" and feature.value["title"] == "Aggregate Multiple Issue Changes for Email Notifications"
    assert (feature.value["status"], feature.value["assignee"], feature.value["estimated_hours"]) == ("New", "3", None)
    bug = got[(TASKS, "4325")].value
    assert (bug["parent_task"], bug["estimated_hours"], bug["due_date"]) == ("4326", Decimal("2.50"), date(2009, 12, 31))
    assert bug["completed_at"] == datetime(2009, 12, 4, 9, 30, tzinfo=UTC)
    login = got[(SHEETS, "101")]
    assert login.key == "redmine"
    assert (login.value["project"], login.value["task"], login.value["employee"], login.value["hours"],
            login.value["work_date"], login.value["description"]) == (
        "redmine", "4325", "3", Decimal("3.50"), date(2024, 3, 5), "Implemented login feature")  # fmt: skip
    design = got[(SHEETS, "102")].value
    assert (design["task"], design["employee"], design["hours"], design["description"], design["version"]) == (
        None, "5", Decimal("0.33"), "", ms("2024-03-06T02:45:30Z"))
