"""Pure mapping rules of the Tryton sink: canonical records -> Tryton values, and the checks before a write.

No I/O here: the writer looks ids up in Tryton and hands them in. Money stays ``Decimal``; quantities
become ``float`` because Tryton's purchase quantity is a Float field.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from bizbus.connectors.runtime.documents import canonical_kind

from bizbus.failures import Permanent

ANALYTIC = "model.analytic_account.account"
MOVE = "model.account.move"
PURCHASE = "model.purchase.purchase"
REQUEST = "model.purchase.request"
SALE = "model.sale.sale"
MAX_CHAR = 200  # Tryton Char fields have no limit; keep descriptions readable

Kind = Literal["cost_center", "voucher", "purchase_order", "requisition", "cost_entry", "order_decision"]


def record_kind(value: Mapping[str, Any]) -> Kind:
    """Which canonical schema a decoded record is, by its fields (topics may be renamed, e.g. in tests)."""
    kind = canonical_kind(value)
    if kind is not None:
        return kind
    if "requisition_no" in value and "lines" in value:
        return "requisition"
    if "entry_id" in value and "cost_type" in value:
        return "cost_entry"
    if "order_no" in value and "decision" in value:
        return "order_decision"
    raise Permanent(
        "the Tryton sink writes bizbus.md.CostCenter, bizbus.finance.Voucher, bizbus.finance.CostEntry, "
        "bizbus.purchase.PurchaseOrder, bizbus.purchase.PurchaseRequisition and bizbus.sales.OrderDecision "
        f"records; this one has the fields {sorted(value)[:12]}",
        reason="unsupported_record",
    )


def tidy(value: Decimal) -> Decimal:
    """``Decimal`` without trailing zeros of its scale (Tryton checks the digits a value carries)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


# -- cost centers ----------------------------------------------------------------------------------------


def cost_center_state(value: Mapping[str, Any]) -> str:
    """Tryton analytic account state of a cost center: ``opened`` when active, else ``closed``."""
    return "opened" if value["active"] else "closed"


def cost_center_values(value: Mapping[str, Any], root_id: int, parent_id: int) -> dict[str, Any]:
    """Values of ``analytic_account.account`` for a cost center (create and update alike)."""
    if value.get("parent_code") == value["code"]:
        raise Permanent(f"cost center {value['code']} names itself as parent", reason="validation")
    return {
        "name": value["name"],
        "code": value["code"],
        "type": "normal",
        "root": root_id,
        "parent": parent_id,
        "state": cost_center_state(value),
        "bizbus_ref": value["code"],
        "bizbus_version": int(value["version"]),
    }


def changed_fields(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``wanted`` that differ from ``current`` (Many2One values compared by id)."""
    out: dict[str, Any] = {}
    for name, value in wanted.items():
        have = current.get(name)
        if isinstance(have, Mapping):
            have = have.get("id")
        if have != value:
            out[name] = value
    return out


# -- vouchers ----------------------------------------------------------------------------------------------


def check_voucher(value: Mapping[str, Any], company_currency: str) -> None:
    """Refuse what Tryton must never post: no lines, a line on both sides, negative or unbalanced amounts."""
    no = value["voucher_no"]
    lines = value["lines"]
    if not lines:
        raise Permanent(f"voucher {no} has no lines", reason="validation")
    if value["currency"] != company_currency:
        raise Permanent(
            f"voucher {no} is in {value['currency']}; the Tryton company books in {company_currency} and the "
            "sink posts book-currency vouchers only",
            reason="unsupported_currency",
        )
    for line in lines:
        debit, credit = line["debit"], line["credit"]
        if debit < 0 or credit < 0:
            raise Permanent(f"voucher {no} line {line['line_no']}: negative amount", reason="validation")
        if (debit != 0) == (credit != 0):
            raise Permanent(
                f"voucher {no} line {line['line_no']}: exactly one of debit ({debit}) and credit ({credit}) "
                "must be non-zero",
                reason="validation",
            )
    total_debit = sum((line["debit"] for line in lines), Decimal(0))
    total_credit = sum((line["credit"] for line in lines), Decimal(0))
    if total_debit != total_credit:
        raise Permanent(
            f"voucher {no} is unbalanced: debit {total_debit} != credit {total_credit}", reason="unbalanced"
        )


def move_description(value: Mapping[str, Any]) -> str:
    """Move text: the voucher's description, its number, and what it reverses (红字冲销)."""
    text = value.get("description") or value["voucher_no"]
    if value.get("reversal_of"):
        text = f"{text} (reversal of {value['reversal_of']})"
    return text[:MAX_CHAR]


def move_values(
    value: Mapping[str, Any], journal_id: int, account_ids: Mapping[str, int], analytic_ids: Mapping[str, int]
) -> dict[str, Any]:
    """Values of ``account.move`` (period left out: the bizbus_ref module lets Tryton pick it by date)."""
    lines = []
    for line in sorted(value["lines"], key=lambda item: item["line_no"]):
        row: dict[str, Any] = {
            "account": account_ids[line["account_code"]],
            "debit": tidy(line["debit"]),
            "credit": tidy(line["credit"]),
            "description": line["description"][:MAX_CHAR],
        }
        if line.get("cost_center"):
            row["analytic_lines"] = [("create", [{
                "account": analytic_ids[line["cost_center"]], "debit": row["debit"], "credit": row["credit"],
                "date": value["posting_date"]}])]  # fmt: skip
        lines.append(row)
    return {
        "bizbus_ref": value["voucher_no"],
        "journal": journal_id,
        "date": value["posting_date"],
        "description": move_description(value),
        "lines": [("create", lines)],
    }


# -- purchase orders ---------------------------------------------------------------------------------------


def is_cancel(value: Mapping[str, Any]) -> bool:
    """A deleted or cancelled order is applied as a cancellation of the Tryton purchase (红字)."""
    return value["op"] == "DELETED" or value["status"] == "CANCELLED"


def purchase_values(
    value: Mapping[str, Any],
    party: Mapping[str, Any],
    currency_id: int,
    products: Mapping[str, Mapping[str, Any]],
    units: Mapping[str, int],
) -> dict[str, Any]:
    """Values of ``purchase.purchase`` (draft) with its lines; ``products`` rows by code, ``units`` by symbol."""
    lines = []
    for line in sorted(value["lines"], key=lambda item: item["line_no"]):
        product = products[line["material"]]
        row: dict[str, Any] = {
            "type": "line",
            "product": product["id"],
            "quantity": float(line["quantity"]),
            "unit": units[line["unit"]],
            "description": line.get("description") or line.get("material_name") or line["material"],
        }
        if line.get("unit_price") is not None:
            row["unit_price"] = tidy(line["unit_price"])
        lines.append(row)
    text = value["order_no"] + (f" / project {value['project']}" if value.get("project") else "")
    values: dict[str, Any] = {
        "bizbus_ref": value["order_no"],
        "bizbus_version": int(value["version"]),
        "party": party["id"],
        "purchase_date": value["order_date"],
        "currency": currency_id,
        "description": text[:MAX_CHAR],
        "lines": [("create", lines)],
    }
    if party.get("addresses"):
        values["invoice_address"] = party["addresses"][0]
    if value.get("delivery_date"):
        values["delivery_date"] = value["delivery_date"]
    return values


def purchase_references(value: Mapping[str, Any]) -> tuple[set[str], set[str], set[str]]:
    """(supplier codes, material codes, unit symbols) a purchase order needs."""
    lines = value["lines"]
    return {value["supplier"]}, {x["material"] for x in lines}, {x["unit"] for x in lines}


def missing_master_data(
    value: Mapping[str, Any], parties: Mapping[str, Any], products: Mapping[str, Any], units: Mapping[str, Any],
    currencies: Mapping[str, Any],
) -> str | None:  # fmt: skip
    """What a purchase order names that Tryton does not know, as one line; None when all is known."""
    missing = []
    if value["supplier"] not in parties:
        missing.append(f"supplier {value['supplier']}")
    if value["currency"] not in currencies:
        missing.append(f"currency {value['currency']}")
    for line in value["lines"]:
        if line["material"] not in products:
            missing.append(f"material {line['material']}")
        if line["unit"] not in units:
            missing.append(f"unit {line['unit']}")
    if not missing:
        return None
    return f"purchase order {value['order_no']}: Tryton does not know " + ", ".join(dict.fromkeys(missing))


# -- purchase requisitions -> purchase requests ---------------------------------------------------------------


def request_ref(requisition_no: str, line_no: int) -> str:
    """``bizbus_ref`` of the purchase request of one requisition line."""
    return f"{requisition_no}/{line_no}"


def requisition_action(value: Mapping[str, Any], open_statuses: tuple[str, ...]) -> str:
    """``upsert`` (requests follow the lines), ``cancel`` (every open request is cancelled) or ``skip``."""
    if value["op"] == "DELETED" or value["status"] in ("CANCELLED", "REJECTED"):
        return "cancel"
    if value["status"] in open_statuses:
        return "upsert"
    return "skip"


def check_requisition(value: Mapping[str, Any]) -> None:
    """Refuse lines Tryton must never get: no lines, a line number twice, a quantity that is not positive."""
    no = value["requisition_no"]
    numbers = [line["line_no"] for line in value["lines"]]
    if not numbers:
        raise Permanent(f"requisition {no} has no lines", reason="validation")
    if len(set(numbers)) != len(numbers):
        raise Permanent(f"requisition {no} has a line number twice", reason="validation")
    for line in value["lines"]:
        if line["quantity"] <= 0:
            raise Permanent(f"requisition {no} line {line['line_no']}: quantity {line['quantity']} is not positive",
                            reason="validation")  # fmt: skip


def missing_request_data(value: Mapping[str, Any], products: Mapping[str, Any], units: Mapping[str, Any]) -> str | None:
    """What a requisition names that Tryton does not know, as one line; None when all is known."""
    missing = []
    for line in value["lines"]:
        if line["material"] not in products:
            missing.append(f"material {line['material']}")
        if line["unit"] not in units:
            missing.append(f"unit {line['unit']}")
    if not missing:
        return None
    return f"requisition {value['requisition_no']}: Tryton does not know " + ", ".join(dict.fromkeys(missing))


def request_supplier(line: Mapping[str, Any]) -> str | None:
    """The supplier code a requisition line suggests: F3 writes ``supplier:<code>`` into its description."""
    for token in str(line.get("description") or "").split():
        if token.startswith("supplier:") and len(token) > len("supplier:"):
            return token[len("supplier:"):].rstrip(",;")
    return None


def request_values(value: Mapping[str, Any], line: Mapping[str, Any], product_id: int, unit_id: int,
                   warehouse_id: int, company_id: int, party_id: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Values of a new ``purchase.request`` for one requisition line (created through ``bizbus_create``);
    ``party_id``: the suggested supplier when Tryton knows it (the purchaser may still choose another)."""
    no = value["requisition_no"]
    text = line.get("material_name") or line["material"]
    if line.get("description"):
        text = f"{text}: {line['description']}"
    about = f" for project {value['project']}" if value.get("project") else ""
    values: dict[str, Any] = {
        "bizbus_ref": request_ref(no, line["line_no"]),
        "bizbus_version": int(value["version"]),
        "product": product_id,
        "quantity": float(line["quantity"]),
        "unit": unit_id,
        "computed_quantity": float(line["quantity"]),
        "computed_unit": unit_id,
        "warehouse": warehouse_id,
        "company": company_id,
        "purchase_date": value["request_date"],
        "description": f"{text} (requisition {no} line {line['line_no']}{about})"[:MAX_CHAR],
    }
    if line.get("need_by"):
        values["supply_date"] = line["need_by"]
    if party_id is not None:
        values["party"] = party_id
    return values


# -- cost entries -> account moves ---------------------------------------------------------------------------


def cost_entry_ref(entry_id: str) -> str:
    """``bizbus_ref`` of the account move of one cost entry (apart from voucher numbers)."""
    return f"CE/{entry_id}"


def cost_entry_voucher(value: Mapping[str, Any], debit_account: str, credit_account: str,
                       analytic_account: str) -> dict[str, Any]:  # fmt: skip
    """The balanced two-line voucher of a cost entry: the expense line (on the analytic account) against the
    credit account; a negative amount (a reversal) swaps the sides."""
    amount = value["amount"]
    if amount == 0:
        raise Permanent(f"cost entry {value['entry_id']} has amount 0: nothing to post", reason="validation")
    debit, credit = (amount, Decimal(0)) if amount > 0 else (Decimal(0), -amount)
    what = value.get("description") or f"{value['cost_type'].lower()} cost {value['entry_id']}"
    detail = f"{value['material']} " if value.get("material") else ""
    if value.get("quantity") is not None:
        detail += f"{tidy(value['quantity'])} {value.get('unit') or ''}".rstrip() + " "
    return {
        "meta": value["meta"],
        "voucher_no": cost_entry_ref(value["entry_id"]),
        "company": value["company"],
        "posting_date": value["posting_date"],
        "currency": value["currency"],
        "description": f"{what} / project {value['project']}",
        "reversal_of": cost_entry_ref(value["reversal_of"]) if value.get("reversal_of") else None,
        "lines": [
            {"line_no": 1, "account_code": debit_account, "cost_center": analytic_account,
             "project": value["project"], "debit": debit, "credit": credit,
             "description": f"{detail}{what}"[:MAX_CHAR]},
            {"line_no": 2, "account_code": credit_account, "cost_center": None, "project": value["project"],
             "debit": credit, "credit": debit, "description": what[:MAX_CHAR]},
        ],
    }  # fmt: skip


# -- order decisions -> sales ------------------------------------------------------------------------------

DECISION_RANK = {"ACCEPTED": 0, "REFUSED": 0, "RELEASED": 1}  # within one order version, a release comes last
REACHED = {"ACCEPTED": ("confirmed", "processing", "done"), "REFUSED": ("cancelled",), "RELEASED": ("cancelled",)}
SALE_STEPS = ("draft", "quote", "confirm", "cancel")  # the order the writer runs the buttons in


def decision_key(version: int | None, decision: str | None) -> tuple[int, int]:
    """Ordering of decisions on one order: by order version, then a release after an accept/refuse."""
    return (-1 if version is None else int(version), DECISION_RANK.get(decision or "", -1))


def sale_steps(order_no: str, state: str, decision: str) -> tuple[str, ...]:
    """The Tryton buttons that take a sale from ``state`` to what ``decision`` means (confirmed or cancelled);
    a Permanent error when Tryton cannot get there (a sale being shipped cannot be cancelled)."""
    if state in REACHED[decision]:
        return ()
    if decision == "ACCEPTED":
        steps = {"draft": ("quote", "confirm"), "quotation": ("confirm",), "cancelled": ("draft", "quote", "confirm")}
    else:
        steps = {"draft": ("cancel",), "quotation": ("cancel",), "confirmed": ("draft", "cancel")}
    if state not in steps:
        raise Permanent(f"sale {order_no} is {state} in Tryton and cannot be "
                        f"{'confirmed' if decision == 'ACCEPTED' else 'cancelled'} any more",
                        reason="not_modifiable")  # fmt: skip
    return steps[state]


def decision_values(value: Mapping[str, Any]) -> dict[str, Any]:
    """The bizbus fields a decision writes on the sale (its version, the decision, the reason)."""
    reason = value.get("reason")
    if value["decision"] == "REFUSED" and not reason:
        shortfalls = ", ".join(f"{k} lacks {v}" for k, v in sorted((value.get("shortfalls") or {}).items()))
        reason = f"refused: {shortfalls}" if shortfalls else "refused by bizbus (no reason given)"
    if value["decision"] == "RELEASED" and not reason:
        reason = "released: the order was cancelled"
    return {
        "bizbus_version": int(value["order_version"]),
        "bizbus_decision": value["decision"],
        "bizbus_reason": reason if value["decision"] != "ACCEPTED" else None,
    }
