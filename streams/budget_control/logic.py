"""F7: a project's running cost against its budget → budget alerts and payment-freeze commands.

**Running cost** = labor + material + committed, per project:

* labor and material: the sum of the project's LABOR (F2) and MATERIAL (F6) CostEntries
  (bizbus.finance.cost-entry.v1; a reversal is an entry of its own with a negative amount). Each entry
  counts once by ``entry_id`` (the ids applied are kept in the project's state, streams/runtime/applied.py).
  Other cost types (SUBCONTRACT, EXPENSE, OVERHEAD) are not part of the alert (BudgetAlert has no field
  for them) and are ignored.
* committed: purchases decided but not yet booked as cost. Decided here: a purchase requisition
  (bizbus.purchase.requisition.v1, F3) counts in the ``committed_requisition_statuses`` (default SUBMITTED,
  APPROVED) until a purchase order (bizbus.purchase.order.v1, F4's approved documents) names it in
  ``requisition_no``: the order then replaces it (counted once). An order counts in the
  ``committed_order_statuses`` (default SUBMITTED, APPROVED); CANCELLED releases it (and the requisition it
  named counts again if still open), CLOSED means received and invoiced: its cost reaches the project
  through the goods issues of F6, so it is no longer committed. DELETED releases. A document's amount is its
  ``total_amount``, or per line (``amount``, else quantity × unit_price, else 0) when lines name other
  projects than the header; each project gets its lines' share. The latest version of each document counts
  (replace, not add), so a document handled twice changes nothing.

**Crossings** (hysteresis). The alert line is budget × (1 + alert_percent / 100), the back-under line
budget × (1 + (alert_percent − hysteresis_percent) / 100). A project not over whose running cost goes
above the alert line is OVER: crossing n = previous crossing + 1, a BudgetAlert OVER and a FREEZE
command. A project over whose running cost falls to or below the back-under line is BACK_UNDER (same n):
a BudgetAlert BACK_UNDER and an UNFREEZE command. In between nothing changes. A project without a budget
(or a budget ≤ 0) never alerts. The budget is read from the ``projects`` table (F1) when a cost or document
of the project comes; a budget change alone re-evaluates nothing until the project's next record.

**Exactly one freeze and one unfreeze per crossing.** ``command_id`` = ``<project>/<crossing>/<action>``
and the alert's event id is derived from ``<project>/<crossing>/<state>`` only, so a crossing decided
again after a crash has the same identity. The project state (totals, applied ids, over, crossing) is one
table value; an input already applied changes nothing and re-sends the outputs of the transition it caused
(recorded in the state), which may never have reached the broker.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bizbus.streams.budget_control.config import BudgetControlMapping
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.runtime.applied import remember
from bizbus.streams.runtime.results import Missing, Output, Reject, Result, Verdict

from bizbus import lineage

FLOW = "budget-control"
COST_ENTRY_TOPIC = "bizbus.finance.cost-entry.v1"
REQUISITION_TOPIC = "bizbus.purchase.requisition.v1"
ORDER_TOPIC = "bizbus.purchase.order.v1"
ALERT_TOPIC = "bizbus.finance.budget-alert.v1"
FREEZE_TOPIC = "bizbus.oa.payment-freeze.v1"
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
PROJECTS_OUT = "_projects"  # the verdict state's entry with the changed project states (split off by store)
Lookup = Callable[[str], dict[str, Any] | None]
ProjectLookup = Callable[[str], ProjectState | None]


def committed(state: dict[str, Any]) -> Decimal:
    """Open orders plus open requisitions no order names."""
    total = ZERO
    for doc_id, doc in (state.get("docs") or {}).items():
        if doc_id.startswith("PO:") or not doc.get("covered_by"):
            total += Decimal(doc.get("amount") or 0)
    return total


def running(state: dict[str, Any]) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(labor, material, committed, running) of a project state."""
    labor, material = Decimal(state.get("labor") or 0), Decimal(state.get("material") or 0)
    com = committed(state)
    return labor, material, com, labor + material + com


def crossing(over: bool, amount: Decimal, budget: Decimal | None, m: BudgetControlMapping) -> str | None:
    """"OVER", "BACK_UNDER" or None: the transition of a project (``over`` now) whose running cost is
    ``amount``, by the alert line and the back-under line (hysteresis) of its ``budget``."""
    if budget is None or budget <= 0:
        return None
    if not over and amount > budget * (1 + m.alert_percent / 100):
        return "OVER"
    if over and amount <= budget * (1 + (m.alert_percent - m.hysteresis_percent) / 100):
        return "BACK_UNDER"
    return None


def _money(x: Decimal) -> Decimal:
    return Decimal(x).quantize(CENT, rounding=ROUND_HALF_UP)


def transition_outputs(src_meta: dict[str, Any], project: ProjectState, state: dict[str, Any], kind: str, n: int,
                       m: BudgetControlMapping) -> tuple[Output, Output]:  # fmt: skip
    """The BudgetAlert and the payment-freeze command of crossing ``n`` (``kind`` OVER / BACK_UNDER)."""
    labor, material, com, total = running(state)
    budget = Decimal(project.budget or 0)
    currency = project.currency or state.get("currency") or "CNY"
    alert_id = lineage.event_id("bizbus", "budget-alert", project.project, n, kind)
    alert = {
        "meta": lineage.meta(alert_id, project.project, "bizbus", src_meta["occurred_at"], src_meta["event_id"],
                             {"flow": FLOW}),  # fmt: skip
        "project": project.project, "company": project.company, "state": kind, "budget_amount": _money(budget),
        "threshold_percent": Decimal(m.alert_percent).quantize(Decimal("0.0001")),
        "labor_amount": _money(labor), "material_amount": _money(material), "committed_amount": _money(com),
        "running_amount": _money(total), "currency": currency, "crossing": n,
    }  # fmt: skip
    action = "FREEZE" if kind == "OVER" else "UNFREEZE"
    command_id = f"{project.project}/{n}/{action}"
    used = (total / budget * 100).quantize(Decimal("0.1")) if budget else Decimal(0)
    reason = (f"running cost {_money(total)} {currency} is {used}% of budget {_money(budget)} "
              f"(labor {_money(labor)}, material {_money(material)}, committed {_money(com)}); "
              + ("over the alert line" if kind == "OVER" else "back under the line"))  # fmt: skip
    command = {
        "meta": lineage.meta(lineage.event_id("bizbus", "payment-freeze", command_id), project.project, "bizbus",
                             src_meta["occurred_at"], alert_id, {"flow": FLOW}),  # fmt: skip
        "command_id": command_id, "project": project.project, "company": project.company, "action": action,
        "reason": reason, "alert_id": alert_id, "crossing": n,
    }  # fmt: skip
    return Output(ALERT_TOPIC, project.project, alert), Output(FREEZE_TOPIC, project.project, command)


def settle(src_meta: dict[str, Any], by: str, state: dict[str, Any], project: ProjectState,
           m: BudgetControlMapping) -> tuple[dict[str, Any], tuple[Output, ...]]:  # fmt: skip
    """A project state after a change: the transition (if any), its outputs recorded as the state's ``last``."""
    kind = crossing(bool(state.get("over")), running(state)[3], project.budget and Decimal(project.budget), m)
    if kind is None:
        return state, ()
    n = int(state.get("crossing") or 0) + (1 if kind == "OVER" else 0)
    outputs = transition_outputs(src_meta, project, state, kind, n, m)
    new = {**state, "over": kind == "OVER", "crossing": n,
           "last": {"by": by, "outputs": [o.to_state() for o in outputs]}}  # fmt: skip
    return new, outputs


def resend(state: dict[str, Any] | None, by: str) -> tuple[Output, ...]:
    """The outputs of the transition ``by`` caused, when it caused the project's last one (already applied)."""
    last = (state or {}).get("last") or {}
    if last.get("by") != by:
        return ()
    return tuple(Output.from_state(o) for o in last.get("outputs") or ())


def _empty(currency: str | None) -> dict[str, Any]:
    return {"labor": ZERO, "material": ZERO, "docs": {}, "applied": [], "over": False, "crossing": 0,
            "last": None, "currency": currency}  # fmt: skip


def apply_cost_entry(entry: dict[str, Any], state: dict[str, Any] | None, projects: ProjectLookup,
                     m: BudgetControlMapping) -> Verdict:  # fmt: skip
    """One CostEntry against its project's ``state``."""
    if entry["cost_type"] not in ("LABOR", "MATERIAL"):
        return Result("ignored")
    project = projects(entry["project"])
    if project is None:
        return Missing(f"project:{entry['project']}", f"project {entry['project']} is unknown (no ProjectChanged seen)")
    cur = state or _empty(project.currency or entry["currency"])
    if cur.get("currency") not in (None, entry["currency"]):
        return Reject("currency_mismatch", f"cost entry {entry['entry_id']} is in {entry['currency']}, project "
                                           f"{entry['project']} is counted in {cur['currency']}")  # fmt: skip
    by = entry["entry_id"]
    ids, fresh = remember(cur.get("applied"), by, m.applied_ids_kept)
    if not fresh:
        again = resend(cur, by)
        return Result("reemitted", again) if again else Result("skipped_stale")
    field = "labor" if entry["cost_type"] == "LABOR" else "material"
    new = {**cur, "applied": ids, "currency": cur.get("currency") or entry["currency"],
           field: Decimal(cur.get(field) or 0) + entry["amount"]}  # fmt: skip
    new, outputs = settle(entry["meta"], by, new, project, m)
    return Result("emitted" if outputs else "ignored", outputs, new)


def line_amount(line: dict[str, Any]) -> Decimal:
    if line.get("amount") is not None:
        return Decimal(line["amount"])
    if line.get("unit_price") is not None:
        return _money(line["quantity"] * line["unit_price"])
    return ZERO


def document_amounts(doc: dict[str, Any]) -> dict[str, Decimal]:
    """Committed amount per project of a requisition / order: its total on the header's project, or each
    line's amount on its own project when lines name another one; lines without project are not counted."""
    head = doc.get("project")
    lines = doc.get("lines") or []
    if all(ln.get("project") in (None, head) for ln in lines):
        if head is None:
            return {}
        total = doc.get("total_amount")
        return {head: Decimal(total) if total is not None else sum((line_amount(ln) for ln in lines), ZERO)}
    out: dict[str, Decimal] = {}
    for ln in lines:
        p = ln.get("project") or head
        if p is not None:
            out[p] = out.get(p, ZERO) + line_amount(ln)
    return out


def apply_document(doc: dict[str, Any], kind: str, state: dict[str, Any] | None, project_states: Lookup,
                   projects: ProjectLookup, m: BudgetControlMapping) -> Verdict:  # fmt: skip
    """One PurchaseRequisition (``kind`` "REQ") or PurchaseOrder ("PO") against the document's ``state``:
    the project states it changes go in the new state under ``_projects``."""
    number = doc["requisition_no"] if kind == "REQ" else doc["order_no"]
    prev = state or {}
    last = prev.get("version")
    if last is not None and doc["version"] < last:
        return Result("skipped_stale")
    statuses = m.committed_requisition_statuses if kind == "REQ" else m.committed_order_statuses
    live = doc["op"] != "DELETED" and doc["status"] in statuses
    amounts = document_amounts(doc) if live else {}
    req = doc.get("requisition_no") if kind == "PO" and live else None
    old: dict[str, Any] = prev.get("amounts") or {}
    touched = sorted(set(old) | set(amounts))
    doc_id, by = f"{kind}:{number}", f"{kind}:{number}@{doc['version']}"
    changed: dict[str, dict[str, Any]] = {}
    outputs: list[Output] = []
    for code in touched:
        project = projects(code)
        if project is None:
            return Missing(f"project:{code}", f"project {code} is unknown (no ProjectChanged seen)")
        cur = project_states(code) or _empty(project.currency or doc["currency"])
        if cur.get("currency") not in (None, doc["currency"]):
            return Reject("currency_mismatch", f"{doc_id} is in {doc['currency']}, project {code} is counted "
                                               f"in {cur['currency']}")  # fmt: skip
        docs = dict(cur.get("docs") or {})
        known = docs.get(doc_id) or {}
        if int(known.get("v") or 0) >= doc["version"]:  # this version (or a later one) is counted already
            outputs.extend(resend(cur, by))
            continue
        docs[doc_id] = {**known, "v": doc["version"], "amount": amounts.get(code, ZERO)}
        if kind == "PO":
            prev_req = prev.get("req")
            if prev_req and prev_req != req and code in old:
                held = docs.get(f"REQ:{prev_req}") or {}
                if held.get("covered_by") == number:
                    docs[f"REQ:{prev_req}"] = {**held, "covered_by": None}
            if req and code in amounts:
                held = docs.get(f"REQ:{req}") or {"v": 0, "amount": ZERO}
                docs[f"REQ:{req}"] = {**held, "covered_by": number}
        new = {**cur, "docs": docs, "currency": cur.get("currency") or doc["currency"]}
        new, out = settle(doc["meta"], by, new, project, m)
        outputs.extend(out)
        changed[code] = new
    new_state = {"version": doc["version"], "amounts": amounts, "req": req, "outputs": [], PROJECTS_OUT: changed}
    out_t = tuple(outputs)
    return Result("emitted" if out_t else "ignored", out_t, new_state)
