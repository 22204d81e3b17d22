"""F4: an approval passed in the OA system creates the ERP document; a revoked one cancels it (红字).

The mapping names, per approval template, the document to create (today: ``purchase_order``), its
number pattern and which form field (表单字段) holds the supplier, material, quantity, unit price,
project and purpose. APPROVED → PurchaseOrder op CREATED, status APPROVED, one line; REVOKED or CANCELLED
after an APPROVED that produced an order → the same order_no with op DELETED, status CANCELLED.
PENDING, REJECTED and a revoke without an order are ignored.

Decided here: a template that is neither mapped nor listed in ``ignored_templates`` is dead-lettered
(``no_mapping``) only when it is APPROVED (other statuses of it create nothing and are ignored); the
order's company is the project's, else the template's ``company``; ``requisition_no`` is the approval's
``business_ref``; an APPROVED after an order was already created (or cancelled) creates nothing again.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from bizbus.streams.approvals.config import ApprovalsMapping, TemplateMapping
from bizbus.streams.cost_centers.state import ProjectState
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

FLOW = "approvals-to-erp"
APPROVAL_TOPIC = "bizbus.oa.approval.v1"
SUPPLIER_TOPIC = "bizbus.md.supplier.v1"
PURCHASE_ORDER_TOPIC = "bizbus.purchase.order.v1"
Lookup = Callable[[str], dict[str, Any] | None]
ProjectLookup = Callable[[str], ProjectState | None]


def _decimal(form: dict[str, str], label: str, what: str, instance: str) -> Decimal | Reject:
    raw = form.get(label)
    if raw is None or not str(raw).strip():
        return Reject(
            "invalid_form", f"approval {instance}: form field {label!r} ({what}) is missing or empty"
        )
    try:
        value = Decimal(str(raw).replace(",", "").strip())
    except InvalidOperation:
        return Reject(
            "invalid_form", f"approval {instance}: form field {label!r} ({what}) = {raw!r} is not a number"
        )
    if not value.is_finite() or value <= 0:
        return Reject(
            "invalid_form", f"approval {instance}: form field {label!r} ({what}) = {raw!r} must be > 0"
        )
    return value


def _text(form: dict[str, str], label: str | None) -> str | None:
    if label is None:
        return None
    value = (form.get(label) or "").strip()
    return value or None


def _order(
    ev: dict[str, Any], t: TemplateMapping, projects: ProjectLookup, suppliers: Lookup, tz: str
) -> dict[str, Any] | Missing | Reject:
    """The PurchaseOrder fields (without meta/op/status/version) for an APPROVED event."""
    form: dict[str, str] = ev.get("form_fields") or {}
    inst = ev["instance_id"]
    supplier = _text(form, t.fields.supplier)
    material = _text(form, t.fields.material)
    for label, value, what in (
        (t.fields.supplier, supplier, "supplier"),
        (t.fields.material, material, "material"),
    ):
        if value is None:
            return Reject(
                "invalid_form", f"approval {inst}: form field {label!r} ({what}) is missing or empty"
            )
    quantity = _decimal(form, t.fields.quantity, "quantity", inst)
    if isinstance(quantity, Reject):
        return quantity
    price = _decimal(form, t.fields.unit_price, "unit price", inst)
    if isinstance(price, Reject):
        return price
    project_code = ev.get("project") or _text(form, t.fields.project)
    project = projects(project_code) if project_code else None
    if project_code and project is None:
        return Missing(
            f"project:{project_code}", f"project {project_code} is unknown (no ProjectChanged seen)"
        )
    assert supplier is not None and material is not None
    if suppliers(supplier) is None:
        return Missing(f"supplier:{supplier}", f"supplier {supplier} is unknown (no Supplier record seen)")
    company = (project.company if project is not None else None) or t.company
    if company is None:
        return Reject("invalid_form", f"approval {inst}: no company: it names no project and template "
                                      f"{ev['template_code']} has no company")  # fmt: skip
    quantity = quantity.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    price = price.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    total = (
        ev["amount"]
        if ev.get("amount") is not None
        else (quantity * price).quantize(Decimal("0.01"), ROUND_HALF_UP)
    )
    line = {"line_no": 1, "material": material, "material_name": None, "quantity": quantity, "unit": t.unit,
            "unit_price": price, "amount": total, "tax_rate": None, "project": project_code, "need_by": None,
            "description": _text(form, t.fields.description) or ev.get("title")}  # fmt: skip
    finished = ev.get("finished_at") or ev["meta"]["occurred_at"]
    return {
        "order_no": t.number_pattern.format(instance_id=inst, business_ref=ev.get("business_ref") or ""),
        "company": company,
        "supplier": supplier,
        "order_date": local_date(finished, tz),
        "delivery_date": None,
        "currency": ev.get("currency") or t.currency,
        "exchange_rate": None,
        "project": project_code,
        "requisition_no": ev.get("business_ref"),
        "warehouse": None,
        "lines": [line],
        "total_amount": total,
        "tax_amount": None,
        "approval_instance_id": inst,
    }


def _po(ev: dict[str, Any], order: dict[str, Any], role: str, op: str, status: str) -> Output:
    value = {"meta": derived_meta(ev["meta"], role, ev["instance_id"], FLOW), "op": op, "status": status,
             **order, "version": ev["version"]}  # fmt: skip
    return Output(PURCHASE_ORDER_TOPIC, order["order_no"], value)


def handle_approval(ev: dict[str, Any], state: dict[str, Any] | None, projects: ProjectLookup, suppliers: Lookup,
                    m: ApprovalsMapping) -> Verdict:  # fmt: skip
    """Handle one ApprovalChanged against the instance's last ``state``."""
    gate = version_gate(state, ev["version"])
    if gate is not None:
        return gate
    prev = state or {}
    order = prev.get("order")
    cancelled = bool(prev.get("cancelled"))
    status = ev["status"]
    outputs: tuple[Output, ...] = ()
    template = m.templates.get(ev["template_code"])
    if status == "APPROVED" and order is None and ev["template_code"] not in m.ignored_templates:
        if template is None:
            return Reject("no_mapping", f"approval {ev['instance_id']}: template {ev['template_code']} "
                                        f"({ev.get('template_name') or 'no name'}) has no mapping in f4_approvals")  # fmt: skip
        built = _order(ev, template, projects, suppliers, m.timezone)
        if isinstance(built, Missing | Reject):
            return built
        order = built
        outputs = (_po(ev, order, "po-create", "CREATED", "APPROVED"),)
    elif status in ("REVOKED", "CANCELLED") and order is not None and not cancelled:
        cancelled = True
        outputs = (_po(ev, order, "po-cancel", "DELETED", "CANCELLED"),)
    new_state = {"version": ev["version"], "status": status, "order": order, "cancelled": cancelled}
    return Result("emitted" if outputs else "ignored", outputs, with_outputs(new_state, outputs))


def merge_supplier(record: dict[str, Any], state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The suppliers-table state after a Supplier record; None when it is older than what is known."""
    if state is not None and int(state.get("version", 0)) > record["version"]:
        return None
    return {
        "code": record["code"],
        "name": record["name"],
        "active": record["active"],
        "version": record["version"],
    }
