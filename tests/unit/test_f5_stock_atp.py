"""F5: available to promise, the reservation chain (all or nothing, ordered by stock key), the race rule,
releases, crossings and redelivery — on the pure functions, routed by a small in-memory bus."""

from __future__ import annotations

import random
from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from bizbus.schemas import catalog
from bizbus.streams.runtime.results import Missing, Reject, Result
from bizbus.streams.stock_atp.config import StockAtpConfig, StockAtpMapping
from bizbus.streams.stock_atp.logic import (
    ALERT_TOPIC,
    DECISION_TOPIC,
    STEP_TOPIC,
    atp,
    handle_level,
    handle_order,
    handle_step,
    merge_material,
    order_chain,
)

from bizbus import lineage

M: StockAtpMapping = StockAtpConfig().loaded_mapping()
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
SCHEMAS = {STEP_TOPIC: "bizbus.sales.AtpStep", DECISION_TOPIC: "bizbus.sales.OrderDecision",
           ALERT_TOPIC: "bizbus.inventory.ReplenishmentAlert"}  # fmt: skip


def line(no: int, material: str, quantity: str, unit: str = "pcs") -> dict[str, Any]:
    return {"line_no": no, "material": material, "material_name": None, "quantity": Decimal(quantity), "unit": unit,
            "unit_price": None, "amount": None, "tax_rate": None, "project": None, "need_by": None, "description": None}  # fmt: skip


def order(no: str, lines: list[dict[str, Any]], version: int = 1, status: str = "SUBMITTED", op: str = "CREATED",
          warehouse: str | None = "WH1") -> dict[str, Any]:  # fmt: skip
    return {"meta": lineage.meta(lineage.event_id("jxc", "sales_order", no, version), no, "jxc", T0), "op": op,
            "order_no": no, "company": "SH01", "status": status, "customer": "C1", "order_date": T0.date(),
            "delivery_date": None, "warehouse": warehouse, "currency": "CNY", "lines": lines,
            "total_amount": Decimal("0.00"), "tax_amount": None, "salesperson": None, "version": version}  # fmt: skip


def level(material: str, on_hand: str, safety: str = "0", n: int = 1, warehouse: str = "WH1") -> dict[str, Any]:
    key = f"{warehouse}/{material}"
    at = T0 + timedelta(minutes=n)
    return {"meta": lineage.meta(lineage.event_id("jxc", "stock", key, n), key, "jxc", at), "warehouse": warehouse,
            "material": material, "unit": "pcs", "on_hand": Decimal(on_hand), "reserved": Decimal("0"),
            "available": Decimal(on_hand), "safety_stock": Decimal(safety), "as_of": at}  # fmt: skip


class Bus:
    """The flow's three stateful agents with their tables; steps queue per stock key (one partition each)
    and are applied in an order the test picks."""

    def __init__(self, materials: dict[str, dict[str, Any]] | None = None) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.levels: dict[str, dict[str, Any]] = {}
        self.stock: dict[str, dict[str, Any]] = {}
        self.materials = materials or {}
        self.queues: dict[str, deque[dict[str, Any]]] = {}
        self.decisions: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.log: list[tuple[str, Any]] = []

    def _route(self, res: Any) -> None:
        assert isinstance(res, Result), res
        for out in res.outputs:
            catalog.validate(SCHEMAS[out.topic], out.value)
            if out.topic == STEP_TOPIC:
                assert out.key == out.value["stock_key"]
                self.queues.setdefault(out.key, deque()).append(out.value)
            elif out.topic == DECISION_TOPIC:
                self.decisions.append(out.value)
            else:
                self.alerts.append(out.value)

    def order(self, rec: dict[str, Any]) -> Any:
        res = handle_order(rec, self.orders.get(rec["order_no"]), M, levels=self.levels.get)
        if isinstance(res, Result) and res.state is not None:
            self.orders[rec["order_no"]] = res.state
        if isinstance(res, Result):
            self._route(res)
        return res

    def level(self, rec: dict[str, Any]) -> None:
        key = f"{rec['warehouse']}/{rec['material']}"
        res = handle_level(rec, self.levels.get(key))
        assert isinstance(res, Result) and res.state is not None
        self.levels[key] = res.state
        self._route(res)

    def step(self, key: str) -> Result:
        value = self.queues[key].popleft()
        res = handle_step(value, self.stock.get(key), self.materials.get, levels=self.levels.get)
        assert isinstance(res, Result)
        if res.state is not None:
            # the running total kept beside the holds is their sum after every step
            assert Decimal(res.state["reserved"]) == sum((Decimal(h[1]) for h in res.state["holds"].values()), Decimal(0))
            self.stock[key] = res.state
        self._route(res)
        self.log.append((key, value))
        return res

    def drain(self, rng: random.Random | None = None) -> None:
        while any(self.queues.values()):
            keys = sorted(k for k, q in self.queues.items() if q)
            self.step(rng.choice(keys) if rng else keys[0])

    def held(self, key: str) -> dict[str, list[Any]]:
        return dict((self.stock.get(key) or {}).get("holds") or {})

    def decision_of(self, no: str) -> dict[str, Any]:
        return [d for d in self.decisions if d["order_no"] == no][-1]


def test_atp_is_on_hand_minus_reserved_minus_safety() -> None:
    state = {"on_hand": "10", "holds": {"A": [1, "3"], "B": [1, "2"]}}
    assert atp(state, Decimal("1")) == Decimal("4")
    assert atp(state, Decimal("1"), excluding="A") == Decimal("7")  # an order's own hold is not against it
    assert atp({"holds": {}}, Decimal("0")) == Decimal("0")  # no level: nothing on hand


def test_accepted_order_reserves_and_a_second_is_refused_with_reason_and_shortfall() -> None:
    bus = Bus()
    bus.level(level("M1", "10", safety="2"))
    bus.drain()
    bus.order(order("SO-1", [line(1, "M1", "5")]))
    bus.drain()
    assert bus.decision_of("SO-1")["decision"] == "ACCEPTED" and bus.held("WH1/M1") == {"SO-1": [1, "5.0000"]}
    bus.order(order("SO-2", [line(1, "M1", "4")]))
    bus.drain()
    refused = bus.decision_of("SO-2")
    assert refused["decision"] == "REFUSED" and refused["shortfalls"] == {"M1": "1.0000"}
    assert refused["reason"] == "M1 in WH1: 4.0000 pcs ordered, 3.0000 available to promise (short by 1.0000)"
    assert refused["lines"][0]["material"] == "M1" and refused["order_version"] == 1
    assert bus.held("WH1/M1") == {"SO-1": [1, "5.0000"]}


def test_cancel_releases_and_answers_released() -> None:
    bus = Bus()
    bus.level(level("M1", "5"))
    bus.order(order("SO-1", [line(1, "M1", "5")]))
    bus.drain()
    bus.order(order("SO-1", [line(1, "M1", "5")], version=2, status="CANCELLED", op="UPDATED"))
    bus.drain()
    assert [d["decision"] for d in bus.decisions] == ["ACCEPTED", "RELEASED"]
    assert bus.held("WH1/M1") == {}
    bus.order(order("SO-2", [line(1, "M1", "5")]))
    bus.drain()
    assert bus.decision_of("SO-2")["decision"] == "ACCEPTED"


def test_multi_line_order_is_all_or_nothing() -> None:
    bus = Bus()
    for mat, n in (("M1", "10"), ("M2", "1"), ("M3", "10")):
        bus.level(level(mat, n))
    bus.drain()
    bus.order(order("SO-1", [line(1, "M3", "2"), line(2, "M1", "2"), line(3, "M2", "3")]))
    bus.drain()
    d = bus.decision_of("SO-1")
    assert d["decision"] == "REFUSED" and d["shortfalls"] == {"M2": "2.0000"}
    assert all(bus.held(f"WH1/{m}") == {} for m in ("M1", "M2", "M3"))  # what M1 held is given back
    # the chain went M1 -> M2 (refused) and never held M3
    assert [k for k, v in bus.log if v["kind"] == "RESERVE"] == ["WH1/M1", "WH1/M2"]


def test_lines_of_one_material_are_summed_and_units_converted() -> None:
    m = StockAtpMapping(units=("pcs",), conversions={"box": {"unit": "pcs", "factor": "12"}})
    chain = order_chain(order("SO-1", [line(1, "M2", "1", "box"), line(2, "M2", "3"), line(3, "M1", "1")]), m)
    assert chain == [{"stock_key": "WH1/M1", "material": "M1", "quantity": Decimal("1.0000"), "unit": "pcs"},
                     {"stock_key": "WH1/M2", "material": "M2", "quantity": Decimal("15.0000"), "unit": "pcs"}]  # fmt: skip


def test_unknown_unit_is_rejected_for_the_dead_letter_topic() -> None:
    res = handle_order(order("SO-1", [line(1, "M1", "2", "barrel")]), None, M)
    assert isinstance(res, Reject) and res.reason == "unknown_unit" and "barrel" in res.message
    assert isinstance(handle_order(order("SO-1", [line(1, "M1", "2")], warehouse=None), None, M), Reject)
    assert isinstance(handle_order(order("SO-1", [line(1, "M1", "0")]), None, M), Reject)


@pytest.mark.parametrize("seed", range(40))
def test_two_orders_racing_for_the_last_units_exactly_one_wins(seed: int) -> None:
    """Both want M1 and M2; each could be served alone, not both. Any interleaving of the key partitions
    (the orders may come from any order partition): exactly one ACCEPTED, one REFUSED, the winner holds
    both keys and the loser nothing."""
    rng = random.Random(seed)
    bus = Bus()
    bus.level(level("M1", "5"))
    bus.level(level("M2", "5"))
    bus.drain()
    first, second = ("SO-A", "SO-B") if seed % 2 else ("SO-B", "SO-A")
    q1, q2 = ("3", "4") if seed % 3 else ("4", "3")
    bus.order(order(first, [line(1, "M2", q1), line(2, "M1", "2")]))
    bus.order(order(second, [line(1, "M1", q2), line(2, "M2", "4")]))
    bus.drain(rng)
    kinds = sorted(bus.decision_of(n)["decision"] for n in ("SO-A", "SO-B"))
    assert kinds == ["ACCEPTED", "REFUSED"]
    winner = next(n for n in ("SO-A", "SO-B") if bus.decision_of(n)["decision"] == "ACCEPTED")
    assert set(bus.held("WH1/M1")) == {winner} and set(bus.held("WH1/M2")) == {winner}
    for key in ("WH1/M1", "WH1/M2"):  # never oversold
        assert atp(bus.stock[key], Decimal(0)) >= 0


def test_changed_order_replaces_its_hold_and_releases_dropped_keys() -> None:
    bus = Bus()
    bus.level(level("M1", "5"))
    bus.level(level("M2", "5"))
    bus.order(order("SO-1", [line(1, "M1", "4"), line(2, "M2", "1")]))
    bus.drain()
    bus.order(order("SO-1", [line(1, "M1", "5")], version=2, op="UPDATED"))  # more M1, no M2
    bus.drain()
    assert bus.decision_of("SO-1")["decision"] == "ACCEPTED" and bus.decision_of("SO-1")["order_version"] == 2
    assert bus.held("WH1/M1") == {"SO-1": [2, "5.0000"]} and bus.held("WH1/M2") == {}
    bus.order(order("SO-1", [line(1, "M1", "6")], version=3, op="UPDATED"))  # too much: all given back
    bus.drain()
    assert bus.decision_of("SO-1")["decision"] == "REFUSED" and bus.held("WH1/M1") == {}


def test_a_stale_reserve_after_a_cancel_cannot_hold() -> None:
    bus = Bus()
    bus.level(level("M1", "5"))
    bus.level(level("M2", "5"))
    bus.drain()
    bus.order(order("SO-1", [line(1, "M1", "1"), line(2, "M2", "1")]))
    bus.step("WH1/M1")  # held M1, RESERVE travels to M2
    bus.order(order("SO-1", [], version=2, status="CANCELLED", op="UPDATED"))  # release M1 and M2
    bus.queues["WH1/M2"].rotate(-1)  # the release reaches M2 before the chain does
    bus.drain()
    assert bus.held("WH1/M1") == {} and bus.held("WH1/M2") == {}
    assert [d["decision"] for d in bus.decisions] == ["RELEASED"]


def test_one_alert_per_crossing_and_recovered() -> None:
    bus = Bus()
    bus.level(level("M1", "10", safety="4", n=1))
    bus.drain()
    assert bus.alerts == []
    bus.level(level("M1", "3", safety="4", n=2))
    bus.level(level("M1", "2", safety="4", n=3))  # still below: no second alert
    bus.drain()
    assert [(a["state"], a["crossing"], a["available"]) for a in bus.alerts] == [("BELOW", 1, Decimal("3.0000"))]
    bus.level(level("M1", "8", safety="4", n=4))
    bus.drain()
    bus.order(order("SO-1", [line(1, "M1", "4")]))
    bus.drain()  # 8 - 4 held = 4: at safety, not below
    bus.order(order("SO-1", [line(1, "M1", "4")], version=2, status="CANCELLED"))
    bus.level(level("M1", "3", safety="4", n=5))
    bus.drain()
    assert [(a["state"], a["crossing"]) for a in bus.alerts] == [("BELOW", 1), ("RECOVERED", 1), ("BELOW", 2)]
    assert bus.alerts[0]["meta"]["event_id"] != bus.alerts[2]["meta"]["event_id"]


def test_safety_stock_from_the_material_master_when_the_level_has_none() -> None:
    mat = merge_material({"meta": {}, "code": "M1", "name": "x", "unit": "pcs", "category": None, "safety_stock":
                          Decimal("3"), "standard_cost": None, "currency": None, "active": True, "version": 1}, None)  # fmt: skip
    bus = Bus({"M1": mat})
    bus.level(level("M1", "5", safety="0"))
    bus.drain()
    bus.order(order("SO-1", [line(1, "M1", "3")]))
    bus.drain()
    assert bus.decision_of("SO-1")["shortfalls"] == {"M1": "1.0000"}


def test_redelivered_step_counts_once_and_resends_the_same_outputs() -> None:
    bus = Bus()
    bus.level(level("M1", "5", safety="1"))
    bus.drain()
    bus.order(order("SO-1", [line(1, "M1", "4")]))
    step = bus.queues["WH1/M1"][0]
    first = bus.step("WH1/M1")
    again = handle_step(step, bus.stock["WH1/M1"], {}.get)
    assert isinstance(again, Result) and again.outcome == "reemitted" and again.state is None
    assert [o.value for o in again.outputs] == [o.value for o in first.outputs]
    assert bus.held("WH1/M1") == {"SO-1": [1, "4.0000"]}
    # a refusal comes again the same way
    bus.order(order("SO-2", [line(1, "M1", "1")]))
    step = bus.queues["WH1/M1"][0]
    first = bus.step("WH1/M1")
    again = handle_step(step, bus.stock["WH1/M1"], {}.get)
    assert [o.value for o in again.outputs] == [o.value for o in first.outputs]
    assert first.outputs[-1].value["decision"] == "REFUSED"


def test_an_order_waits_for_unknown_levels_and_a_late_level_step_is_not_a_refusal() -> None:
    bus = Bus()
    res = bus.order(order("SO-1", [line(1, "M9", "1")]))
    assert isinstance(res, Missing) and res.key == "level:WH1/M9"  # waits, then unknown_master_data
    bus.level(level("M9", "3"))
    bus.queues["WH1/M9"].clear()  # the LEVEL step is still on its way when the order's RESERVE arrives
    bus.order(order("SO-1", [line(1, "M9", "2")]))
    bus.drain()
    assert bus.decision_of("SO-1")["decision"] == "ACCEPTED" and bus.stock["WH1/M9"]["on_hand"] == "3"
    # without the levels table (another worker's not replicated yet) the key has nothing: refused
    res = handle_step({**bus.log[-1][1], "meta": {**bus.log[-1][1]["meta"], "event_id": "other"}}, None, {}.get)
    assert isinstance(res, Result) and "no stock level known" in res.outputs[-1].value["reason"]
    st = handle_level(level("M1", "5", n=2), None)
    assert isinstance(st, Result) and st.state is not None
    assert handle_level(level("M1", "7", n=1), st.state).outcome == "skipped_stale"  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", range(6))
def test_reserved_total_follows_the_holds_through_changes_cancels_and_refusals(seed: int) -> None:
    """Random orders (one or two lines, new versions, cancellations) in random key interleavings: after every
    step the key's ``reserved`` equals the sum of its holds (Bus.step asserts it), what the decisions accepted
    is what is held, and no key is oversold."""
    rng = random.Random(seed)
    bus = Bus()
    for m in ("M1", "M2", "M3"):
        bus.level(level(m, str(rng.randint(5, 12))))
    bus.drain()
    versions: dict[str, int] = {}
    for _ in range(60):
        no = f"SO-{rng.randint(1, 12)}"
        version = versions[no] = versions.get(no, 0) + 1
        if version > 1 and rng.random() < 0.25:
            bus.order(order(no, [], version=version, status="CANCELLED", op="UPDATED"))
        else:
            mats = rng.sample(["M1", "M2", "M3"], rng.randint(1, 2))
            bus.order(order(no, [line(i + 1, m, str(rng.randint(1, 4))) for i, m in enumerate(mats)], version=version,
                            op="CREATED" if version == 1 else "UPDATED"))  # fmt: skip
        for _ in range(rng.randint(0, 3)):
            keys = sorted(k for k, q in bus.queues.items() if q)
            if keys:
                bus.step(rng.choice(keys))
    bus.drain(rng)
    for key, state in bus.stock.items():
        assert atp(state, Decimal(0)) >= 0, key
    newest = {(d["order_no"], d["decision"]) for d in bus.decisions if d["order_version"] == versions[d["order_no"]]}
    held = {n for key in bus.stock for n in bus.held(key)}
    assert held == {n for n, kind in newest if kind == "ACCEPTED"}  # decisions may arrive out of version order
    assert {n for n, _ in newest} == set(versions)  # every order has its newest version decided


def test_a_state_written_before_the_running_total_gets_it_from_its_holds() -> None:
    """A stock state from before ``reserved`` was kept (holds only): the total is summed from its holds once
    and kept from then on."""
    old = {"on_hand": "10", "safety": "0", "unit": "pcs", "as_of": 0, "holds": {"A": [1, "3.0000"], "B": [1, "2.0000"]},
           "applied": []}  # fmt: skip
    levels = {"WH1/M1": {"on_hand": "10"}}.get

    def reserve(no: str, quantity: str, state: dict[str, Any]) -> Result:
        res = handle_order(order(no, [line(1, "M1", quantity)]), None, M, levels=levels)
        assert isinstance(res, Result)
        out = handle_step(res.outputs[0].value, state, {}.get)
        assert isinstance(out, Result) and out.state is not None
        return out

    refused = reserve("SO-C", "6", old)  # 10 - 5 held: 5 available
    assert refused.outputs[-1].value["decision"] == "REFUSED" and refused.state["reserved"] == "5.0000"
    accepted = reserve("SO-D", "5", old)
    assert accepted.outputs[-1].value["decision"] == "ACCEPTED" and accepted.state["reserved"] == "10.0000"
    assert "reserved" not in old  # the stored state itself is not changed
