"""A DingTalk instance change + the instance read from the API -> ``bizbus.oa.ApprovalChanged`` (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from bizbus.connectors.runtime.inbox import Event

from bizbus import lineage
from bizbus.failures import Permanent

if TYPE_CHECKING:
    from .config import DingTalkConfig

SYSTEM = "dingtalk"
TOPIC = "bizbus.oa.approval.v1"
Json = Mapping[str, Any]


def _ms(value: Any) -> int | None:
    try:
        return None if isinstance(value, bool) or value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


STATUS = {("finish", "agree"): "APPROVED", ("finish", "refuse"): "REJECTED", ("terminate", ""): "REVOKED",
          ("start", ""): "PENDING", ("delete", ""): "CANCELLED"}  # fmt: skip


def approval_status(event: Json) -> str | None:
    """Canonical status of an instance event; None for a change that is not one (e.g. an unknown result)."""
    kind = str(event.get("type") or "")
    result = str(event.get("result") or "") if kind == "finish" else ""
    return STATUS.get((kind, result))


def change_ms(event: Json) -> int | None:
    """When the change happened: the latest of createTime, finishTime and EventTime (ms)."""
    times = [_ms(event.get(k)) for k in ("createTime", "finishTime", "EventTime")]
    return max((t for t in times if t is not None), default=None)


def version(event: Json) -> int:
    """Change time in ms; a terminate / delete gets +1 so that it supersedes a finish with the same times."""
    at = change_ms(event)
    if at is None:
        raise Permanent("event has none of createTime, finishTime, EventTime", reason="no_version")
    return at + (1 if event.get("type") in ("terminate", "delete") else 0)


def form_fields(components: Any) -> dict[str, str]:
    """``formComponentValues`` as name -> string (tables / complex values as JSON text)."""
    out: dict[str, str] = {}
    for c in components if isinstance(components, list) else []:
        if not isinstance(c, Mapping) or c.get("value") is None:
            continue
        name = str(c.get("name") or c.get("id") or "")
        if not name:
            continue
        v = c["value"]
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
        out[name if name not in out else f"{name}#{c.get('id')}"] = text
    return out


def parse_amount(text: str, field_name: str) -> Decimal | None:
    """A money value as DingTalk forms show it ("58,650.00", "¥45.50") -> Decimal with 2 places."""
    cleaned = text.strip()
    for junk in (",", "，", "¥", "￥", "元", "CNY", " "):
        cleaned = cleaned.replace(junk, "")
    if not cleaned:
        return None
    try:
        value = Decimal(cleaned)
        cents = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        cents = None
    if cents is None or cents != value:
        raise Permanent(f"form field {field_name!r}: {text!r} is no amount with 2 decimals", reason="invalid_amount")  # fmt: skip
    return cents


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _iso(value: Any) -> datetime | None:
    """The instance API's times, e.g. "2022-08-31T11:52Z" (UTC when no offset is given)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def approval_changed(event: Json, instance: Json | None, m: DingTalkConfig) -> Event:
    """The canonical event for one instance change (``instance`` is the API's ``result``; None after delete)."""
    inst = instance or {}
    instance_id = str(event["processInstanceId"])
    status = approval_status(event)
    if status is None:
        raise Permanent(f"instance {instance_id}: no status for type={event.get('type')!r} "
                        f"result={event.get('result')!r}", reason="unknown_change")  # fmt: skip
    process_code = event.get("processCode") or inst.get("processCode")
    applicant = inst.get("originatorUserId") or event.get("staffId")
    if not process_code or not applicant:
        raise Permanent(f"instance {instance_id}: no processCode / originator", reason="incomplete_event")
    ver = version(event)
    occurred = _at(change_ms(event))
    submitted = _at(_ms(event.get("createTime"))) or _iso(inst.get("createTime")) or occurred
    finished = None
    if status != "PENDING":
        finished = _at(_ms(event.get("finishTime"))) or _iso(inst.get("finishTime")) or occurred
    fields = form_fields(inst.get("formComponentValues"))
    amount = parse_amount(fields[m.amount_field], m.amount_field) if m.amount_field in fields else None
    project = fields.get(m.project_field) if m.project_field else None
    business_ref = fields.get(m.business_ref_field) if m.business_ref_field else None
    eid = lineage.event_id(SYSTEM, "instance", instance_id, status, ver)
    value = {
        "meta": lineage.meta(eid, business_ref or project or instance_id, SYSTEM, occurred),
        "instance_id": instance_id, "template_code": str(process_code),
        "template_name": m.templates.get(str(process_code)), "status": status, "applicant": str(applicant),
        "title": inst.get("title") or event.get("title") or None, "amount": amount,
        "currency": m.currency if amount is not None else None, "project": project or None,
        "business_ref": business_ref or None, "form_fields": fields, "submitted_at": submitted,
        "finished_at": finished, "version": ver,
    }  # fmt: skip
    return Event(TOPIC, instance_id, value)
