"""The typed project state (``projects`` table): states stored before the model existed load, and the
bytes F1 writes are the same as before (a running deployment's table and changelog stay valid)."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from bizbus.streams.cost_centers.config import CostCenterMapping
from bizbus.streams.cost_centers.logic import apply_project
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.runtime.statecodec import dumps_state, loads_state
from bizbus.streams.runtime.tables import StateTable

from bizbus import lineage

M = CostCenterMapping()
CREATED = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
COMPLETED = datetime(2026, 6, 30, 9, 0, tzinfo=UTC)

# A completed project as F1 stored it before ProjectState (commit a19ef94, kept without outputs: a worker
# running F2 alone): dumps_state of the dict with agreed keys.
STORED_BEFORE = bytes.fromhex(
    "018ea770726f6a656374a550524a2d31a776657273696f6e02a26f70a9434f4d504c45544544a46e616d65a6e5bca0e6"
    "b19fa7636f6d70616e79a453483031a76d616e61676572a54530303037ad736f757263655f73797374656da46a697261"
    "a6627564676574c70701313030302e3030a863757272656e6379a3434e59a9696e74657276616c739283a4636f6465a8"
    "43432d50524a2d31aa76616c69645f66726f6dc70a03323032362d30332d3031a876616c69645f746fc70a0332303236"
    "2d30362d323983a4636f6465a643432d4e4557aa76616c69645f66726f6dc70a03323032362d30362d3330a876616c69"
    "645f746fc0a9636c6f7365645f6174c71902323032362d30362d33305430393a30303a30302b30303a3030a9636c6f73"
    "65645f6f6ec70a03323032362d30362d3330a9636c6f7365645f6f70a9434f4d504c45544544a76f75747075747390"
)
# sha256 of the states (with their recorded outputs) that F1 wrote for the same two records before
SHA_CREATED = "597db2a59aaf8015aa341bca9d00a6b08d4166cf92e486152498906a5905a65c"
SHA_COMPLETED = "45a38a8fedc49330c6bd4a4d82196c352f9c0f42508bc0e13b85ac939014de2c"


def project(version: int, op: str, at: datetime, **over: Any) -> dict[str, Any]:
    rec = {"meta": lineage.meta(lineage.event_id("jira", "project", "PRJ-1", version), "PRJ-1", "jira", at),
           "op": op, "project": "PRJ-1", "name": "张江", "company": "SH01", "source_status": None,
           "manager": "E0007", "customer": None, "cost_center": None, "planned_start": date(2026, 3, 1),
           "planned_end": None, "actual_end": None, "budget_amount": Decimal("1000.00"), "currency": "CNY",
           "version": version}  # fmt: skip
    rec.update(over)
    return rec


def story(emit: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    first = apply_project(project(1, "CREATED", CREATED), None, M, emit).state
    assert first is not None
    second = apply_project(project(2, "COMPLETED", COMPLETED, cost_center="CC-NEW", actual_end=date(2026, 6, 30)),
                           ProjectState.from_state(first), M, emit).state  # fmt: skip
    assert second is not None
    return first, second


def test_a_state_stored_before_the_model_loads_with_every_field() -> None:
    state = ProjectState.from_state(loads_state(STORED_BEFORE))  # type: ignore[arg-type]
    assert (state.project, state.version, state.op, state.company, state.budget, state.currency) == (
        "PRJ-1", 2, "COMPLETED", "SH01", Decimal("1000.00"), "CNY")  # fmt: skip
    assert [i["code"] for i in state.intervals] == ["CC-PRJ-1", "CC-NEW"]
    assert (state.closed_at, state.closed_on, state.closed_op, state.outputs) == (
        COMPLETED, date(2026, 6, 30), "COMPLETED", ())  # fmt: skip
    assert dumps_state(state.to_state()) == STORED_BEFORE  # and written back, the very same bytes


def test_f1_writes_the_same_bytes_as_before() -> None:
    _, kept = story(emit=False)
    assert dumps_state(kept) == STORED_BEFORE
    first, second = story(emit=True)
    assert hashlib.sha256(dumps_state(first)).hexdigest() == SHA_CREATED
    assert hashlib.sha256(dumps_state(second)).hexdigest() == SHA_COMPLETED


def test_a_state_of_fewer_keys_and_one_stored_as_json_load_too() -> None:
    legacy = (b'{"project":"PRJ-9","version":1,"op":"CREATED","name":"x","company":"SH01",'
              b'"intervals":[{"code":"CC-9","valid_from":{"$date":"2026-01-01"},"valid_to":null}]}')  # fmt: skip
    state = ProjectState.from_state(loads_state(legacy))  # type: ignore[arg-type]
    assert (state.company, state.budget, state.closed_at, state.outputs) == ("SH01", None, None, ())
    assert state.intervals == ({"code": "CC-9", "valid_from": date(2026, 1, 1), "valid_to": None},)


def test_the_projects_table_answers_the_model_for_stored_and_buffered_states() -> None:
    store: dict[bytes, bytes] = {b"PRJ-1": STORED_BEFORE}
    table = StateTable(store, ProjectState.from_state)
    stored = table.get("PRJ-1")
    assert isinstance(stored, ProjectState) and stored.closed_op == "COMPLETED"
    assert table.get("PRJ-1") is stored  # built once per stored value
    _, kept = story(emit=False)
    table.set("PRJ-2", {**kept, "project": "PRJ-2"})
    buffered = table.get("PRJ-2")
    assert isinstance(buffered, ProjectState) and buffered.project == "PRJ-2"
    assert table.flush() == 1 and loads_state(store[b"PRJ-2"])["project"] == "PRJ-2"  # the dict is what is stored
