"""For unit tests of flows that re-key their inputs onto a step topic (F6, F7): apply what a router sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bizbus.schemas import catalog
from bizbus.streams.runtime.results import Result


def route_steps(v: Any, topic: str, schema: str, key_field: str, steps: list[dict[str, Any]],
                apply: Callable[[dict[str, Any]], Any]) -> Any:  # fmt: skip
    """One verdict for a router's verdict ``v``: ``v`` itself when it routed nothing (Missing, Reject, stale,
    no outputs); else each step (checked against ``schema``, keyed by its ``key_field``, appended to
    ``steps``) applied in order, their outputs joined under the last step's outcome, a step's non-Result as is."""
    if not isinstance(v, Result) or not v.outputs:
        return v
    outputs: list[Any] = []
    outcome = "ignored"
    for o in v.outputs:
        assert o.topic == topic and o.key == o.value[key_field]
        catalog.validate(schema, o.value)
        steps.append(o.value)
        s = apply(o.value)
        if not isinstance(s, Result):
            return s
        outputs.extend(s.outputs)
        outcome = s.outcome
    return Result(outcome, tuple(outputs))
