"""Pure mapping rules of the Tryton sink: canonical records -> Tryton values, and the checks before a write.

No I/O here: the writer looks ids up in Tryton and hands them in. Money stays ``Decimal``; quantities
become ``float`` because Tryton's purchase quantity is a Float field.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bizbus.connectors.runtime.documents import Kind, canonical_kind

from bizbus.failures import Permanent

ANALYTIC = "model.analytic_account.account"
MOVE = "model.account.move"
PURCHASE = "model.purchase.purchase"
MAX_CHAR = 200  # Tryton Char fields have no limit; keep descriptions readable


def record_kind(value: Mapping[str, Any]) -> Kind:
    """Which canonical schema a decoded record is, by its fields (topics may be renamed, e.g. in tests)."""
    kind = canonical_kind(value)
    if kind is not None:
        return kind
    raise Permanent(
        "the Tryton sink writes bizbus.md.CostCenter, bizbus.finance.Voucher and bizbus.purchase.PurchaseOrder "
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
