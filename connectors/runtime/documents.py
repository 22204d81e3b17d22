"""Business documents a sink wrote, as metrics: ``bizbus_documents_total{connector,document}`` and the
voucher amounts by currency. Any ERP sink that writes the canonical cost centers, vouchers and purchase
orders counts them the same way (the Tryton sink does; a Kingdee sink would).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal

from bizbus.connectors.runtime.sink import SinkRecord

from bizbus import metrics

Kind = Literal["cost_center", "voucher", "purchase_order"]


def canonical_kind(value: Mapping[str, Any]) -> Kind | None:
    """Which of the canonical ERP schemas a decoded record is, by its fields (topics may be renamed, e.g.
    in tests): CostCenter, Voucher, PurchaseOrder; None for anything else."""
    if "voucher_no" in value and "lines" in value:
        return "voucher"
    if "order_no" in value and "supplier" in value and "op" in value:
        return "purchase_order"
    if "code" in value and "active" in value and "valid_from" in value:
        return "cost_center"
    return None


def document_kind(value: Mapping[str, Any]) -> str | None:
    """The business document a record became, as the ``document`` label of bizbus_documents_total
    (None: not one of the canonical ERP documents)."""
    kind = canonical_kind(value)
    if kind == "voucher":
        return "voucher_reversal" if value.get("reversal_of") else "voucher"
    if kind == "cost_center":
        return "cost_center" if value.get("active", True) else "cost_center_closed"
    if kind == "purchase_order":
        cancelled = str(value.get("status", "")).upper() == "CANCELLED"
        return "purchase_order_cancelled" if cancelled else "purchase_order"
    return None


def count_documents(connector: str, records: Iterable[SinkRecord], applied: set[str]) -> None:
    """Business metrics of what one write applied: documents by kind, voucher amounts (sum of debits) by
    currency."""
    for r in records:
        if r.effect_id not in applied:
            continue
        doc = document_kind(r.value)
        if doc is None:
            continue
        metrics.DOCUMENTS.labels(connector, doc).inc()
        if doc.startswith("voucher"):
            debit = sum((Decimal(str(line.get("debit") or 0)) for line in r.value.get("lines") or ()), Decimal(0))
            metrics.VOUCHER_AMOUNT.labels(connector, doc, str(r.value.get("currency") or "")).inc(float(debit))
