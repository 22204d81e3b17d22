"""The flows remember across a restart of ``bizbus up`` (its embedded broker keeps nothing): a worklog for a
project created before the restart posts normally, and an edit of a worklog booked before the restart gives
exactly one reversal and one new voucher in a real Tryton ERP. Also after the embedded broker is killed.

The flows' tables (projects, worklog states) live in changelog topics of the lost log; they are rebuilt
because every source sends its durable side again on a new log (inbox rows from the start), the flows derive
the same ids again, and the Tryton sink finds what it already wrote by ``bizbus_ref``."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.bus_harness import BusProcess, wait_until, write_pipeline
from tests.e2e.erp_scenario import AUTHOR, TrytonReader, f2_mapping, labor_amounts, labor_moves
from tests.fakes.jira_api import JiraCloudFake, JiraWebhookSender

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
SECRET = "flow-state-" + uuid.uuid4().hex[:8]


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.mark.parametrize("outage", ["restart", "broker-killed"])
def test_flows_know_projects_and_worklogs_booked_before_a_restart(tryton, tmp_path: Path, postgres: Any,  # noqa: F811
                                                                  outage: str) -> None:  # fmt: skip
    key = "R" + uuid.uuid4().hex[:5].upper()
    source = f"jira-{key.lower()}"
    with JiraCloudFake(token="api-token", hide_recent_seconds=0) as jira:
        pipeline = write_pipeline(tmp_path / "pipeline.yaml", [
            {"name": source, "type": "jira", "config": {
                "base_url": jira.url, "email": jira.email, "token_env": "FS_JIRA_TOKEN", "secret_env": "FS_JIRA_SECRET",
                "company": "Bizbus Demo Co", "backfill": False}},
            {"name": f"erp-{key.lower()}", "type": "tryton", "config": {
                "url": tryton.url, "user": tryton.user, "password_env": tryton.password_env,
                "batch_timeout_seconds": 0.5, "retry": {"max_attempts": 30, "max_elapsed": 120}}},
        ], flows=[
            {"name": "cost-centers", "type": "cost-centers", "config": {}},
            {"name": "labor-cost", "type": "labor-cost",
             "config": {"mapping": str(f2_mapping(tmp_path)), "master_data_grace_seconds": 20}},
        ], name=f"flowstate-{key.lower()}")  # fmt: skip
        bus = BusProcess(tmp_path, pipeline, {"FS_JIRA_TOKEN": "api-token", "FS_JIRA_SECRET": SECRET})
        rpc = tryton.url if tryton.url.endswith("rpc/") else tryton.url + "rpc/"
        erp = TrytonReader(rpc, tryton.user, os.environ[tryton.password_env])
        try:
            bus.start()
            send = JiraWebhookSender(f"{bus.url}/webhooks/{source}", SECRET)
            t0 = datetime(2026, 11, 1, 9, tzinfo=UTC)
            project = jira.add_project(key, "Restart-proof warehouse", lead=AUTHOR)
            assert send.project_created(project, timestamp=_ms(t0)).status_code == 200
            issue = jira.add_issue(key, "Install racks", at=t0)
            assert send.issue_created(issue, timestamp=_ms(t0) + 1000).status_code == 200
            w1 = jira.add_worklog(issue["id"], AUTHOR, 3 * 3600, "2026-11-02T09:00:00.000+0800",
                                  at=datetime(2026, 11, 2, 10, tzinfo=UTC))  # fmt: skip
            assert send.worklog_created(w1, timestamp=_ms(datetime(2026, 11, 2, 10, tzinfo=UTC))).status_code == 200
            wait_until(lambda: len(labor_moves(erp, key)) == 1, 240, "the first voucher in Tryton",
                       lambda: bus.log()[-4000:])  # fmt: skip

            if outage == "restart":
                assert bus.stop() == 0
                bus.start()
                send = JiraWebhookSender(f"{bus.url}/webhooks/{source}", SECRET)
            else:
                bus.kill_broker()
                bus.wait_output("the embedded broker is back", 120)

            # a worklog for the project created before: posts (the flow still knows the project)
            w2 = jira.add_worklog(issue["id"], AUTHOR, 9000, "2026-11-03T09:00:00.000+0800",
                                  at=datetime(2026, 11, 3, 10, tzinfo=UTC))  # fmt: skip
            assert send.worklog_created(w2, timestamp=_ms(datetime(2026, 11, 3, 10, tzinfo=UTC))).status_code == 200
            # an edit of the worklog booked before: one reversal of its voucher and one new voucher
            w1b = jira.update_worklog(w1["id"], seconds=4 * 3600, at=datetime(2026, 11, 5, 10, tzinfo=UTC))
            assert send.worklog_updated(w1b, timestamp=_ms(datetime(2026, 11, 5, 10, tzinfo=UTC))).status_code == 200
            wait_until(lambda: len(labor_moves(erp, key)) >= 4, 300, "four moves in Tryton",
                       lambda: f"{labor_moves(erp, key)}\n{bus.log()[-6000:]}")  # fmt: skip
            moves = labor_moves(erp, key)
            refs = [m["bizbus_ref"] for m in moves]
            assert len(refs) == len(set(refs)) == 4, refs  # nothing twice, nothing else
            assert all(m["state"] == "posted" for m in moves), moves
            # 120.00 an hour: W1 3 h (360), its reversal (-360) and 4 h (480); W2 2.5 h (300)
            assert sorted(labor_amounts(erp, moves).values()) == [Decimal("-360.00"), Decimal("300.00"),
                                                                  Decimal("360.00"), Decimal("480.00")]  # fmt: skip
            assert "unknown" not in bus.log().split("Ctrl-C stops everything")[-1], bus.log()[-6000:]
        finally:
            bus.kill()
            table = source.replace("-", "_")
            for t in (f"inbox_{table}", f"jira_issues_{table}", f"jira_worklogs_{table}"):
                postgres.execute(f'DROP TABLE IF EXISTS bizbus_state."{t}"')
            postgres.execute("DELETE FROM bizbus_state.source_cursors WHERE connector = %s", (source,))
