"""F2: timesheet hours × the employee's hourly cost rate → a balanced labor-cost voucher.

One TimesheetEntry version posts at most one voucher ``LAB-<worklog>-<version>``: line 1 debits the labor
cost account on the project's cost center (from the dated crosswalk on the work date), line 2 credits
accrued payroll. A later version of a worklog that already posted first reverses that voucher (a new
voucher ``LAB-<worklog>-<version>-R`` with debit and credit swapped, ``reversal_of`` set, posted on the day
of the change but never before the original) and then posts the new one; DELETED only reverses; zero
hours post nothing. Vouchers are never edited in place.

Decided here: the voucher currency is the rate's currency (the Employee record's, or the mapping rate
row's, else ``default_currency``); the credit line carries no cost center / project; an entry with
negative hours is refused (``invalid_input``); a worklog moved to another project is reversed on its old
cost center and posted on the new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bizbus.streams.cost_centers.close import labor_after_close
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.labor_cost.config import LaborCostMapping
from bizbus.streams.runtime import crosswalk
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

from bizbus.errors import RegistryError

FLOW = "labor-cost"
TIMESHEET_TOPIC = "bizbus.pm.timesheet.v1"
EMPLOYEE_TOPIC = "bizbus.md.employee.v1"
VOUCHER_TOPIC = "bizbus.finance.voucher.v1"
COST_ENTRY_TOPIC = "bizbus.finance.cost-entry.v1"
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
MAX_VOUCHER_NO = 64
Lookup = Callable[[str], dict[str, Any] | None]
ProjectLookup = Callable[[str], ProjectState | None]


@dataclass(frozen=True)
class BudgetAlert:
    """A project's booked labor cost crossed its budget plus the allowed overrun."""

    project: str
    booked: Decimal
    budget: Decimal
    currency: str | None
    percent: float

    @property
    def message(self) -> str:
        used = self.booked / self.budget * 100
        return (f"project {self.project}: labor cost booked {self.booked} {self.currency or ''} is {used:.0f}% of "
                f"its budget {self.budget} (alert above {100 + self.percent:.0f}%)")  # fmt: skip


def booked_amount(voucher: dict[str, Any]) -> str:
    """The labor cost a voucher books (its debits), as the roll-up keeps it."""
    return str(sum((line["debit"] for line in voucher["lines"]), ZERO))


VOUCHER_HEAD = ("company", "voucher_type", "posting_date", "currency", "voucher_no")
LINE_FIELDS = ("line_no", "account_code", "cost_center", "project", "debit", "credit", "description")


def stored_state(state: dict[str, Any]) -> dict[str, Any]:
    """The worklog state as the table keeps it. When the outputs are recorded as the bytes sent
    (:func:`~bizbus.streams.runtime.results.sent_output`), the voucher is one of them: the state then names its
    position (``voucher_at``) and keeps its booked amount (``booked``) instead of a second copy as a record,
    whose Decimals and dates cost more to pack than the rest of the state. :func:`full_state` gives the
    voucher back; a state whose outputs are records keeps its voucher as is."""
    voucher = state.get("voucher")
    if not voucher:
        return state
    for i, out in enumerate(state.get("outputs") or ()):
        if isinstance(out, dict) and "wire" in out and out.get("key") == voucher["voucher_no"]:
            kept = {k: v for k, v in state.items() if k != "voucher"}
            kept["voucher_at"], kept["booked"] = i, booked_amount(voucher)
            return kept
    return state


def full_state(state: dict[str, Any] | None, decode: Callable[[bytes], Any]) -> dict[str, Any] | None:
    """``state`` with its voucher as a record again, read from the bytes sent (``decode``: wire bytes → the
    Voucher event); a state with the voucher in it, or None, as is."""
    if state is None or "voucher_at" not in state:
        return state
    event = decode(state["outputs"][state["voucher_at"]]["wire"])
    voucher = {k: event[k] for k in VOUCHER_HEAD}
    voucher["lines"] = [{k: line[k] for k in LINE_FIELDS} for line in event["lines"]]
    rest = {k: v for k, v in state.items() if k not in ("voucher_at", "booked")}
    return {**rest, "voucher": voucher}


def booked_in(state: dict[str, Any] | None, project_key: str) -> str | None:
    """The labor cost a worklog's ``state`` (either form) booked on ``project_key``, as :func:`roll_up`
    keeps it; None when it booked nothing there."""
    if not isinstance(state, dict) or state.get("project") != project_key:
        return None
    if "booked" in state:
        return str(state["booked"])
    voucher = state.get("voucher")
    return booked_amount(voucher) if voucher else None


def roll_up(costs: dict[str, Any] | None, project: ProjectState | None, project_key: str, worklog_id: str,
            voucher: dict[str, Any] | None, percent: float) -> tuple[dict[str, Any], BudgetAlert | None]:  # fmt: skip
    """The project's labor cost after this worklog's current voucher (None: deleted / nothing posted).

    ``costs`` keeps the amount per worklog, so handling the same worklog version twice changes nothing;
    the alert comes once when the total crosses budget × (1 + percent / 100), and again only after the
    total went back under the line (e.g. a corrected worklog) and crossed it once more."""
    amounts: dict[str, str] = dict((costs or {}).get("worklogs") or {})
    if voucher is not None:
        amounts[worklog_id] = booked_amount(voucher)
    else:
        amounts.pop(worklog_id, None)
    booked = sum((Decimal(v) for v in amounts.values()), ZERO)
    raw_budget = project.budget if project is not None else None
    budget = Decimal(str(raw_budget)) if raw_budget is not None else None
    over = budget is not None and budget > 0 and booked > budget * (1 + Decimal(str(percent)) / 100)
    alert = None
    if over and not (costs or {}).get("over"):
        assert budget is not None
        alert = BudgetAlert(project_key, booked, budget, project.currency if project is not None else None, percent)
    return {"worklogs": amounts, "over": over}, alert


def voucher_no(prefix: str, worklog: str, version: int, suffix: str = "") -> str:
    """``<prefix>-<worklog>-<version><suffix>``; a worklog id too long for 64 characters is shortened
    and a hash of the full id keeps the number unique (deterministic either way)."""
    full = f"{prefix}-{worklog}-{version}{suffix}"
    if len(full) <= MAX_VOUCHER_NO:
        return full
    digest = hashlib.sha256(worklog.encode("utf-8")).hexdigest()[:12]
    room = MAX_VOUCHER_NO - len(f"{prefix}--{version}{suffix}") - len(digest) - 1
    return f"{prefix}-{worklog[: max(room, 0)]}~{digest}-{version}{suffix}"


def employee_code(entry: dict[str, Any], m: LaborCostMapping) -> str:
    """The employee code: an alias ``<source_system>:<id>`` from the mapping, else the value as sent."""
    alias = f"{entry['meta']['source_system']}:{entry['employee']}"
    return m.employee_aliases.get(alias, entry["employee"])


def rate_on(
    code: str, day: date, employee: dict[str, Any] | None, m: LaborCostMapping
) -> tuple[Decimal, str] | None:
    """(hourly rate, currency) valid on ``day``: the Employee topic's first, then the mapping's rates."""
    if employee is not None:
        hit = crosswalk.valid_on([r for r in employee.get("rates") or [] if r.get("rate") is not None], day)
        if hit is not None:
            return Decimal(hit["rate"]), hit.get("currency") or m.default_currency
    hit = crosswalk.valid_on(m.rates_of(code), day)
    return (hit["rate"], hit["currency"]) if hit is not None else None


def amount(hours: Decimal, rate: Decimal) -> Decimal:
    """hours × rate rounded to cents, half up."""
    return (hours * rate).quantize(CENT, rounding=ROUND_HALF_UP)


def _line(no: int, account: str, cc: str | None, project: str | None, debit: Decimal, credit: Decimal,
          text: str) -> dict[str, Any]:  # fmt: skip
    return {"line_no": no, "account_code": account, "cost_center": cc, "project": project,
            "debit": debit, "credit": credit, "description": text}  # fmt: skip


def _voucher(entry: dict[str, Any], number: str, role: str, head: dict[str, Any], lines: list[dict[str, Any]],
             reversal_of: str | None, text: str) -> Output:  # fmt: skip
    value = {
        "meta": derived_meta(entry["meta"], role, entry["project"], FLOW),
        "voucher_no": number,
        "company": head["company"],
        "voucher_type": head["voucher_type"],
        "posting_date": head["posting_date"],
        "currency": head["currency"],
        "exchange_rate": None,
        "lines": lines,
        "reversal_of": reversal_of,
        "source_refs": [
            {
                "system": entry["meta"]["source_system"],
                "document_type": "worklog",
                "document_no": entry["worklog_id"],
                "line_no": None,
            }
        ],  # fmt: skip
        "description": text,
    }
    return Output(VOUCHER_TOPIC, number, value)


def _reversal(entry: dict[str, Any], prev: dict[str, Any], m: LaborCostMapping) -> Output:
    changed_on = local_date(entry["meta"]["occurred_at"], m.timezone)
    head = {**prev, "posting_date": max(changed_on, prev["posting_date"])}
    why = "deleted" if entry["op"] == "DELETED" else f"changed (version {entry['version']})"
    text = f"Reversal of {prev['voucher_no']}: worklog {entry['worklog_id']} {why}"
    lines = [_line(ln["line_no"], ln["account_code"], ln["cost_center"], ln["project"], ln["credit"], ln["debit"],
                   f"Reversal: {ln['description']}") for ln in prev["lines"]]  # fmt: skip
    number = voucher_no(m.voucher_prefix, entry["worklog_id"], entry["version"], "-R")
    return _voucher(entry, number, "reversal", head, lines, prev["voucher_no"], text)


def cost_entry(entry: dict[str, Any], voucher: Output, quantity: Decimal | None = None,
               rate: Decimal | None = None, employee: str | None = None) -> Output:  # fmt: skip
    """The LABOR CostEntry of a labor voucher (or of its reversal): ``entry_id`` = the voucher number, the
    amount its debit on the labor-cost line (negative for a reversal, ``reversal_of`` the reversed voucher's
    number), keyed by the project the line books on. F7 (budget-control) sums a project's labor from these."""
    v = voucher.value
    assert v is not None
    line = v["lines"][0]  # the labor-cost line (a reversal keeps the line order, sides swapped)
    project = line["project"]
    amount = line["debit"] - line["credit"]
    role = "cost-entry" if v["reversal_of"] is None else "cost-entry-reversal"
    value = {
        "meta": derived_meta(entry["meta"], role, project, FLOW),
        "entry_id": v["voucher_no"],
        "company": v["company"],
        "project": project,
        "cost_center": line["cost_center"] or "",
        "cost_type": "LABOR",
        "amount": amount,
        "currency": v["currency"],
        "posting_date": v["posting_date"],
        "source_ref": v["source_refs"][0],
        "quantity": quantity,
        "unit": "h" if quantity is not None else None,
        "rate": rate,
        "employee": employee,
        "material": None,
        "reversal_of": v["reversal_of"],
        "description": v["description"],
    }
    return Output(COST_ENTRY_TOPIC, project, value)


def post_labor(entry: dict[str, Any], state: dict[str, Any] | None, projects: ProjectLookup, employees: Lookup,
               m: LaborCostMapping, cost_entries: bool = False) -> Verdict:  # fmt: skip
    """Handle one TimesheetEntry against the worklog's last ``state``; ``projects`` / ``employees`` read
    the master-data tables (project state of F1, employee rates). ``cost_entries``: each voucher (and
    reversal) is followed by its LABOR CostEntry (:func:`cost_entry`)."""
    gate = version_gate(state, entry["version"])
    if gate is not None:
        return gate
    hours: Decimal = entry["hours"]
    if hours < 0:
        return Reject("invalid_input", f"worklog {entry['worklog_id']} version {entry['version']} has negative "
                                       f"hours ({hours})")  # fmt: skip
    prev = (state or {}).get("voucher")
    posts = entry["op"] != "DELETED" and hours > 0
    project = projects(entry["project"])
    if project is None and posts:
        return Missing(f"project:{entry['project']}",
                       f"project {entry['project']} is unknown (no ProjectChanged seen)")  # fmt: skip
    if project is not None:
        refused = labor_after_close(entry, project)
        if refused is not None:
            return refused
    outputs: list[Output] = []
    voucher: dict[str, Any] | None = None
    booked: tuple[Decimal, Decimal, str] | None = None
    if posts:
        assert project is not None
        code = employee_code(entry, m)
        rate = rate_on(code, entry["work_date"], employees(code), m)
        if rate is None:
            return Missing(f"rate:{code}:{entry['work_date']}",
                           f"no rate for employee {code} on {entry['work_date']}")  # fmt: skip
        hourly, currency = rate
        booked = (hours, hourly, code)
        cc = crosswalk.cost_center_on(list(project.intervals), entry["work_date"])
        total = amount(hours, hourly)
        text = m.description_pattern.format(employee=code, work_date=entry["work_date"], hours=hours, rate=hourly,
                                            currency=currency, project=entry["project"], worklog=entry["worklog_id"])  # fmt: skip
        lines = [_line(1, m.labor_cost_account, cc, entry["project"], total, ZERO, text),
                 _line(2, m.accrued_payroll_account, None, None, ZERO, total, text)]  # fmt: skip
        head = {"company": project.company, "voucher_type": m.voucher_type, "posting_date": entry["work_date"],
                "currency": currency}  # fmt: skip
        number = voucher_no(m.voucher_prefix, entry["worklog_id"], entry["version"])
        voucher = {**head, "voucher_no": number, "lines": lines}
    if prev is not None:
        outputs.append(_reversal(entry, prev, m))
        if cost_entries:
            outputs.append(cost_entry(entry, outputs[-1]))
    if voucher is not None:
        outputs.append(_voucher(entry, voucher["voucher_no"], "voucher", voucher, voucher["lines"], None,
                                voucher["lines"][0]["description"]))  # fmt: skip
        if cost_entries:
            assert booked is not None
            outputs.append(cost_entry(entry, outputs[-1], *booked))
    new_state = {"version": entry["version"], "project": entry["project"], "voucher": voucher}
    out = tuple(outputs)
    return Result("emitted" if out else "ignored", out, with_outputs(new_state, out))


def is_balanced(voucher: dict[str, Any]) -> bool:
    """Sum of debits equals sum of credits, and each line has exactly one non-zero side."""
    lines = voucher["lines"]
    one_side = all((ln["debit"] == 0) != (ln["credit"] == 0) for ln in lines)
    return one_side and sum(ln["debit"] for ln in lines) == sum(ln["credit"] for ln in lines)


def merge_employee(record: dict[str, Any], state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The employees-table state after an Employee record: its dated rates, one per ``valid_from``
    (a higher version replaces); None when the record is older than what is known."""
    entry = {"valid_from": record["valid_from"], "valid_to": record.get("valid_to"),
             "rate": record.get("hourly_cost_rate"), "currency": record.get("currency"), "version": record["version"]}  # fmt: skip
    rates = crosswalk.merge_dated(list((state or {}).get("rates") or []), entry)
    if rates is None:
        return None
    return {"code": record["code"], "rates": rates}


def labor_verdict(entry: dict[str, Any], stored: dict[str, Any] | None, decode: Callable[[bytes], Any],
                  projects: ProjectLookup, employees: Lookup, m: LaborCostMapping,
                  cost_entries: bool = False) -> Verdict:  # fmt: skip
    """F2's verdict on ``entry`` against the worklog's ``stored`` state, its voucher read back from the bytes
    sent (:func:`full_state`). While the schema registry cannot be reached for that, the record waits
    like one missing master data (never dead-lettered at once)."""
    try:
        state = full_state(stored, decode)
    except RegistryError as exc:
        return Missing("schema-registry", f"the previous voucher of worklog {entry['worklog_id']} cannot be "
                                          f"read while the schema registry is unreachable: {exc}")  # fmt: skip
    return post_labor(entry, state, projects, employees, m, cost_entries)
