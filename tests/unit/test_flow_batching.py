"""The flows' batch processing (streams/runtime/agents.py) without a broker: the order in which a batch becomes
durable, a record waiting for master data in the middle of a batch, a poison record in the middle, the
buffered state tables and the constant-size project cost roll-up (same answers as ``f2.roll_up``)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.labor_cost import logic as f2
from bizbus.streams.labor_cost.costs import ProjectCosts
from bizbus.streams.runtime.agents import AgentSpec, RawMessage, Runtime, batch_ends
from bizbus.streams.runtime.grace import GraceClock
from bizbus.streams.runtime.results import Missing, Output, Reject, Result, Verdict
from bizbus.streams.runtime.statecodec import dumps_state
from bizbus.streams.runtime.tables import StateTable

from bizbus import lineage
from bizbus.serde import PoisonRecord

TOPIC = "bizbus.test.in.v1"
OUT = "bizbus.test.out.v1"


class Event:  # weak-referencable like Faust's events
    def __init__(self, message: RawMessage) -> None:
        self.message = message


class Journal:
    """Everything the fakes saw, in order."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, Any]] = []

    def of(self, kind: str) -> list[Any]:
        return [v for k, v in self.ops if k == kind]


class FakeProducer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def send(self, topic: str, key: bytes, value: bytes, partition: Any, ts: Any, headers: Any) -> Any:
        self.journal.ops.append(("send", (topic, key, json.loads(value))))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class FakeApp:
    def __init__(self, journal: Journal) -> None:
        self.producer = FakeProducer(journal)


class FakeDlq:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def send(self, record: dict[str, Any]) -> None:
        self.journal.ops.append(("dead_letter", record["source_offset"]))

    def flush(self) -> None:
        self.journal.ops.append(("dlq_flush", None))


class FakeSerde:
    def decode(self, data: bytes) -> Any:
        if not data.startswith(b"{"):
            raise PoisonRecord("not the test's wire format")
        return json.loads(data)


class JournalTable(dict):  # a Faust table stand-in that journals its writes
    def __init__(self, journal: Journal, name: str) -> None:
        super().__init__()
        self.journal, self.name = journal, name

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.journal.ops.append((self.name, (key.decode(), value)))
        super().__setitem__(key, value)


def record(code: str) -> bytes:
    meta = lineage.meta(lineage.event_id("test", code), code, "test", datetime(2026, 1, 1, tzinfo=UTC))
    return json.dumps(
        {"meta": {**meta, "occurred_at": meta["occurred_at"].isoformat()}, "code": code}
    ).encode()


def setup(decide: Any) -> tuple[Runtime, AgentSpec, Journal, StateTable]:
    journal = Journal()
    rt = Runtime(FakeApp(journal), None, FakeSerde(), FakeDlq(journal), {})  # type: ignore[arg-type]
    rt.encoders[OUT] = lambda v: json.dumps(v, default=str).encode()
    state = StateTable(JournalTable(journal, "state"))
    rt.tables.append(state)
    progress = JournalTable(journal, "progress")

    def store(r: dict[str, Any], s: dict[str, Any]) -> None:
        state.set(r["code"], s)

    spec = AgentSpec("test", decide, store, GraceClock(30, lambda: 0.0), progress)
    return rt, spec, journal, state


def output(r: dict[str, Any]) -> Result:
    meta = lineage.meta(
        lineage.event_id("out", r["code"]), r["code"], "bizbus", datetime(2026, 1, 1, tzinfo=UTC)
    )
    return Result("posted", (Output(OUT, r["code"], {"meta": meta, "code": r["code"]}),), {"seen": r["code"]})


def events(codes: list[str], partition: int = 0, first: int = 10) -> list[Event]:
    return [Event(RawMessage(TOPIC, partition, first + i, c.encode(), record(c) if c != "POISON" else b"\x00junk", [], None))
            for i, c in enumerate(codes)]  # fmt: skip


def test_a_batch_becomes_durable_in_order_dead_letters_states_outputs_progress() -> None:
    rt, spec, journal, _ = setup(lambda r: Reject("bad", "refused") if r["code"] == "B" else output(r))
    asyncio.run(rt.handle_batch(spec, events(["A", "B", "C"])))
    kinds = [k for k, _ in journal.ops]
    assert kinds == ["dead_letter", "dlq_flush", "state", "state", "send", "send", "progress"]
    assert journal.of("dead_letter") == [11]
    assert [s[1] for s in journal.of("send")] == [b"A", b"C"]
    assert journal.of("progress") == [("0", b"12")]


def test_a_poison_record_in_the_middle_is_dead_lettered_and_the_others_sent_once() -> None:
    rt, spec, journal, state = setup(output)
    asyncio.run(rt.handle_batch(spec, events(["A", "POISON", "C", "D"])))
    assert journal.of("dead_letter") == [11]
    assert sorted(s[1] for s in journal.of("send")) == [b"A", b"C", b"D"]  # each exactly once
    assert kinds_before(journal, "send") >= {"dlq_flush", "state"}
    assert state.get("C") == {"seen": "C"} and journal.of("progress") == [("0", b"13")]


def kinds_before(journal: Journal, kind: str) -> set[str]:
    first = next(i for i, (k, _) in enumerate(journal.ops) if k == kind)
    return {k for k, _ in journal.ops[:first]}


def test_a_record_waiting_for_master_data_first_makes_the_records_before_it_durable() -> None:
    seen_when_waiting: list[list[tuple[str, Any]]] = []
    journal_ref: list[Journal] = []

    def decide(r: dict[str, Any]) -> Verdict:
        journal = journal_ref[0]
        if r["code"] == "B" and not seen_when_waiting:
            seen_when_waiting.append(list(journal.ops))  # B's first look: nothing durable yet
            return Missing("project:P", "project P is unknown")
        if r["code"] == "B" and len(seen_when_waiting) == 1:
            seen_when_waiting.append(list(journal.ops))  # after the first poll
        return output(r)

    rt, spec, journal, _ = setup(decide)
    journal_ref.append(journal)
    asyncio.run(rt.handle_batch(spec, events(["A", "B", "C"], first=0)))
    assert seen_when_waiting[0] == []
    # before B waits, A's state, output and progress are durable; B and C come in a second round
    assert [k for k, _ in seen_when_waiting[1]] == ["state", "send", "progress"]
    assert seen_when_waiting[1][2] == ("progress", ("0", b"0"))
    assert [s[1] for s in journal.of("send")] == [b"A", b"B", b"C"]
    assert journal.of("progress") == [("0", b"0"), ("0", b"2")]


def test_progress_moves_per_partition_and_never_back() -> None:
    rt, spec, journal, _ = setup(output)
    spec.progress[b"1"] = b"50"
    journal.ops.clear()
    batch = events(["A", "B"], partition=0, first=5) + events(
        ["C"], partition=1, first=40
    )  # 40: a redelivery
    asyncio.run(rt.handle_batch(spec, batch))
    assert dict(journal.of("progress")) == {"0": b"6"}
    assert spec.progress[b"1"] == b"50"
    assert batch_ends(batch) == {0: 6, 1: 40}


def test_state_table_buffers_writes_until_flush_and_writes_each_key_once() -> None:
    journal = Journal()
    table = StateTable(JournalTable(journal, "t"))
    table.set("k", {"n": 1})
    table.set("k", {"n": Decimal("2.50")})
    assert table.get("k") == {"n": Decimal("2.50")} and journal.ops == []
    assert table.flush() == 1
    assert journal.ops == [("t", ("k", dumps_state({"n": Decimal("2.50")})))]
    assert table.get("k") == {"n": Decimal("2.50")} and table.flush() == 0


def voucher(amount: str) -> dict[str, Any]:
    return {"lines": [{"debit": Decimal(amount)}, {"debit": Decimal("0.00")}]}


def test_project_costs_answer_like_roll_up_over_a_story() -> None:
    project = ProjectState("P1", 1, "CREATED", "P", "C", budget=Decimal("1000"), currency="CNY")
    story = [("W1", voucher("600.00")), ("W1", voucher("600.00")), ("W2", voucher("500.00")),
             ("W3", voucher("0.01")), ("W4", voucher("50.00")), ("W4", None), ("W3", None),
             ("W5", voucher("1.00")), ("W1", voucher("100.00"))]  # fmt: skip
    costs = ProjectCosts(StateTable({}))
    reference: dict[str, Any] | None = None
    for wid, v in story:
        reference, want = f2.roll_up(reference, project, "P1", wid, v, 10)
        got = costs.update("P1", project, wid, v, 10)
        assert (got is None) == (want is None), (wid, v)
        head = costs.table.get("P1")
        assert head is not None and head["over"] == reference["over"]
        assert Decimal(head["total"]) == sum(Decimal(a) for a in reference["worklogs"].values())
    assert costs.table.get("P1\x1fW4") == {"amount": None}


def test_project_costs_split_a_state_of_the_old_form() -> None:
    table = StateTable({})
    table.set("P1", {"worklogs": {"W1": "600.00", "W2": "500.00"}, "over": False})
    costs = ProjectCosts(table)
    alert = costs.update("P1", ProjectState("P1", 1, "CREATED", "P", "C", budget=Decimal("1000")), "W3", voucher("0.01"), 10)
    assert alert is not None and alert.booked == Decimal("1100.01")
    assert table.get("P1") == {"total": "1100.01", "over": True}
    assert table.get("P1\x1fW1") == {"amount": "600.00"}
    assert costs.update("P1", ProjectState("P1", 1, "CREATED", "P", "C", budget=Decimal("1000")), "W1", None, 10) is None
    assert table.get("P1") == {"total": "500.01", "over": False}


def test_a_state_records_its_outputs_as_sent_and_a_reemission_sends_those_bytes() -> None:
    from bizbus.streams.runtime.results import version_gate, with_outputs
    from bizbus.streams.runtime.statecodec import loads_state

    def decide(r: dict[str, Any]) -> Verdict:
        gate = version_gate(state.get(r["code"]), 1)
        if gate is not None:
            return gate
        res = output(r)
        return Result(res.outcome, res.outputs, with_outputs({"version": 1}, res.outputs))

    rt, spec, journal, state = setup(decide)
    first = events(["A"])
    asyncio.run(rt.handle_batch(spec, first))
    raw = journal.of("state")[0][1]
    kept = loads_state(raw)["outputs"]
    sent = journal.of("send")
    assert len(kept) == 1 and kept[0]["topic"] == OUT and kept[0]["key"] == "A"
    assert "value" not in kept[0] and json.loads(kept[0]["wire"])["code"] == "A"  # the bytes, not the record
    assert dict(kept[0]["headers"])["event_id"] == lineage.event_id("out", "A").encode()
    # the same record again (a crash before the offset commit): the recorded bytes go out, unchanged
    state._decoded.clear()
    rt.encoders[OUT] = lambda v: b"{\"re-encoded\": true}"
    asyncio.run(rt.handle_batch(spec, events(["A"], first=11)))
    again = journal.of("send")[len(sent):]
    assert again == sent


def test_a_state_whose_outputs_are_not_the_verdicts_is_stored_as_is() -> None:
    from bizbus.streams.runtime.agents import recorded_as_sent
    from bizbus.streams.runtime.delivery import OutRecord

    out = Output(OUT, "A", {"code": "A"})
    state = {"version": 2, "outputs": [{"topic": OUT, "key": "B", "value": {}}]}
    assert recorded_as_sent(state, (out,), [OutRecord(OUT, b"A", b"x", [])]) is state
    assert recorded_as_sent({"version": 2}, (out,), [OutRecord(OUT, b"A", b"x", [])]) == {"version": 2}


def test_project_costs_from_the_worklogs_previous_state_answer_like_roll_up_and_keep_no_entry() -> None:
    project = ProjectState("P1", 1, "CREATED", "P", "C", budget=Decimal("1000"), currency="CNY")
    story = [("W1", voucher("600.00")), ("W2", voucher("500.00")), ("W3", voucher("0.01")),
             ("W4", voucher("50.00")), ("W4", None), ("W3", None), ("W5", voucher("1.00")),
             ("W1", voucher("100.00")), ("W4", voucher("20.00"))]  # fmt: skip
    costs = ProjectCosts(StateTable({}))
    worklogs: dict[str, dict[str, Any]] = {"W5": {"project": "P2", "voucher": voucher("7.00")}}  # moved from P2
    reference: dict[str, Any] | None = None
    alerts = []
    for wid, v in story:
        reference, want = f2.roll_up(reference, project, "P1", wid, v, 10)
        got = costs.update("P1", project, wid, v, 10, worklogs.get(wid))
        worklogs[wid] = {"project": "P1", "voucher": v}
        assert (got is None) == (want is None), (wid, v)
        alerts.append(got is not None)
        head = costs.table.get("P1")
        assert head is not None and head["over"] == reference["over"]
        assert Decimal(head["total"]) == sum(Decimal(a) for a in reference["worklogs"].values())
    assert alerts.count(True) == 2  # crossed, went back under (W3 deleted), crossed again
    assert costs.table.get("P1\x1fW1") is None and costs.table.flush() == 1  # the project's head only
