"""Cost centers (analytic accounts) and vouchers (account moves) for the Tryton writer.

Each kind has ``prepare_*`` (reads and decisions only; ``plan()`` stops there) and ``apply_*`` (the
writes). See writer.py for the exactly-once rules.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bizbus.connectors.runtime.sink import SinkRecord
from bizbus.connectors.sinks.tryton import mapping as m

from bizbus.failures import ConnectorError, Permanent, Retryable

if TYPE_CHECKING:
    from bizbus.connectors.sinks.tryton.writer import Outcomes, TrytonWriter

CC_FIELDS = ["id", "bizbus_ref", "code", "name", "parent", "state", "bizbus_version", "type"]


# -- cost centers -------------------------------------------------------------------------------------------


@dataclass
class PendingAccount:
    """One analytic account to create or update; several records of the batch may fold into it."""

    code: str
    values: dict[str, Any]
    version: int
    effects: list[str] = field(default_factory=list)
    record_id: int | None = None  # None: to create
    parent_code: str | None = None  # parent created in this same batch (its id is known after the create)


@dataclass
class CostCenterWork:
    creates: dict[str, PendingAccount] = field(default_factory=dict)
    writes: dict[str, PendingAccount] = field(default_factory=dict)


def prepare_cost_centers(w: TrytonWriter, records: list[SinkRecord], out: Outcomes) -> CostCenterWork:
    root_id = w.analytic_root_id()
    codes = {r.value["code"] for r in records}
    parents = {r.value["parent_code"] for r in records if r.value.get("parent_code")}
    domain = [
        "OR",
        [("bizbus_ref", "in", sorted(codes | parents))],
        [("code", "in", sorted(codes | parents))],
    ]
    rows = w.search_read(m.ANALYTIC, domain, CC_FIELDS, active_test=False)
    by_ref = {row["bizbus_ref"]: row for row in rows if row["bizbus_ref"]}
    by_code = {row["code"]: row for row in rows if row["code"]}
    work = CostCenterWork()
    for r in records:
        v, e = r.value, r.effect_id
        code, version = v["code"], int(v["version"])
        pending = work.creates.get(code) or work.writes.get(code)
        row = by_ref.get(code) or _adoptable(by_code.get(code))
        known = pending.version if pending else (row or {}).get("bizbus_version")
        if known is not None and version <= known:
            out.duplicate(e, f"analytic account {code} already has version {known} (this is {version})")
            continue
        parent_code = v.get("parent_code")
        parent_id: int = root_id
        new_parent: str | None = None
        if parent_code:
            if parent_code in by_ref or parent_code in by_code:
                parent_id = int((by_ref.get(parent_code) or by_code[parent_code])["id"])
            elif parent_code in codes:  # created by this batch, whatever the order of its records
                new_parent, parent_id = parent_code, 0
            else:
                out.fail([e], Retryable(f"cost center {code}: parent cost center {parent_code} is not in Tryton yet",
                                        reason="missing_reference"))  # fmt: skip
                continue
        try:
            values = m.cost_center_values(v, root_id, parent_id)
        except ConnectorError as exc:
            out.fail([e], exc)
            continue
        state = values["state"]
        if row is None and code not in work.creates:
            work.creates[code] = PendingAccount(code, values, version, [e], None, new_parent)
            out.plan([e], f"create analytic account {code} {v['name']!r} ({state})")
            continue
        if code in work.creates:
            item = work.creates[code]
            item.values, item.version, item.parent_code = values, version, new_parent
            item.effects.append(e)
            out.plan(item.effects, f"create analytic account {code} {v['name']!r} ({state})")
            continue
        assert row is not None
        item = work.writes.setdefault(code, PendingAccount(code, {}, version, [], int(row["id"])))
        wanted = {k: values[k] for k in ("name", "code", "parent", "state", "bizbus_ref")}
        current = {**row, **item.values}
        changes = m.changed_fields(current, wanted)
        item.values.update(changes)
        item.values["bizbus_version"] = item.version = version
        if new_parent:
            item.parent_code = new_parent
        item.effects.append(e)
        what = ", ".join(f"{k}={changes[k]!r}" for k in sorted(changes)) or "no visible change"
        verb = "close" if changes.get("state") == "closed" else "update"
        out.plan([e], f"{verb} analytic account {code}: {what} (version {version})")
    return work


def _adoptable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """An analytic account made in Tryton by hand with the cost center's code: bizbus takes it over."""
    if row is not None and not row["bizbus_ref"] and row["type"] == "normal":
        return row
    return None


def apply_cost_centers(w: TrytonWriter, work: CostCenterWork, out: Outcomes) -> None:
    created: dict[str, int] = {}
    remaining = dict(work.creates)
    while remaining:  # parents first: a child created in the same batch needs its parent's id
        ready = [p for p in remaining.values() if p.parent_code is None or p.parent_code in created]
        if not ready:
            break
        for p in ready:
            if p.parent_code:
                p.values["parent"] = created[p.parent_code]
            del remaining[p.code]
        ids = w.create(m.ANALYTIC, [(p.effects, p.values) for p in ready], out)
        for p, new_id in zip(ready, ids, strict=True):
            if new_id is not None:
                created[p.code] = new_id
                out.done(p.effects)
    for p in remaining.values():  # their parent failed to be created
        out.fail(p.effects, Retryable(f"cost center {p.code}: parent {p.parent_code} could not be created",
                                      reason="missing_reference"))  # fmt: skip
    writes = []
    for p in work.writes.values():
        if p.parent_code:
            if p.parent_code not in created:
                out.fail(p.effects, Retryable(f"cost center {p.code}: parent {p.parent_code} could not be "
                                              "created", reason="missing_reference"))  # fmt: skip
                continue
            p.values["parent"] = created[p.parent_code]
        writes.append(p)
    done = w.write_values(m.ANALYTIC, [(p.effects, int(p.record_id or 0), p.values) for p in writes], out)
    for p, ok in zip(writes, done, strict=True):
        if ok:
            out.done(p.effects)


# -- vouchers -----------------------------------------------------------------------------------------------


@dataclass
class VoucherWork:
    creates: list[tuple[list[str], dict[str, Any]]] = field(default_factory=list)
    posts: list[tuple[list[str], int]] = field(default_factory=list)  # drafts found (crash before post)


def prepare_vouchers(w: TrytonWriter, records: list[SinkRecord], out: Outcomes) -> VoucherWork:
    numbers = sorted({r.value["voucher_no"] for r in records})
    existing = {row["bizbus_ref"]: row for row in w.search_read(m.MOVE, [("bizbus_ref", "in", numbers)],
                                                                ["bizbus_ref", "state", "number"])}  # fmt: skip
    currency = w.company_currency()
    work = VoucherWork()
    seen: set[str] = set()
    fresh: list[SinkRecord] = []
    for r in records:
        no, e = r.value["voucher_no"], r.effect_id
        if no in seen:
            out.duplicate(e, f"voucher {no} appears twice in the batch")
            continue
        row = existing.get(no)
        if row is not None:
            seen.add(no)
            if row["state"] == "posted":
                out.duplicate(e, f"move {no} is already posted in Tryton (number {row['number']})")
            else:
                work.posts.append(([e], int(row["id"])))
                out.plan([e], f"post draft move {no} left by an earlier attempt")
            continue
        try:
            m.check_voucher(r.value, currency)
        except ConnectorError as exc:
            out.fail([e], exc)
            continue
        seen.add(no)
        fresh.append(r)
    if not fresh:
        return work
    codes = sorted({line["account_code"] for r in fresh for line in r.value["lines"]})
    company = w.client().context.get("company")
    accounts = {row["code"]: int(row["id"]) for row in w.search_read(
        "model.account.account", [("code", "in", codes), ("company", "=", company)], ["code"])}  # fmt: skip
    centers = sorted(
        {line["cost_center"] for r in fresh for line in r.value["lines"] if line.get("cost_center")}
    )
    analytic = {row["bizbus_ref"]: row for row in w.search_read(
        m.ANALYTIC, [("bizbus_ref", "in", centers)], ["bizbus_ref", "state", "type"], active_test=False)}  # fmt: skip
    journal = w.journal_id()
    for r in fresh:
        error = _voucher_reference_error(r.value, accounts, analytic)
        if error is not None:
            out.fail([r.effect_id], error)
            continue
        ids = {code: int(row["id"]) for code, row in analytic.items()}
        work.creates.append(([r.effect_id], m.move_values(r.value, journal, accounts, ids)))
        total = sum(line["debit"] for line in r.value["lines"])
        out.plan([r.effect_id], f"create and post move {r.value['voucher_no']} dated {r.value['posting_date']} "
                                f"with {len(r.value['lines'])} lines, total {total} {currency}")  # fmt: skip
    return work


def _voucher_reference_error(
    value: dict[str, Any], accounts: dict[str, int], analytic: dict[str, dict[str, Any]]
) -> ConnectorError | None:
    no = value["voucher_no"]
    unknown = sorted({line["account_code"] for line in value["lines"]} - set(accounts))
    if unknown:
        return Permanent(
            f"voucher {no}: Tryton has no account {', '.join(unknown)}", reason="unknown_master_data"
        )
    for line in value["lines"]:
        center = line.get("cost_center")
        if not center:
            continue
        row = analytic.get(center)
        if row is None:
            return Retryable(
                f"voucher {no}: cost center {center} is not in Tryton yet", reason="missing_reference"
            )
        if row["state"] == "closed":
            return Permanent(
                f"voucher {no}: cost center {center} is closed in Tryton", reason="cost_center_closed"
            )
        if row["type"] != "normal":
            return Permanent(f"voucher {no}: cost center {center} is a {row['type']} analytic account, not a "
                             "normal one", reason="validation")  # fmt: skip
    return None


def apply_vouchers(w: TrytonWriter, work: VoucherWork, out: Outcomes) -> None:
    ids = w.create(m.MOVE, work.creates, out)
    created = [(effects, new_id) for (effects, _), new_id in zip(work.creates, ids, strict=True) if new_id]
    to_post = work.posts + created
    posted = w.button(m.MOVE, "post", to_post, out)
    unposted = [new_id for (effects, new_id), ok in zip(to_post, posted, strict=True) if not ok]
    for (effects, _), ok in zip(to_post, posted, strict=True):
        if ok:
            out.done(effects)
    mine = [new_id for _, new_id in created if new_id in unposted]
    if mine:  # a move Tryton refused to post is removed again, so a corrected re-delivery starts clean
        # (should the delete fail, the draft left behind is posted by the next delivery of the voucher)
        with contextlib.suppress(ConnectorError):
            w.client().call(m.MOVE, "delete", mine)


# -- cost entries -------------------------------------------------------------------------------------------


def prepare_cost_entries(w: TrytonWriter, records: list[SinkRecord], out: Outcomes) -> VoucherWork:
    """Cost entries of the configured cost types as two-line vouchers (``bizbus_ref`` ``CE/<entry_id>``): the
    expense line on the project's analytic account, then the same reads and checks as vouchers."""
    vouchers: list[SinkRecord] = []
    for r in records:
        v = r.value
        accounts = w.config.cost_accounts.get(v["cost_type"])
        if accounts is None:
            out.duplicate(r.effect_id, f"cost entry {v['entry_id']}: cost type {v['cost_type']} is not posted by this "
                                       "sink (cost_accounts)")  # fmt: skip
            continue
        analytic = w.config.cost_entry_analytic.format(cost_center=v["cost_center"], project=v["project"],
                                                        company=v["company"])  # fmt: skip
        try:
            value = m.cost_entry_voucher(v, accounts.debit_account, accounts.credit_account, analytic)
        except ConnectorError as exc:
            out.fail([r.effect_id], exc)
            continue
        vouchers.append(dataclasses.replace(r, value=value))
    return prepare_vouchers(w, vouchers, out) if vouchers else VoucherWork()


apply_cost_entries = apply_vouchers
