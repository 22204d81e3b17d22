"""What survives when ``bizbus up`` is run as an operator runs it: restarts (with a backlog and without) and a
broker that dies mid-stream. A real ``bizbus up`` with its embedded, memory-only broker, a ``jira`` source fed
by signed webhooks and a ``pg-table`` sink into PostgreSQL; the test counts rows in the target table (no
unique constraint there: a duplicate would show) — every worklog once, none missing."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bizbus.deadletters import DEAD_LETTER_TOPIC
from bizbus.serde import AvroSerde
from bizbus.settings import load_settings
from tests.bus_harness import BusProcess, wait_until, write_pipeline
from tests.fakes.jira_api import JiraCloudFake, JiraWebhookSender
from tests.webhook_harness import read_topic

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SECRET = "durability-" + uuid.uuid4().hex[:8]
AUTHOR = "5b10ac8d82e05b22cc7d4ef5"

pytestmark = pytest.mark.timeout(600)


class Story:
    """A Jira project with one issue, and worklogs sent as signed webhooks to a running bus."""

    def __init__(self, bus: BusProcess, jira: JiraCloudFake, source: str, key: str) -> None:
        self.bus, self.jira, self.source, self.key = bus, jira, source, key
        self.sender = JiraWebhookSender(f"{bus.url}/webhooks/{source}", SECRET)
        self.t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
        self.n = 0
        self.issue: dict[str, Any] = {}

    def open_project(self) -> None:
        project = self.jira.add_project(self.key, "Durability test", lead=AUTHOR)
        assert self.sender.project_created(project).status_code == 200
        self.issue = self.jira.add_issue(self.key, "Install racks", at=self.t0)
        assert self.sender.issue_created(self.issue).status_code == 200

    def worklogs(self, count: int, retry_for: float = 60) -> None:
        """``count`` new worklogs, each webhook sent until it is answered 200 (as Jira retries)."""
        for _ in range(count):
            self.n += 1
            at = self.t0 + timedelta(minutes=self.n)
            w = self.jira.add_worklog(self.issue["id"], AUTHOR, 1800, "2026-11-02T09:00:00.000+0800", at=at)
            request = self.sender.build("worklog_created", worklog=w, timestamp=int(at.timestamp() * 1000))
            deadline = time.monotonic() + retry_for
            while True:
                try:
                    if self.sender.send(request).status_code == 200:
                        break
                except Exception:  # noqa: BLE001 - the vendor retries on any failure
                    pass
                assert time.monotonic() < deadline, f"worklog {self.n} never accepted"
                time.sleep(0.5)


@pytest.fixture
def rig(tmp_path: Path, postgres: psycopg.Connection) -> Iterator[tuple[BusProcess, Story, Any]]:
    key = "D" + uuid.uuid4().hex[:6].upper()
    source, sink, table = f"jira-{key.lower()}", f"rows-{key.lower()}", f"dur_{key.lower()}"
    postgres.execute(f"CREATE TABLE public.{table} (effect_id text, worklog text, project text)")
    with JiraCloudFake(token="api-token", hide_recent_seconds=0) as jira:
        pipeline = write_pipeline(tmp_path / "pipeline.yaml", [
            {"name": source, "type": "jira", "config": {
                "base_url": jira.url, "email": jira.email, "token_env": "DUR_JIRA_TOKEN", "secret_env": "DUR_JIRA_SECRET",
                "company": "C100", "backfill": False, "batch_size": 50}},
            {"name": sink, "type": "pg-table", "config": {
                "topics": ["bizbus.pm.timesheet.v1"], "dsn": DSN, "table": f"public.{table}", "batch_size": 50,
                "columns": {"effect_id": "$effect_id", "worklog": "worklog_id", "project": "project"}}},
        ])  # fmt: skip
        bus = BusProcess(tmp_path, pipeline, {"DUR_JIRA_TOKEN": "api-token", "DUR_JIRA_SECRET": SECRET})
        story = Story(bus, jira, source, key)

        def rows() -> tuple[int, int]:
            total, distinct = postgres.execute(
                f"SELECT count(*), count(DISTINCT worklog) FROM public.{table} WHERE project = %s", (key,)
            ).fetchone()
            return int(total), int(distinct)

        try:
            bus.start()
            story.open_project()
            yield bus, story, rows
        finally:
            bus.kill()
            postgres.execute(f"DROP TABLE IF EXISTS public.{table}")
            for name in (source,):
                table_name = name.replace("-", "_")
                for t in (f"inbox_{table_name}", f"jira_issues_{table_name}", f"jira_worklogs_{table_name}"):
                    postgres.execute(f'DROP TABLE IF EXISTS bizbus_state."{t}"')
                postgres.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (name,))
            postgres.execute("DELETE FROM bizbus_ledger.applied_effects WHERE connector = %s", (sink,))
            postgres.execute("DELETE FROM bizbus_ledger.offsets WHERE connector = %s", (sink,))


def _wait_rows(rows: Any, bus: BusProcess, expected: int, timeout: float = 120) -> None:
    wait_until(lambda: rows() == (expected, expected), timeout, f"{expected} rows once each",
               lambda: f"rows (total, distinct) = {rows()}\n{bus.log()[-5000:]}")  # fmt: skip
    time.sleep(3)  # anything extra (a duplicate) would show now
    assert rows() == (expected, expected)


def test_a_restart_neither_loses_nor_skips_and_a_backlog_on_the_lost_log_is_sent_again(rig) -> None:
    bus, story, rows = rig
    story.worklogs(20)
    _wait_rows(rows, bus, 20)

    # a restart without a backlog: the new log starts at offset 0 while the sink's ledger says 20+
    assert bus.stop() == 0
    bus.start()
    story.worklogs(15)
    _wait_rows(rows, bus, 35)
    assert "sending again from the beginning" in bus.log()

    # a backlog: the sink is paused, 25 worklogs reach the topic (the source's cursor moves on), then a clean
    # restart drops the memory-only log: they must come again from the inbox
    sink = [line for line in bus.pipeline.read_text().splitlines() if "name: rows-" in line][0].split()[-1]
    assert bus.admin_post(f"/connectors/{sink}/pause").status_code == 202
    # 202: accepted; each task applies the pause when its current step (a batch already fetched) is done
    wait_until(lambda: set(bus.admin_get("/connectors").json()[sink]["tasks"].values()) == {"paused"}, 30,
               "the sink's tasks paused", lambda: bus.admin_get("/connectors").text)  # fmt: skip
    story.worklogs(25)
    time.sleep(4)  # the source sends them; the paused sink does not apply them
    assert rows() == (35, 35)
    assert bus.stop() == 0
    bus.start()
    time.sleep(4)  # the pause is stored: it outlives the restart
    assert rows() == (35, 35)
    assert "paused" in bus.admin_get("/connectors").json()[sink], bus.admin_get("/connectors").text
    assert bus.admin_post(f"/connectors/{sink}/resume").status_code == 202
    _wait_rows(rows, bus, 60)


def test_a_broker_killed_mid_stream_is_restarted_and_every_record_arrives_once(rig) -> None:
    bus, story, rows = rig
    sending = threading.Thread(target=story.worklogs, args=(150,), daemon=True)
    sending.start()
    wait_until(lambda: rows()[0] >= 20, 60, "the first rows")
    bus.kill_broker()
    bus.wait_output("the embedded broker is back", 90)
    time.sleep(2)
    bus.kill_broker()  # again, while it catches up
    bus.wait_output("the embedded broker is back", 90, count=2)
    sending.join(240)
    assert not sending.is_alive()
    _wait_rows(rows, bus, 150, timeout=180)
    log = bus.log()
    assert "restarting it (1 of 3" in log and "restarting it (2 of 3" in log
    ready = bus.admin_get("/readyz")
    assert ready.status_code == 200, ready.text

    # the webhook's dead letters go to the new broker too (a new producer: the old one's never deliver again)
    body = b'{"webhookEvent": "worklog_created", "timestamp": 1, "worklog": '
    answer = httpx.post(f"{bus.url}/webhooks/{story.source}", content=body,
                        headers={"X-Hub-Signature": story.sender.signature(body), "Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    settings = load_settings(kafka_bootstrap_servers=bus.bootstrap, schema_registry_url=bus.registry_url)
    dead = read_topic(settings, AvroSerde(settings.registry_config()), DEAD_LETTER_TOPIC,
                      lambda v: v["connector"] == story.source, expect=1, timeout=30)  # fmt: skip
    assert len(dead) == 1 and dead[0]["error_class"] == "PERMANENT", dead
