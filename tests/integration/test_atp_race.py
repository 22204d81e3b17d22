"""Two orders racing for the last units: exactly one wins, whatever the partitioning.

Two ``bizbus flows run`` workers of the stock-atp flow share the order partitions (3) and the step
partitions (6). 40 pairs of orders, the two of a pair produced at the same moment into different order
partitions: 20 pairs of single-line orders for 3 of the last 5 pieces, 20 pairs of two-line orders that
each could be served alone but not together (X 5 pieces, Y 4: A wants 3 X + 2 Y, B wants 2 X + 3 Y; A and
B name their lines in opposite order). Every pair: one ACCEPTED, one REFUSED, and the recovered stock
state holds the winner's pieces only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chaos.test_atp_chaos import stock_state
from tests.integration.test_flow_stock_atp import (
    DECISION,
    LEVEL,
    ORDER,
    Env,
    level,
    line,
    make_env,
    order,
)
from tests.integration.test_flows_faust import FlowsWorker, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

PAIRS = 20


@pytest.fixture
def env(tmp_path: Path, registry: Any) -> Iterator[Env]:
    yield from make_env(tmp_path, registry)


def test_two_orders_for_the_last_units_exactly_one_wins_across_partitions_and_workers(env: Env) -> None:
    mapping = env.tmp / "f5.yaml"
    mapping.write_text(yaml.safe_dump({"units": ["pcs"]}))
    path = env.tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "name": "race", "flows": [
        {"name": "atp", "type": "stock-atp", "config": {"master_data_grace_seconds": 30, "stall_restart_seconds": 20,
                                                       "mapping": str(mapping)}}]}))  # fmt: skip
    (env.tmp / "w2").mkdir()
    workers = [FlowsWorker(env, path), FlowsWorker(dataclasses.replace(env, tmp=env.tmp / "w2"), path)]
    for i, w in enumerate(workers):
        w.start(BIZBUS_DATA_DIR=str(env.tmp / f"data-{i}"))
    pairs: list[tuple[str, str]] = []
    try:
        for n in range(PAIRS):
            env.send(LEVEL, level(f"S{n:02d}", "5"), f"WH1/S{n:02d}")
            env.send(LEVEL, level(f"X{n:02d}", "5"), f"WH1/X{n:02d}")
            env.send(LEVEL, level(f"Y{n:02d}", "4"), f"WH1/Y{n:02d}")
        for n in range(PAIRS):
            a, b = f"SO-S{n:02d}-A", f"SO-S{n:02d}-B"
            env.send(ORDER, order(a, [line(1, f"S{n:02d}", "3")]), a, partition=n % 3)
            env.send(ORDER, order(b, [line(1, f"S{n:02d}", "3")]), b, partition=(n + 1) % 3)
            pairs.append((a, b))
            a, b = f"SO-XY{n:02d}-A", f"SO-XY{n:02d}-B"
            env.send(ORDER, order(a, [line(1, f"X{n:02d}", "3"), line(2, f"Y{n:02d}", "2")]), a, partition=(n + 2) % 3)
            env.send(ORDER, order(b, [line(1, f"Y{n:02d}", "3"), line(2, f"X{n:02d}", "2")]), b, partition=n % 3)
            pairs.append((a, b))
        wait_for(lambda: len(env.of(DECISION)) >= 2 * len(pairs), 180, "a decision for every order", workers[0])
    finally:
        for w in workers:
            w.stop()
    kinds = {no: {v["decision"] for v in vs} for no, vs in env.of(DECISION).items()}
    for a, b in pairs:
        assert sorted([*kinds[a], *kinds[b]]) == ["ACCEPTED", "REFUSED"], (a, kinds[a], b, kinds[b])
    state = stock_state(env, "bizbus-flows-race-atp")
    for n in range(PAIRS):
        for key, pair in ((f"S{n:02d}", pairs[2 * n]), (f"X{n:02d}", pairs[2 * n + 1]), (f"Y{n:02d}", pairs[2 * n + 1])):
            winner = next(o for o in pair if kinds[o] == {"ACCEPTED"})
            assert set(state[f"WH1/{key}"]["holds"]) == {winner}, key
    both_ready = all("[^Worker]: Ready" in (w.env.tmp / "worker.1.log").read_text(errors="replace") for w in workers)
    assert both_ready, "the race must run on two workers"
