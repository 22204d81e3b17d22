"""F2: TimesheetEntry × rate → balanced voucher; reversal on change and delete; versions; master data."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from bizbus.schemas import catalog
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.labor_cost import logic as f2
from bizbus.streams.labor_cost.config import LaborCostMapping, RateRow
from bizbus.streams.labor_cost.logic import (
    VOUCHER_TOPIC,
    amount,
    is_balanced,
    merge_employee,
    post_labor,
    voucher_no,
)
from bizbus.streams.runtime.crosswalk import start_interval
from bizbus.streams.runtime.results import Missing, Reject, Result

from bizbus import lineage

M = LaborCostMapping(description_pattern="{employee} {hours}h", voucher_type="记")
AT = datetime(2026, 3, 14, 2, 0, tzinfo=UTC)


def entry(
    version: int = 1, op: str = "CREATED", hours: str = "7.50", at: datetime = AT, **over: Any
) -> dict[str, Any]:
    rec = {"meta": lineage.meta(lineage.event_id("jira", "worklog", "10042", version), "PRJ-1", "jira", at),
           "op": op, "worklog_id": "10042", "project": "PRJ-1", "task": None, "employee": "E0042",
           "work_date": date(2026, 3, 13), "hours": Decimal(hours), "billable": True, "description": None,
           "version": version}  # fmt: skip
    rec.update(over)
    return rec


PROJECT = ProjectState("PRJ-1", 1, "CREATED", "张江办公楼", "SH01",
                       intervals=tuple(start_interval([], "CC-PRJ-1", date(2026, 1, 1))[0]))  # fmt: skip
RATES = {"E0042": {"code": "E0042", "rates": [
    {"valid_from": date(2026, 1, 1), "valid_to": None, "rate": Decimal("123.456789"), "currency": "CNY", "version": 1},
    {"valid_from": date(2026, 4, 1), "valid_to": None, "rate": Decimal("200.000000"), "currency": "CNY", "version": 2},
]}}  # fmt: skip


def run(rec: dict[str, Any], state: dict[str, Any] | None = None, projects: dict | None = None,
        employees: dict | None = None, m: LaborCostMapping = M) -> Any:  # fmt: skip
    verdict = post_labor(rec, state, (projects if projects is not None else {"PRJ-1": PROJECT}).get,
                         (employees if employees is not None else RATES).get, m)  # fmt: skip
    if isinstance(verdict, Result):
        for out in verdict.outputs:
            assert out.topic == VOUCHER_TOPIC and out.key == out.value["voucher_no"]
            catalog.validate("bizbus.finance.Voucher", out.value)
            assert is_balanced(out.value)
    return verdict


def test_hours_times_rate_is_a_balanced_voucher_with_exact_cents() -> None:
    rec = entry()
    res = run(rec)
    assert res.outcome == "emitted" and len(res.outputs) == 1
    v = res.outputs[0].value
    assert v["voucher_no"] == "LAB-10042-1"
    assert (v["company"], v["voucher_type"], v["posting_date"], v["currency"], v["reversal_of"]) == (
        "SH01",
        "记",
        date(2026, 3, 13),
        "CNY",
        None,
    )
    assert v["lines"] == [
        {
            "line_no": 1,
            "account_code": "6601",
            "cost_center": "CC-PRJ-1",
            "project": "PRJ-1",
            "debit": Decimal("925.93"),
            "credit": Decimal("0.00"),
            "description": "E0042 7.50h",
        },
        {
            "line_no": 2,
            "account_code": "2211",
            "cost_center": None,
            "project": None,
            "debit": Decimal("0.00"),
            "credit": Decimal("925.93"),
            "description": "E0042 7.50h",
        },
    ]  # fmt: skip  (7.50 × 123.456789 = 925.9259175)
    assert v["source_refs"] == [
        {"system": "jira", "document_type": "worklog", "document_no": "10042", "line_no": None}
    ]
    assert v["meta"]["event_id"] == lineage.derived_id(rec["meta"]["event_id"], "voucher")
    assert (v["meta"]["causation_id"], v["meta"]["correlation_id"]) == (rec["meta"]["event_id"], "PRJ-1")


@pytest.mark.parametrize(("hours", "rate", "expected"), [
    ("0.50", "0.010000", "0.01"),   # 0.005 rounds half up
    ("1.25", "0.020000", "0.03"),   # 0.025
    ("1.00", "0.004999", "0.00"),
    ("8.00", "186.500000", "1492.00"),
    ("0.01", "99999.995000", "1000.00"),
])  # fmt: skip
def test_amount_rounds_half_up_to_cents(hours: str, rate: str, expected: str) -> None:
    result = amount(Decimal(hours), Decimal(rate))
    assert result == Decimal(expected) and str(result) == expected


def test_same_input_twice_gives_identical_outputs_and_numbers() -> None:
    assert run(entry()) == run(entry())


def test_rate_is_the_one_valid_on_the_work_date() -> None:
    res = run(entry(work_date=date(2026, 4, 2), hours="1.00"))
    assert res.outputs[0].value["lines"][0]["debit"] == Decimal("200.00")


def test_update_reverses_the_previous_voucher_then_posts_the_new_one() -> None:
    first = run(entry(version=1))
    changed_at = datetime(2026, 3, 20, 18, 30, tzinfo=UTC)  # 21 March in Shanghai
    upd = entry(version=2, op="UPDATED", hours="8.00", at=changed_at)
    res = run(upd, first.state)
    rev, new = (o.value for o in res.outputs)
    original = first.outputs[0].value
    assert (rev["voucher_no"], rev["reversal_of"], new["voucher_no"]) == (
        "LAB-10042-2-R",
        "LAB-10042-1",
        "LAB-10042-2",
    )
    assert rev["posting_date"] == date(2026, 3, 21) and new["posting_date"] == date(2026, 3, 13)
    for r_line, o_line in zip(rev["lines"], original["lines"], strict=True):
        assert (r_line["debit"], r_line["credit"]) == (o_line["credit"], o_line["debit"])
        assert (r_line["account_code"], r_line["cost_center"], r_line["project"]) == (
            o_line["account_code"],
            o_line["cost_center"],
            o_line["project"],
        )
    assert new["lines"][0]["debit"] == Decimal("987.65")  # 8 × 123.456789 = 987.654312
    assert rev["meta"]["event_id"] == lineage.derived_id(upd["meta"]["event_id"], "reversal")
    assert res.state["voucher"]["voucher_no"] == "LAB-10042-2"


def test_reversal_never_posts_before_the_original() -> None:
    first = run(entry(version=1, work_date=date(2026, 3, 25)))
    res = run(entry(version=2, op="UPDATED", hours="1.00", work_date=date(2026, 3, 25), at=AT), first.state)
    assert res.outputs[0].value["posting_date"] == date(2026, 3, 25)  # the change day 14 March is earlier


def test_deleted_only_reverses() -> None:
    first = run(entry(version=1))
    res = run(entry(version=2, op="DELETED"), first.state)
    assert [o.key for o in res.outputs] == ["LAB-10042-2-R"]
    assert res.state["voucher"] is None
    again = run(entry(version=3, op="DELETED"), res.state)
    assert again.outcome == "ignored" and again.outputs == ()


def test_deleted_needs_no_master_data() -> None:
    first = run(entry(version=1))
    res = run(entry(version=2, op="DELETED"), first.state, projects={}, employees={})
    assert [o.key for o in res.outputs] == ["LAB-10042-2-R"]


def test_zero_hours_post_nothing_and_a_later_change_just_posts() -> None:
    zero = run(entry(version=1, hours="0.00"))
    assert zero.outcome == "ignored" and zero.outputs == () and zero.state["voucher"] is None
    res = run(entry(version=2, op="UPDATED", hours="2.00"), zero.state)
    assert [o.key for o in res.outputs] == ["LAB-10042-2"]


def test_update_of_a_worklog_without_a_voucher_just_posts() -> None:
    res = run(entry(version=7, op="UPDATED"))
    assert [o.key for o in res.outputs] == ["LAB-10042-7"]


def test_versions_stale_equal_greater() -> None:
    state = run(entry(version=5)).state
    assert run(entry(version=4), state) == Result("skipped_stale")
    same = post_labor(entry(version=5), state, {}.get, {}.get, M)  # master data gone: still re-emits
    assert same.outcome == "reemitted" and [o.key for o in same.outputs] == ["LAB-10042-5"]
    assert same.outputs == run(entry(version=5)).outputs
    assert run(entry(version=6, op="UPDATED"), state).outcome == "emitted"


def test_unknown_project_is_missing_master_data() -> None:
    verdict = run(entry(), projects={})
    assert verdict == Missing("project:PRJ-1", "project PRJ-1 is unknown (no ProjectChanged seen)")


def test_no_rate_is_missing_master_data() -> None:
    verdict = run(entry(employee="E0099"))
    assert verdict == Missing("rate:E0099:2026-03-13", "no rate for employee E0099 on 2026-03-13")


def test_mapping_rates_are_the_fallback_and_aliases_resolve_user_ids() -> None:
    m = LaborCostMapping(employee_aliases={"jira:557058:abc": "E0099"},
                         rates=(RateRow(employee="E0099", rate=Decimal("50.00"), currency="USD",
                                        valid_from=date(2026, 1, 1), valid_to=date(2026, 3, 31)),))  # fmt: skip
    res = run(entry(employee="557058:abc"), m=m)
    v = res.outputs[0].value
    assert (v["currency"], v["lines"][0]["debit"]) == ("USD", Decimal("375.00"))
    assert isinstance(run(entry(employee="557058:abc", work_date=date(2026, 4, 1)), m=m), Missing)


def test_employee_topic_rate_wins_over_the_mapping() -> None:
    m = LaborCostMapping(
        rates=(RateRow(employee="E0042", rate=Decimal("1.00"), valid_from=date(2020, 1, 1)),)
    )
    assert run(entry(hours="1.00"), m=m).outputs[0].value["lines"][0]["debit"] == Decimal("123.46")


def test_cost_center_comes_from_the_dated_crosswalk_on_the_work_date() -> None:
    intervals, _ = start_interval(list(PROJECT.intervals), "CC-NEW", date(2026, 3, 14))
    projects = {"PRJ-1": replace(PROJECT, intervals=tuple(intervals))}
    assert (
        run(entry(work_date=date(2026, 3, 13)), projects=projects).outputs[0].value["lines"][0]["cost_center"]
        == "CC-PRJ-1"
    )
    assert (
        run(entry(work_date=date(2026, 3, 14)), projects=projects).outputs[0].value["lines"][0]["cost_center"]
        == "CC-NEW"
    )


def test_negative_hours_are_refused() -> None:
    verdict = run(entry(hours="-1.00"))
    assert isinstance(verdict, Reject) and verdict.reason == "invalid_input"


def test_voucher_numbers_stay_within_64_characters_and_unique() -> None:
    assert voucher_no("LAB", "10042", 3) == "LAB-10042-3"
    long_a, long_b = "x" * 80 + "a", "x" * 80 + "b"
    a, b = voucher_no("LAB", long_a, 1700000000000, "-R"), voucher_no("LAB", long_b, 1700000000000, "-R")
    assert len(a) <= 64 and len(b) <= 64 and a != b
    assert a.endswith("-1700000000000-R") and a == voucher_no("LAB", long_a, 1700000000000, "-R")


def test_merge_employee_keeps_dated_rates() -> None:
    def emp(version: int, start: date, rate: str | None) -> dict[str, Any]:
        return {"code": "E1", "valid_from": start, "valid_to": None, "currency": "CNY", "version": version,
                "hourly_cost_rate": Decimal(rate) if rate else None}  # fmt: skip

    state = merge_employee(emp(1, date(2026, 1, 1), "100.000000"), None)
    state = merge_employee(emp(2, date(2026, 7, 1), "120.000000"), state)
    assert [r["rate"] for r in state["rates"]] == [Decimal("100.000000"), Decimal("120.000000")]
    assert merge_employee(emp(1, date(2026, 7, 1), "90.000000"), state) is None  # older version


def as_sent(res: Any) -> tuple[dict[str, Any], Any]:
    """The state as the runtime stores it (outputs recorded as Avro bytes, then f2.stored_state), and a
    decoder of those bytes."""
    import io

    import fastavro
    from bizbus.streams.runtime.agents import recorded_as_sent
    from bizbus.streams.runtime.delivery import OutRecord

    schema = fastavro.parse_schema(catalog.load("bizbus.finance.Voucher"))

    def encode(value: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, value)
        return buf.getvalue()

    def decode(data: bytes) -> dict[str, Any]:
        return fastavro.schemaless_reader(io.BytesIO(data), schema, None)

    sent = [OutRecord(o.topic, o.key.encode(), encode(o.value), [("flow", b"labor-cost")]) for o in res.outputs]
    return f2.stored_state(recorded_as_sent(res.state, res.outputs, sent)), decode


def test_stored_state_keeps_the_voucher_only_as_the_bytes_sent_and_gives_it_back() -> None:
    first = run(entry(version=1))
    stored, decode = as_sent(first)
    assert "voucher" not in stored and stored["voucher_at"] == 0 and stored["booked"] == "925.93"
    assert f2.booked_in(stored, "PRJ-1") == f2.booked_in(first.state, "PRJ-1") == "925.93"
    assert f2.booked_in(stored, "PRJ-2") is None  # booked on another project
    assert f2.full_state(stored, decode)["voucher"] == first.state["voucher"]
    # an update reverses exactly the same voucher whichever form the state was kept in
    upd = entry(version=2, op="UPDATED", hours="8.00")
    from_full, from_stored = run(upd, first.state), run(upd, f2.full_state(stored, decode))
    assert [o.value for o in from_stored.outputs] == [o.value for o in from_full.outputs]
    # the update's state: the new voucher is the second output (after the reversal)
    stored2, _ = as_sent(from_stored)
    assert stored2["voucher_at"] == 1 and stored2["booked"] == "987.65"


def test_stored_state_leaves_states_without_sent_bytes_or_voucher_as_they_are() -> None:
    first = run(entry(version=1))
    assert f2.stored_state(first.state) == first.state  # outputs still records: the voucher stays
    deleted = run(entry(version=2, op="DELETED"), first.state)
    stored, decode = as_sent(deleted)
    assert stored["voucher"] is None and "voucher_at" not in stored and f2.booked_in(stored, "PRJ-1") is None
    assert f2.full_state(stored, decode) == stored
    assert f2.full_state(None, decode) is None


def test_an_unreachable_registry_makes_the_update_wait_and_the_reversal_comes_once_it_is_back() -> None:
    from bizbus.streams.labor_cost.logic import labor_verdict

    from bizbus.errors import RegistryError

    stored, decode = as_sent(run(entry(version=1)))
    registry_up = False

    def flaky(data: bytes) -> dict[str, Any]:
        if not registry_up:
            raise RegistryError("connection refused")
        return decode(data)

    upd = entry(version=2, op="UPDATED", hours="8.00")
    projects, employees = {"PRJ-1": PROJECT}.get, RATES.get
    waiting = labor_verdict(upd, stored, flaky, projects, employees, M)
    assert isinstance(waiting, Missing) and waiting.key == "schema-registry"
    assert "worklog 10042" in waiting.message and "connection refused" in waiting.message
    registry_up = True
    res = labor_verdict(upd, stored, flaky, projects, employees, M)
    assert [o.key for o in res.outputs] == ["LAB-10042-2-R", "LAB-10042-2"]
    assert res.outputs[0].value["reversal_of"] == "LAB-10042-1"


def test_each_posted_voucher_and_reversal_is_followed_by_its_labor_cost_entry() -> None:
    """F7 sums a project's labor from these (bizbus.finance.cost-entry.v1, keyed by project)."""
    first = post_labor(entry(), None, {"PRJ-1": PROJECT}.get, RATES.get, M, cost_entries=True)
    assert [(o.topic, o.key) for o in first.outputs] == [(VOUCHER_TOPIC, "LAB-10042-1"),
                                                         (f2.COST_ENTRY_TOPIC, "PRJ-1")]  # fmt: skip
    ce = first.outputs[1].value
    catalog.validate("bizbus.finance.CostEntry", ce)
    assert (ce["entry_id"], ce["cost_type"], ce["amount"], ce["cost_center"], ce["quantity"], ce["unit"],
            ce["rate"], ce["employee"], ce["reversal_of"]) == (
        "LAB-10042-1", "LABOR", Decimal("925.93"), "CC-PRJ-1", Decimal("7.50"), "h", Decimal("123.456789"),
        "E0042", None)  # fmt: skip
    second = post_labor(entry(version=2, op="UPDATED", hours="8.00"), first.state, {"PRJ-1": PROJECT}.get,
                        RATES.get, M, cost_entries=True)  # fmt: skip
    rev = second.outputs[1].value
    catalog.validate("bizbus.finance.CostEntry", rev)
    assert (rev["entry_id"], rev["amount"], rev["reversal_of"]) == ("LAB-10042-2-R", Decimal("-925.93"), "LAB-10042-1")
    assert [o.key for o in second.outputs] == ["LAB-10042-2-R", "PRJ-1", "LAB-10042-2", "PRJ-1"]
    assert sum(o.value["amount"] for o in second.outputs if o.topic == f2.COST_ENTRY_TOPIC) == Decimal("61.72")
    gone = post_labor(entry(version=3, op="DELETED"), second.state, {"PRJ-1": PROJECT}.get, RATES.get, M,
                      cost_entries=True)  # fmt: skip
    assert [o.key for o in gone.outputs] == ["LAB-10042-3-R", "PRJ-1"]
    assert gone.outputs[1].value["amount"] == Decimal("-987.65")
