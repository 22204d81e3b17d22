"""The backfill against the Jira contract fake: token paging, worklog listings and chunks, settle delay,
watermark, throttling, JQL time zone — and entity keys equal to the webhook's for the same version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from bizbus.connectors.runtime.inbox import Accepted, HttpRequest
from bizbus.connectors.sources.jira.api import JiraApi
from bizbus.connectors.sources.jira.backfill import JiraBackfill
from bizbus.connectors.sources.jira.config import JiraConfig
from bizbus.connectors.sources.jira.mapping import to_ms
from bizbus.connectors.sources.jira.webhook import JiraWebhookHandler

from bizbus.failures import Fatal, RetryPolicy
from tests.fakes.jira_api import JiraCloudFake, JiraWebhookSender

YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).date()
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=3, max_elapsed=10)


@pytest.fixture
def jira() -> Iterator[JiraCloudFake]:
    with JiraCloudFake(
        page_size=2, worklog_page_size=2, hide_recent_seconds=0, user_timezone="Asia/Shanghai"
    ) as f:
        yield f


def backfill(jira: JiraCloudFake, token: str = "api-token", **config: Any) -> JiraBackfill:
    conf = JiraConfig(**{"base_url": jira.url, "email": jira.email, "token_env": "T", "secret_env": "S",
                         "company": "C100", "settle_seconds": 0, "start": YESTERDAY, **config})  # fmt: skip
    bf = JiraBackfill(conf, "jira-test", JiraApi(jira.url, jira.email, token, 5, FAST))
    bf.setup()
    return bf


def seed(jira: JiraCloudFake) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    jira.add_project("BIZ", "Tower A")
    t0 = datetime.now(UTC) - timedelta(hours=2)
    issues = [jira.add_issue("BIZ", f"task {n}", at=t0 + timedelta(minutes=n)) for n in range(5)]
    worklogs = [jira.add_worklog(issues[0]["id"], "acc-1", 3600 * (n + 1), "2026-11-02T09:00:00.000+0800",
                                 at=t0 + timedelta(minutes=10 + n)) for n in range(3)]  # fmt: skip
    return issues, worklogs


def test_one_poll_reads_every_page_and_keys_match_the_webhooks(jira: JiraCloudFake) -> None:
    issues, worklogs = seed(jira)
    gone = jira.delete_worklog(worklogs[2]["id"], at=datetime.now(UTC) - timedelta(minutes=30))
    result = backfill(jira).poll(None)
    kinds = [d.kind for d in result.deliveries]
    assert kinds == ["jira:issue_backfill"] * 5 + ["jira:worklog_backfill"] * 2 + [
        "jira:worklog_deleted_backfill"
    ]
    # the same versions sent as webhooks carry the same entity keys, so the inbox keeps one of each
    sender = JiraWebhookSender("http://unused", "s")
    handler = JiraWebhookHandler(b"s", ())
    hooked = [sender.build("jira:issue_updated", issue=jira.issue_json(i["id"])) for i in issues]
    hooked += [sender.build("worklog_updated", worklog=jira.worklog_json(w["id"])) for w in worklogs[:2]]
    hooked.append(sender.build("worklog_deleted", worklog=gone))
    keys = []
    for h in hooked:
        out = handler.handle(
            HttpRequest("POST", "", {}, {k.lower(): v for k, v in h.headers.items()}, h.body)
        )
        assert isinstance(out, Accepted)
        keys += [d.entity_key for d in out.deliveries]
    assert sorted(d.entity_key or "" for d in result.deliveries) == sorted(keys)
    assert all(d.delivery_id == f"poll:{d.entity_key}" for d in result.deliveries)

    searches = jira.seen("POST", "/rest/api/3/search/jql")
    assert len(searches) == 3 and [bool(s.body.get("nextPageToken")) for s in searches] == [False, True, True]
    # start: yesterday 00:00 in `timezone` (Asia/Shanghai), minus 5 minutes of overlap, in the JQL zone (the same)
    assert (
        searches[0].body["jql"]
        == f'updated >= "{YESTERDAY - timedelta(days=1):%Y/%m/%d} 23:55" ORDER BY updated ASC'
    )
    assert {"summary", "status", "project", "updated", "assignee"} <= set(searches[0].body["fields"])
    assert (
        jira.seen("GET", "/rest/api/3/search") == [] and jira.seen("POST", "/rest/api/3/search/") == searches
    )
    assert len(jira.seen("GET", "/rest/api/3/worklog/updated")) == 1  # 2 live worklogs: one page of 2
    assert [s.body for s in jira.seen("POST", "/rest/api/3/worklog/list")] == [
        {"ids": [int(worklogs[0]["id"]), int(worklogs[1]["id"])]}]  # fmt: skip
    newest_issue = max(
        to_ms(datetime.fromisoformat(i["fields"]["updated"])) for i in map(jira.issue_json, jira.issues)
    )
    assert to_ms(datetime.fromisoformat(result.watermark["issues"])) == newest_issue
    assert result.watermark["worklogs_ms"] == to_ms(datetime.fromisoformat(worklogs[1]["updated"]))
    assert result.watermark["deleted_ms"] == to_ms(jira.deleted[gone["id"]])


def test_the_watermark_moves_on_and_the_overlap_rereads(jira: JiraCloudFake) -> None:
    issues, worklogs = seed(jira)
    bf = backfill(jira, overlap_minutes=0)
    first = bf.poll(None)
    later = datetime.now(UTC) - timedelta(minutes=1)
    jira.update_worklog(worklogs[0]["id"], seconds=60, at=later)
    before = len(jira.seen("GET", "/rest/api/3/worklog/updated"))
    second = bf.poll(first.watermark)
    new_keys = {d.entity_key for d in second.deliveries} - {d.entity_key for d in first.deliveries}
    assert new_keys == {
        f"worklog:{worklogs[0]['id']}@{to_ms(later)}",
        f"issue:{issues[0]['id']}@{to_ms(later)}",
    }
    assert second.watermark["worklogs_ms"] == to_ms(later) > first.watermark["worklogs_ms"]
    since = [int(r.query["since"][0]) for r in jira.seen("GET", "/rest/api/3/worklog/updated")]
    assert since[before] == first.watermark["worklogs_ms"]  # overlap 0: from the watermark itself


def test_unsettled_changes_wait_for_the_next_poll(jira: JiraCloudFake) -> None:
    seed(jira)
    result = backfill(jira, settle_seconds=3 * 3600).poll(None)
    assert result.deliveries == ()
    start_ms = to_ms(datetime.combine(YESTERDAY, datetime.min.time(), tzinfo=ZoneInfo("Asia/Shanghai")))
    assert (result.watermark["worklogs_ms"], result.watermark["deleted_ms"]) == (start_ms, start_ms)


def test_more_than_1000_worklogs_are_read_in_chunks(jira: JiraCloudFake) -> None:
    jira.worklog_page_size = 1000
    jira.add_project("BIG", "Big")
    issue = jira.add_issue("BIG", "many", at=datetime.now(UTC) - timedelta(hours=1))
    t0 = datetime.now(UTC) - timedelta(minutes=50)
    for n in range(1001):
        jira.add_worklog(
            issue["id"], "acc", 60, "2026-11-02T09:00:00.000+0800", at=t0 + timedelta(milliseconds=n)
        )
    result = backfill(jira).poll(None)
    assert sum(d.kind == "jira:worklog_backfill" for d in result.deliveries) == 1001
    assert [len(r.body["ids"]) for r in jira.seen("POST", "/rest/api/3/worklog/list")] == [1000, 1]
    assert len(jira.seen("GET", "/rest/api/3/worklog/updated")) == 2


def test_throttling_is_waited_out_and_bad_credentials_are_fatal(jira: JiraCloudFake) -> None:
    seed(jira)
    jira.throttle_next(2, retry_after=0)
    assert len(backfill(jira).poll(None).deliveries) == 8
    assert [r.status for r in jira.requests[:3]] == [429, 429, 200]
    with pytest.raises(Fatal):
        backfill(jira, token="wrong").poll(None)


def test_jql_dates_are_written_in_the_api_users_time_zone(jira: JiraCloudFake) -> None:
    jira.zone = ZoneInfo("America/New_York")  # the bot's Jira profile
    jira.add_project("TZ", "tz")
    jira.add_issue("TZ", "recent", at=datetime.now(UTC) - timedelta(minutes=10))
    start = {"start": None}  # since the first poll (minus the overlap)
    missed = backfill(jira, overlap_minutes=30, **start).poll(None)
    found = backfill(jira, overlap_minutes=30, jql_timezone="America/New_York", **start).poll(None)
    assert [d.kind for d in missed.deliveries if d.kind == "jira:issue_backfill"] == []  # read 12-13 h later
    assert [d.kind for d in found.deliveries if d.kind == "jira:issue_backfill"] == ["jira:issue_backfill"]
    assert json.dumps(found.watermark)  # storable as JSON
