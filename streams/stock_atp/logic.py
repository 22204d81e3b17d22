"""F5: sales order → available to promise, per warehouse and material; oversells refused, reservations kept,
replenishment alerts once per crossing of the safety stock.

    ATP(key) = on hand − reserved (by accepted orders, F5's own holds) − safety stock

**Partitioning.** The sales-order topic is keyed by order number, so two orders for the same material can sit
in different partitions (and workers). The reservations of a stock key must have exactly one owner, so
everything that changes a key's ATP is re-keyed by ``"<warehouse>/<material>"`` onto the internal topic
``bizbus.sales.atp-step.v1`` (:func:`handle_order` and :func:`handle_level` write it) and one agent
(:func:`handle_step`) owns the ``atp-stock`` state of each key: steps of one key are applied one after the
other in one partition, so of two orders racing for the last units the first step applied holds them and
the second is refused — whatever the partitioning of the orders. The LEVEL steps go the same way, so the
stock figures, the holds and the crossing state of a key have one writer.

**Multi-line orders: ordered acquisition, all or nothing.** An order's lines are summed per stock key (in
the stock unit) and sorted by key: the *chain*. The order is sent to the first key of its chain (RESERVE,
position 0); a key that can serve its quantity holds it and sends the order on to the next key; the last
key to hold answers ACCEPTED. A key that cannot serve refuses: the order's decision is REFUSED (reason and
shortfall of that key), the key holds nothing for it, and a RELEASE goes to every other key of the chain,
so nothing stays reserved. Because every order takes its keys in the same (ascending) order and a key
never waits, no two orders can each hold what the other one needs: of two orders that could each be served
alone but not both, the one that reaches their first contended key first wins, the other is refused —
exactly one wins. (A refused order can make a third order lose to a hold that is released right after;
that order is refused, never oversold.)

**Changes and cancellations.** A new version of an order re-runs its chain (its own old hold at a key is not
counted against it; keys the new version no longer has are released). If the new version is refused, all
of the order's holds are given back and its decision is REFUSED: the order as a whole, at its newest
version. A cancelled, closed or deleted order (``releasing_statuses``, op DELETED) sends RELEASE to every key
of its last version and is answered RELEASED at once. A key remembers the newest version it released or
refused per order (``closed``), so an older RESERVE still travelling in a chain cannot re-hold afterwards.

**Redelivery.** The flows run at least once: after a SIGKILL a step can come again. A key's state keeps the
ids of the steps it applied (:mod:`~bizbus.streams.runtime.applied`) and does not apply one twice; the
outputs of a step that comes again are derived again from what the state recorded for the order (held /
refused with reason) and for its crossings, with the same event ids, so a send lost in the crash is made
good without a second effect.

**Crossings.** ``below`` ⇔ on hand − reserved < safety stock (only a known level with a positive safety stock
can be below). Turning below raises BELOW with the next crossing number, turning back RECOVERED with the same
number; its event id is derived from (key, state, crossing), so a repeat is the same alert.

Decided here: the level's own ``reserved`` is not subtracted (F5 is the reservation authority; the sales
system's own reservations would count twice); the safety stock is the level's when it is positive, else the
material master's, else 0; an order for a key no InventoryLevel was ever seen for (in the
``stock-levels`` table) is missing master data: it waits ``master_data_grace_seconds`` and then goes to the
dead-letter topic with its key, to be replayed once the level exists (a 进销存 source publishes a zero level
for a stocked material with no stock); a step that still finds no level at its key (another worker's table
not yet replicated) refuses the order rather than wait inside a chain; a line unit that differs from the
level's unit refuses the order; warehouse codes contain no ``/``. Reservations are given back by
cancellation / closing (``releasing_statuses``); until then an order delivered by a goods issue counts
twice (its hold and the lower on-hand): ATP errs on the side of refusing, never of overselling.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bizbus.streams.runtime.applied import remember
from bizbus.streams.runtime.results import (
    Missing,
    Output,
    Reject,
    Result,
    Verdict,
    derived_meta,
    version_gate,
    with_outputs,
)
from bizbus.streams.stock_atp.config import StockAtpMapping

from bizbus import lineage

FLOW = "stock-atp"
ORDER_TOPIC = "bizbus.sales.order.v1"
LEVEL_TOPIC = "bizbus.inventory.level.v1"
MATERIAL_TOPIC = "bizbus.md.material.v1"
STEP_TOPIC = "bizbus.sales.atp-step.v1"
DECISION_TOPIC = "bizbus.sales.order-decision.v1"
ALERT_TOPIC = "bizbus.inventory.replenishment-alert.v1"
Q = Decimal("0.0001")
ZERO = Decimal("0")
CLOSED_LIMIT = 512  # orders per key whose release/refusal is remembered (stale chains are blocked by it)
ALERTS_KEPT = 16  # alerts per key kept to re-emit them on a redelivery
Lookup = Callable[[str], dict[str, Any] | None]


def stock_key(warehouse: str, material: str) -> str:
    return f"{warehouse}/{material}"


def split_key(key: str) -> tuple[str, str]:
    warehouse, _, material = key.partition("/")
    return warehouse, material


def qty(value: Any) -> Decimal:
    return Decimal(value).quantize(Q)


# ------------------------------------------------------------------------------------------ master data
def merge_material(record: dict[str, Any], state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``materials`` state after a Material record (None: older than what is known)."""
    if state is not None and int(state.get("version", 0)) > record["version"]:
        return None
    safety = record.get("safety_stock")
    cost = record.get("standard_cost")
    return {"code": record["code"], "name": record["name"], "unit": record["unit"], "category": record.get("category"),
            "safety_stock": None if safety is None else str(safety), "standard_cost": None if cost is None else str(cost),
            "currency": record.get("currency"), "active": record["active"], "version": record["version"]}  # fmt: skip


def handle_level(level: dict[str, Any], state: dict[str, Any] | None, emit: bool = True) -> Verdict:
    """An InventoryLevel → the ``stock-levels`` state (read by F3) and a LEVEL step to the key's owner."""
    key = stock_key(level["warehouse"], level["material"])
    as_of = int(level["as_of"].timestamp() * 1000)
    if state is not None and int(state.get("as_of", 0)) > as_of:
        return Result("skipped_stale")
    new_state = {"on_hand": str(level["on_hand"]), "available": str(level["available"]),
                 "safety_stock": str(level["safety_stock"]), "unit": level["unit"], "as_of": as_of}  # fmt: skip
    if not emit:
        return Result("ignored", (), new_state)
    step = _step(level["meta"], "level", key, "LEVEL", key, on_hand=level["on_hand"],
                 safety_stock=level["safety_stock"], unit=level["unit"], as_of=level["as_of"])  # fmt: skip
    return Result("emitted", (step,), new_state)


# ------------------------------------------------------------------------------------------ orders
def _step(src_meta: dict[str, Any], role: str, correlation: str, kind: str, key: str, **fields: Any) -> Output:
    value = {"meta": derived_meta(src_meta, role, correlation, FLOW), "kind": kind, "stock_key": key,
             "order_no": None, "company": None, "order_version": 0, "warehouse": None, "lines": [], "chain": [],
             "position": 0, "on_hand": None, "safety_stock": None, "unit": None, "as_of": None, **fields}  # fmt: skip
    return Output(STEP_TOPIC, key, value)


def order_chain(order: dict[str, Any], m: StockAtpMapping) -> list[dict[str, Any]] | Reject:
    """The order's chain: its lines summed per ``<warehouse>/<material>`` in the stock unit, sorted by key;
    a Reject for a line in an unknown unit, a line without quantity, or an order without warehouse."""
    warehouse = order.get("warehouse") or m.default_warehouse
    if not warehouse:
        return Reject("invalid_input", f"sales order {order['order_no']} names no warehouse and the mapping has no "
                                       "default_warehouse")  # fmt: skip
    if "/" in warehouse:
        return Reject("invalid_input", f"sales order {order['order_no']}: warehouse {warehouse!r} contains '/'")
    if not order["lines"]:
        return Reject("invalid_input", f"sales order {order['order_no']} has no lines")
    by_key: dict[str, dict[str, Any]] = {}
    for line in order["lines"]:
        unit, quantity = line["unit"], line["quantity"]
        if unit in m.conversions:
            conv = m.conversions[unit]
            unit, quantity = conv.unit, quantity * conv.factor
        elif unit not in m.units:
            return Reject("unknown_unit", f"sales order {order['order_no']} line {line['line_no']} ({line['material']}): "
                                          f"unit {line['unit']!r} is unknown (not among the mapping's units or "
                                          "conversions)")  # fmt: skip
        if quantity <= 0:
            return Reject("invalid_input", f"sales order {order['order_no']} line {line['line_no']}: quantity "
                                           f"{line['quantity']} is not positive")  # fmt: skip
        key = stock_key(warehouse, line["material"])
        entry = by_key.setdefault(key, {"stock_key": key, "material": line["material"], "quantity": ZERO, "unit": unit})
        if entry["unit"] != unit:
            return Reject("unknown_unit", f"sales order {order['order_no']}: {line['material']} is ordered in "
                                          f"{entry['unit']} and {unit}, which do not convert")  # fmt: skip
        entry["quantity"] += quantity
    return [{**by_key[k], "quantity": qty(by_key[k]["quantity"])} for k in sorted(by_key)]


def _decision(src_meta: dict[str, Any], role: str, order_no: str, company: str, version: int, kind: str,
              warehouse: str | None, lines: list[dict[str, Any]], reason: str | None = None,
              shortfalls: dict[str, str] | None = None) -> Output:  # fmt: skip
    value = {"meta": derived_meta(src_meta, role, order_no, FLOW), "order_no": order_no, "company": company,
             "order_version": version, "decision": kind, "reason": reason, "warehouse": warehouse,
             "lines": lines, "shortfalls": dict(shortfalls or {}), "decided_at": src_meta["occurred_at"]}  # fmt: skip
    return Output(DECISION_TOPIC, order_no, value)


def handle_order(order: dict[str, Any], state: dict[str, Any] | None, m: StockAtpMapping, emit: bool = True,
                 levels: Lookup | None = None) -> Verdict:  # fmt: skip
    """A SalesOrder version against the order's last ``state`` (the keys of its last checked version): the
    first RESERVE step of its chain (and RELEASE for keys it no longer has), or RELEASE to every key and the
    RELEASED decision when it is cancelled / closed / deleted. ``levels`` reads the ``stock-levels`` table:
    a key no level was ever seen for is missing master data (the order waits for it, then goes to the
    dead-letter topic), so no order is refused only because its level is late."""
    gate = version_gate(state, order["version"])
    if gate is not None:
        return gate
    no, version, meta = order["order_no"], order["version"], order["meta"]
    prev_keys: list[str] = list((state or {}).get("keys") or [])
    if order["status"] in m.ignored_statuses and order["op"] != "DELETED":
        return Result("ignored", (), {"version": version, "keys": prev_keys, "outputs": []})
    common = {"order_no": no, "company": order["company"], "order_version": version}
    outputs: list[Output] = []
    if order["op"] == "DELETED" or order["status"] in m.releasing_statuses:
        outputs += [_step(meta, f"release:{k}", no, "RELEASE", k, **common) for k in prev_keys]
        outputs.append(_decision(meta, "decision", no, order["company"], version, "RELEASED",
                                 order.get("warehouse"), order["lines"], reason=f"order {order['status'].lower()}"
                                 if order["op"] != "DELETED" else "order deleted"))  # fmt: skip
        keys: list[str] = []
    else:
        chain = order_chain(order, m)
        if isinstance(chain, Reject):
            return chain
        keys = [c["stock_key"] for c in chain]
        unknown = [k for k in keys if levels is not None and emit and levels(k) is None]
        if unknown:
            return Missing(f"level:{unknown[0]}", f"sales order {no}: no stock level of {', '.join(unknown)} is known "
                                                  f"(no InventoryLevel seen)")  # fmt: skip
        outputs += [_step(meta, f"release:{k}", no, "RELEASE", k, **common) for k in prev_keys if k not in keys]
        warehouse = order.get("warehouse") or m.default_warehouse
        outputs.append(_step(meta, f"reserve:{keys[0]}", no, "RESERVE", keys[0], **common, warehouse=warehouse,
                             lines=order["lines"], chain=chain, position=0))  # fmt: skip
    out = tuple(outputs) if emit else ()
    return Result("emitted" if out else "ignored", out, with_outputs({"version": version, "keys": keys}, out))


# ------------------------------------------------------------------------------------------ stock keys
def reserved_total(state: dict[str, Any]) -> Decimal:
    """What the holds of a key add up to: the running total ``reserved`` the state keeps beside its holds
    (one changelog record holds both), or their sum for a state written before it was kept."""
    total = state.get("reserved")
    if total is not None:
        return Decimal(total)
    return sum((Decimal(h[1]) for h in (state.get("holds") or {}).values()), ZERO)


def _hold(state: dict[str, Any], order_no: str, hold: list[Any] | None) -> None:
    """Set (``hold``: [version, quantity]) or drop (None) the hold of ``order_no`` in ``state["holds"]`` and keep
    ``state["reserved"]`` equal to their sum."""
    holds = state["holds"]
    total = reserved_total(state)
    old = holds.pop(order_no, None)
    if old is not None:
        total -= Decimal(old[1])
    if hold is not None:
        holds[order_no] = hold
        total += Decimal(hold[1])
    state["reserved"] = str(total)


def safety_of(state: dict[str, Any], material: dict[str, Any] | None) -> Decimal:
    """The level's safety stock when positive, else the material master's, else 0."""
    level = state.get("safety")
    if level is not None and Decimal(level) > 0:
        return Decimal(level)
    if material is not None and material.get("safety_stock") is not None:
        return Decimal(material["safety_stock"])
    return ZERO


def atp(state: dict[str, Any], safety: Decimal, excluding: str | None = None) -> Decimal:
    """Available to promise of a key: on hand − holds (but ``excluding``'s own) − safety stock."""
    holds = state.get("holds") or {}
    own = Decimal(holds[excluding][1]) if excluding in holds else ZERO
    on_hand = Decimal(state["on_hand"]) if state.get("on_hand") is not None else ZERO
    return on_hand - (reserved_total(state) - own) - safety


def _alert(key: str, src_meta: dict[str, Any], kind: str, crossing: int, available: str, safety: str,
           unit: str) -> Output:  # fmt: skip
    warehouse, material = split_key(key)
    meta = derived_meta(src_meta, f"alert:{kind}:{crossing}", key, FLOW)
    meta["event_id"] = lineage.event_id("bizbus", "replenishment_alert", key, kind, crossing)
    value = {"meta": meta, "warehouse": warehouse, "material": material, "state": kind,
             "available": qty(available), "safety_stock": qty(safety), "unit": unit, "crossing": crossing}  # fmt: skip
    return Output(ALERT_TOPIC, key, value)


def crossing(state: dict[str, Any], key: str, step: dict[str, Any], safety: Decimal) -> Output | None:
    """Update ``state``'s crossing (``below``, ``crossing``, ``alerts``) after a change; the alert to send, if
    the key crossed its safety stock."""
    if state.get("on_hand") is None:
        return None
    free = Decimal(state["on_hand"]) - reserved_total(state)
    below = safety > 0 and free < safety
    if below == bool(state.get("below")):
        return None
    state["below"] = below
    if below:
        state["crossing"] = int(state.get("crossing") or 0) + 1
    kind = "BELOW" if below else "RECOVERED"
    record = [step["meta"]["event_id"], kind, int(state.get("crossing") or 0), str(free), str(safety),
              state.get("unit") or ""]  # fmt: skip
    state["alerts"] = [*(state.get("alerts") or []), record][-ALERTS_KEPT:]
    return _alert(key, step["meta"], kind, record[2], record[3], record[4], record[5])


def _reserve_outputs(step: dict[str, Any], outcome: list[Any]) -> list[Output]:
    """What a RESERVE step sends for ``outcome``: ``["held"]`` → RESERVE to the next key or ACCEPTED at the
    last; ``["refused", reason, shortfall]`` → RELEASE to every other key of the chain and REFUSED."""
    chain, pos, meta = step["chain"], step["position"], step["meta"]
    no, version = step["order_no"], step["order_version"]
    common = {"order_no": no, "company": step["company"], "order_version": version}
    if outcome[0] == "held":
        if pos + 1 < len(chain):
            nxt = chain[pos + 1]["stock_key"]
            return [_step(meta, f"reserve:{nxt}", no, "RESERVE", nxt, **common, warehouse=step["warehouse"],
                          lines=step["lines"], chain=chain, position=pos + 1)]  # fmt: skip
        return [_decision(meta, "decision", no, step["company"], version, "ACCEPTED", step["warehouse"], step["lines"],
                          reason=None)]  # fmt: skip
    _, reason, shortfall = outcome
    here = chain[pos]
    outs = [_step(meta, f"release:{c['stock_key']}", no, "RELEASE", c["stock_key"], **common)
            for c in chain if c["stock_key"] != here["stock_key"]]  # fmt: skip
    outs.append(_decision(meta, "decision", no, step["company"], version, "REFUSED", step["warehouse"], step["lines"],
                          reason=reason, shortfalls={here["material"]: shortfall}))  # fmt: skip
    return outs


def _redelivered(step: dict[str, Any], state: dict[str, Any]) -> Result:
    """The outputs of a step applied before, derived again from what the state recorded."""
    eid = step["meta"]["event_id"]
    outs: list[Output] = []
    if step["kind"] == "RESERVE":
        no, version = step["order_no"], step["order_version"]
        hold = (state.get("holds") or {}).get(no)
        closed = (state.get("closed") or {}).get(no)
        if hold is not None and hold[0] == version:
            outs += _reserve_outputs(step, ["held"])
        elif closed is not None and closed[0] == version and closed[1] is not None:
            outs += _reserve_outputs(step, ["refused", closed[1], closed[2]])
    for a in state.get("alerts") or ():
        if a[0] == eid:
            outs.append(_alert(step["stock_key"], step["meta"], a[1], a[2], a[3], a[4], a[5]))
    return Result("reemitted" if outs else "skipped_stale", tuple(outs))


def _close(state: dict[str, Any], order_no: str, record: list[Any]) -> None:
    closed = dict(state.get("closed") or {})
    closed.pop(order_no, None)
    closed[order_no] = record
    while len(closed) > CLOSED_LIMIT:
        del closed[next(iter(closed))]
    state["closed"] = closed


def handle_step(step: dict[str, Any], stored: dict[str, Any] | None, materials: Lookup, limit: int = 256,
                levels: Lookup | None = None) -> Verdict:  # fmt: skip
    """One AtpStep against its key's ``atp-stock`` state (see the module doc). ``levels`` reads the
    ``stock-levels`` table: a RESERVE that reaches a key before its first LEVEL step (the level agent and the
    order agent send concurrently) takes the figures from there; the LEVEL step that follows sets the same."""
    key = step["stock_key"]
    ids, fresh = remember((stored or {}).get("applied"), step["meta"]["event_id"], limit)
    if not fresh:
        return _redelivered(step, stored or {})
    state: dict[str, Any] = {**(stored or {}), "applied": ids, "holds": dict((stored or {}).get("holds") or {})}
    if state.get("reserved") is None:
        state["reserved"] = str(reserved_total(state))
    _, material_code = split_key(key)
    material = materials(material_code)
    outputs: list[Output] = []
    kind = step["kind"]
    no, version = step.get("order_no"), step.get("order_version")
    if kind == "LEVEL":
        as_of = int(step["as_of"].timestamp() * 1000) if step.get("as_of") is not None else 0
        if as_of < int(state.get("as_of") or 0):
            return Result("skipped_stale", (), state)
        state.update(on_hand=str(step["on_hand"]), safety=None if step.get("safety_stock") is None
                     else str(step["safety_stock"]), unit=step.get("unit"), as_of=as_of)  # fmt: skip
    elif kind == "RELEASE":
        hold = state["holds"].get(no)
        if hold is not None and hold[0] <= version:
            _hold(state, no, None)
        closed = (state.get("closed") or {}).get(no)
        if closed is None or closed[0] < version:
            _close(state, no, [version, None, None])
    else:  # RESERVE
        if state.get("on_hand") is None and levels is not None:
            known = levels(key)
            if known is not None:
                state.update(on_hand=known["on_hand"], safety=known["safety_stock"], unit=known["unit"],
                             as_of=int(known["as_of"]))  # fmt: skip
        here = step["chain"][step["position"]]
        closed = (state.get("closed") or {}).get(no)
        hold = state["holds"].get(no)
        if (closed is not None and closed[0] >= version) or (hold is not None and hold[0] >= version):
            return Result("skipped_stale", (), state)  # a newer version of the order already passed here
        safety = safety_of(state, material)
        available = atp(state, safety, excluding=no)
        quantity = Decimal(here["quantity"])
        reason = None
        if state.get("on_hand") is None:
            reason = f"{here['material']} in {split_key(key)[0]}: no stock level known"
        elif state.get("unit") and state["unit"] != here["unit"]:
            reason = (f"{here['material']} in {split_key(key)[0]}: ordered in {here['unit']}, stock is kept in "
                      f"{state['unit']}")  # fmt: skip
        elif quantity > available:
            reason = (f"{here['material']} in {split_key(key)[0]}: {qty(quantity)} {here['unit']} ordered, "
                      f"{qty(max(available, ZERO))} available to promise (short by {qty(quantity - max(available, ZERO))})")  # fmt: skip
        if reason is None:
            _hold(state, no, [version, str(qty(quantity))])
            outputs += _reserve_outputs(step, ["held"])
        else:
            _hold(state, no, None)
            shortfall = str(qty(quantity - max(available, ZERO)))
            _close(state, no, [version, reason, shortfall])
            outputs += _reserve_outputs(step, ["refused", reason, shortfall])
    alert = crossing(state, key, step, safety_of(state, material))
    if alert is not None:
        outputs.append(alert)
    out = tuple(outputs)
    return Result("emitted" if out else "ignored", out, state)
