"""Issue 20 end to end: a 进销存 PostgreSQL database (private, wal_level=logical) → postgres-cdc → the flows F1,
F3, F5, F6, F7 → a real Tryton (purchase requests, the material cost move on the project's analytic account,
sales confirmed / cancelled), the write-back of F5's decisions into the 进销存 database, the payment-freeze
commands of F7 and the reporting tables; the pipeline is deploy/examples/jxc-to-tryton.yaml. The story and
the exact expected state are in tests/e2e/jxc_scenario.py.

The chaos variant plays the same story while the source worker, the flows worker and the sink worker are
each SIGKILLed at least twice (eight kills) at random moments (right after a change was committed, while it travels): the final
state must be exactly the same, every effect once. Run alone with ``pytest -m e2e tests/e2e/test_inventory_to_tryton.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import private_stack
from tests.e2e.jxc_scenario import JxcScenario
from tests.pg_private import private_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture
def scenario(tryton, tmp_path: Path, postgres) -> Iterator[JxcScenario]:  # noqa: F811 (fixtures)
    with private_postgres(logical=True) as pg, private_stack(tmp_path, {}) as stack:
        s = JxcScenario(stack, tryton, pg)
        s.prepare()
        s.write_pipeline()
        s.start()
        try:
            yield s
        finally:
            s.stop()


def test_a_jxc_change_reaches_tryton_the_writeback_and_the_reports_exactly(scenario: JxcScenario) -> None:
    scenario.run_story()
    scenario.wait_reporting()
    scenario.assert_final()


def test_the_same_state_when_every_worker_kind_is_killed_at_random_moments(scenario: JxcScenario) -> None:
    seed = int(time.time())
    print(f"chaos seed {seed}")
    scenario.run_story(chaos=random.Random(seed))
    scenario.wait_reporting()
    scenario.assert_final()
    kills = {k: w.kills for k, w in scenario.workers.items()}
    assert sum(kills.values()) == 8 and min(kills.values()) >= 2, kills
