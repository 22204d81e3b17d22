"""Faust's consumer with a cheaper hand-over of each fetched message to the streams.

faust-streaming 0.15 hands every fetched message to the conductor with
``Service.wait_first(callback(message), suspend_flow.wait())``: four asyncio tasks (the delivery, the
suspend-flow wait, the service's stopped and crashed waits) and an ``asyncio.wait`` per message, so that a
delivery blocked on a full stream buffer can be abandoned when a rebalance suspends the flow. Measured with
py-spy on a one-worker F2 run of the processor benchmark (``python -m tests.bench --only processor``):
``wait_first`` and the waits it starts took ~9 % of the worker's CPU.

Almost every delivery finishes without waiting: the conductor puts the event in a stream buffer that has
room (``stream_buffer_size`` in app.py sizes them for that). :func:`deliver_first` therefore runs the
delivery coroutine up to its first suspension, right here; finished, it is done without a task. Only a
delivery that does wait (full buffer, flow suspended, the conductor's lock held) goes on through the
original ``wait_first`` with the part it has not run yet, so a rebalance still cancels it as before.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

WaitFirst = Callable[..., Awaitable[Any]]


@types.coroutine
def _rest_of(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Drive ``coro`` on from a suspension that yielded ``pending`` (what ``await`` would have done)."""
    value = pending
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - cancellation and errors go into the coroutine
            try:
                value = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as done:
                return done.value


async def _continue(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    return await _rest_of(coro, pending)


async def deliver_first(wait_first: WaitFirst, deliver: Coroutine[Any, Any, Any], suspended: Any,
                        make_result: Callable[[list[Any], list[Any], bool], Any]) -> Any:  # fmt: skip
    """What ``wait_first(deliver, suspended)`` returns, without its tasks when ``deliver`` does not wait.

    ``suspended``: the coroutine waiting for the flow to be suspended (closed unused on the fast path);
    ``make_result(winners, results, stopped)``: builds mode's ``WaitResults``."""
    try:
        pending = deliver.send(None)
    except StopIteration as done:
        suspended.close()
        return make_result([deliver], [done.value], False)
    except BaseException:
        suspended.close()
        raise
    rest = _continue(deliver, pending)
    result = await wait_first(rest, suspended)
    if rest in result.done:  # report the delivery, not its continuation, as the winner
        result = make_result([deliver if w is rest else w for w in result.done], result.results, result.stopped)
    return result


def consumer_class(base: type) -> type:
    """``base`` (the transport's Consumer) with :func:`deliver_first` on the message hand-over."""
    from mode.services import WaitResults

    class DirectDeliveryConsumer(base):  # type: ignore[valid-type,misc]
        async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
            if (len(coros) == 2 and timeout is None and isinstance(coros[0], types.CoroutineType)
                    and inspect.getcoroutinestate(coros[0]) == inspect.CORO_CREATED
                    and not self.suspend_flow.is_set() and not self.should_stop):  # fmt: skip
                return await deliver_first(super().wait_first, coros[0], coros[1], WaitResults)
            return await super().wait_first(*coros, timeout=timeout)

    return DirectDeliveryConsumer
