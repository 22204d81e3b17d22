"""The one commit order (bizbus/checkpoint.py): outputs, dead letters, state, position; a step that fails stops
the later ones, so the position never moves past what is not durable. The outage record of a target that
is down, and the shared backoff (bizbus/backoff.py)."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from bizbus.backoff import Backoff
from bizbus.checkpoint import STEPS, Checkpoint, Outage, until_done
from bizbus.failures import NotConnected, RetryPolicy


def _recording(done: list[str], fail: str | None = None) -> Checkpoint:
    def step(name: str):
        def run() -> None:
            if name == fail:
                raise OSError(f"{name} failed")
            done.append(name)
        return run

    # given in another order than they run: the order is the checkpoint's, not the caller's
    return Checkpoint(position=step("position"), state=step("state"), dead_letters=step("dead_letters"),
                      outputs=step("outputs"))


def test_the_steps_run_outputs_then_dead_letters_then_state_then_position() -> None:
    done: list[str] = []
    _recording(done).commit()
    assert done == ["outputs", "dead_letters", "state", "position"] == list(STEPS)


@pytest.mark.parametrize("failing", STEPS)
def test_a_failing_step_stops_every_later_one(failing: str) -> None:
    done: list[str] = []
    with pytest.raises(OSError, match=failing):
        _recording(done, fail=failing).commit()
    assert done == list(STEPS[: STEPS.index(failing)])
    assert "position" not in done


def test_the_position_is_never_committed_before_the_outputs() -> None:
    seen: list[str] = []
    outputs_durable = False

    def outputs() -> None:
        nonlocal outputs_durable
        outputs_durable = True

    def position() -> None:
        seen.append("position after outputs" if outputs_durable else "position before outputs")

    Checkpoint(position=position, outputs=outputs).commit()
    assert seen == ["position after outputs"]


def test_missing_steps_are_skipped() -> None:
    done: list[str] = []
    Checkpoint(dead_letters=lambda: done.append("dl"), position=lambda: done.append("pos")).commit()
    assert done == ["dl", "pos"]


def test_acommit_awaits_each_step_before_the_next() -> None:
    done: list[str] = []

    async def slow_outputs() -> None:
        await asyncio.sleep(0.01)
        done.append("outputs")

    async def failing_state() -> None:
        raise OSError("state refused")

    asyncio.run(Checkpoint(outputs=slow_outputs, position=lambda: done.append("position")).acommit())
    assert done == ["outputs", "position"]
    done.clear()
    with pytest.raises(OSError):
        asyncio.run(Checkpoint(outputs=slow_outputs, state=failing_state,
                               position=lambda: done.append("position")).acommit())
    assert done == ["outputs"]


def test_commit_refuses_an_asynchronous_step_and_runs_nothing_after_it() -> None:
    done: list[str] = []

    async def outputs() -> None:
        done.append("outputs")

    with pytest.raises(TypeError, match="acommit"):
        Checkpoint(outputs=outputs, position=lambda: done.append("position")).commit()
    assert done == []


def test_an_outage_is_logged_once_each_way_and_sets_the_gauge(caplog: pytest.LogCaptureFixture) -> None:
    gauge: list[int] = []
    outage = Outage("sink pg-out", gauge.append)
    assert outage.problem() is None and not outage.active
    with caplog.at_level(logging.WARNING, logger="bizbus.checkpoint"):
        outage.begin(NotConnected("connection refused to postgresql://u:secret@db/x"), waiting=3)
        problem = outage.problem()
        outage.end()
    assert gauge == [1, 0] and outage.count == 1 and not outage.active
    assert problem is not None and problem.startswith("waiting for the target for 0 s (connection)")
    assert "secret" not in problem
    texts = [r.getMessage() for r in caplog.records]
    assert "sink pg-out: the target is unreachable" in texts[0] and "3 record(s) wait" in texts[0]
    assert "answers again" in texts[1] and len(texts) == 2
    outage.end()  # not down: nothing more logged
    assert len(caplog.records) == 2


def test_until_done_retries_with_the_backoff_delays() -> None:
    waits: list[float] = []
    calls = 0

    async def flush() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise OSError("broker away")
        return "ok"

    async def sleep(delay: float) -> None:
        waits.append(delay)

    assert asyncio.run(until_done(flush, "2 dead letter(s) not delivered", Backoff(0.5, 1.5), sleep)) == "ok"
    assert waits == [0.5, 1.0, 1.5]


def test_backoff_grows_to_the_cap_and_a_streak_starts_again_after_reset() -> None:
    b = Backoff(0.5, 30.0)
    assert [b.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.delay(10_000) == 30.0  # no overflow
    streak = b.streak()
    assert [streak.next() for _ in range(3)] == [0.5, 1, 2]
    streak.reset()
    assert streak.next() == 0.5
    with pytest.raises(ValueError):
        b.delay(0)


def test_backoff_jitter_stays_within_its_fraction_and_varies() -> None:
    rng = random.Random(3)
    b = Backoff(1.0, 8.0, jitter=0.5)
    seen = {b.delay(3, rng) for _ in range(50)}
    assert all(2.0 <= d <= 4.0 for d in seen) and len(seen) > 1


def test_retry_policy_delays_are_its_backoff_plus_the_retry_after_floor() -> None:
    policy = RetryPolicy(initial_delay=0.2, max_delay=1.0, multiplier=3.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [policy.backoff().delay(n) for n in (1, 2, 3)]
    assert [round(policy.delay(n), 6) for n in (1, 2, 3)] == [0.2, 0.6, 1.0]
