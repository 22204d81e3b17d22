"""Generated SIGNED webhooks against each webhook source (jira, dingtalk, feishu), behind bizbus's real HTTP
server with a PostgreSQL inbox and the embedded broker (issue 18: poison is isolated).

Each example takes a documented event of the vendor and puts odd JSON at one to three places of it, as
text (so also what Python's json would not write): huge and out-of-range numbers (``1e400``, 5,000 digits,
``NaN``), NaN-ish and negative strings, strings larger than the broker's message size, nesting thousands
deep, wrong types, unicode with NUL, unpaired surrogates and escapes. Then, per source:

* every delivery is answered 200 (stored, or knowingly not stored) or refused with a 4xx, never a 5xx;
  each 400 has a dead letter of its body and counts as ``malformed``;
* every stored row becomes exactly one event, a dead letter (with its inbox coordinates) or a deliberate
  skip, and the source gets past all of them (no row blocks it);
* the connector's tasks still run, and a good webhook sent afterwards arrives on its topic.

Examples are derandomized (CI runs the same ones) and bounded (``EXAMPLES`` per source).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from bizbus.connectors.runtime.inbox import inbox_table
from bizbus.connectors.sources.dingtalk.mapping import TOPIC as APPROVALS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.contract import test_dingtalk as dt
from tests.contract import test_feishu as fs
from tests.contract.test_jira import SECRET as JIRA_SECRET
from tests.contract.test_jira import TIMESHEETS, config, jira, unique  # noqa: F401 - the jira fixture
from tests.fakes.dingtalk_api import DingTalkApi, DingTalkCallbackSender
from tests.fakes.feishu_api import FeishuApi, feishu_encrypt, feishu_signature
from tests.fakes.jira_api import JiraCloudFake, JiraWebhookSender
from tests.webhook_harness import Rig, webhook_rig

EXAMPLES = 50
MAX_ATTEMPTS = 2  # a row the converter fails on unexpectedly is dead-lettered after this many attempts

# -- odd JSON, as text -------------------------------------------------------------------------------

BIG = 1_100_000  # characters: more than the broker's default message size (1,000,000 bytes)
FRAGMENTS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(json.dumps),  # NaN and Infinity as Python writes them
    st.sampled_from(["1e400", "-1e400", "1" * 5000, "-0", "0.1e-400", "9223372036854775808", "-3600", "1e18"]),
    st.sampled_from(['"NaN"', '"Infinity"', '"-Infinity"', '"-3600"', '"1e400"', '""', '" "', '"0x1F"', '"١٢"',
                     '"2026-13-45T99:99:99.000+9999"', '"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"\\udfff\\ud800x"',
                     '"\\\\u0000"', '"\\u202e\\ufeff"', '"😀\\n\\t\\""']),  # fmt: skip
    st.text(max_size=30).map(json.dumps),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3).map(json.dumps),
    st.sampled_from(["[]", "{}", "null", "true", "false", '[1, "a", null, {}]', '{"a": {"b": [{}]}}']),
    st.integers(2, 5000).map(lambda d: "[" * d + "]" * d),
    st.integers(2, 600).map(lambda d: '{"a": ' * d + "1" + "}" * d),
    st.sampled_from([json.dumps("x" * BIG), json.dumps("字" * (BIG // 2), ensure_ascii=False)]),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value (not the root), containers and leaves."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield (*prefix, k)
        yield from paths(v, (*prefix, k))


def mutated(base: dict[str, Any], places: list[tuple[tuple[Any, ...], str]], keep: tuple[str, ...] = ()) -> str:
    """``base`` as JSON text with the given fragments at the given places (``keep``: keys left alone)."""
    doc = json.loads(json.dumps(base))
    marks = {}
    for n, (path, fragment) in enumerate(places):
        if any(k in keep for k in path if isinstance(k, str)):
            continue
        node = doc
        try:
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = mark = f"__FUZZ{n}__"
        except (KeyError, IndexError, TypeError):  # an earlier place replaced a container of this one
            continue
        marks[json.dumps(mark)] = fragment
    text = json.dumps(doc, ensure_ascii=False)
    for mark, fragment in marks.items():
        text = text.replace(mark, fragment)
    return text


def cases(base: dict[str, Any]) -> st.SearchStrategy[list[tuple[tuple[Any, ...], str]]]:
    return st.lists(st.tuples(st.sampled_from(list(paths(base))), FRAGMENTS), min_size=1, max_size=3)


# -- the run and its checks ---------------------------------------------------------------------------


@dataclass
class Run:
    rig: Rig
    postgres: Any
    answers: list[tuple[int, str]] = field(default_factory=list)  # (status, what was sent, shortened)

    def answered(self, response: httpx.Response, body: str | bytes) -> None:
        self.answers.append((response.status_code, f"{str(body)[:300]} -> {response.text[:300]}"))

    def check(self, good: Callable[[], httpx.Response], topic: str, is_good: Callable[[dict[str, Any]], bool]) -> None:
        rig, task = self.rig, self.rig.component.runtimes[0].task
        wrong = [(s, what) for s, what in self.answers if not (s == 200 or 400 <= s < 500)]
        assert not wrong, f"answers other than 200 or 4xx: {wrong[:5]}"
        malformed = sum(1 for s, _ in self.answers if s == 400)
        assert good().status_code == 200
        assert rig.events(topic, is_good, expect=1, timeout=60), "a good webhook after the fuzzing did not arrive"

        rows = [r[0] for r in self.postgres.execute(
            f'SELECT id FROM bizbus_state."{inbox_table(rig.name)}" ORDER BY id').fetchall()]  # fmt: skip
        deadline = time.monotonic() + 120
        while not (task.position and int(task.position["id"]) >= rows[-1]):
            assert time.monotonic() < deadline, f"the source is stuck at {task.position}: {task.problem()}"
            time.sleep(0.1)
        dead = rig.dead_letters(expect=malformed)
        from_inbox = [d["source_offset"] for d in dead if d["source_topic"] == f"inbox:{rig.name}"]
        bodies = [d for d in dead if d["source_topic"] == f"webhook:{rig.name}"]
        assert len(set(from_inbox)) == len(from_inbox) and set(from_inbox) <= set(rows)
        assert {d["connector"] for d in dead} == ({rig.name} if dead else set())
        # a 400 is a dead letter of its body; a stored row is one event, one dead letter or one deliberate skip
        assert len(bodies) == malformed == rig.metric("bizbus_webhook_requests_total", outcome="malformed")
        out, skipped = rig.metric("bizbus_records_out_total"), rig.metric("bizbus_records_skipped_total")
        assert len(from_inbox) + out + skipped == len(rows), (len(from_inbox), out, skipped, len(rows))
        assert [rt.state for rt in rig.component.runtimes] == ["running"] * len(rig.component.runtimes)
        assert task.problem() is None


def fuzz(base: dict[str, Any], send: Callable[[list[tuple[tuple[Any, ...], str]]], None]) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(cases(base))
    def deliver(places: list[tuple[tuple[Any, ...], str]]) -> None:
        send(places)

    deliver()


# -- jira ----------------------------------------------------------------------------------------------


@pytest.fixture
def jira_run(jira: JiraCloudFake, embedded_broker: Any, registry: Any, postgres: Any) -> Iterator[Run]:  # noqa: F811
    with webhook_rig(embedded_broker, registry, "jira", config(jira, max_attempts=MAX_ATTEMPTS)) as rig:
        yield Run(rig, postgres)
    for table in (f"jira_issues_{rig.name.replace('-', '_')}", f"jira_worklogs_{rig.name.replace('-', '_')}"):
        postgres.execute(f'DROP TABLE IF EXISTS bizbus_state."{table}"')


def test_generated_signed_jira_webhooks(jira: JiraCloudFake, jira_run: Run) -> None:  # noqa: F811
    key = unique()
    jira.add_project(key, "Fuzz")
    issue = jira.add_issue(key, "fuzzed")
    worklog = jira.add_worklog(issue["id"], "acc-fuzz", 3600, "2026-11-02T09:00:00.000+0800", comment="c")
    sender = JiraWebhookSender(jira_run.rig.url, JIRA_SECRET)
    ids = itertools.count(800_000)
    templates = [
        sender.build("worklog_created", worklog=worklog),
        sender.build("jira:issue_updated", issue=jira.issue_json(issue["id"])),
        sender.build("project_created", project=jira.projects[key]),
    ]
    bases = [json.loads(t.body) for t in templates]
    client = httpx.Client(timeout=30)

    def send(places: list[tuple[tuple[Any, ...], str]]) -> None:
        n = next(ids)
        base = json.loads(json.dumps(bases[n % len(bases)]))
        base["timestamp"] = 1_790_000_000_000 + n  # a new entity version per example
        if "worklog" in base:
            base["worklog"] = {**base["worklog"], "id": str(n), "updated": "2026-11-02T09:00:00.000+0800"}
        body = mutated(base, places, keep=("issueId",)).encode("utf-8", "surrogatepass")
        headers = {"X-Hub-Signature": sender.signature(body), "X-Atlassian-Webhook-Identifier": str(uuid.uuid4()),
                   "Content-Type": "application/json"}  # fmt: skip
        jira_run.answered(client.post(jira_run.rig.url, content=body, headers=headers), body)

    fuzz(bases[0], send)
    good = jira.add_worklog(issue["id"], "acc-after", 5400, "2026-11-03T09:00:00.000+0800")
    jira_run.check(lambda: sender.worklog_created(good), TIMESHEETS,
                   lambda v: v["project"] == key and v["employee"] == "acc-after")  # fmt: skip
    client.close()


# -- dingtalk ----------------------------------------------------------------------------------------


def test_generated_signed_dingtalk_callbacks(embedded_broker: Any, registry: Any, postgres: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with DingTalkApi(app_key=dt.APP_KEY, app_secret=dt.APP_SECRET) as fake:
        conf = dt.config(fake, monkeypatch, max_attempts=MAX_ATTEMPTS)
        with webhook_rig(embedded_broker, registry, "dingtalk", conf) as rig:
            run = Run(rig, postgres)
            sender = DingTalkCallbackSender(rig.url, dt.TOKEN, dt.AES_KEY, dt.CORP_ID, api=fake)
            project = f"P-{uuid.uuid4().hex[:6]}"
            pid = f"PI-{uuid.uuid4().hex[:10]}"
            fake.add_instance(pid, process_code="PROC-PURCHASE", originator="E0042",
                              form={"金额": "455.00", "项目编号": project, "申请单号": "PR-7"})  # fmt: skip
            base = sender.instance_event(pid, "PROC-PURCHASE", "finish", "agree")

            def send(places: list[tuple[tuple[Any, ...], str]]) -> None:
                event = {**base, "eventId": uuid.uuid4().hex, "finishTime": sender.now_ms()}
                text = mutated(event, places, keep=("processInstanceId",))
                query, body = sender.request_for(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
                run.answered(sender.post(query, body), text)

            fuzz(base, send)
            good = f"PI-{uuid.uuid4().hex[:10]}"
            fake.add_instance(good, process_code="PROC-PURCHASE", originator="E0042",
                              form={"金额": "1.00", "项目编号": project, "申请单号": "PR-8"})  # fmt: skip
            run.check(lambda: sender.instance_finished(good, "PROC-PURCHASE", "agree"), APPROVALS,
                      lambda v: v["instance_id"] == good)  # fmt: skip


# -- feishu --------------------------------------------------------------------------------------------


def test_generated_signed_feishu_events(embedded_broker: Any, registry: Any, postgres: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with FeishuApi() as api:
        monkeypatch.setenv("BIZBUS_TEST_FEISHU_SECRET", api.app_secret)
        monkeypatch.setenv("BIZBUS_TEST_FEISHU_TOKEN", fs.TOKEN)
        monkeypatch.setenv("BIZBUS_TEST_FEISHU_KEY", fs.KEY)
        code = fs.approval(api)
        inst = fs.instance(api, code, status="APPROVED", end_time=1700000000000)
        with webhook_rig(embedded_broker, registry, "feishu", fs.config(api, code, max_attempts=MAX_ATTEMPTS)) as rig:
            run = Run(rig, postgres)
            header = {"event_id": "", "token": fs.TOKEN, "create_time": "1700000000000",
                      "event_type": "approval_instance", "tenant_key": "736588c9260f175d", "app_id": api.app_id}  # fmt: skip
            event = {"app_id": api.app_id, "tenant_key": "736588c9260f175d", "type": "approval_instance",
                     "approval_code": code, "instance_code": inst, "status": "APPROVED", "operate_time": "0",
                     "instance_operate_time": "0", "uuid": ""}  # fmt: skip
            base = {"schema": "2.0", "header": header, "event": event}
            times = itertools.count(1_700_000_000_001)

            def send(places: list[tuple[tuple[Any, ...], str]]) -> None:
                n = str(next(times))
                message = {**base, "header": {**header, "event_id": uuid.uuid4().hex},
                           "event": {**event, "operate_time": n, "instance_operate_time": n}}  # fmt: skip
                text = mutated(message, places, keep=("instance_code", "token"))
                body = json.dumps({"encrypt": feishu_encrypt(fs.KEY, text.encode("utf-8", "surrogatepass"))}).encode()
                ts, nonce = str(int(time.time())), uuid.uuid4().hex[:8]
                headers = {"Content-Type": "application/json", "X-Lark-Request-Timestamp": ts,
                           "X-Lark-Request-Nonce": nonce, "X-Lark-Signature": feishu_signature(ts, nonce, fs.KEY, body)}  # fmt: skip
                run.answered(httpx.post(rig.url, content=body, headers=headers, timeout=30), text)

            fuzz(base, send)
            good = fs.instance(api, code, status="APPROVED", end_time=1700000000000)
            run.check(lambda: fs.FeishuEventSender(rig.url, fs.TOKEN, fs.KEY).instance_status(good, code, "APPROVED"),
                      fs.TOPIC, fs.for_instance(good))  # fmt: skip
