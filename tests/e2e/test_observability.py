"""Dashboards and alerts against real traffic: a real Prometheus scrapes a running ``bizbus up`` while the
issue-5 business story (signed Jira webhooks, encrypted DingTalk callbacks, the Faust flows, a real Tryton
ERP) plus an outbox application, a lost Jira webhook, a throttled Jira API, a malformed outbox row and an
unread replication slot go through it. Then EVERY panel query of the three Grafana dashboards and the
signal of EVERY alert rule must return series through Prometheus's HTTP API, and every full alert
expression must parse; a few values are checked against what the story did.

``bizbus up`` runs the connectors in one process and the flows in its child worker; Prometheus scrapes
only ``up``'s /metrics, so the flows' series (budget alert, flow events) prove the merge of the child's
metrics (label ``process="flows"``)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bizbus.devstack.procs import free_port
from bizbus.docgen.alerting import ALERT_RULES_FILE
from bizbus.docgen.dashboards import all_queries
from tests.chaos.harness import Worker, private_stack, wait_for
from tests.e2e.erp_scenario import AUTHOR, EMPLOYEE, SECRETS, Scenario, _answers
from tests.fakes.dingtalk_api import DingTalkApi
from tests.fakes.jira_api import JiraCloudFake
from tests.prometheus_env import PROMETHEUS, SKIP_REASON, PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900), pytest.mark.skipif(PROMETHEUS is None, reason=SKIP_REASON)]

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SERIES_TIMEOUT = 240.0


def _pipeline(s: Scenario, schema: str, slot: str) -> Path:
    """The scenario's pipeline plus: Jira backfill on, an outbox source, the replication-slot monitor."""
    path = s.pipeline()
    doc = yaml.safe_load(path.read_text())
    jira = next(c for c in doc["connectors"] if c["type"] == "jira")
    jira["config"].update(backfill=True, settle_seconds=1, poll_interval_seconds=1,
                          start=str((datetime.now(UTC) - timedelta(days=60)).date()))  # fmt: skip
    doc["connectors"] += [
        {"name": s.name("outbox"), "type": "pg-outbox",
         "config": {"dsn": DSN, "table": f"{schema}.outbox", "source_system": "budget-app",
                    "topics": ["bizbus.pm.project.v1", "bizbus.pm.timesheet.v1"]}},
        {"name": s.name("slots"), "type": "pg-slot-monitor",
         "config": {"dsn": DSN, "slots": slot, "interval_seconds": 1, "database_label": "erp-db"}},
    ]  # fmt: skip
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def _outbox(conn: Any, schema: str, project: str) -> None:
    """The budget application: a project with a 100.00 budget, two timesheets (240.00 of labor: over budget
    by more than 10 %), the second row once more (same event id: absorbed downstream) and one bad row."""
    rows = [
        ("bizbus.pm.project.v1", project, 1, {
            "op": "CREATED", "project": project, "name": "Budgeted site survey", "company": "Bizbus Demo Co",
            "source_status": "open", "manager": None, "customer": None, "cost_center": None,
            "planned_start": "2026-11-01", "planned_end": None, "actual_end": None, "budget_amount": "100.00",
            "currency": "CNY", "version": 1}),
        *[("bizbus.pm.timesheet.v1", f"{project}-W{n}", 1, {
            "op": "CREATED", "worklog_id": f"{project}-W{n}", "project": project, "task": None,
            "employee": EMPLOYEE, "work_date": "2026-11-03", "hours": "1.00", "billable": True,
            "description": f"survey day {n}", "version": 1}) for n in (1, 2, 2)],
        ("bizbus.pm.timesheet.v1", f"{project}-BAD", 1, {"op": "CREATED", "hours": "not a number"}),
    ]  # fmt: skip
    for topic, key, version, payload in rows:
        conn.execute(f"INSERT INTO {schema}.outbox (topic, entity_key, version, payload, correlation_id) "
                     "VALUES (%s, %s, %s, %s, %s)", (topic, key, version, json.dumps(payload), project))  # fmt: skip


def _value(prom: PrometheusServer, expr: str) -> float:
    series = prom.query(expr)
    return sum(float(s["value"][1]) for s in series)


def test_every_dashboard_query_and_alert_signal_returns_series_from_real_traffic(tryton, tmp_path, postgres) -> None:  # noqa: F811
    schema = f"obs_{uuid.uuid4().hex[:8]}"
    slot = f"bizbus_obs_{uuid.uuid4().hex[:8]}"
    postgres.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
    postgres.execute(f"CREATE SCHEMA {schema}")
    postgres.execute(f"""CREATE TABLE {schema}.outbox (id bigserial PRIMARY KEY, topic text NOT NULL,
        entity_key text NOT NULL, version bigint NULL, payload jsonb NOT NULL, correlation_id text NULL,
        created_at timestamptz NOT NULL DEFAULT now())""")
    with private_stack(tmp_path, {}) as stack, JiraCloudFake() as jira, DingTalkApi() as dingtalk:
        s = Scenario(stack, tryton, jira, dingtalk)
        s.bootstrap()
        port = free_port()
        s.ports.update(jira=port, dingtalk=port, erp=port)
        path = _pipeline(s, schema, slot)
        budget_project = "B" + s.key[1:]
        admin = free_port()  # /readyz and /metrics (Prometheus scrapes the admin listener)
        up = Worker("up", stack, path, env={**os.environ, **SECRETS, "BIZBUS_HTTP_PORT": str(port),
                                            "BIZBUS_ADMIN_PORT": str(admin)},
                    command=["up", "--pipeline", str(path)])  # fmt: skip
        s.workers["up"] = up
        jira.throttle_next(2, retry_after=0.2)  # the backfill's first poll is answered 429 twice: retried
        try:
            up.start()
            wait_for(lambda: _answers(f"http://127.0.0.1:{admin}/readyz"), 90, "bizbus up's HTTP server", [up])
            with PrometheusServer([f"127.0.0.1:{admin}"], rule_files=[ALERT_RULES_FILE], workdir=tmp_path / "prom") as prom:
                prom.wait_scraped(60)
                story = s.run_story()
                issue_id = story["worklogs"][0]["issueId"]
                # a worklog whose webhook never comes: only the backfill finds it (a gap)
                jira.add_worklog(issue_id, AUTHOR, 1800, "2026-11-07T09:00:00.000+0800",
                                 at=datetime.now(UTC) - timedelta(seconds=5))  # fmt: skip
                _outbox(postgres, schema, budget_project)
                s.wait_books(story)

                missing: list[str] = []
                queries = all_queries()
                for q in queries:
                    if not q.must_return_series:
                        prom.query(q.expr)  # a full alert expression: must parse (raises otherwise)
                        continue
                    try:
                        prom.wait_for_series(q.expr, timeout=SERIES_TIMEOUT if not missing else 5)
                    except TimeoutError:
                        missing.append(f"{q.where}: {q.expr}")
                assert not missing, "queries without series after the traffic:\n" + "\n".join(missing)
                assert len([q for q in queries if q.must_return_series]) >= 40

                # values that follow from the story
                # (max over time: a restarted flows worker starts its counters at 0 again)
                alerts = "sum(max_over_time(bizbus_budget_alerts_total[15m]))"
                wait_for(lambda: _value(prom, alerts) >= 1, 60, "the budget alert", [up])
                assert _value(prom, alerts) == 1  # once, although 3 rows crossed the line
                assert _value(prom, 'sum(bizbus_documents_total{document="voucher_reversal"})') >= 2
                assert _value(prom, 'sum(bizbus_documents_total{document="purchase_order_cancelled"})') == 1
                assert _value(prom, f'sum(bizbus_backfill_gaps_total{{component="{s.name("jira")}"}})') >= 1
                assert _value(prom, f'sum(bizbus_retries_total{{component="{s.name("jira")}"}})') >= 1
                failed = prom.query(f'bizbus_records_failed_total{{component="{s.name("outbox")}"}}')
                assert [f["metric"]["reason"] for f in failed] == ["schema_mismatch"]
                assert _value(prom, f'bizbus_cdc_slot_lag_bytes{{slot="{slot}"}}') > 0
                # the flows worker's series arrive through up's /metrics with process="flows"
                assert prom.query('bizbus_flow_events_total{process="flows"}')
                rules = prom.rules()
                assert rules and all(r["health"] == "ok" for r in rules), rules
                ready = httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=5).json()
                assert ready["checks"].get("flows") == "ok", ready
        finally:
            s.stop()
            postgres.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            postgres.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            postgres.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (s.name("outbox"),))
