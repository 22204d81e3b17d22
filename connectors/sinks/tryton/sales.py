"""F5 order decisions for the Tryton writer, where Tryton is the sales system: the sale whose ``reference`` is
the order number is confirmed (ACCEPTED) or cancelled with the reason (REFUSED, RELEASED).

The sale keeps what bizbus applied last (the ``bizbus_ref`` module adds ``bizbus_ref`` = the order number, set
by the first decision; ``bizbus_version`` = the order version, ``bizbus_decision``, ``bizbus_reason``), so
"already written" is asked of Tryton: a decision whose version
and kind the sale holds AND whose state the sale has reached is a duplicate; an older one is stale. The
fields are written first, then Tryton's own buttons run (``draft`` -> ``quote`` -> ``confirm`` | ``cancel``);
a crash between the two leaves the fields written and the state not reached, and the re-delivery runs the
buttons that are still missing. Several decisions on one order in a batch fold into the newest (the others count as duplicates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bizbus.connectors.runtime.sink import SinkRecord
from bizbus.connectors.sinks.tryton import mapping as m

from bizbus.failures import ConnectorError, Permanent

if TYPE_CHECKING:
    from bizbus.connectors.sinks.tryton.writer import Outcomes, TrytonWriter

SALE_FIELDS = ["id", "reference", "state", "bizbus_ref", "bizbus_version", "bizbus_decision", "bizbus_reason"]


@dataclass
class DecisionWork:
    writes: list[tuple[list[str], int, dict[str, Any]]] = field(default_factory=list)
    steps: dict[str, list[tuple[list[str], int]]] = field(default_factory=lambda: {s: [] for s in m.SALE_STEPS})
    groups: list[list[str]] = field(default_factory=list)


def prepare_decisions(w: TrytonWriter, records: list[SinkRecord], out: Outcomes) -> DecisionWork:
    w.require_fields(m.SALE, ["bizbus_version", "bizbus_decision", "bizbus_reason"])
    latest: dict[str, SinkRecord] = {}
    effects: dict[str, list[str]] = {}
    for r in records:
        no = r.value["order_no"]
        effects.setdefault(no, []).append(r.effect_id)
        key = m.decision_key(r.value["order_version"], r.value["decision"])
        if no not in latest or key >= m.decision_key(latest[no].value["order_version"], latest[no].value["decision"]):
            latest[no] = r
    nos = sorted(latest)
    rows = w.search_read(m.SALE, ["OR", [("bizbus_ref", "in", nos)], [("reference", "in", nos)]], SALE_FIELDS)
    claimed = {row["bizbus_ref"]: row for row in rows if row["bizbus_ref"] in latest}
    sales: dict[str, list[dict[str, Any]]] = {no: [row] for no, row in claimed.items()}
    for row in rows:  # the sale bizbus already answered (bizbus_ref) wins over others with the same reference
        if row["reference"] in latest and row["reference"] not in claimed and not row["bizbus_ref"]:
            sales.setdefault(row["reference"], []).append(row)
    work = DecisionWork()
    for no, r in latest.items():
        group = [r.effect_id]
        for e in effects[no]:
            if e != r.effect_id:
                out.duplicate(e, f"superseded by the {r.value['decision']} of order version {r.value['order_version']} "
                                 f"of {no} in the same batch")  # fmt: skip
        try:
            _decide(r, group, sales.get(no, []), work, out)
        except ConnectorError as exc:
            out.fail(group, exc)
    return work


def _decide(r: SinkRecord, group: list[str], rows: list[dict[str, Any]], work: DecisionWork, out: Outcomes) -> None:
    v = r.value
    no, decision, version = v["order_no"], v["decision"], int(v["order_version"])
    if not rows:
        raise Permanent(f"Tryton has no sale with reference {no} (decisions go to the tryton sink only where "
                        "Tryton is the sales system)", reason="unknown_sale")  # fmt: skip
    if len(rows) > 1:
        raise Permanent(f"Tryton has {len(rows)} sales with reference {no}; cannot tell which one the decision is "
                        "for", reason="ambiguous_sale")  # fmt: skip
    row = rows[0]
    mine, theirs = m.decision_key(version, decision), m.decision_key(row["bizbus_version"], row["bizbus_decision"])
    if theirs > mine:
        for e in group:
            out.duplicate(e, f"sale {no} already has decision {row['bizbus_decision']} of order version "
                             f"{row['bizbus_version']} (this is {decision} of version {version})")  # fmt: skip
        return
    steps = m.sale_steps(no, row["state"], decision)
    values = {**m.decision_values(v), "bizbus_ref": no}
    changes = m.changed_fields(row, values)
    if not steps and not changes:
        for e in group:
            out.duplicate(e, f"sale {no} is {row['state']} with decision {decision} of version {version} already")
        return
    if changes:
        work.writes.append((group, int(row["id"]), changes))
    for step in steps:
        work.steps[step].append((group, int(row["id"])))
    work.groups.append(group)
    verb = "confirm" if decision == "ACCEPTED" else "cancel"
    out.plan(group, f"{verb} sale {no} ({row['state']} -> {' -> '.join(steps) or 'no state change'}) for "
                    f"{decision} of order version {version}")  # fmt: skip


def apply_decisions(w: TrytonWriter, work: DecisionWork, out: Outcomes) -> None:
    w.write_values(m.SALE, work.writes, out)
    for step in m.SALE_STEPS:
        items = [(group, sale_id) for group, sale_id in work.steps[step] if group[0] not in out.failed]
        w.button(m.SALE, step, items, out)
    for group in work.groups:
        if not any(e in out.failed or e in out.waiting for e in group):
            out.done(group)
