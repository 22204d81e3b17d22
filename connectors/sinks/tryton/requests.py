"""Purchase requisitions for the Tryton writer: one ``purchase.request`` per requisition line.

Tryton refuses ``create`` of a purchase request from a client; the ``bizbus_ref`` module adds the RPC method
``purchase.request.bizbus_create`` (allowed to users who may write requests) and ``bizbus_cancel`` (marks
open requests cancelled and records the requisition version, in one transaction). Each request carries
``bizbus_ref = "<requisition_no>/<line_no>"`` and ``bizbus_version``, so "already written" is asked of Tryton:

* a requisition in one of ``requisition_statuses`` (SUBMITTED, APPROVED): a request per line is created, or
  the open request's quantity updated; requests of lines that disappeared are cancelled; the supplier a line
  suggests (``supplier:<code>`` in its description, as F3 writes it) becomes the request's supplier when
  Tryton knows that party code;
* CANCELLED / REJECTED / DELETED: every open request of the requisition is cancelled;
* the version written last sits on the requests: a re-delivery of it, or of an older one, is a duplicate.

Several versions of one requisition in a batch fold into the newest one (the older ones count as duplicates:
superseded).
``prepare_requisitions`` reads and decides (``plan()`` stops there); ``apply_requisitions`` writes: one
``bizbus_create`` call, one ``write`` call, one ``bizbus_cancel`` call per requisition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bizbus.connectors.runtime.sink import SinkRecord
from bizbus.connectors.sinks.tryton import mapping as m

from bizbus.failures import ConnectorError, Permanent

if TYPE_CHECKING:
    from bizbus.connectors.sinks.tryton.writer import Outcomes, TrytonWriter

REQUEST_FIELDS = ["id", "bizbus_ref", "bizbus_version", "bizbus_cancelled", "state", "quantity", "unit",
                  "product", "party", "purchase_line"]  # fmt: skip


@dataclass
class RequisitionWork:
    """The writes of one batch; each requisition's effect ids are done when all of its writes went through."""

    creates: list[tuple[list[str], dict[str, Any]]] = field(default_factory=list)
    writes: list[tuple[list[str], int, dict[str, Any]]] = field(default_factory=list)
    cancels: list[tuple[list[str], list[int], int]] = field(default_factory=list)  # effects, ids, version
    groups: list[list[str]] = field(default_factory=list)  # effect ids per requisition with writes


def _row_no(row: dict[str, Any], no: str) -> int | None:
    """The line number of a request whose ``bizbus_ref`` is ``<no>/<line>`` (None: another requisition)."""
    ref = str(row["bizbus_ref"] or "")
    head, sep, tail = ref.rpartition("/")
    return int(tail) if sep and head == no and tail.isdigit() else None


def prepare_requisitions(w: TrytonWriter, records: list[SinkRecord], out: Outcomes) -> RequisitionWork:
    w.require_fields(m.REQUEST, ["bizbus_ref", "bizbus_version", "bizbus_cancelled"])
    latest: dict[str, SinkRecord] = {}
    effects: dict[str, list[str]] = {}
    for r in records:  # fold the versions of one requisition in the batch into the newest
        no = r.value["requisition_no"]
        effects.setdefault(no, []).append(r.effect_id)
        if no not in latest or int(r.value["version"]) >= int(latest[no].value["version"]):
            latest[no] = r
    domain: list[Any] = ["OR", *[[("bizbus_ref", "like", f"{no}/%")] for no in sorted(latest)]]
    rows = w.search_read(m.REQUEST, domain, REQUEST_FIELDS)
    existing: dict[str, dict[int, dict[str, Any]]] = {no: {} for no in latest}
    for row in rows:
        for no in latest:
            line_no = _row_no(row, no)
            if line_no is not None:
                existing[no][line_no] = row
    upserts = [r for r in latest.values() if m.requisition_action(r.value, w.config.requisition_statuses) == "upsert"]
    products, units, parties = _master_data(w, upserts)
    work = RequisitionWork()
    for no, r in latest.items():
        group = [r.effect_id]
        for e in effects[no]:
            if e != r.effect_id:
                out.duplicate(e, f"superseded by version {r.value['version']} of requisition {no} in the same batch")
        try:
            _decide(w, r, group, existing[no], (products, units, parties), work, out)
        except ConnectorError as exc:
            out.fail(group, exc)
    return work


MasterData = tuple[dict[str, dict[str, Any]], dict[str, int], dict[str, int]]  # products, units, parties


def _master_data(w: TrytonWriter, records: list[SinkRecord]) -> MasterData:
    """Products (by code), units (by symbol) and the suggested suppliers (party code) the batch names."""
    lines = [line for r in records for line in r.value["lines"]]
    codes = sorted({line["material"] for line in lines})
    symbols = sorted({line["unit"] for line in lines})
    suppliers = sorted({s for s in (m.request_supplier(line) for line in lines) if s})
    products = {row["code"]: row for row in w.search_read(
        "model.product.product", [("code", "in", codes)], ["code", "type", "purchasable"])} if codes else {}  # fmt: skip
    units = {row["symbol"]: int(row["id"]) for row in w.search_read(
        "model.product.uom", [("symbol", "in", symbols)], ["symbol"])} if symbols else {}  # fmt: skip
    parties = {row["code"]: int(row["id"]) for row in w.search_read(
        "model.party.party", [("code", "in", suppliers)], ["code"])} if suppliers else {}  # fmt: skip
    return products, units, parties


def _decide(w: TrytonWriter, r: SinkRecord, group: list[str], rows: dict[int, dict[str, Any]], data: MasterData,
            work: RequisitionWork, out: Outcomes) -> None:  # fmt: skip
    v = r.value
    products, units, parties = data
    no, version = v["requisition_no"], int(v["version"])
    # every write stamps the version on all of the requisition's requests; the lowest one tells what is
    # applied everywhere (a version that failed half way is applied again, not taken as done)
    known = min((int(row["bizbus_version"] or 0) for row in rows.values()), default=None)
    if known is not None and version <= known:
        for e in group:
            out.duplicate(e, f"the purchase requests of requisition {no} already have version {known} (this is {version})")
        return
    action = m.requisition_action(v, w.config.requisition_statuses)
    if action == "skip":
        for e in group:
            out.duplicate(e, f"requisition {no} is {v['status']}: no purchase request yet")
        return
    open_rows = {n: row for n, row in rows.items() if row["state"] == "draft"}
    if action == "cancel":
        if not rows:
            for e in group:
                out.duplicate(e, f"requisition {no} has no purchase request in Tryton to cancel")
            return
        _refuse_purchased(no, [row for row in rows.values() if row["purchase_line"]], "cancelled")
        ids = [int(row["id"]) for row in rows.values() if row["state"] in ("draft", "cancelled")]
        work.cancels.append((group, ids, version))
        work.groups.append(group)
        out.plan(group, f"cancel {len(open_rows)} open purchase request(s) of requisition {no} (version {version})")
        return
    m.check_requisition(v)
    missing = m.missing_request_data(v, products, units)
    if missing:
        raise Permanent(missing, reason="unknown_master_data")
    warehouse, company = w.warehouse_id(), w.company_id()
    lines = {line["line_no"]: line for line in v["lines"]}
    creates = writes = 0
    for line_no, line in sorted(lines.items()):
        product_id, unit_id = int(products[line["material"]]["id"]), units[line["unit"]]
        party_id = parties.get(m.request_supplier(line) or "")  # a supplier Tryton does not know: left to choose
        row = rows.get(line_no)
        if row is None:
            values = m.request_values(v, line, product_id, unit_id, warehouse, company, party_id)
            work.creates.append((group, values))
            creates += 1
            continue
        ref = row["bizbus_ref"]
        if row["bizbus_cancelled"] or row["state"] == "cancelled":
            raise Permanent(f"purchase request {ref} was cancelled; version {version} cannot revive it",
                            reason="request_cancelled")  # fmt: skip
        if int(row["product"]) != product_id:
            raise Permanent(f"purchase request {ref} is for another product; a requisition line cannot change its "
                            f"material to {line['material']} (add a new line instead)", reason="not_modifiable")  # fmt: skip
        changes: dict[str, Any] = {"bizbus_version": version}
        if float(row["quantity"]) != float(line["quantity"]) or int(row["unit"]) != unit_id:
            if row["state"] != "draft":
                raise Permanent(f"purchase request {ref} is {row['state']} in Tryton; its quantity can no longer "
                                "change", reason="not_modifiable")  # fmt: skip
            changes.update(quantity=float(line["quantity"]), unit=unit_id)
            writes += 1
        if party_id is not None and row["party"] != party_id and row["state"] == "draft":
            changes["party"] = party_id
        work.writes.append((group, int(row["id"]), changes))
    gone = {n: row for n, row in rows.items() if n not in lines}
    _refuse_purchased(no, [row for row in gone.values() if row["purchase_line"]], "removed from the requisition")
    if gone:
        work.cancels.append((group, [int(row["id"]) for row in gone.values()], version))
    work.groups.append(group)
    out.plan(group, f"requisition {no} version {version}: create {creates}, update {writes}, cancel {len(gone)} "
                    "request(s)")  # fmt: skip


def _refuse_purchased(no: str, rows: list[dict[str, Any]], what: str) -> None:
    if rows:
        refs = ", ".join(sorted(str(row["bizbus_ref"]) for row in rows))
        raise Permanent(f"requisition {no}: request(s) {refs} are already on a purchase and cannot be {what}; "
                        "change the purchase in Tryton", reason="not_cancellable")  # fmt: skip


def apply_requisitions(w: TrytonWriter, work: RequisitionWork, out: Outcomes) -> None:
    w.create(m.REQUEST, work.creates, out, method="bizbus_create")
    w.write_values(m.REQUEST, work.writes, out)
    rpc = w.client()
    for group, ids, version in work.cancels:
        if group[0] in out.failed:
            continue
        try:
            rpc.call(m.REQUEST, "bizbus_cancel", ids, version)
        except ConnectorError as exc:
            if exc.error_class != "permanent":
                raise
            out.fail(group, exc)
    for group in work.groups:
        if not any(e in out.failed or e in out.waiting for e in group):
            out.done(group)

