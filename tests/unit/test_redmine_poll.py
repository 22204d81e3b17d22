"""The Redmine poller against the contract fake and the real PostgreSQL state table (no broker): what each
poll finds, CREATED/UPDATED decisions, deletions, status-only project changes, paging and API errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from bizbus.connectors.runtime.inbox import InboxRow, PollResult
from bizbus.connectors.sources.redmine.api import RedmineClient
from bizbus.connectors.sources.redmine.backfill import RedminePoller
from bizbus.connectors.sources.redmine.config import RedmineConfig
from bizbus.connectors.sources.redmine.convert import RedmineConverter
from bizbus.connectors.sources.redmine.state import RedmineState

from bizbus.failures import BackOff, Fatal, Permanent, Retryable
from tests.fakes.redmine_api import FakeRedmine

KEY = "k-" + uuid.uuid4().hex
TODAY = datetime.now(ZoneInfo("Asia/Shanghai")).date()


@pytest.fixture
def rm() -> Iterator[FakeRedmine]:
    with FakeRedmine(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def make(postgres: psycopg.Connection) -> Iterator[Any]:
    made: list[RedminePoller] = []

    def build(fake: FakeRedmine, key: str = KEY, **cfg: Any) -> RedminePoller:
        c = RedmineConfig.model_validate({"base_url": fake.url, "api_key_env": "REDMINE_TEST_KEY", "company": "C01",
                                          **cfg})  # fmt: skip
        name = f"redmine-unit-{uuid.uuid4().hex[:8]}"
        poller = RedminePoller(name, RedmineClient(fake.url, key, "REDMINE_TEST_KEY", 5),
                               RedmineState(c.state_dsn, c.state_schema, name), c)  # fmt: skip
        poller.setup()
        made.append(poller)
        return poller

    yield build
    for p in made:
        p.close()
        postgres.execute(f'DROP TABLE IF EXISTS "bizbus_state"."{p.state.name}"')


def keys(result: PollResult) -> list[str]:
    return [d.entity_key or "" for d in result.deliveries]


def by_key(result: PollResult) -> dict[str, Any]:
    return {d.entity_key: d for d in result.deliveries}


def scene(rm: FakeRedmine) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    p = rm.add_project("prj-a", "Project A", when="2026-11-02T01:00:00Z")
    i = rm.add_issue(p["id"], "Pour concrete", assigned_to_id=7, when="2026-11-02T01:00:01Z")
    t1 = rm.add_time_entry(p["id"], user_id=7, hours=1.5, spent_on=TODAY - timedelta(days=2), issue_id=i["id"],
                           when="2026-11-02T01:00:02Z")  # fmt: skip
    t2 = rm.add_time_entry(p["id"], user_id=8, hours=2, spent_on=TODAY - timedelta(days=1),
                           when="2026-11-02T01:00:03Z")  # fmt: skip
    return p, i, t1, t2


def test_first_poll_finds_everything_in_order_then_only_repeats(rm: FakeRedmine, make: Any) -> None:
    p, i, t1, t2 = scene(rm)
    poller = make(rm)
    first = poller.poll(None)
    assert keys(first) == [f"project:{p['id']}@2026-11-02T01:00:00Z", f"issue:{i['id']}@2026-11-02T01:00:01Z",
                           f"time_entry:{t1['id']}@2026-11-02T01:00:02Z",
                           f"time_entry:{t2['id']}@2026-11-02T01:00:03Z"]  # fmt: skip
    assert [d.kind for d in first.deliveries] == ["redmine:project", "redmine:issue", "redmine:time_entry",
                                                  "redmine:time_entry"]  # fmt: skip
    assert all(d.payload["first"] for d in first.deliveries)
    assert all(d.delivery_id == f"poll:{d.entity_key}" for d in first.deliveries)
    assert first.deliveries[2].payload["project_identifier"] == "prj-a"
    assert dict(first.watermark) == {"projects": "2026-11-02T01:00:00Z", "issues": "2026-11-02T01:00:01Z",
                                     "time_entries": "2026-11-02T01:00:03Z"}  # fmt: skip
    # a new issue later: the next poll repeats what lies within the overlap (the inbox drops repeats) ...
    rm.tick("2026-11-20T00:00:00Z")
    new = rm.add_issue(p["id"], "Cure concrete")
    again = poller.poll(first.watermark)
    assert keys(again) == keys(first) + [f"issue:{new['id']}@2026-11-20T00:00:01Z"]
    issue_calls = [q for path, q in rm.requests if path == "/issues.json"]
    assert issue_calls[-1]["updated_on"] == ">=2026-11-02T00:58:01Z" and issue_calls[-1]["status_id"] == "*"
    assert dict(again.watermark)["issues"] == "2026-11-20T00:00:01Z"
    # ... and one more poll no longer reaches the old issue
    assert [k for k in keys(poller.poll(again.watermark)) if k.startswith("issue")] == [
        f"issue:{new['id']}@2026-11-20T00:00:01Z"]


def test_repoll_within_the_overlap_repeats_the_same_keys_and_ops(rm: FakeRedmine, make: Any) -> None:
    scene(rm)
    poller = make(rm)
    first = poller.poll(None)
    second = poller.poll(first.watermark)  # the overlap re-reads them: same keys (the inbox drops them), CREATED
    assert keys(second) == keys(first)
    assert [d.payload["first"] for d in second.deliveries] == [True] * 4


def test_edits_are_updated_and_deletions_are_confirmed(rm: FakeRedmine, make: Any) -> None:
    p, i, t1, t2 = scene(rm)
    poller = make(rm)
    wm = poller.poll(None).watermark
    rm.tick("2026-11-10T00:00:00Z")
    rm.update_time_entry(t1["id"], hours=2.75, comments="more")
    rm.update_issue(i["id"], status_id=5)
    rm.delete_time_entry(t2["id"])
    found = poller.poll(wm)
    got = by_key(found)
    edited = got[f"time_entry:{t1['id']}@2026-11-10T00:00:01Z"]
    assert edited.payload["first"] is False and edited.payload["time_entry"]["hours"] == 2.75
    assert got[f"issue:{i['id']}@2026-11-10T00:00:02Z"].payload["first"] is False
    gone = got[f"time_entry:{t2['id']}@deleted"]
    assert gone.kind == "redmine:time_entry_deleted" and gone.payload["time_entry"]["hours"] == 2.0
    assert gone.payload["project_identifier"] == "prj-a" and isinstance(gone.payload["detected_ms"], int)
    assert (f"/time_entries/{t2['id']}.json", {}) in rm.requests
    later = poller.poll(found.watermark)  # the deletion is repeated with the same version (the inbox drops it)
    assert by_key(later)[f"time_entry:{t2['id']}@deleted"].payload == gone.payload
    assert [path for path, _ in rm.requests].count(f"/time_entries/{t2['id']}.json") == 1


def test_project_closed_without_new_updated_on_is_a_change(rm: FakeRedmine, make: Any) -> None:
    p, *_ = scene(rm)
    poller = make(rm)
    wm = poller.poll(None).watermark
    rm.close_project(p["id"])  # Redmine's update_all: updated_on stays 2026-11-02T01:00:00Z
    now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    closed = poller.poll(wm, now=now)
    ms = int(now.timestamp() * 1000)
    (d,) = [d for d in closed.deliveries if d.kind == "redmine:project"]
    assert d.entity_key == f"project:{p['id']}@2026-11-02T01:00:00Z#status5@{ms}"
    assert d.payload["version_ms"] == ms and d.payload["project"]["status"] == 5 and d.payload["first"] is False
    assert closed.watermark["projects"] == "2026-12-01T08:00:00Z"
    rm.tick("2026-12-05T00:00:00Z")
    quiet = poller.poll(closed.watermark, now=datetime(2026, 12, 5, tzinfo=UTC))
    assert [k for k in keys(quiet) if k.startswith("project:")] == [d.entity_key]  # same change, same key
    rm.reopen_project(p["id"])
    reopened = poller.poll(quiet.watermark, now=datetime(2026, 12, 6, tzinfo=UTC))
    assert [k for k in keys(reopened) if k.startswith("project:")] == [
        f"project:{p['id']}@2026-11-02T01:00:00Z#status1@{int(datetime(2026, 12, 6, tzinfo=UTC).timestamp() * 1000)}"]


def test_projects_are_asked_for_every_status(rm: FakeRedmine, make: Any) -> None:
    active = rm.add_project("act", "Active")
    done = rm.add_project("done", "Done", status=5)
    gone = rm.add_project("gone", "Archived", status=9)
    found = make(rm).poll(None)
    assert {d.payload["project"]["identifier"] for d in found.deliveries} == {"act", "done", "gone"}
    default = httpx.get(f"{rm.url}/projects.json", headers={"X-Redmine-API-Key": KEY}).json()
    assert [p["id"] for p in default["projects"]] == [active["id"]]  # without status: active only
    assert done["id"] != gone["id"]


def test_stock_redmine_ignoring_updated_on_for_time_entries(make: Any) -> None:
    with FakeRedmine(api_key=KEY, time_entry_updated_on=False) as rm:
        p, i, t1, t2 = scene(rm)
        old = rm.add_time_entry(p["id"], user_id=7, hours=8, spent_on=TODAY - timedelta(days=90),
                                when="2026-10-01T00:00:00Z")  # fmt: skip
        poller = make(rm)
        first = poller.poll(None)  # no watermark, no start: everything
        assert f"time_entry:{old['id']}@2026-10-01T00:00:00Z" in keys(first)
        rm.tick("2026-11-10T00:00:00Z")
        rm.update_time_entry(t1["id"], hours=3)
        rm.update_time_entry(t2["id"], spent_on=TODAY - timedelta(days=60))  # moved out of the window
        second = poller.poll(first.watermark)
        assert poller.time_entry_filter is False  # probed: the filter is ignored
        assert sorted(k for k in keys(second) if k.startswith("time_entry")) == sorted(
            [f"time_entry:{t1['id']}@2026-11-10T00:00:01Z", f"time_entry:{t2['id']}@2026-11-10T00:00:02Z"])
        calls = len(rm.requests)
        poller.poll(second.watermark)
        te_calls = [q for path, q in rm.requests[calls:] if path == "/time_entries.json"]
        assert all("updated_on" not in q for q in te_calls)  # not asked again once known to be ignored


def test_start_limits_the_first_poll(rm: FakeRedmine, make: Any) -> None:
    p = rm.add_project("prj-s", "S", when="2026-10-01T00:00:00Z")
    rm.add_issue(p["id"], "old", when="2026-10-02T00:00:00Z")
    new = rm.add_issue(p["id"], "new", when="2026-11-02T00:00:00Z")
    found = make(rm, start="2026-11-01").poll(None)
    assert [k for k in keys(found) if k.startswith("issue")] == [f"issue:{new['id']}@2026-11-02T00:00:00Z"]
    assert [q["updated_on"] for path, q in rm.requests if path == "/issues.json"] == [">=2026-10-31T16:00:00Z"]
    assert f"project:{p['id']}@2026-10-01T00:00:00Z" in keys(found)  # every project is listed once


def test_paging_reads_every_row_once(rm: FakeRedmine, make: Any) -> None:
    p = rm.add_project("prj-p", "P")
    issues = [rm.add_issue(p["id"], f"issue {n}")["id"] for n in range(23)]
    found = make(rm, page_size=10).poll(None)
    got = [d.payload["issue"]["id"] for d in found.deliveries if d.kind == "redmine:issue"]
    assert got == issues  # sorted by updated_on, no duplicates
    offsets = [q["offset"] for path, q in rm.requests if path == "/issues.json"]
    assert offsets == ["0", "9", "18"]  # overlapping steps: a row moving up is not skipped


def test_api_errors(rm: FakeRedmine, make: Any) -> None:
    scene(rm)
    with pytest.raises(Fatal) as bad_key:
        make(rm, key="wrong-key").poll(None)
    assert "REDMINE_TEST_KEY" in str(bad_key.value) and "wrong-key" not in str(bad_key.value)
    assert bad_key.value.reason == "auth"
    poller = make(rm)
    rm.fail_next(429, retry_after="7")
    with pytest.raises(BackOff) as throttled:
        poller.poll(None)
    assert throttled.value.retry_after == 7
    rm.fail_next(503, path="/time_entries.json")  # after projects and issues were read
    with pytest.raises(Retryable):
        poller.poll(None)
    assert all(d.payload["first"] for d in poller.poll(None).deliveries)  # failed polls left no state behind
    with pytest.raises(Fatal) as refused:
        poller.client.get("/issues.json", {"updated_on": ">=yesterday"})
    assert "Updated is not a valid date" in str(refused.value) and refused.value.reason == "bad_query"


def test_fake_answers_as_documented(rm: FakeRedmine) -> None:
    p, i, *_ = scene(rm)
    rm.update_issue(i["id"], status_id=5)
    get = lambda path, **kw: httpx.get(rm.url + path, **kw)  # noqa: E731
    assert get("/issues.json").status_code == 401
    assert get("/issues.json").headers["www-authenticate"] == 'Basic realm="Redmine API"'
    assert get("/issues.json", params={"key": KEY}).json()["total_count"] == 0  # open issues only by default
    assert get("/issues.json", params={"status_id": "*"}, auth=(KEY, "x")).json()["total_count"] == 1
    body = get("/time_entries.json", params={"limit": 1, "offset": 1}, headers={"X-Redmine-API-Key": KEY}).json()
    assert (body["total_count"], body["offset"], body["limit"], len(body["time_entries"])) == (2, 1, 1, 1)
    bad = get("/issues.json", params={"updated_on": ">=soon"}, headers={"X-Redmine-API-Key": KEY})
    assert bad.status_code == 422 and bad.json() == {"errors": ["Updated is not a valid date"]}
    assert get(f"/projects/{p['identifier']}.json", params={"key": KEY}).json()["project"]["id"] == p["id"]
    assert get("/projects/404.json", params={"key": KEY}).status_code == 404
    assert get("/time_entries/999.json", params={"key": KEY}).status_code == 404
    assert date.fromisoformat(get("/time_entries/1.json", params={"key": KEY}).json()["time_entry"]["spent_on"])


def test_archived_project_completes_and_its_entries_are_not_deleted(rm: FakeRedmine, make: Any) -> None:
    p, i, t1, t2 = scene(rm)
    poller = make(rm)
    wm = poller.poll(None).watermark
    rm.archive_project(p["id"])  # its issues and time entries leave the lists, reading one alone is a 403
    found = poller.poll(wm, now=datetime(2026, 12, 1, tzinfo=UTC))
    assert [d.payload["project"]["status"] for d in found.deliveries if d.kind == "redmine:project"] == [9]
    assert [d for d in found.deliveries if d.kind == "redmine:time_entry_deleted"] == []
    assert (f"/time_entries/{t1['id']}.json", {}) in rm.requests


def test_converter_reads_an_unknown_project_once(rm: FakeRedmine) -> None:
    p, i, t1, _ = scene(rm)
    conv = RedmineConverter(RedmineClient(rm.url, KEY, "REDMINE_TEST_KEY", 5), "C01", ZoneInfo("Asia/Shanghai"))

    def row(kind: str, payload: dict[str, Any]) -> InboxRow:
        return InboxRow(1, "d", kind, payload, None, "poll", datetime.now(UTC))

    try:
        (task,) = conv.convert(row("redmine:issue", {"issue": i, "first": True, "project_identifier": None}))
        (sheet,) = conv.convert(row("redmine:time_entry", {"time_entry": t1, "first": False}))
        assert task.key == sheet.key == sheet.value["project"] == "prj-a"
        assert [path for path, _ in rm.requests].count(f"/projects/{p['id']}.json") == 1
        assert conv.convert(row("redmine:something_else", {})) == []
        with pytest.raises(Permanent) as unknown:
            conv.convert(row("redmine:time_entry", {"time_entry": {**t1, "project": {"id": 404}}}))
        assert unknown.value.reason == "unknown_project"
        with pytest.raises(Permanent) as broken:
            conv.convert(row("redmine:time_entry", {"time_entry": {**t1, "hours": "lots"}, "project_identifier": "x"}))
        assert broken.value.reason == "validation"
    finally:
        conv.close()
