"""Every PostgreSQL connection the bus holds survives what a failover, a pooler restart or a DBA does to it.

A real ``bizbus worker`` process runs a ``jira`` source (webhook inbox, cursor, lease, converter state) and a
``pg-table`` sink (ledger) against a PostgreSQL server of the test alone (tests/pg_private.py), while signed
Jira webhooks come in at its HTTP endpoint:

* every backend of the bus is terminated (``pg_terminate_backend``) several times during 500 webhooks;
* the server is stopped and started again once during 500 webhooks (webhooks answered 503 meanwhile are
  sent again, as Jira does);

and every worklog must be in the target table exactly once, with the worker never restarted. A third test
watches readiness in process: while the server is down the source task is "retrying" (``/readyz`` check,
``/connectors`` problem, ``bizbus_task_problem``, ``bizbus_task_restarts_total``), and ok again after.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bizbus.devstack.procs import free_port
from tests.chaos.harness import Stack, Worker, private_stack, write_pipeline
from tests.fakes.jira_api import JiraCloudFake, JiraWebhookSender, WebhookRequest
from tests.pg_private import TEST_APP, PrivatePostgres, private_postgres
from tests.webhook_harness import webhook_rig

pytestmark = pytest.mark.slow

PROJECTS, TASKS, TIMESHEETS = "bizbus.pm.project.v1", "bizbus.pm.task.v1", "bizbus.pm.timesheet.v1"
DLQ = "bizbus.ops.dead-letter.v1"
WEBHOOKS = 500
SECRET = "pg-reconnect-" + uuid.uuid4().hex[:8]
ENV = {"BIZBUS_TEST_PGR_SECRET": SECRET, "BIZBUS_TEST_PGR_TOKEN": "api-token"}


def jira_config(jira: JiraCloudFake, state_dsn: str) -> dict[str, Any]:
    return {"base_url": jira.url, "email": jira.email, "token_env": "BIZBUS_TEST_PGR_TOKEN",
            "secret_env": "BIZBUS_TEST_PGR_SECRET", "company": "C100", "backfill": False,
            "state_dsn": state_dsn, "batch_size": 50}  # fmt: skip


@dataclass
class Bus:
    """A worker process with a jira source and a pg-table sink, its database and the Jira fake."""

    pg: PrivatePostgres
    worker: Worker
    jira: JiraCloudFake
    sender: JiraWebhookSender
    issue: dict[str, Any]
    answers: dict[int, int] = field(default_factory=dict)  # HTTP status (0: no answer) -> how many

    def rows(self) -> tuple[int, int]:
        """(rows, distinct worklogs) in the target table (0, 0 while the server is down)."""
        try:
            with self.pg.connect() as conn:
                total, distinct = conn.execute("SELECT count(*), count(DISTINCT worklog_id) FROM entries").fetchone()
        except Exception:
            return 0, 0
        return int(total), int(distinct)

    def deliver(self, request: WebhookRequest, deadline: float) -> None:
        """Send until the bus says 200, like a vendor that retries; every answer is counted."""
        first = True
        while True:
            try:
                status = (self.sender.send(request) if first else self.sender.redeliver(request)).status_code
            except httpx.HTTPError:
                status = 0
            self.answers[status] = self.answers.get(status, 0) + 1
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook not accepted in time (last answer {status})\n{self.worker.logs()}")
            first = False
            time.sleep(0.3)

    def send_worklogs(self, n: int, during: Callable[[int], None] = lambda _i: None) -> set[str]:
        """``n`` worklog_created webhooks from 4 senders, paced over several seconds; ``during(i)`` runs in
        the sender of webhook ``i`` before it is sent. Returns the worklog ids."""
        requests, ids = [], set()
        for i in range(n):
            wl = self.jira.add_worklog(self.issue["id"], f"acc-{i % 7}", 900 * (1 + i % 8), "2026-11-02T09:00:00.000+0800")
            ids.add(wl["id"])
            requests.append(self.sender.build("worklog_created", worklog=wl))
        deadline = time.monotonic() + 150

        def one(i: int) -> None:
            during(i)
            self.deliver(requests[i], deadline)
            time.sleep(0.05)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(n)))
        return ids

    def wait_rows(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.worker.alive(), "the worker exited\n" + self.worker.logs()
            if self.rows()[0] >= n:
                return
            time.sleep(0.5)
        raise AssertionError(f"{self.rows()} rows of {n} after {timeout} s\n{self.worker.logs()}")


@contextmanager
def jira_bus(tmp_path: Path) -> Iterator[Bus]:
    with private_postgres() as pg, JiraCloudFake(token="api-token", hide_recent_seconds=0) as jira:
        with pg.connect() as conn:
            conn.execute("CREATE TABLE entries (effect_id text, worklog_id text, hours numeric(9,2))")  # no key
        topics = {PROJECTS: 1, TASKS: 1, TIMESHEETS: 3, DLQ: 1}
        with private_stack(tmp_path, topics) as stack:
            worker, port = start_worker(stack, tmp_path, pg, jira)
            try:
                key = "R" + uuid.uuid4().hex[:5].upper()
                jira.add_project(key, "Reconnects")
                issue = jira.add_issue(key, "work under chaos")
                sender = JiraWebhookSender(f"http://127.0.0.1:{port}/webhooks/jira-pg", SECRET)
                bus = Bus(pg, worker, jira, sender, issue)
                bus.deliver(sender.build("jira:issue_created", issue=issue), time.monotonic() + 30)
                yield bus
            finally:
                worker.stop()


def start_worker(stack: Stack, tmp_path: Path, pg: PrivatePostgres, jira: JiraCloudFake) -> tuple[Worker, int]:
    pipeline = write_pipeline(tmp_path / "pipeline.yaml", [
        {"name": "jira-pg", "type": "jira", "config": jira_config(jira, pg.dsn())},
        {"name": "entries-pg", "type": "pg-table",
         "config": {"topics": [TIMESHEETS], "dsn": pg.dsn(), "table": "public.entries", "batch_size": 100,
                    "columns": {"effect_id": "$effect_id", "worklog_id": "worklog_id", "hours": "hours"}}},
    ])  # fmt: skip
    port = free_port()
    env = {**ENV, "BIZBUS_HTTP_PORT": str(port), "BIZBUS_HTTP_HOST": "127.0.0.1"}
    worker = Worker("pg-reconnect", stack, pipeline, env, command=["worker", "--pipeline", str(pipeline)])
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert worker.alive(), "the worker did not start\n" + worker.logs()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return worker, port
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    worker.stop()
    raise AssertionError("the worker's HTTP endpoint did not come up\n" + worker.logs())


def assert_exactly_once(bus: Bus, ids: set[str]) -> None:
    bus.wait_rows(len(ids), 120)
    time.sleep(3)  # a duplicate would land now
    with bus.pg.connect() as conn:
        got = [r[0] for r in conn.execute("SELECT worklog_id FROM entries").fetchall()]
        ledger = conn.execute("SELECT count(*) FROM bizbus_ledger.applied_effects WHERE connector = 'entries-pg'"
                              ).fetchone()[0]  # fmt: skip
    assert len(got) == len(ids) and set(got) == ids, (len(got), len(set(got)), len(ids - set(got)))
    assert ledger == len(ids)
    assert bus.worker.alive() and bus.worker.starts == 1, "the worker had to be restarted\n" + bus.worker.logs()


def test_terminated_backends_lose_nothing(tmp_path: Path) -> None:
    """``pg_terminate_backend`` on every bizbus backend, five times, while 500 webhooks come in."""
    rng = random.Random()
    with jira_bus(tmp_path) as bus:
        kills: list[int] = []
        strangers: set[str] = set()
        sending = threading.Event()
        sending.set()

        def killer() -> None:
            while sending.is_set() or len(kills) < 5:
                time.sleep(rng.uniform(0.8, 1.6))
                names = {name for _pid, name, _db in bus.pg.backends() if name != TEST_APP}
                strangers.update(n for n in names if not n.startswith("bizbus"))
                kills.append(bus.pg.terminate("bizbus%"))

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            ids = bus.send_worklogs(WEBHOOKS)
        finally:
            sending.clear()
            thread.join(60)
        assert_exactly_once(bus, ids)
        log = bus.worker.logs()
        print(f"\npg terminate: {len(kills)} rounds, backends terminated {kills}, answers {bus.answers}")
        assert len(kills) >= 5 and all(n > 0 for n in kills[:5]), kills
        assert not strangers, f"connections of the bus without a bizbus application_name: {strangers}"
        assert "retrying with back-off" in log and "working again" in log, log  # the runtime's path was taken


def test_postgres_restart_loses_nothing(tmp_path: Path) -> None:
    """The server stops for 3 s in the middle of 500 webhooks; what was answered 503 is sent again."""
    with jira_bus(tmp_path) as bus:
        restarted = threading.Event()
        lock = threading.Lock()

        def restart_once(i: int) -> None:
            if i == WEBHOOKS * 2 // 5:
                with lock, bus.pg.down(seconds=3):
                    pass
                restarted.set()

        ids = bus.send_worklogs(WEBHOOKS, during=restart_once)
        assert restarted.is_set()
        assert_exactly_once(bus, ids)
        print(f"\npg restart: answers {bus.answers}")
        assert bus.answers.get(503, 0) + bus.answers.get(0, 0) > 0, bus.answers  # the outage was seen
        assert bus.answers.get(500, 0) == 0, bus.answers


def _metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return float(REGISTRY.get_sample_value(name, labels) or 0.0)


def test_readiness_shows_the_retrying_task_while_postgres_is_down(embedded_broker: Any, registry: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    key = "H" + uuid.uuid4().hex[:5].upper()
    with private_postgres() as pg, JiraCloudFake(token="api-token", hide_recent_seconds=0) as jira:
        jira.add_project(key, "Readiness")
        issue = jira.add_issue(key, "readiness")
        with webhook_rig(embedded_broker, registry, "jira", jira_config(jira, pg.dsn())) as rig:
            assert rig.health is not None
            sender = JiraWebhookSender(rig.url, SECRET)
            check = f"component:{rig.name}"

            def wait(cond: Callable[[], bool], what: str, timeout: float = 45) -> None:
                deadline = time.monotonic() + timeout
                while not cond():
                    assert time.monotonic() < deadline, f"{what}: {rig.health.checks()}"  # type: ignore[union-attr]
                    time.sleep(0.3)

            worklogs = [jira.add_worklog(issue["id"], "acc-h", 3600, "2026-11-02T09:00:00.000+0800") for _ in range(4)]
            assert sender.issue_created(issue).status_code == 200
            for wl in worklogs[:3]:
                assert sender.worklog_created(wl).status_code == 200
            rig.events(TIMESHEETS, lambda v: v["project"] == key, expect=3)
            wait(lambda: rig.health.checks()[check] == "ok", "ok before the outage")  # type: ignore[union-attr]
            task = "0"  # the inbox source task
            restarts = _metric("bizbus_task_restarts_total", component=rig.name, task=task, reason="connection")

            with pg.down():
                late = sender.build("worklog_created", worklog=worklogs[3])
                assert sender.send(late).status_code == 503  # not stored: the vendor must send it again
                wait(lambda: "retrying" in rig.health.checks()[check], "the source shown as retrying")  # type: ignore[union-attr]
                assert rig.component.states()[0] == "retrying"
                problems = rig.health.connectors()[rig.name]["problems"]  # type: ignore[union-attr]
                assert "retrying" in problems[0] and "OperationalError" in problems[0], problems
                assert _metric("bizbus_task_problem", component=rig.name, task=task) == 1
                assert _metric("bizbus_task_restarts_total", component=rig.name, task=task,
                               reason="connection") > restarts  # fmt: skip

            assert sender.redeliver(late).status_code == 200
            wait(lambda: rig.health.checks()[check] == "ok", "ok again after the outage")  # type: ignore[union-attr]
            assert rig.component.states()[0] == "running"
            wait(lambda: _metric("bizbus_task_problem", component=rig.name, task=task) == 0, "problem gauge back to 0")
            events = rig.events(TIMESHEETS, lambda v: v["project"] == key, expect=4)
            assert sorted(e["worklog_id"] for e in events) == sorted(wl["id"] for wl in worklogs)
