"""Flows F1, F2, F4, F8 end to end: signed Jira webhooks and encrypted DingTalk callbacks in at bizbus's HTTP
endpoints, the connectors, the Faust flows and the Tryton sink as separate processes on a private broker,
and the exact books read back from a real Tryton server. Run alone with ``pytest -m e2e``.

The chaos variant plays the same story while the Tryton sink and the flows worker are each SIGKILLed once
mid-run: the final state in Tryton must be the same, nothing written twice."""

from __future__ import annotations

import pytest

from bizbus.devstack.tryton_demo import show_project
from tests.chaos.harness import private_stack
from tests.e2e.erp_scenario import Scenario
from tests.fakes.dingtalk_api import DingTalkApi
from tests.fakes.jira_api import JiraCloudFake

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture
def scenario(tryton, tmp_path, postgres):  # noqa: F811 (fixture)
    with private_stack(tmp_path, {}) as stack, JiraCloudFake() as jira, DingTalkApi() as dingtalk:
        s = Scenario(stack, tryton, jira, dingtalk)
        s.bootstrap()
        s.start(s.pipeline())
        try:
            yield s
        finally:
            s.stop()


def test_projects_timesheets_and_approvals_reach_tryton_exactly(scenario: Scenario) -> None:
    story = scenario.run_story()
    scenario.wait_books(story)
    scenario.complete_project(story)
    scenario.wait_final(story)
    scenario.assert_books(story)
    # what `bizbus tryton show KEY` prints for it: the closed account and its six posted moves
    shown = show_project(scenario.tryton.rpc, scenario.key)
    assert shown[0].endswith("[closed]") and f"CC-{scenario.key}" in shown[0]
    assert len(shown) == 7 and all("[posted]" in line for line in shown[1:])


def test_the_same_books_when_the_sink_and_the_flows_are_killed_mid_run(scenario: Scenario) -> None:
    kills = {"worklogs": "flows", "edits": "erp"}

    def between(step: str) -> None:
        victim = kills.get(step)
        if victim:
            w = scenario.workers[victim]
            w.kill()
            w.start()

    story = scenario.run_story(between)
    scenario.wait_books(story)
    scenario.complete_project(story)
    scenario.wait_final(story)
    scenario.assert_books(story)
    assert scenario.workers["flows"].kills == 1 and scenario.workers["erp"].kills == 1
