"""TrytonWriter: applies cost centers, vouchers, cost entries, purchase orders, requisitions (purchase requests)
and F5 order decisions (sales) to Tryton exactly once, in batches.

Tryton is the ledger. Every record Tryton holds for bizbus carries ``bizbus_ref`` (our ``bizbus_ref`` module:
a unique column), so "already written?" is a question to Tryton, and a crash anywhere is resolved by
asking it again on re-delivery:

    per kind, in the order cost centers -> vouchers -> cost entries -> purchase orders -> requisitions ->
    order decisions (a voucher or cost entry may need a cost center of the same batch):
    1. one search_read of all bizbus_refs of the batch, one per master-data model   (reads only: plan())
    2. decide per record: duplicate / create / update / post / cancel / refuse / wait
    3. one create call per model, one write call, one button call (post, cancel); when Tryton refuses a
       batch call, the same items go one by one so only the bad record fails (Permanent, Tryton's message)

A voucher is created as a draft move and then posted; a draft found on re-delivery (crash between the
two) is posted, a posted one is a duplicate. Analytic accounts and purchases keep ``bizbus_version``, so a
stale re-delivery never overwrites a newer change. Records that may succeed later (a cost center that is
not in Tryton yet) make ``write`` raise a Retryable after everything else was applied: the runner retries
the batch (what was applied is a duplicate then) and dead-letters the record when its budget is spent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from bizbus.connectors.runtime.documents import count_documents
from bizbus.connectors.runtime.sink import PlannedEffect, SinkRecord, SinkWriter, WriteResult
from bizbus.connectors.sinks.tryton import mapping as m
from bizbus.connectors.sinks.tryton.accounting import (
    apply_cost_centers,
    apply_cost_entries,
    apply_vouchers,
    prepare_cost_centers,
    prepare_cost_entries,
    prepare_vouchers,
)
from bizbus.connectors.sinks.tryton.api import TrytonRpc
from bizbus.connectors.sinks.tryton.purchases import apply_purchases, prepare_purchases
from bizbus.connectors.sinks.tryton.requests import apply_requisitions, prepare_requisitions
from bizbus.connectors.sinks.tryton.sales import apply_decisions, prepare_decisions

from bizbus import metrics
from bizbus.crashpoints import crashpoint
from bizbus.errors import ConfigError
from bizbus.failures import ConnectorError, Fatal, Retryable

if TYPE_CHECKING:
    from bizbus.connectors.sinks.tryton.config import TrytonSinkConfig

log = logging.getLogger(__name__)

__all__ = ["Outcomes", "TrytonWriter"]


@dataclass
class Outcomes:
    """What happened (or, in a dry run, would happen) to each effect id of one batch."""

    applied: set[str] = field(default_factory=set)
    duplicates: dict[str, str] = field(default_factory=dict)  # effect id -> why nothing is written
    failed: dict[str, ConnectorError] = field(default_factory=dict)  # permanent: dead-letter
    waiting: dict[str, ConnectorError] = field(default_factory=dict)  # retryable: retry the batch
    planned: dict[str, str] = field(default_factory=dict)  # effect id -> what is written

    def duplicate(self, effect_id: str, why: str) -> None:
        self.duplicates[effect_id] = why

    def plan(self, effect_ids: Iterable[str], detail: str) -> None:
        for e in effect_ids:
            self.planned[e] = detail

    def done(self, effect_ids: Iterable[str]) -> None:
        self.applied.update(effect_ids)

    def fail(self, effect_ids: Iterable[str], error: ConnectorError) -> None:
        for e in effect_ids:
            self.planned.pop(e, None)
            self.applied.discard(e)
            (self.waiting if error.error_class == "retryable" else self.failed)[e] = error


class TrytonWriter(SinkWriter):
    """Writes CostCenter / Voucher / PurchaseOrder records into Tryton over JSON-RPC, exactly once."""

    def __init__(self, connector: str, config: TrytonSinkConfig) -> None:
        """Store the settings only; ``setup()`` reads the password, the first call logs in."""
        self.connector = connector
        self.config = config
        self.rpc: TrytonRpc | None = None
        self._cache: dict[str, Any] = {}

    def setup(self) -> None:
        """Read the password from the environment and prepare the client (Fatal when it is not set)."""
        try:
            password = self.config.password_env.read(f"the Tryton password of user {self.config.user!r}",
                                                     f"sink {self.connector}")  # fmt: skip
        except ConfigError as exc:
            raise Fatal(str(exc), reason="auth") from None
        self.rpc = TrytonRpc(self.config.url, self.config.user, password, timeout=self.config.timeout_seconds,
                             company=self.config.company)  # fmt: skip

    def close(self) -> None:
        if self.rpc is not None:
            self.rpc.close()
            self.rpc = None

    # -- the public contract ---------------------------------------------------------------------------

    def write(self, records: list[SinkRecord]) -> WriteResult:
        out = self._run(records, dry_run=False)
        if out.applied:  # Tryton accepted writes; the runner has not committed the offsets yet (chaos tests
            # kill here: the re-delivery must find every effect in Tryton by bizbus_ref and write nothing twice)
            crashpoint("tryton.after-write")
        count_documents(self.connector, records, out.applied)
        _count_stock_documents(self.connector, records, out.applied)
        if out.waiting:
            first = next(iter(out.waiting.values()))
            raise Retryable(
                f"{len(out.waiting)} record(s) must wait (the rest of the batch is applied): {first}",
                reason=first.reason,
            )
        return WriteResult(applied=len(out.applied), duplicates=len(out.duplicates), failed=dict(out.failed),
                           applied_ids=set(out.applied))  # fmt: skip

    def plan(self, records: list[SinkRecord]) -> list[PlannedEffect]:
        out = self._run(records, dry_run=True)
        plans: list[PlannedEffect] = []
        for r in records:
            e = r.effect_id
            if e in out.failed:
                plans.append(PlannedEffect(e, "skip", f"error: {out.failed[e]}"))
            elif e in out.waiting:
                plans.append(PlannedEffect(e, "skip", f"would wait and retry: {out.waiting[e]}"))
            elif e in out.planned:
                plans.append(PlannedEffect(e, "create", out.planned[e]))
            else:
                plans.append(PlannedEffect(e, "skip", out.duplicates.get(e, "nothing to write")))
        return plans

    def safe_offsets(self) -> dict[tuple[str, int], int]:
        """{}: Tryton is the ledger (bizbus_ref); the runner commits offsets after ``write``."""
        return {}

    # -- dispatch ------------------------------------------------------------------------------------------

    def _run(self, records: list[SinkRecord], dry_run: bool) -> Outcomes:
        out = Outcomes()
        groups: dict[str, list[SinkRecord]] = {kind: [] for kind in get_args(m.Kind)}
        seen: set[str] = set()
        for r in records:
            if r.effect_id in seen:
                out.duplicate(r.effect_id, "the same event twice in one batch")
                continue
            seen.add(r.effect_id)
            try:
                groups[m.record_kind(r.value)].append(r)
            except ConnectorError as exc:
                out.fail([r.effect_id], exc)
        steps: list[tuple[str, Callable[..., Any], Callable[..., None]]] = [
            ("cost_center", prepare_cost_centers, apply_cost_centers),
            ("voucher", prepare_vouchers, apply_vouchers),
            ("cost_entry", prepare_cost_entries, apply_cost_entries),
            ("purchase_order", prepare_purchases, apply_purchases),
            ("requisition", prepare_requisitions, apply_requisitions),
            ("order_decision", prepare_decisions, apply_decisions),
        ]
        for kind, prepare, apply in steps:
            if groups[kind]:
                work = prepare(self, groups[kind], out)
                if not dry_run:
                    apply(self, work, out)
        return out

    # -- shared lookups (cached per writer) --------------------------------------------------------------------

    def client(self) -> TrytonRpc:
        if self.rpc is None:
            raise RuntimeError("TrytonWriter.setup() was not called")
        return self.rpc

    def search_read(
        self, model: str, domain: list[Any], fields: list[str], **context: Any
    ) -> list[dict[str, Any]]:
        return list(self.client().call(model, "search_read", domain, 0, None, None, fields, context=context))

    def cached(self, key: str, load: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    def journal_id(self) -> int:
        def load() -> int:
            rows = self.search_read(
                "model.account.journal", [("code", "=", self.config.journal_code)], ["id"]
            )
            if not rows:
                raise Fatal(f"Tryton has no account journal with code {self.config.journal_code!r} (journal_code)",
                            reason="config")  # fmt: skip
            return int(rows[0]["id"])

        return int(self.cached("journal", load))

    def analytic_root_id(self) -> int:
        def load() -> int:
            domain = [("code", "=", self.config.analytic_root), ("type", "=", "root")]
            rows = self.search_read(m.ANALYTIC, domain, ["id"])
            if not rows:
                raise Fatal(f"Tryton has no analytic root account with code {self.config.analytic_root!r} "
                            "(analytic_root)", reason="config")  # fmt: skip
            return int(rows[0]["id"])

        return int(self.cached("root", load))

    def require_fields(self, model: str, names: list[str]) -> None:
        """Fatal (the sink stops and says why) when the Tryton database lacks ``model`` or its bizbus fields:
        the module behind it, or bizbus_ref of this version, is not activated / updated there."""

        def load() -> bool:
            name = model.removeprefix("model.")
            # an unknown model is a server error (KeyError) to Tryton, which would read as retryable: ask first
            known = self.client().call("model.ir.model", "search_count", [("name", "=", name)])
            have = self.client().call(model, "fields_get", names) if known else {}
            missing = sorted(set(names) - set(have)) if known else [f"the model itself ({name})"]
            if missing:
                raise Fatal(f"Tryton's {model.removeprefix('model.')} lacks {', '.join(missing)}: activate the "
                            "modules purchase_request and sale and update bizbus_ref in the database "
                            "(trytond-admin -d <db> -u bizbus_ref --activate-dependencies)", reason="config")  # fmt: skip
            return True

        self.cached(f"fields:{model}:{','.join(names)}", load)

    def company_id(self) -> int:
        company = self.client().context.get("company")
        if company is None:
            self.client().login()
            company = self.client().context.get("company")
        if company is None:
            raise Fatal(f"Tryton user {self.config.user!r} has no current company; set `company`", reason="config")
        return int(company)

    def warehouse_id(self) -> int:
        def load() -> int:
            domain = [("code", "=", self.config.warehouse), ("type", "=", "warehouse")]
            rows = self.search_read("model.stock.location", domain, ["id"])
            if not rows:
                raise Fatal(f"Tryton has no warehouse with code {self.config.warehouse!r} (warehouse)",
                            reason="config")  # fmt: skip
            return int(rows[0]["id"])

        return int(self.cached("warehouse", load))

    def company_currency(self) -> str:
        def load() -> str:
            company = self.client().context.get("company")
            if company is None:
                self.client().login()
                company = self.client().context.get("company")
            if company is None:
                raise Fatal(f"Tryton user {self.config.user!r} has no current company; set `company`",
                            reason="config")  # fmt: skip
            row = self.client().call("model.company.company", "read", [company], ["currency.code"])[0]
            return str(row["currency."]["code"])

        return str(self.cached("currency", load))

    # -- batch calls with one-by-one fallback --------------------------------------------------------------

    def create(
        self, model: str, items: list[tuple[list[str], dict[str, Any]]], out: Outcomes, method: str = "create"
    ) -> list[int | None]:
        """Create all ``(effect_ids, values)`` in one call (``method``: ``create`` or a module's own door such as
        ``bizbus_create``); when Tryton refuses, one by one."""
        if not items:
            return []
        rpc = self.client()
        try:
            return [int(i) for i in rpc.call(model, method, [values for _, values in items])]
        except ConnectorError as exc:
            if exc.error_class != "permanent":
                raise
            log.info("tryton: batch create on %s refused (%s); creating one by one", model, exc)
        ids: list[int | None] = []
        for effect_ids, values in items:
            try:
                ids.append(int(rpc.call(model, method, [values])[0]))
            except ConnectorError as exc:
                if exc.error_class != "permanent":
                    raise
                self._raise_if_written_meanwhile(model, values.get("bizbus_ref"))
                out.fail(effect_ids, exc)
                ids.append(None)
        return ids

    def _raise_if_written_meanwhile(self, model: str, ref: str | None) -> None:
        """A refused create whose ref exists now: another task wrote it; retry so it is seen as existing."""
        if ref and self.client().call(
            model, "search_count", [("bizbus_ref", "=", ref)], context={"active_test": False}
        ):
            raise Retryable(
                f"{model} {ref} was written concurrently; retrying to pick it up", reason="erp_conflict"
            )

    def write_values(
        self, model: str, items: list[tuple[list[str], int, dict[str, Any]]], out: Outcomes
    ) -> list[bool]:
        """Write all ``(effect_ids, id, values)`` in one call (Tryton takes id/values pairs); else one by one."""
        if not items:
            return []
        rpc = self.client()
        args: list[Any] = []
        for _, record_id, values in items:
            args += [[record_id], values]
        return _all_or_each(lambda: rpc.call(model, "write", *args),
                            [(ids, lambda r=record_id, v=values: rpc.call(model, "write", [r], v))
                             for ids, record_id, values in items], out)  # fmt: skip

    def button(
        self, model: str, method: str, items: list[tuple[list[str], int]], out: Outcomes
    ) -> list[bool]:
        """Run a workflow button (``post``, ``cancel``) on all ids in one call; else one by one."""
        if not items:
            return []
        rpc = self.client()
        return _all_or_each(lambda: rpc.call(model, method, [record_id for _, record_id in items]),
                            [(ids, lambda r=record_id: rpc.call(model, method, [r])) for ids, record_id in items],
                            out)  # fmt: skip


def _count_stock_documents(connector: str, records: list[SinkRecord], applied: set[str]) -> None:
    """``bizbus_documents_total`` for the kinds only this sink writes: purchase_request(_cancelled),
    material_cost(_reversal) (any cost type: the label is the type), sale_confirmed / sale_cancelled."""
    for r in records:
        if r.effect_id not in applied:
            continue
        v = r.value
        try:
            kind = m.record_kind(v)
        except ConnectorError:
            continue
        if kind == "requisition":
            cancelled = m.requisition_action(v, ("APPROVED",)) == "cancel"
            doc = "purchase_request_cancelled" if cancelled else "purchase_request"
        elif kind == "cost_entry":
            doc = f"{str(v['cost_type']).lower()}_cost" + ("_reversal" if v.get("reversal_of") else "")
        elif kind == "order_decision":
            doc = "sale_confirmed" if v["decision"] == "ACCEPTED" else "sale_cancelled"
        else:
            continue
        metrics.DOCUMENTS.labels(connector, doc).inc()


def _all_or_each(call_all: Callable[[], Any], each: list[tuple[list[str], Callable[[], Any]]],
                 out: Outcomes) -> list[bool]:  # fmt: skip
    """One call for the whole batch; if Tryton refuses it (permanent), one call per item so only the bad
    ones fail. Retryable errors propagate (the runner retries the batch)."""
    try:
        call_all()
        return [True] * len(each)
    except ConnectorError as exc:
        if exc.error_class != "permanent":
            raise
    results = []
    for effect_ids, call_one in each:
        try:
            call_one()
            results.append(True)
        except ConnectorError as exc:
            if exc.error_class != "permanent":
                raise
            out.fail(effect_ids, exc)
            results.append(False)
    return results
