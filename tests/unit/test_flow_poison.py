"""A flow fed a record its pure function cannot handle (any exception: a bug, or content nobody foresaw)
dead-letters that record, with its coordinates and the exception, and goes on with the next ones in the same
batch (issue 18, "poison is isolated"). The batch machinery is the one of test_flow_batching (no broker)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from tests.unit.test_flow_batching import events, output, setup


class Recorded:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def send(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def flush(self) -> None:
        """Nothing queued."""


def nested(depth: int) -> Any:
    return 0 if depth == 0 else [nested(depth - 1)]


@pytest.mark.parametrize("failure", [
    lambda: Decimal("1e999999") * Decimal("1e999999"),  # decimal.Overflow
    lambda: Decimal("x"),  # InvalidOperation
    lambda: {}["missing"],  # KeyError
    lambda: 1 + "1",  # TypeError
    lambda: nested(100_000),  # RecursionError
    lambda: 10.0**400,  # OverflowError
    lambda: "\ud800".encode(),  # UnicodeEncodeError
])  # fmt: skip
def test_an_exception_of_the_flow_dead_letters_the_record_and_the_next_ones_go_on(failure: Any) -> None:
    def decide(r: dict[str, Any]) -> Any:
        if r["code"] == "BAD":
            failure()
        return output(r)

    rt, spec, journal, state = setup(decide)
    dlq = rt.dlq = Recorded()  # type: ignore[assignment]
    asyncio.run(rt.handle_batch(spec, events(["A", "BAD", "C", "D"])))
    assert [(d["source_topic"], d["source_partition"], d["source_offset"]) for d in dlq.records] == [
        ("bizbus.test.in.v1", 0, 11)]  # fmt: skip
    dead = dlq.records[0]
    assert dead["error_class"] == "PERMANENT" and dead["error_type"] == "Permanent/unexpected"
    assert "flow test failed on this record" in dead["error_message"]
    assert bytes(dead["value"]).startswith(b'{"meta"') and b'"code": "BAD"' in bytes(dead["value"])
    assert sorted(s[1] for s in journal.of("send")) == [b"A", b"C", b"D"]  # each exactly once
    assert state.get("D") == {"seen": "D"} and journal.of("progress") == [("0", b"13")]

