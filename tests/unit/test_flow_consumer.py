"""The consumer's message hand-over (streams/runtime/consumer.py): a delivery that does not wait finishes without
wait_first's tasks; one that waits goes on through wait_first, which may still abandon it when the flow is
suspended; errors come out as before."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bizbus.streams.runtime.consumer import consumer_class, deliver_first
from mode.services import WaitResults


class Recorder:
    """Stands in for ``Service.wait_first``: records its calls and behaves like it (first to finish)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, *coros: Any) -> WaitResults:
        self.calls += 1
        futs = {c: asyncio.ensure_future(c) for c in coros}
        done, pending = await asyncio.wait(futs.values(), return_when=asyncio.FIRST_COMPLETED)
        for f in pending:
            f.cancel()
        winners = [c for c, f in futs.items() if f in done]
        return WaitResults(winners, [futs[c].result() for c in winners], False)


def test_a_delivery_that_does_not_wait_needs_no_wait_first() -> None:
    seen: list[str] = []
    flow = asyncio.Event()

    async def deliver(msg: str) -> str:
        seen.append(msg)
        return msg.upper()

    async def main() -> WaitResults:
        wf = Recorder()
        suspended = flow.wait()
        result = await deliver_first(wf, (d := deliver("m1")), suspended, WaitResults)
        assert wf.calls == 0 and suspended.cr_frame is None  # the unused wait was closed, never scheduled
        assert result.done == [d]
        return result

    assert asyncio.run(main()).results == ["M1"] and seen == ["m1"]


def test_a_delivery_that_waits_goes_on_through_wait_first_and_finishes() -> None:
    async def main() -> tuple[WaitResults, Recorder, list[str]]:
        room = asyncio.Event()
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("before")
            await room.wait()  # a full stream buffer
            await asyncio.sleep(0)  # a bare yield on the way
            steps.append("after")
            return "put"

        wf = Recorder()
        asyncio.get_running_loop().call_later(0.01, room.set)
        never = asyncio.Event()
        result = await deliver_first(wf, (d := deliver()), never.wait(), WaitResults)
        assert result.done == [d]
        return result, wf, steps

    result, wf, steps = asyncio.run(main())
    assert wf.calls == 1 and result.results == ["put"] and steps == ["before", "after"]


def test_a_waiting_delivery_is_abandoned_when_the_flow_is_suspended() -> None:
    async def main() -> tuple[WaitResults, list[str]]:
        steps: list[str] = []

        async def deliver() -> None:
            try:
                await asyncio.Event().wait()  # never gets room
            except asyncio.CancelledError:
                steps.append("cancelled")
                raise

        suspend = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, suspend.set)
        result = await deliver_first(Recorder(), deliver(), suspend.wait(), WaitResults)
        await asyncio.sleep(0)  # let the cancellation reach the delivery
        return result, steps

    result, steps = asyncio.run(main())
    assert result.results == [True] and steps == ["cancelled"]  # the suspension won; the delivery was cancelled


@pytest.mark.parametrize("waits", [False, True])
def test_an_error_in_the_delivery_comes_out(waits: bool) -> None:
    async def deliver() -> None:
        if waits:
            await asyncio.sleep(0.001)
        raise ValueError("bad message")

    async def main() -> None:
        await deliver_first(Recorder(), deliver(), asyncio.Event().wait(), WaitResults)

    with pytest.raises(ValueError, match="bad message"):
        asyncio.run(main())


def test_the_consumer_subclass_uses_the_fast_path_only_for_the_message_hand_over() -> None:
    calls: list[str] = []

    class Base:
        should_stop = False

        def __init__(self) -> None:
            self.suspend_flow = asyncio.Event()

        async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
            calls.append("wait_first")
            return await Recorder()(*coros)

    async def quick() -> int:
        return 1

    async def main() -> None:
        c = consumer_class(Base)()
        assert (await c.wait_first(quick(), c.suspend_flow.wait())).results == [1]
        assert calls == []  # the hand-over did not need it
        c.suspend_flow.set()  # a suspended flow takes the original path
        await c.wait_first(quick(), c.suspend_flow.wait())
        assert calls == ["wait_first"]

    asyncio.run(main())
