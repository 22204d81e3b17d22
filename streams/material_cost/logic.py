"""F6: goods receipts keep a moving average cost per material; a goods issue to a project books that cost.

**Valuation scope** (decided here, ``valuation_scope`` in the mapping): one moving average per company +
warehouse + material (``"<company>/<warehouse>/<material>"``, 分仓核算), or with ``company`` one per
company + material with all warehouses pooled (``"<company>/*/<material>"``). Its state is the quantity on
hand and the inventory value; the average is value / quantity.

**Receipts** (bizbus.inventory.goods-receipt.v1): each line adds its quantity and its amount (the line's
``amount``, else quantity × unit_price rounded to cents; an unpriced line or a quantity ≤ 0 is refused,
``invalid_input``). A later version of a receipt first takes back what the previous one added, then adds
its own lines; DELETED only takes back. A receipt sends nothing.

**Issues** (bizbus.inventory.goods-issue.v1): each line for a project (the line's ``project``, else the
issue's; lines without one are not F6's: a sales shipment) is valued at the moving average of its
valuation key *when the issue is handled*: quantity × value / quantity-on-hand, rounded to cents; an issue
of the whole quantity on hand takes the whole remaining value, so nothing is left behind by rounding.
The quantity and that cost leave the stock; the average does not change. It sends per line a MATERIAL
CostEntry (``entry_id`` ``<voucher_no>-<line_no>``, keyed by the project) on the project's cost center
(the dated crosswalk of the ``projects`` table on the posting date, as F2), then one balanced voucher
``<prefix>-<issue>-<version>``: a debit per line (material cost account, cost center, project) and one
credit (inventory account) of the total. A later version first reverses (红字): a voucher
``...-<new version>-R`` with the sides swapped and ``reversal_of`` set, negative cost entries with
``reversal_of``, and the quantity and cost go back to stock at the cost they left with; then the new
version is valued. DELETED only reverses.

**No cost** (no receipt seen for the valuation key, nothing on hand): the issue waits like for missing
master data (the flow's ``master_data_grace_seconds``), then goes to the dead letters
(``unknown_master_data``) with its key. No fallback to a standard cost: an invented cost would be booked
to the project and the ERP and would have to be reversed by hand once the real receipt comes.
An unknown project or one without a cost center on the posting date waits and dead-letters the same way;
an issue that happened after its project was completed / closed (F8) is refused (``cost_center_closed``,
as F2's labor; a change after the close is refused as a whole, a deletion is still reversed); a currency
other than the valuation's is refused (``currency_mismatch``).

**Partitioning: one writer per moving average.** Receipts (keyed by receipt number) and issues (keyed by
issue number) of one material sit in different partitions. Everything that changes a moving average is
therefore re-keyed onto the internal topic ``bizbus.finance.material-cost-step.v1`` (MaterialCostStep)
by the average's **step key** ``"<company>/<warehouse>"`` (``"<company>/*"`` with the company scope): the
valuation key without the material. One agent (the step agent) owns every average of a step key: the
``material-costs`` states (one per valuation key) and the ``material-issues`` states (one per step key and
issue: what its version booked). Decided here: the step key is the warehouse, not the material, because a
goods issue (and a receipt) has ONE warehouse: all lines of an issue land in one step, are valued there
one after the other in the step topic's order and assembled into one voucher (no chain across
partitions, no partial voucher). The price: the averages of one warehouse are computed in one partition.
The step topic's order is the one order every worker and every replay sees, so the cost of an issue no
longer depends on which topic a worker happened to read first.

* the **receipt router** (bizbus.inventory.goods-receipt.v1, state ``material-receipts``: the version
  handled and what it booked) sends per step key one RECEIPT step with the moves (valuation key, quantity,
  value) of the version: its own lines minus what the previous version booked;
* the **issue router** (bizbus.inventory.goods-issue.v1, state ``material-issue-routes``: the version and
  step key routed) checks the lines' projects and cost centers (waiting / dead letters as below), and that
  each valuation key has a cost (the ``material-on-hand`` GlobalTable, which the step agent keeps beside
  the exact ``material-costs``: an issue of a material no receipt was applied for, or with nothing on hand,
  waits, then goes to the dead letters with the issue's key), then sends one ISSUE step (the
  lines, their projects and cost centers) to its step key; a version whose warehouse moved first sends a
  REVERSE step to the old step key;
* the **step agent** values (see above), reverses the previous version of the issue from what its
  ``material-issues`` state recorded, and sends the cost entries and the voucher. An issue step that finds
  nothing on hand (another issue took it after the router looked) is dead-lettered (``unknown_master_data``,
  keyed by the step key): replayed once stock is there, it is valued then.

**Exactly once.** A step is applied once per moving average: each average keeps the ids of the steps it
applied (streams/runtime/applied.py) and, per issue step, the costs it gave (``took``, as bounded), so a
step delivered again after a crash that wrote some states of its batch but not others is valued exactly
as the first time. An issue state records what its version applied (``effects``) and the outputs sent:
the same version again re-applies under the guard and re-sends them. A receipt or issue router re-sends
the steps recorded for a version when the same version comes again (same ids).

Not promised: a receipt step in another currency than its average is dead-lettered by the step agent
(``currency_mismatch``) after the router recorded the version as booked; fix and replay the step.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.labor_cost.logic import voucher_no
from bizbus.streams.material_cost.config import MaterialCostMapping
from bizbus.streams.runtime import crosswalk
from bizbus.streams.runtime.applied import remember
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

FLOW = "material-cost"
RECEIPT_TOPIC = "bizbus.inventory.goods-receipt.v1"
ISSUE_TOPIC = "bizbus.inventory.goods-issue.v1"
COST_ENTRY_TOPIC = "bizbus.finance.cost-entry.v1"
VOUCHER_TOPIC = "bizbus.finance.voucher.v1"
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
UNIT_COST = Decimal("0.000001")
MATERIALS = "_materials"  # the verdict state's entry with the changed moving-average states (split off by store)
STEP_TOPIC = "bizbus.finance.material-cost-step.v1"
Lookup = Callable[[str], dict[str, Any] | None]
ProjectLookup = Callable[[str], ProjectState | None]


def valuation_key(company: str, warehouse: str, material: str, scope: str) -> str:
    """The key of a moving average: ``<company>/<warehouse>/<material>``, or ``<company>/*/<material>``."""
    return f"{step_key(company, warehouse, scope)}/{material}"


def step_key(company: str, warehouse: str, scope: str) -> str:
    """The step topic's key of the averages of a warehouse (``<company>/*`` with the company scope)."""
    return f"{company}/{warehouse if scope == 'warehouse' else '*'}"


def average(state: dict[str, Any] | None) -> Decimal | None:
    """The moving average cost per unit (value / quantity); None without stock or with a negative value."""
    if not state or Decimal(state["qty"]) <= 0 or Decimal(state["value"]) < 0:
        return None
    return Decimal(state["value"]) / Decimal(state["qty"])


def issue_cost(state: dict[str, Any] | None, qty: Decimal) -> Decimal | None:
    """The cost of issuing ``qty`` at the moving average: rounded to cents; the whole quantity on hand takes
    the whole value. None when there is no average (no receipt, nothing on hand)."""
    avg = average(state)
    if avg is None:
        return None
    assert state is not None
    if qty == Decimal(state["qty"]):
        return Decimal(state["value"]).quantize(CENT, rounding=ROUND_HALF_UP)
    return (qty * avg).quantize(CENT, rounding=ROUND_HALF_UP)


class Book:
    """The moving-average states one input event changes, applied in order on a local view: an event whose
    id a state already holds (it was applied before a crash) reads that state but changes it no more."""

    def __init__(self, materials: Lookup, event_id: str, limit: int) -> None:
        self.materials, self.event_id, self.limit = materials, event_id, limit
        self.changed: dict[str, dict[str, Any]] = {}
        self.done: set[str] = set()  # keys that already hold the event
        self.recorded: dict[str, list[str]] = {}  # key -> costs still to hand out of an event applied before

    def get(self, key: str) -> dict[str, Any] | None:
        return self.changed.get(key) or self.materials(key)

    def holds(self, key: str) -> bool:
        """The stored state of ``key`` already applied this event (before a crash)."""
        if key in self.done:
            return True
        if key in self.changed:
            return False
        stored = self.materials(key) or {}
        if self.event_id in (stored.get("applied") or ()):
            self.done.add(key)
            return True
        return False

    def take(self, key: str, qty: Decimal, currency: str) -> Decimal | None:
        """Issue ``qty`` at the moving average: the cost (recorded in the state's ``took``), or the cost it
        recorded when the event was applied before; None without an average."""
        if self.holds(key):
            recorded = self.recorded.setdefault(key, list(((self.materials(key) or {}).get("took") or {})
                                                           .get(self.event_id) or ()))  # fmt: skip
            return Decimal(recorded.pop(0)) if recorded else issue_cost(self.get(key), qty)
        cost = issue_cost(self.get(key), qty)
        if cost is None:
            return None
        self.add(key, -qty, -cost, currency)
        cur = self.changed[key]
        took = dict(cur.get("took") or {})
        took[self.event_id] = [*(took.get(self.event_id) or []), str(cost)]
        while len(took) > self.limit:
            del took[next(iter(took))]
        cur["took"] = took
        return cost

    def add(self, key: str, qty: Decimal, value: Decimal, currency: str) -> None:
        if self.holds(key):
            return
        cur = self.changed.get(key)
        if cur is None:
            stored = self.materials(key) or {"qty": Decimal(0), "value": ZERO, "currency": currency, "applied": []}
            ids, fresh = remember(stored.get("applied"), self.event_id, self.limit)
            if not fresh:
                self.done.add(key)
                return
            cur = self.changed[key] = {**stored, "applied": ids}
        cur["qty"] = Decimal(cur["qty"]) + qty
        cur["value"] = Decimal(cur["value"]) + value


def _currency_of(book: Book, key: str, currency: str) -> Reject | None:
    state = book.get(key)
    if state is not None and state.get("currency") not in (None, currency):
        return Reject("currency_mismatch", f"{key} is valued in {state['currency']}, the document in {currency}")
    return None


def receipt_amount(line: dict[str, Any]) -> Decimal | None:
    """A receipt line's amount: ``amount``, else quantity × unit_price to cents; None when unpriced."""
    if line.get("amount") is not None:
        return Decimal(line["amount"])
    if line.get("unit_price") is not None:
        return (line["quantity"] * line["unit_price"]).quantize(CENT, rounding=ROUND_HALF_UP)
    return None


def _step(src_meta: dict[str, Any], role: str, key: str, kind: str, doc: dict[str, Any], number: str,
          **fields: Any) -> Output:  # fmt: skip
    """A MaterialCostStep for step key ``key`` (the Kafka key of bizbus.finance.material-cost-step.v1)."""
    value = {"meta": derived_meta(src_meta, role, number, FLOW), "kind": kind, "step_key": key, "document": number,
             "version": doc["version"], "op": doc["op"], "company": doc["company"], "currency": doc["currency"],
             "source_system": src_meta["source_system"], "posting_date": doc.get("posting_date"), "moves": [],
             "lines": [], **fields}  # fmt: skip
    return Output(STEP_TOPIC, key, value)


def route_receipt(r: dict[str, Any], state: dict[str, Any] | None, m: MaterialCostMapping) -> Verdict:
    """One GoodsReceipt against the receipt's last ``state`` (the version handled, what it booked): per step
    key a RECEIPT step with the moves of this version (its lines minus what the previous version booked;
    DELETED only takes back). The same version again re-sends the recorded steps."""
    gate = version_gate(state, r["version"])
    if gate is not None:
        return gate
    prev = state or {}
    booked: list[list[Any]] = []
    if r["op"] != "DELETED":
        for line in r["lines"]:
            qty = line["quantity"]
            amount = receipt_amount(line)
            if qty <= 0 or amount is None or amount < 0:
                why = "has no unit price or amount" if amount is None else f"has quantity {qty}, amount {amount}"
                return Reject("invalid_input", f"receipt {r['receipt_no']} version {r['version']} line "
                                               f"{line['line_no']} ({line['material']}) {why}")  # fmt: skip
            booked.append([valuation_key(r["company"], r["warehouse"], line["material"], m.valuation_scope),
                           qty, amount])  # fmt: skip
    moves: dict[str, dict[str, list[Decimal]]] = {}
    for k, q, v in [[k, -Decimal(q), -Decimal(v)] for k, q, v in prev.get("booked") or []] + booked:
        per_key = moves.setdefault(k.rpartition("/")[0], {})
        acc = per_key.setdefault(k, [Decimal(0), ZERO])
        acc[0] += Decimal(q)
        acc[1] += Decimal(v)
    outputs = tuple(
        _step(r["meta"], f"step:{key}", key, "RECEIPT", r, r["receipt_no"],
              moves=[{"valuation_key": k, "quantity": q, "amount": v} for k, (q, v) in sorted(per.items())])
        for key, per in sorted(moves.items())
    )  # fmt: skip
    new_state = with_outputs({"version": r["version"], "booked": booked}, outputs)
    return Result("emitted" if outputs else "ignored", outputs, new_state)


def route_issue(r: dict[str, Any], state: dict[str, Any] | None, on_hand: Callable[[str], bool],
                projects: ProjectLookup, m: MaterialCostMapping) -> Verdict:  # fmt: skip
    """One GoodsIssue against the issue's last routed ``state`` (version, step key): the lines for projects
    checked (project known, not closed, a cost center on the posting date, ``on_hand`` of the valuation key:
    a moving average with stock is known), then one ISSUE step to the issue's step key (and a REVERSE step
    to the old one when the warehouse moved). The same version again re-sends the recorded steps."""
    gate = version_gate(state, r["version"])
    if gate is not None:
        return gate
    prev = state or {}
    old_key = prev.get("step_key")
    key = step_key(r["company"], r["warehouse"], m.valuation_scope)
    lines: list[dict[str, Any]] = []
    if r["op"] != "DELETED":
        for line in r["lines"]:
            code = line.get("project") or r.get("project")
            qty: Decimal = line["quantity"]
            if code is None or qty == 0:
                continue
            if qty < 0:
                return Reject("invalid_input", f"issue {r['issue_no']} version {r['version']} line {line['line_no']} "
                                               f"has negative quantity {qty}")  # fmt: skip
            project = projects(code)
            if project is None:
                return Missing(f"project:{code}", f"project {code} is unknown (no ProjectChanged seen)")
            if project.closed_at is not None and r["meta"]["occurred_at"] > project.closed_at:
                return Reject("cost_center_closed", f"project {code} was closed on {project.closed_on}; issue "
                                                    f"{r['issue_no']} version {r['version']} came after that")  # fmt: skip
            cc = crosswalk.cost_center_on(list(project.intervals), r["posting_date"])
            if cc is None:
                return Missing(f"cost-center:{code}", f"project {code} has no cost center on {r['posting_date']}")
            vkey = valuation_key(r["company"], r["warehouse"], line["material"], m.valuation_scope)
            if not on_hand(vkey):
                return Missing(f"cost:{vkey}", f"no moving average cost for {vkey}: no goods receipt seen or "
                                               f"nothing on hand (issue {r['issue_no']} line {line['line_no']})")  # fmt: skip
            lines.append({"line_no": line["line_no"], "material": line["material"], "quantity": qty,
                          "unit": line["unit"], "project": code, "cost_center": cc, "valuation_key": vkey})  # fmt: skip
    outputs: list[Output] = []
    if old_key is not None and old_key != key:
        outputs.append(_step(r["meta"], f"step:reverse:{old_key}", old_key, "REVERSE", r, r["issue_no"]))
    if lines or old_key == key:
        outputs.append(_step(r["meta"], f"step:{key}", key, "ISSUE", r, r["issue_no"], lines=lines))
    routed = key if lines or old_key == key else None
    out = tuple(outputs)
    new_state = with_outputs({"version": r["version"], "step_key": routed}, out)
    return Result("emitted" if out else "ignored", out, new_state)


def apply_receipt_step(step: dict[str, Any], materials: Lookup, m: MaterialCostMapping) -> Verdict:
    """A RECEIPT step: its moves added to their moving averages (once per average)."""
    book = Book(materials, step["meta"]["event_id"], m.applied_ids_kept)
    for move in step["moves"]:
        bad = _currency_of(book, move["valuation_key"], step["currency"])
        if bad is not None:
            return bad
        book.add(move["valuation_key"], Decimal(move["quantity"]), Decimal(move["amount"]), step["currency"])
    return Result("ignored", (), {MATERIALS: book.changed})


def _line(no: int, account: str, cc: str | None, project: str | None, debit: Decimal, credit: Decimal,
          text: str) -> dict[str, Any]:  # fmt: skip
    return {"line_no": no, "account_code": account, "cost_center": cc, "project": project,
            "debit": debit, "credit": credit, "description": text}  # fmt: skip


def _voucher(r: dict[str, Any], head: dict[str, Any], role: str, reversal_of: str | None, text: str) -> Output:
    value = {
        "meta": derived_meta(r["meta"], role, r["issue_no"], FLOW),
        "voucher_no": head["voucher_no"],
        "company": head["company"],
        "voucher_type": head["voucher_type"],
        "posting_date": head["posting_date"],
        "currency": head["currency"],
        "exchange_rate": None,
        "lines": head["lines"],
        "reversal_of": reversal_of,
        "source_refs": [{"system": r["meta"]["source_system"], "document_type": "goods_issue",
                         "document_no": r["issue_no"], "line_no": None}],  # fmt: skip
        "description": text,
    }
    return Output(VOUCHER_TOPIC, head["voucher_no"], value)


def _cost_entry(r: dict[str, Any], b: dict[str, Any], entry_id: str, sign: int, posting_date: Any,
                currency: str, reversal_of: str | None, text: str) -> Output:  # fmt: skip
    role = f"cost-entry-{b['line_no']}" if reversal_of is None else f"cost-entry-reversal-{b['line_no']}"
    value = {
        "meta": derived_meta(r["meta"], role, b["project"], FLOW),
        "entry_id": entry_id,
        "company": r["company"],
        "project": b["project"],
        "cost_center": b["cost_center"],
        "cost_type": "MATERIAL",
        "amount": sign * b["cost"],
        "currency": currency,
        "posting_date": posting_date,
        "source_ref": {"system": r["meta"]["source_system"], "document_type": "goods_issue",
                       "document_no": r["issue_no"], "line_no": b["line_no"]},  # fmt: skip
        "quantity": sign * b["qty"],
        "unit": b["unit"],
        "rate": b["unit_cost"],
        "employee": None,
        "material": b["material"],
        "reversal_of": reversal_of,
        "description": text,
    }
    return Output(COST_ENTRY_TOPIC, b["project"], value)


def _reverse(r: dict[str, Any], prev: dict[str, Any], book: Book, m: MaterialCostMapping) -> list[Output]:
    """Back to stock at the cost each line left with; the reversal cost entries and voucher."""
    voucher = prev.get("voucher")
    outputs: list[Output] = []
    number = voucher_no(m.voucher_prefix, r["issue_no"], r["version"], "-R")
    why = {"DELETED": "deleted", "MOVED": f"moved to another warehouse (version {r['version']})"}.get(
        r["op"], f"changed (version {r['version']})")
    posting = max(local_date(r["meta"]["occurred_at"], m.timezone), prev["posting_date"])
    for b in prev.get("booked") or []:
        book.add(b["key"], b["qty"], b["cost"], prev["currency"])
        outputs.append(_cost_entry(r, b, f"{number}-{b['line_no']}", -1, posting, prev["currency"], b["entry_id"],
                                   f"Reversal of {b['entry_id']}: issue {r['issue_no']} {why}"))  # fmt: skip
    if voucher is not None:
        lines = [_line(ln["line_no"], ln["account_code"], ln["cost_center"], ln["project"], ln["credit"], ln["debit"],
                       f"Reversal: {ln['description']}") for ln in voucher["lines"]]  # fmt: skip
        head = {**voucher, "voucher_no": number, "posting_date": max(posting, voucher["posting_date"]), "lines": lines}
        outputs.append(_voucher(r, head, "reversal", voucher["voucher_no"],
                                f"Reversal of {voucher['voucher_no']}: issue {r['issue_no']} {why}"))  # fmt: skip
    return outputs


def issue_state_key(step: dict[str, Any]) -> str:
    """The ``material-issues`` key of an issue at a step key: ``<step key>#<issue no>``."""
    return f"{step['step_key']}#{step['document']}"


def apply_issue_step(step: dict[str, Any], state: dict[str, Any] | None, materials: Lookup,
                     m: MaterialCostMapping) -> Verdict:  # fmt: skip
    """An ISSUE or REVERSE step against the issue's ``state`` at this step key: the previous version
    reversed (红字) at the cost it left with, then (ISSUE) the lines valued at their moving averages in the
    step topic's order; the cost entries and one balanced voucher. ``materials`` reads the averages."""
    r = {"meta": {**step["meta"], "source_system": step["source_system"]}, "issue_no": step["document"],
         "version": step["version"], "op": step["op"], "company": step["company"], "currency": step["currency"],
         "posting_date": step["posting_date"]}  # fmt: skip
    prev = state or {}
    last = prev.get("version")
    event_id = step["meta"]["event_id"]
    if last is not None and r["version"] < last:
        return Result("skipped_stale")
    if last is not None and r["version"] == last:  # again after a crash: re-apply guarded, re-send as recorded
        book = Book(materials, event_id, m.applied_ids_kept)
        for key, qty, value, currency in prev.get("effects") or []:
            book.add(key, qty, value, currency)
        outputs = tuple(Output.from_state(o) for o in prev.get("outputs") or ())
        return Result("reemitted", outputs, {**prev, MATERIALS: book.changed})
    book = Book(materials, event_id, m.applied_ids_kept)
    effects: list[list[Any]] = [[b["key"], b["qty"], b["cost"], prev["currency"]] for b in prev.get("booked") or []]
    if step["kind"] == "REVERSE":
        r["op"] = "MOVED"
    outputs = _reverse(r, prev, book, m) if prev.get("booked") else []
    booked: list[dict[str, Any]] = []
    number = voucher_no(m.voucher_prefix, r["issue_no"], r["version"])
    for line in step["lines"] if step["kind"] == "ISSUE" else ():
        key, qty = line["valuation_key"], Decimal(line["quantity"])
        bad = _currency_of(book, key, r["currency"])
        if bad is not None:
            return bad
        cost = book.take(key, qty, r["currency"])
        if cost is None:
            return Reject("unknown_master_data", f"no moving average cost for {key}: nothing on hand (issue "
                                                 f"{r['issue_no']} version {r['version']} line {line['line_no']})")  # fmt: skip
        unit_cost = (cost / qty).quantize(UNIT_COST, rounding=ROUND_HALF_UP)
        effects.append([key, -qty, -cost, r["currency"]])
        booked.append({"key": key, "line_no": line["line_no"], "material": line["material"], "qty": qty,
                       "unit": line["unit"], "cost": cost, "unit_cost": unit_cost, "project": line["project"],
                       "cost_center": line["cost_center"], "entry_id": f"{number}-{line['line_no']}"})  # fmt: skip
    voucher = None
    for b in booked:
        text = m.description_pattern.format(material=b["material"], quantity=b["qty"], unit=b["unit"],
                                            unit_cost=b["unit_cost"], project=b["project"], issue=r["issue_no"])  # fmt: skip
        outputs.append(_cost_entry(r, b, b["entry_id"], 1, r["posting_date"], r["currency"], None, text))
    debits = [b for b in booked if b["cost"] != 0]
    if debits:
        total = sum((b["cost"] for b in debits), ZERO)
        lines = [_line(n, m.material_cost_account, b["cost_center"], b["project"], b["cost"], ZERO,
                       f"Material {b['material']} {b['qty']} {b['unit']} to {b['project']}")
                 for n, b in enumerate(debits, 1)]  # fmt: skip
        lines.append(_line(len(lines) + 1, m.inventory_account, None, None, ZERO, total,
                           f"Inventory out: issue {r['issue_no']}"))  # fmt: skip
        voucher = {"voucher_no": number, "company": r["company"], "voucher_type": m.voucher_type,
                   "posting_date": r["posting_date"], "currency": r["currency"], "lines": lines}  # fmt: skip
        outputs.append(_voucher(r, voucher, "voucher", None, f"Material issue {r['issue_no']} to projects"))
    new_state = {"version": r["version"], "posting_date": r["posting_date"] or prev.get("posting_date"),
                 "currency": r["currency"], "booked": booked, "voucher": voucher, "effects": effects}  # fmt: skip
    out = tuple(outputs)
    return Result("emitted" if out else "ignored", out, {**with_outputs(new_state, out), MATERIALS: book.changed})


def is_balanced(voucher: dict[str, Any]) -> bool:
    """Sum of debits equals sum of credits, and each line has exactly one non-zero side."""
    lines = voucher["lines"]
    one_side = all((ln["debit"] == 0) != (ln["credit"] == 0) for ln in lines)
    return one_side and sum(ln["debit"] for ln in lines) == sum(ln["credit"] for ln in lines)
