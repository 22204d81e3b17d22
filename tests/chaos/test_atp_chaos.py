"""F5 reservations and F3 requisitions come out exact while the flows worker is SIGKILLed under load.

30 stock keys with 20 pieces each, 30 single-piece orders per key from all three order partitions (900
orders) and 150 material needs in two versions each, produced over some seconds while the worker is
killed at random moments (at least three times) and restarted; each run it starts also dies by its own
crash point after its 400th state write, before that batch's sends. Whatever was redelivered after a kill:

* every order has exactly one decision kind; per key exactly 20 orders are ACCEPTED and 10 REFUSED (a step
  applied twice would hold a piece twice and refuse one order too many; a lost step leaves an order
  without decision);
* the ``atp-stock`` state recovered from its changelog holds exactly the accepted orders;
* every need has its requisition in exactly its two versions with the expected quantities.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bizbus.streams.runtime.statecodec import loads_state
from confluent_kafka import Consumer, TopicPartition

from bizbus.kafka import read_until_quiet
from tests.integration.test_flow_stock_atp import (
    DECISION,
    LEVEL,
    MATERIAL,
    NEED,
    ORDER,
    REQUISITION,
    Env,
    level,
    line,
    make_env,
    mappings,
    material,
    need,
    order,
    pipeline,
)
from tests.integration.test_flows_faust import FlowsWorker, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]

KEYS, STOCK, PER_KEY, NEEDS, KILLS = 30, 20, 30, 150, 3


@pytest.fixture
def env(tmp_path: Path, registry: Any) -> Iterator[Env]:
    yield from make_env(tmp_path, registry)


def stock_state(env: Env, app_id: str) -> dict[str, dict[str, Any]]:
    topic = f"{app_id}-atp-stock-changelog"
    c = Consumer({"bootstrap.servers": env.bootstrap, "group.id": "atp-chaos-state", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(6)])
        out: dict[str, dict[str, Any]] = {}
        for m in read_until_quiet(c, 1.5, poll=0.2):
            if m.value() is not None:
                out[m.key().decode()] = loads_state(m.value())
        return out
    finally:
        c.close()


def test_reservations_and_requisitions_exact_under_sigkill(env: Env) -> None:
    rng = random.Random(int(time.time()))
    worker = FlowsWorker(env, pipeline(env, **mappings(env)))
    keys = [f"M{k:03d}" for k in range(KEYS)]
    for code in keys:
        env.send(MATERIAL, material(code), code)
        env.send(LEVEL, level(code, str(STOCK)), f"WH1/{code}")
    env.send(MATERIAL, material("STEEL", "t", "steel"), "STEEL")
    env.send(LEVEL, level("STEEL", "10", unit="t"), "WH1/STEEL")  # F3: 10 free
    orders = [(f"SO-{k:03d}-{n:03d}", keys[k]) for n in range(PER_KEY) for k in range(KEYS)]
    rng.shuffle(orders)
    produced = threading.Event()

    def produce() -> None:
        for i, (no, code) in enumerate(orders):
            env.send(ORDER, order(no, [line(1, code, "1")]), no, partition=i % 3)
            if i < NEEDS:
                env.send(NEED, need(f"N{i:03d}", "STEEL", str(11 + i % 5)), f"PRJ-{i % 7}")
            elif i < 2 * NEEDS:
                j = i - NEEDS
                env.send(NEED, need(f"N{j:03d}", "STEEL", str(20 + j % 5), version=2, op="UPDATED"), f"PRJ-{j % 7}")
            if i % 40 == 0:
                time.sleep(0.3)
        produced.set()

    crash = {"BIZBUS_CRASHPOINTS": "flows.after-state:@400", "BIZBUS_CRASHPOINT_LOG": str(env.tmp / "crashes.log")}
    worker.start(**crash)  # each run started here also dies by itself after its 400th state write, before the sends
    try:
        t = threading.Thread(target=produce)
        t.start()
        kills = 0
        while kills < KILLS or not produced.is_set():
            time.sleep(rng.uniform(6.0, 12.0))
            if worker.proc is not None and worker.proc.poll() is None:
                worker.kill()
                kills += 1
            worker.start(**crash)
        t.join(60)

        def decided() -> bool:
            return len({k for k in env.of(DECISION)}) >= len(orders)

        wait_for(decided, 240, "a decision for every order", worker)
        wait_for(lambda: sum(len({v["version"] for v in vs}) for vs in env.of(REQUISITION).values()) >= 2 * NEEDS,
                 120, "both versions of every requisition", worker)  # fmt: skip
        time.sleep(3)
    finally:
        worker.stop()

    decisions = env.of(DECISION)
    kinds = {no: {v["decision"] for v in vs} for no, vs in decisions.items()}
    assert all(len(k) == 1 for k in kinds.values()), {no: k for no, k in kinds.items() if len(k) > 1}
    accepted = Counter(no.split("-")[1] for no, k in kinds.items() if k == {"ACCEPTED"})
    refused = Counter(no.split("-")[1] for no, k in kinds.items() if k == {"REFUSED"})
    assert set(kinds) == {no for no, _ in orders}
    assert accepted == {f"{k:03d}": STOCK for k in range(KEYS)}, accepted
    assert refused == {f"{k:03d}": PER_KEY - STOCK for k in range(KEYS)}, refused
    app_id = "bizbus-flows-atp-it-atp-need"
    state = stock_state(env, app_id)
    for k, code in enumerate(keys):
        holds = state[f"WH1/{code}"]["holds"]
        assert set(holds) == {no for no, kk in kinds.items() if kk == {"ACCEPTED"} and no.split("-")[1] == f"{k:03d}"}
    reqs = env.of(REQUISITION)
    assert len(reqs) == NEEDS
    for j in range(NEEDS):
        versions = {v["version"]: v["lines"][0]["quantity"] for v in reqs[f"PR-N{j:03d}"]}
        assert {n: str(q) for n, q in versions.items()} == {1: f"{1 + j % 5}.0000", 2: f"{10 + j % 5}.0000"}
    crashes = (env.tmp / "crashes.log").read_text().count("\n") if (env.tmp / "crashes.log").exists() else 0
    print(f"\natp chaos: {len(orders)} orders, {NEEDS} needs x 2 versions, {kills} SIGKILLs, {crashes} crash "
          f"points, {worker.starts} worker starts: exact")
