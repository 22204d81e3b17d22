"""F3: a project's material need × free stock → one purchase requisition for the shortfall only.

    free stock = available − safety stock   (never below 0; the level of ``<warehouse>/<material>``)
    shortfall  = need quantity − free stock (never below 0)

One need has at most one requisition, ``<prefix>-<need id>`` (deterministic): the first shortfall creates it
(version 1, SUBMITTED); a later need version with a different shortfall, need-by date, supplier or
warehouse adjusts it (same number, next version, op UPDATED); a need that is deleted, drops to zero, or is
now covered by stock cancels it (next version, status CANCELLED); a shortfall after a cancellation reopens
it (next version, SUBMITTED). A need version that changes nothing sends nothing. Event ids derive from the
need's event id and the requisition version, and a need version handled again after a crash re-sends
exactly the requisition recorded for it (``version_gate``).

**Supplier.** The material master (``bizbus.md.material.v1``) carries no supplier and a supplier record no
materials, so the mapping names it: by material code (``supplier_by_material``), else by the material's
category from the master (``supplier_by_category``), else ``default_supplier``. The requisition schema has
no supplier field: the line's ``description`` carries ``supplier:<code>`` (what the ERP sink reads).

**Master data.** A material no Material record has named waits like any missing master data and then goes
to the dead-letter topic (``unknown_master_data``, the record's key with it); an inactive material, a need
in another unit than the material's (or its stock's), or a material without supplier is a dead letter at
once. A need without warehouse (and no ``default_warehouse``) has no free stock: all of it is short. A need
whose warehouse has no stock level of the material yet waits for it the same way (a need handled before the
level arrived would otherwise ask for all of it); ``missing_level_is_zero: true`` counts it as no free stock.

Decided here: needs do not reserve stock for each other (two needs of the same material both see the same
free stock; F5's reservations are for sales orders); a change of stock alone does not adjust an open
requisition, the next need version does; the unit price is the master's standard cost when its currency is
the requisition's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bizbus.streams.material_need.config import MaterialNeedMapping
from bizbus.streams.runtime.results import (
    Missing,
    Output,
    Reject,
    Result,
    Verdict,
    derived_meta,
    local_date,
    version_gate,
    with_outputs,
)

FLOW = "material-need"
NEED_TOPIC = "bizbus.pm.material-need.v1"
REQUISITION_TOPIC = "bizbus.purchase.requisition.v1"
Q = Decimal("0.0001")
CENT = Decimal("0.01")
ZERO = Decimal("0")
MAX_NO = 64
Lookup = Callable[[str], dict[str, Any] | None]


def requisition_no(prefix: str, need_id: str) -> str:
    """``<prefix>-<need id>``; a need id too long for 64 characters is shortened, a hash keeps it unique."""
    full = f"{prefix}-{need_id}"
    if len(full) <= MAX_NO:
        return full
    digest = hashlib.sha256(need_id.encode("utf-8")).hexdigest()[:12]
    return f"{prefix}-{need_id[: MAX_NO - len(prefix) - len(digest) - 2]}~{digest}"


def free_stock(level: dict[str, Any] | None, material: dict[str, Any], use_safety: bool) -> Decimal:
    """Available − safety stock (the level's when positive, else the master's), never below 0."""
    if level is None:
        return ZERO
    available = Decimal(level["available"])
    safety = ZERO
    if use_safety:
        safety = Decimal(level.get("safety_stock") or "0")
        if safety <= 0 and material.get("safety_stock") is not None:
            safety = Decimal(material["safety_stock"])
    return max(available - safety, ZERO)


def shortfall(quantity: Decimal, free: Decimal) -> Decimal:
    return max(quantity - free, ZERO).quantize(Q)


def _requisition(need: dict[str, Any], req: dict[str, Any], material: dict[str, Any] | None, op: str,
                 m: MaterialNeedMapping, reason: str) -> Output:  # fmt: skip
    quantity = Decimal(req["quantity"])
    price = None
    if material is not None and material.get("standard_cost") is not None and material.get("currency") == m.currency:
        price = Decimal(material["standard_cost"])
    amount = None if price is None else (quantity * price).quantize(CENT, rounding=ROUND_HALF_UP)
    line = {"line_no": 1, "material": need["material"], "material_name": (material or {}).get("name"),
            "quantity": quantity, "unit": need["unit"], "unit_price": price, "amount": amount, "tax_rate": None,
            "project": need["project"], "need_by": need["need_by"], "description": f"supplier:{req['supplier']}"}  # fmt: skip
    value = {
        "meta": derived_meta(need["meta"], f"requisition-{req['version']}", need["project"], FLOW),
        "op": op,
        "requisition_no": req["no"],
        "company": m.company,
        "status": req["status"],
        "requester": None,
        "project": need["project"],
        "cost_center": None,
        "request_date": local_date(need["meta"]["occurred_at"], m.timezone),
        "currency": m.currency,
        "lines": [line],
        "total_amount": amount,
        "approval_instance_id": None,
        "reason": reason,
        "version": req["version"],
    }
    return Output(REQUISITION_TOPIC, req["no"], value)


def handle_need(need: dict[str, Any], state: dict[str, Any] | None, materials: Lookup, levels: Lookup,
                m: MaterialNeedMapping) -> Verdict:  # fmt: skip
    """One MaterialNeed version against the need's last ``state`` (its requisition); ``materials`` and
    ``levels`` read the material master and the stock levels (by ``<warehouse>/<material>``)."""
    gate = version_gate(state, need["version"])
    if gate is not None:
        return gate
    code, need_id = need["material"], need["need_id"]
    material = materials(code)
    if material is None:
        return Missing(f"material:{code}", f"material {code} of need {need_id} is unknown (no Material record seen)")
    prev: dict[str, Any] | None = (state or {}).get("requisition")
    is_open = prev is not None and prev["status"] != "CANCELLED"
    cancel = need["op"] == "DELETED" or need["quantity"] <= 0
    warehouse = need.get("warehouse") or m.default_warehouse
    short, supplier, reason = ZERO, None, ""
    if not cancel:
        if not material.get("active", True):
            return Reject("inactive_material", f"material {code} of need {need_id} is inactive in the material master")
        if need["unit"] != material["unit"]:
            return Reject("unit_mismatch", f"need {need_id} is in {need['unit']}, material {code} is kept in "
                                           f"{material['unit']}")  # fmt: skip
        level = levels(f"{warehouse}/{code}") if warehouse else None
        if level is not None and level.get("unit") and level["unit"] != need["unit"]:
            return Reject("unit_mismatch", f"need {need_id} is in {need['unit']}, stock of {code} in {warehouse} is "
                                           f"kept in {level['unit']}")  # fmt: skip
        supplier = m.supplier_for(code, material.get("category"))
        if supplier is None:
            return Reject("no_supplier", f"material {code} (category {material.get('category')}) of need {need_id} "
                                         "has no supplier in the mapping and there is no default_supplier")  # fmt: skip
        if level is None and warehouse and not m.missing_level_is_zero:
            # a need handled before its stock level arrived would ask for all of it: wait like master data
            return Missing(f"level:{warehouse}/{code}", f"no stock level of {code} in {warehouse} seen yet "
                                                        f"(need {need_id}; missing_level_is_zero: false)")  # fmt: skip
        free = free_stock(level, material, m.use_safety_stock)
        short = shortfall(need["quantity"], free)
        reason = (f"need {need_id} of project {need['project']}: {qty(need['quantity'])} {need['unit']} needed, "
                  f"{qty(free)} free in {warehouse or 'no warehouse'}, short by {short}")  # fmt: skip
    outputs: list[Output] = []
    req = prev
    if short > 0:
        wanted = {"quantity": str(short), "need_by": need["need_by"].isoformat(), "supplier": supplier,
                  "warehouse": warehouse}  # fmt: skip
        if not (is_open and all(prev.get(k) == v for k, v in wanted.items())):  # type: ignore[union-attr]
            version = (prev or {}).get("version", 0) + 1
            req = {"no": requisition_no(m.requisition_prefix, need_id), "version": version, "status": "SUBMITTED",
                   **wanted}  # fmt: skip
            outputs.append(_requisition(need, req, material, "CREATED" if prev is None else "UPDATED", m, reason))
    elif is_open:
        assert prev is not None
        why = "deleted" if need["op"] == "DELETED" else ("cancelled (quantity 0)" if cancel else "covered by stock")
        req = {**prev, "version": prev["version"] + 1, "status": "CANCELLED"}
        outputs.append(_requisition(need, req, material, "UPDATED", m, f"need {need_id} {why}" +
                                    (f": {reason}" if reason else "")))  # fmt: skip
    out = tuple(outputs)
    return Result("emitted" if out else "ignored", out, with_outputs({"version": need["version"], "requisition": req}, out))


def qty(value: Any) -> Decimal:
    return Decimal(value).quantize(Q)
