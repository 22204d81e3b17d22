"""Purchase orders for the Tryton writer: draft purchases, updates of drafts, cancellations (红字).

``prepare_purchases`` reads and decides (``plan()`` stops there); ``apply_purchases`` writes: one create
call, one write call, one ``cancel`` call. See writer.py for the exactly-once rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bizbus.connectors.runtime.sink import SinkRecord
from bizbus.connectors.sinks.tryton import mapping as m

from bizbus.failures import Permanent, Retryable

if TYPE_CHECKING:
    from bizbus.connectors.sinks.tryton.writer import Outcomes, TrytonWriter

CANCELLABLE = ("draft", "quotation")


@dataclass
class PendingPurchase:
    order_no: str
    values: dict[str, Any]
    version: int
    effects: list[str] = field(default_factory=list)
    record_id: int | None = None  # None: to create
    cancel_effects: list[str] = field(default_factory=list)  # created and cancelled in the same batch


@dataclass
class PurchaseWork:
    creates: dict[str, PendingPurchase] = field(default_factory=dict)
    writes: dict[str, PendingPurchase] = field(default_factory=dict)
    cancels: dict[str, tuple[list[str], int]] = field(default_factory=dict)


@dataclass
class MasterData:
    parties: dict[str, dict[str, Any]]
    products: dict[str, dict[str, Any]]
    units: dict[str, int]
    currencies: dict[str, int]


def _master_data(w: TrytonWriter, records: list[SinkRecord]) -> MasterData:
    """Suppliers, materials, units and currencies the batch names: one search per model."""
    suppliers: set[str] = set()
    materials: set[str] = set()
    units: set[str] = set()
    for r in records:
        s, p, u = m.purchase_references(r.value)
        suppliers |= s
        materials |= p
        units |= u
    currencies = sorted({r.value["currency"] for r in records})

    def by(
        model: str, key: str, values: set[str] | list[str], fields: list[str]
    ) -> dict[str, dict[str, Any]]:
        if not values:
            return {}
        rows = w.search_read(model, [(key, "in", sorted(values))], [key, *fields])
        return {row[key]: row for row in rows}

    return MasterData(
        parties=by("model.party.party", "code", suppliers, ["addresses"]),
        products=by("model.product.product", "code", materials, []),
        units={k: int(v["id"]) for k, v in by("model.product.uom", "symbol", units, []).items()},
        currencies={
            k: int(v["id"]) for k, v in by("model.currency.currency", "code", currencies, []).items()
        },
    )


def prepare_purchases(w: TrytonWriter, records: list[SinkRecord], out: Outcomes) -> PurchaseWork:
    numbers = sorted({r.value["order_no"] for r in records})
    existing = {row["bizbus_ref"]: row for row in w.search_read(
        m.PURCHASE, [("bizbus_ref", "in", numbers)], ["bizbus_ref", "state", "bizbus_version", "lines"])}  # fmt: skip
    data = _master_data(w, [r for r in records if not m.is_cancel(r.value)])
    work = PurchaseWork()
    for r in records:
        if m.is_cancel(r.value):
            _decide_cancel(r, existing, work, out)
        else:
            _decide_upsert(r, existing, data, work, out)
    return work


def _decide_cancel(r: SinkRecord, existing: dict[str, Any], work: PurchaseWork, out: Outcomes) -> None:
    no, e = r.value["order_no"], r.effect_id
    if no in work.creates:
        work.creates[no].cancel_effects.append(e)
        out.plan([e], f"cancel purchase {no} (created in this batch)")
        return
    if no in work.cancels:
        out.duplicate(e, f"purchase {no} is cancelled by an earlier record of the batch")
        return
    row = existing.get(no)
    if row is None:
        out.fail(
            [e], Retryable(f"purchase order {no} to cancel is not in Tryton yet", reason="missing_reference")
        )
    elif row["state"] == "cancelled":
        out.duplicate(e, f"purchase {no} is already cancelled in Tryton")
    elif row["state"] in CANCELLABLE:
        work.cancels[no] = ([e], int(row["id"]))
        out.plan([e], f"cancel purchase {no} ({row['state']})")
    else:
        out.fail([e], Permanent(f"purchase {no} is {row['state']} in Tryton and can no longer be cancelled",
                                reason="not_cancellable"))  # fmt: skip


def _decide_upsert(
    r: SinkRecord, existing: dict[str, Any], data: MasterData, work: PurchaseWork, out: Outcomes
) -> None:
    v, e = r.value, r.effect_id
    no, version = v["order_no"], int(v["version"])
    missing = m.missing_master_data(v, data.parties, data.products, data.units, data.currencies)
    if missing:
        out.fail([e], Permanent(missing, reason="unknown_master_data"))
        return
    values = m.purchase_values(v, data.parties[v["supplier"]], data.currencies[v["currency"]], data.products,
                               data.units)  # fmt: skip
    pending = work.creates.get(no) or work.writes.get(no)
    row = existing.get(no)
    known = pending.version if pending else (row or {}).get("bizbus_version")
    if known is not None and version <= known:
        out.duplicate(e, f"purchase {no} already has version {known} (this is {version})")
        return
    lines = len(v["lines"])
    if row is None:
        item = work.creates.setdefault(no, PendingPurchase(no, values, version))
        item.values, item.version = values, version
        item.effects.append(e)
        out.plan(item.effects, f"create draft purchase {no} from {v['supplier']} with {lines} line(s)")
        return
    if row["state"] == "cancelled" or no in work.cancels:
        out.fail([e], Permanent(f"purchase {no} is cancelled in Tryton; version {version} cannot revive it",
                                reason="purchase_cancelled"))  # fmt: skip
        return
    if row["state"] != "draft":
        out.fail([e], Permanent(f"purchase {no} is {row['state']} in Tryton; only drafts take updates",
                                reason="not_modifiable"))  # fmt: skip
        return
    update = {k: val for k, val in values.items() if k not in ("bizbus_ref", "lines")}
    update["lines"] = [("delete", list(row["lines"])), *values["lines"]]
    item = work.writes.setdefault(no, PendingPurchase(no, update, version, [], int(row["id"])))
    item.values, item.version = update, version
    item.effects.append(e)
    out.plan(item.effects, f"update draft purchase {no} to version {version} with {lines} line(s)")


def apply_purchases(w: TrytonWriter, work: PurchaseWork, out: Outcomes) -> None:
    creates = list(work.creates.values())
    ids = w.create(m.PURCHASE, [(p.effects, p.values) for p in creates], out)
    cancels = list(work.cancels.values())
    for p, new_id in zip(creates, ids, strict=True):
        if new_id is None:
            if p.cancel_effects:
                out.fail(p.cancel_effects, Retryable(f"purchase order {p.order_no} to cancel could not be created",
                                                     reason="missing_reference"))  # fmt: skip
            continue
        out.done(p.effects)
        if p.cancel_effects:
            cancels.append((p.cancel_effects, new_id))
    writes = list(work.writes.values())
    done = w.write_values(m.PURCHASE, [(p.effects, int(p.record_id or 0), p.values) for p in writes], out)
    for p, ok in zip(writes, done, strict=True):
        if ok:
            out.done(p.effects)
    cancelled = w.button(m.PURCHASE, "cancel", cancels, out)
    for (effects, _), ok in zip(cancels, cancelled, strict=True):
        if ok:
            out.done(effects)
