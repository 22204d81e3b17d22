"""Approval instance event + instance detail -> ``bizbus.oa.ApprovalChanged`` (pure).

The status and version come from the event (the change reported), the rest from
``GET /open-apis/approval/v4/instances/{code}``, whose ``form`` is a JSON string of widgets
``[{id, name, type, value, ...}]``; ``start_time`` / ``end_time`` are millisecond strings ("0" = not finished).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from bizbus.connectors.runtime.inbox import Event

from bizbus import lineage

from .webhook import EVENT_TYPE, epoch_ms

SYSTEM = "feishu"
TOPIC = "bizbus.oa.approval.v1"

STATUS = {
    "PENDING": "PENDING",
    "APPROVED": "APPROVED",
    "REJECTED": "REJECTED",
    "REVERTED": "REVOKED",
    "CANCELED": "CANCELLED",
    "DELETED": "CANCELLED",
    "OVERTIME_CLOSE": "CANCELLED",
    "OVERTIME_RECOVER": "PENDING",
}
"""Feishu instance status -> bizbus.oa.ApprovalStatus (REVERTED = withdrawn after approval: F4 compensates;
an instance closed for timeout is void, one recovered from it is pending again)."""


@dataclass(frozen=True)
class FormMapping:
    """Which form fields (by name) carry the amount, the project and the business document number."""

    amount_field: str | None = None
    project_field: str | None = None
    business_ref_field: str | None = None
    default_currency: str | None = None


def parse_form(form: Any) -> list[tuple[dict[str, Any], Any]]:
    """Widgets of an instance's ``form`` (a JSON string) as (widget with exact Decimal numbers, plain value)."""
    if form in (None, ""):
        return []
    exact = json.loads(form, parse_float=Decimal) if isinstance(form, str) else form
    plain = json.loads(form) if isinstance(form, str) else form
    if not isinstance(exact, list) or not all(isinstance(w, dict) for w in exact):
        raise ValueError("instance form is not a JSON list of widgets")
    return [(w, p.get("value")) for w, p in zip(exact, plain, strict=True)]


def field_text(value: Any, plain: Any) -> str:
    """A form value as the string form_fields holds: text as is, numbers exactly, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | Decimal):
        return str(value)
    return json.dumps(plain, ensure_ascii=False, separators=(",", ":"))


def money(value: Any, field: str) -> Decimal | None:
    """An amount widget's value with exactly 2 decimals (never rounded: more decimals are an error)."""
    if value in (None, ""):
        return None
    try:
        amount = Decimal(str(value).replace(",", "")) if not isinstance(value, bool) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise ValueError(f"form field {field!r}: {value!r} is not an amount")  # key: value, so logs can mask it
    cents = amount.quantize(Decimal("0.01"))
    if cents != amount:
        raise ValueError(f"form field {field!r}: {value!r} has more than 2 decimals")
    return cents


def _at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def approval_changed(event: Mapping[str, Any], instance: Mapping[str, Any], mapping: FormMapping) -> Event:
    """One ApprovalChanged for an approval_instance event plus the instance read from the API.

    The status and version come from the event (the change being reported), the rest from the instance;
    ``finished_at`` stays empty for a PENDING change even when the instance has finished since.
    Raises ``ValueError`` when the data cannot make a valid event (the row is then dead-lettered)."""
    code = str(event["instance_code"])
    raw_status = str(event["status"])
    if raw_status not in STATUS:
        raise ValueError(f"unknown Feishu instance status {raw_status!r}")
    version = epoch_ms(event.get("operate_time") or event.get("instance_operate_time"), "operate_time")
    fields: dict[str, str] = {}
    picked: dict[str, tuple[dict[str, Any], Any]] = {}
    for widget, plain in parse_form(instance.get("form")):
        name = str(widget.get("name") or widget.get("id") or "")
        label = name if name not in fields else f"{name}#{widget.get('id')}"
        fields[label] = field_text(widget.get("value"), plain)
        picked.setdefault(name, (widget, plain))

    def text_of(field: str | None) -> str | None:
        if not field or field not in picked:
            return None
        return fields[field] or None

    amount = currency = None
    if mapping.amount_field and mapping.amount_field in picked:
        widget = picked[mapping.amount_field][0]
        amount = money(widget.get("value"), mapping.amount_field)
        option = widget.get("option") if isinstance(widget.get("option"), dict) else {}
        if amount is not None:
            currency = widget.get("currency") or option.get("currency") or mapping.default_currency
    applicant = instance.get("user_id") or instance.get("open_id")
    if not applicant:
        raise ValueError(f"instance {code} names no applicant (user_id / open_id)")
    start = instance.get("start_time")
    if start in (None, "", "0", 0):
        raise ValueError(f"instance {code} has no start_time")
    end = instance.get("end_time")  # the instance as read now: a pending change has no end yet
    final = (
        None if STATUS[raw_status] == "PENDING" or end in (None, "", "0", 0) else epoch_ms(end, "end_time")
    )
    business_ref = text_of(mapping.business_ref_field)
    serial = instance.get("serial_number")
    value = {
        "meta": lineage.meta(
            event_id=lineage.event_id(SYSTEM, EVENT_TYPE, code, raw_status, version),
            correlation_id=business_ref or code,
            source_system=SYSTEM,
            occurred_at=_at(version),
            trace={"feishu_serial_number": str(serial)} if serial else None,
        ),
        "instance_id": code,
        "template_code": str(event.get("approval_code") or instance.get("approval_code") or ""),
        "template_name": instance.get("approval_name") or None,
        "status": STATUS[raw_status],
        "applicant": str(applicant),
        "title": None,
        "amount": amount,
        "currency": currency,
        "project": text_of(mapping.project_field),
        "business_ref": business_ref,
        "form_fields": fields,
        "submitted_at": _at(epoch_ms(start, "start_time")),
        "finished_at": None if final is None else _at(final),
        "version": version,
    }
    if not value["template_code"]:
        raise ValueError(f"instance {code} names no approval_code")
    return Event(TOPIC, code, value)
