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
(or a budget ≤ 0) never alerts. The budget comes with BUDGET steps (below): a budget change alone
re-evaluates the crossing; until a project's first BUDGET step reached it, it is read from F1's ``projects``
table.

**Partitioning: one writer per project.** Cost entries (keyed by project), requisitions and orders (keyed
by document number) and budgets (the project topic) are re-keyed by project onto the internal topic
``bizbus.finance.budget-step.v1`` (BudgetStep): COST steps (:func:`route_cost_entry`), DOCUMENT steps with
the document's new committed amount on one project (:func:`route_document`, which keeps the version and the
amounts per project of each document in its own table) and BUDGET steps (:func:`route_project`, from F7's
own agent on the project topic; F1's agent there is untouched: a Faust app hands each record to every
agent of its topic). :func:`apply_step` is the one writer of each project's state, in the step topic's
order, the one order every worker and replay sees.

**Bounded state.** A project's state holds its open documents only (a released, closed or deleted one,
amount 0, is dropped; a requisition an open order covers stays as long as that order does) and at most
``applied_ids_kept`` applied ids; the last transition's outputs. Stale document versions are stopped by the
document's router, which sees them in order.

**Exactly one freeze and one unfreeze per crossing.** ``command_id`` = ``<project>/<crossing>/<action>``
and the alert's event id is derived from ``<project>/<crossing>/<state>`` only, so a crossing decided
again after a crash has the same identity. The project state (totals, applied ids, over, crossing) is one
table value; an input already applied changes nothing and re-sends the outputs of the transition it caused
(recorded in the state), which may never have reached the broker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bizbus.streams.budget_control.config import BudgetControlMapping
from bizbus.streams.cost_centers.state import ProjectState
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

from bizbus import lineage

FLOW = "budget-control"
COST_ENTRY_TOPIC = "bizbus.finance.cost-entry.v1"
REQUISITION_TOPIC = "bizbus.purchase.requisition.v1"
ORDER_TOPIC = "bizbus.purchase.order.v1"
ALERT_TOPIC = "bizbus.finance.budget-alert.v1"
FREEZE_TOPIC = "bizbus.oa.payment-freeze.v1"
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
STEP_TOPIC = "bizbus.finance.budget-step.v1"
PROJECT_TOPIC = "bizbus.pm.project.v1"
Lookup = Callable[[str], dict[str, Any] | None]
ProjectLookup = Callable[[str], ProjectState | None]


@dataclass(frozen=True)
class Budget:
    """What a crossing needs of its project: code, company, budget and currency (from BUDGET steps, or
    from F1's ``projects`` table until the project's first BUDGET step reached the step topic's agent)."""

    project: str
    company: str
    budget: Decimal | None
    currency: str | None


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


def transition_outputs(src_meta: dict[str, Any], project: Budget, state: dict[str, Any], kind: str, n: int,
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


def settle(src_meta: dict[str, Any], by: str, state: dict[str, Any], project: Budget,
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
            "last": None, "currency": currency, "info": None}  # fmt: skip


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



# ------------------------------------------------------------------------------------------ routers
def _step(src_meta: dict[str, Any], role: str, project: str, kind: str, **fields: Any) -> Output:
    """A BudgetStep for ``project`` (the Kafka key of bizbus.finance.budget-step.v1)."""
    value = {"meta": derived_meta(src_meta, role, project, FLOW), "kind": kind, "project": project,
             "entry_id": None, "cost_type": None, "amount": None, "currency": None, "document": None,
             "covers": None, "uncovers": None, "company": None, "budget_amount": None, "project_version": 0, **fields}  # fmt: skip
    return Output(STEP_TOPIC, project, value)


def route_cost_entry(entry: dict[str, Any], projects: ProjectLookup) -> Verdict:
    """A LABOR / MATERIAL CostEntry → a COST step keyed by its project (other cost types are ignored; an
    unknown project waits like missing master data, then dead-letters with the entry's key)."""
    if entry["cost_type"] not in ("LABOR", "MATERIAL"):
        return Result("ignored")
    if projects(entry["project"]) is None:
        return Missing(f"project:{entry['project']}", f"project {entry['project']} is unknown (no ProjectChanged seen)")
    step = _step(entry["meta"], "budget-step", entry["project"], "COST", entry_id=entry["entry_id"],
                 cost_type=entry["cost_type"], amount=_money(entry["amount"]), currency=entry["currency"])  # fmt: skip
    return Result("emitted", (step,))


def route_project(p: dict[str, Any]) -> Verdict:
    """A ProjectChanged → a BUDGET step keyed by the project: a budget change alone re-evaluates the
    project's crossing (the step agent compares versions, so an old one changes nothing)."""
    budget = p.get("budget_amount")
    step = _step(p["meta"], "budget-step", p["project"], "BUDGET", company=p["company"],
                 budget_amount=None if budget is None else _money(budget), currency=p.get("currency"),
                 project_version=p["version"])  # fmt: skip
    return Result("emitted", (step,))


def route_document(doc: dict[str, Any], kind: str, state: dict[str, Any] | None, projects: ProjectLookup,
                   m: BudgetControlMapping) -> Verdict:  # fmt: skip
    """One PurchaseRequisition (``kind`` "REQ") or PurchaseOrder ("PO") against the document's ``state``
    (the version handled, its committed amount per project, the requisition it covers): a DOCUMENT step
    per project whose amount changes (or that the document leaves), carrying the new amount of the document
    on that project and, for an order, the requisition it covers there (``covers``) or no longer covers
    (``uncovers``). The same version again re-sends the recorded steps."""
    gate = version_gate(state, doc["version"])
    if gate is not None:
        return gate
    number = doc["requisition_no"] if kind == "REQ" else doc["order_no"]
    prev = state or {}
    statuses = m.committed_requisition_statuses if kind == "REQ" else m.committed_order_statuses
    live = doc["op"] != "DELETED" and doc["status"] in statuses
    amounts = {k: _money(v) for k, v in document_amounts(doc).items()} if live else {}
    req = doc.get("requisition_no") if kind == "PO" and live else None
    old: dict[str, Any] = prev.get("amounts") or {}
    prev_req = prev.get("req")
    outputs: list[Output] = []
    for code in sorted(set(old) | set(amounts)):
        if projects(code) is None:
            return Missing(f"project:{code}", f"project {code} is unknown (no ProjectChanged seen)")
        covers = req if req and code in amounts else None
        uncovers = prev_req if prev_req and code in old and prev_req != covers else None
        outputs.append(_step(doc["meta"], f"budget-step:{code}", code, "DOCUMENT", document=f"{kind}:{number}",
                             amount=amounts.get(code, ZERO), currency=doc["currency"], covers=covers,
                             uncovers=uncovers))  # fmt: skip
    out = tuple(outputs)
    new_state = with_outputs({"version": doc["version"], "amounts": amounts, "req": req}, out)
    return Result("emitted" if out else "ignored", out, new_state)


# ------------------------------------------------------------------------------------------ the step agent
def _info(state: dict[str, Any], code: str, projects: ProjectLookup) -> Budget | None:
    info = state.get("info")
    if info is not None:
        return Budget(code, info["company"], None if info.get("budget") is None else Decimal(info["budget"]),
                      info.get("currency"))  # fmt: skip
    p = projects(code)
    if p is None:
        return None
    return Budget(code, p.company, None if p.budget is None else Decimal(p.budget), p.currency)


def prune_docs(docs: dict[str, Any]) -> dict[str, Any]:
    """The committed documents worth keeping: an open one (amount ≠ 0) or a requisition an order covers
    (its amount may come later); a closed / cancelled / deleted one is dropped, so a project's state holds
    its open documents only."""
    return {k: d for k, d in docs.items() if Decimal(d.get("amount") or 0) != 0 or d.get("covered_by")}


def apply_step(step: dict[str, Any], state: dict[str, Any] | None, projects: ProjectLookup,
               m: BudgetControlMapping) -> Verdict:  # fmt: skip
    """One BudgetStep against its project's state: the project's one writer. COST adds a cost entry (once
    per ``entry_id``), DOCUMENT sets a document's committed amount, BUDGET sets the budget (a newer project
    version only); then the crossing is settled. A step applied before re-sends the outputs of the
    transition it caused, if it caused the last one."""
    code, kind = step["project"], step["kind"]
    cur = state or _empty(None)
    by = step["entry_id"] if kind == "COST" else step["meta"]["event_id"]
    ids, fresh = remember(cur.get("applied"), by, m.applied_ids_kept)
    if not fresh:
        again = resend(cur, by)
        return Result("reemitted", again) if again else Result("skipped_stale")
    new: dict[str, Any] = {**cur, "applied": ids}
    if kind == "BUDGET":
        info = cur.get("info")
        if info is not None and int(info.get("version") or 0) >= step["project_version"]:
            return Result("skipped_stale", (), new)
        new["info"] = {"company": step["company"], "budget": step["budget_amount"], "currency": step["currency"],
                       "version": step["project_version"]}  # fmt: skip
        if new.get("currency") is None:
            new["currency"] = step["currency"]
    project = _info(new, code, projects)
    if project is None:
        return Missing(f"project:{code}", f"project {code} is unknown (no ProjectChanged seen)")
    if kind in ("COST", "DOCUMENT"):
        if new.get("currency") not in (None, step["currency"]):
            what = f"cost entry {step['entry_id']}" if kind == "COST" else step["document"]
            return Reject("currency_mismatch", f"{what} is in {step['currency']}, project {code} is counted "
                                               f"in {new['currency']}")  # fmt: skip
        new["currency"] = new.get("currency") or step["currency"]
    if kind == "COST":
        if step["cost_type"] not in ("LABOR", "MATERIAL"):
            return Result("ignored", (), new)
        field = "labor" if step["cost_type"] == "LABOR" else "material"
        new[field] = Decimal(cur.get(field) or 0) + Decimal(step["amount"])
    elif kind == "DOCUMENT":
        docs = dict(cur.get("docs") or {})
        doc_id = step["document"]
        docs[doc_id] = {**(docs.get(doc_id) or {}), "amount": Decimal(step["amount"])}
        number = doc_id.partition(":")[2]
        if step.get("uncovers"):
            held = docs.get(f"REQ:{step['uncovers']}") or {}
            if held.get("covered_by") == number:
                docs[f"REQ:{step['uncovers']}"] = {**held, "covered_by": None}
        if step.get("covers"):
            held = docs.get(f"REQ:{step['covers']}") or {"amount": ZERO}
            docs[f"REQ:{step['covers']}"] = {**held, "covered_by": number}
        new["docs"] = prune_docs(docs)
    new, outputs = settle(step["meta"], by, new, project, m)
    return Result("emitted" if outputs else "ignored", outputs, new)
