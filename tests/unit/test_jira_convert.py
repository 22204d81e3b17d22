"""The converter against the Jira contract fake: issue map, the issue lookup and its failures, deletions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from bizbus.connectors.runtime.inbox import InboxRow
from bizbus.connectors.sources.jira.api import JiraApi
from bizbus.connectors.sources.jira.config import JiraConfig
from bizbus.connectors.sources.jira.convert import JiraConverter
from bizbus.connectors.sources.jira.state import MemoryState

from bizbus.failures import BackOff, Fatal, Permanent
from tests.fakes.jira_api import JiraCloudFake

SAMPLES = Path(__file__).parents[1] / "contract" / "samples" / "jira"
WORKER = "712020:2a9b3c4d-5e6f-4a1b-9c8d-7e6f5a4b3c2d"


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def row(kind: str, payload: dict[str, Any], n: int = 1) -> InboxRow:
    return InboxRow(n, f"d-{n}", kind, payload, None, "webhook", datetime.now(UTC))


@pytest.fixture
def jira() -> Iterator[JiraCloudFake]:
    with JiraCloudFake() as fake:
        yield fake


def converter(jira: JiraCloudFake, token: str = "api-token") -> JiraConverter:
    config = JiraConfig(base_url=jira.url, email=jira.email, token_env="T", secret_env="S", company="C100")
    conv = JiraConverter(config, "jira-test", MemoryState(), JiraApi(jira.url, jira.email, token, 5))
    conv.setup()
    return conv


def test_worklog_before_its_issue_reads_the_project_once(jira: JiraCloudFake) -> None:
    jira.add_project("BIZ", "Tower A")
    issue = jira.add_issue("BIZ", "Pour foundation slab")
    conv = converter(jira)
    first = sample("worklog_created")
    first["worklog"]["issueId"] = issue["id"]
    [event] = conv.convert(row("jira:worklog_created", first))
    assert (event.topic, event.key) == ("bizbus.pm.timesheet.v1", "BIZ")
    assert (event.value["project"], event.value["task"], event.value["hours"]) == (
        "BIZ",
        issue["key"],
        Decimal("7.50"),
    )
    second = sample("worklog_updated")
    second["worklog"]["issueId"] = issue["id"]
    [again] = conv.convert(row("jira:worklog_updated", second, 2))
    assert again.value["op"] == "UPDATED" and again.value["hours"] == Decimal("2.78")
    gets = jira.seen("GET", f"/rest/api/3/issue/{issue['id']}")
    assert len(gets) == 1 and gets[0].query == {"fields": ["project"]} and conv.lookups == 1


def test_issue_rows_fill_the_map_so_no_lookup_is_needed(jira: JiraCloudFake) -> None:
    conv = converter(jira)
    [task] = conv.convert(row("jira:issue_created", sample("issue_created")))
    assert (task.topic, task.key, task.value["op"], task.value["version"]) == (
        "bizbus.pm.task.v1", "BIZ", "CREATED", 1793578530250)  # fmt: skip
    [entry] = conv.convert(row("jira:worklog_created", sample("worklog_created"), 2))
    assert (entry.value["project"], entry.value["task"]) == ("BIZ", "BIZ-7")
    assert jira.requests == []


def test_lookup_failures_are_classified(jira: JiraCloudFake) -> None:
    body = sample("worklog_created")  # issue 10042 is unknown to this site
    with pytest.raises(Permanent) as exc:
        converter(jira).convert(row("jira:worklog_created", body))
    assert exc.value.reason == "unknown_issue"
    with pytest.raises(Fatal):
        converter(jira, token="revoked").convert(row("jira:worklog_created", body))
    jira.throttle_next(1, retry_after=7)
    with pytest.raises(BackOff) as backoff:
        converter(jira).convert(row("jira:worklog_created", body))
    assert backoff.value.retry_after == 7


def test_deletions_use_the_payload_then_what_was_remembered(jira: JiraCloudFake) -> None:
    conv = converter(jira)
    conv.convert(row("jira:issue_created", sample("issue_created")))
    conv.convert(row("jira:worklog_created", sample("worklog_created"), 2))
    [hooked] = conv.convert(row("jira:worklog_deleted", sample("worklog_deleted"), 3))
    assert {k: v for k, v in hooked.value.items() if k != "meta"} == {
        "op": "DELETED", "worklog_id": "10100", "project": "BIZ", "task": "BIZ-7", "employee": WORKER,
        "work_date": date(2026, 11, 3), "hours": Decimal("2.78"), "billable": True,
        "description": "Formwork and rebar check", "version": 1793954710555}  # fmt: skip
    # the backfill only knows the id and when: the rest is what the created row left behind
    [polled] = conv.convert(row("jira:worklog_deleted_backfill",
                                {"deleted": {"worklogId": "10100", "updatedTime": 1793954710999}}, 4))  # fmt: skip
    assert (polled.value["project"], polled.value["employee"], polled.value["hours"], polled.value["version"]) == (
        "BIZ", WORKER, Decimal("7.50"), 1793954710999)  # fmt: skip
    assert polled.value["meta"]["event_id"] == hooked.value["meta"]["event_id"]  # one deletion, one id
    with pytest.raises(Permanent) as exc:
        conv.convert(
            row("jira:worklog_deleted_backfill", {"deleted": {"worklogId": "999", "updatedTime": 1}}, 5)
        )
    assert exc.value.reason == "unknown_worklog"
    bare = {"timestamp": 5, "webhookEvent": "worklog_deleted", "worklog": {"id": "77", "issueId": "10042"}}
    with pytest.raises(Permanent, match="author or start"):
        conv.convert(row("jira:worklog_deleted", bare, 6))


def test_projects_issues_deleted_and_unknown_kinds(jira: JiraCloudFake) -> None:
    conv = converter(jira)
    [p] = conv.convert(row("jira:project_archived", sample("project_archived")))
    assert (p.topic, p.key, p.value["op"], p.value["actual_end"]) == ("bizbus.pm.project.v1", "BIZ", "COMPLETED",
                                                                       date(2026, 12, 21))  # fmt: skip
    assert p.value["meta"]["trace"] == {"connector": "jira-test"}
    [gone] = conv.convert(row("jira:issue_deleted", sample("issue_deleted")))
    assert (gone.value["op"], gone.value["version"]) == ("DELETED", 1796090400000)
    with pytest.raises(Permanent) as exc:
        conv.convert(row("jira:comment_created", {"timestamp": 1}))
    assert exc.value.reason == "unknown_kind"
    broken = sample("worklog_created")
    del broken["worklog"]["author"]
    with pytest.raises(Permanent) as mapping:
        conv.convert(
            row("jira:worklog_created", {**broken, "worklog": {**broken["worklog"], "issueId": "10042"}})
        )
    assert mapping.value.reason == "mapping"


class _OneRowInbox:
    """Just enough of PgInbox for the reader: one stored row."""

    def __init__(self, r: InboxRow) -> None:
        self.row = r

    def read(self, after: int, limit: int) -> list[InboxRow]:
        return [self.row] if after < self.row.id else []

    def in_progress(self) -> list[int]:
        return []

    def ended(self, xids: list[int]) -> bool:
        return True


def test_refused_credentials_stop_the_inbox_reader_instead_of_retrying_forever(jira: JiraCloudFake) -> None:
    from bizbus.connectors.runtime.inbox import InboxReader

    body = sample("worklog_created")
    reader = InboxReader(
        "jira-test", _OneRowInbox(row("jira:worklog_created", body)), converter(jira, "revoked")
    )  # type: ignore[arg-type]
    with pytest.raises(Fatal):
        reader.read(None, 10)
    jira.add_project("BIZ", "Tower A")
    issue = jira.add_issue("BIZ", "slab")
    body["worklog"]["issueId"] = issue["id"]
    jira.throttle_next(1, retry_after=0)
    reader = InboxReader("jira-test", _OneRowInbox(row("jira:worklog_created", body)), converter(jira))  # type: ignore[arg-type]
    assert reader.read(None, 10) == []  # throttled: the row waits (backoff), nothing is lost
    reader._retry_at = 0.0
    [item] = reader.read(None, 10)
    assert item.topic == "bizbus.pm.timesheet.v1" and item.position == {"id": 1}
