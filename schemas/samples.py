"""Sample records of the canonical Avro schemas, used by the docs and the tests.

One story runs through them: company SH01 (沪建示范工程有限公司) runs project P2025-001, the 张江 office
building's electrical and mechanical installation. Employee E0042 (王芳) books 7.5 hours on it in Jira,
which becomes a labor cost entry and a balanced voucher for Kingdee; steel from 上海宝钢 is requested,
approved in DingTalk, ordered, received and issued to the project.

Values use the Python types fastavro expects and returns: ``decimal.Decimal`` with exactly the schema's
scale for decimals, timezone-aware UTC ``datetime`` (whole milliseconds) for ``timestamp-millis`` and
``datetime.date`` for ``date``. Every sample lists every field, so a sample equals its own Avro round trip.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

Record = dict[str, Any]

_BUILDERS: dict[str, Callable[[], Record]] = {}
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:bizbus:event")


def sample(full_name: str) -> Record:
    """A fresh sample record of the schema ``full_name``; ``KeyError`` when there is none."""
    try:
        builder = _BUILDERS[full_name]
    except KeyError:
        raise KeyError(f"no sample for {full_name!r}") from None
    return builder()


def sample_names() -> list[str]:
    """Full names of all schemas that have a sample, sorted."""
    return sorted(_BUILDERS)


def _sample(full_name: str) -> Callable[[Callable[[], Record]], Callable[[], Record]]:
    def register(builder: Callable[[], Record]) -> Callable[[], Record]:
        _BUILDERS[full_name] = builder
        return builder

    return register


def event_id(system: str, entity: str, key: str, version: int | str) -> str:
    """Deterministic event id of a change: the same (system, entity, key, version) gives the same id."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{system}/{entity}/{key}/{version}"))


def _at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def _meta(system: str, entity: str, key: str, version: int, correlation_id: str, occurred_at: datetime,
          causation_id: str | None = None, trace: dict[str, str] | None = None) -> Record:
    return {
        "event_id": event_id(system, entity, key, version),
        "causation_id": causation_id,
        "correlation_id": correlation_id,
        "source_system": system,
        "occurred_at": occurred_at,
        "trace": dict(trace or {}),
    }


# ids that link the samples into one lineage chain
_TIMESHEET_EVENT = event_id("jira", "worklog", "10042", 3)
_COST_EVENT = event_id("bizbus", "cost_entry", "CE-jira-10042-3", 1)
_VOUCHER_EVENT = event_id("bizbus", "voucher", "BZ-SH01-20250314-000123", 1)
_APPROVAL_EVENT = event_id("dingtalk", "approval", "PROC-7F3A2C1E-2025-0318", 4)


def _line(line_no: int, material: str, name: str, quantity: str, unit: str, unit_price: str | None,
          amount: str | None, **extra: Any) -> Record:
    return {
        "line_no": line_no,
        "material": material,
        "material_name": name,
        "quantity": Decimal(quantity),
        "unit": unit,
        "unit_price": None if unit_price is None else Decimal(unit_price),
        "amount": None if amount is None else Decimal(amount),
        "tax_rate": Decimal(extra.get("tax_rate", "0.130000")) if unit_price is not None else None,
        "project": extra.get("project"),
        "need_by": extra.get("need_by"),
        "description": extra.get("description"),
    }


def _steel(quantity: str = "12.5000", amount: str | None = "51500.00", priced: bool = True) -> Record:
    return _line(1, "M-STEEL-HRB400-20", "热轧带肋钢筋 HRB400 Φ20", quantity, "t",
                 "4120.000000" if priced else None, amount if priced else None,
                 need_by=date(2025, 3, 28))


def _pipe(priced: bool = True) -> Record:
    return _line(2, "M-PIPE-DN100", "镀锌钢管 DN100", "200.0000", "m", "35.750000" if priced else None,
                 "7150.00" if priced else None, need_by=date(2025, 3, 28), description="二层机房")


# ------------------------------------------------------------------------------------------ common
@_sample("bizbus.common.EventMeta")
def _event_meta() -> Record:
    return _meta("jira", "worklog", "10042", 3, "P2025-001", _at(2025, 3, 14, 10, 12, 5, 123000),
                 trace={"connector": "jira-worklog-source", "cursor": "2025-03-14T10:12:05.123Z"})


@_sample("bizbus.common.DocumentLine")
def _document_line() -> Record:
    return _steel()


@_sample("bizbus.common.DocumentRef")
def _document_ref() -> Record:
    return {"system": "jira", "document_type": "timesheet", "document_no": "10042", "line_no": None}


# ------------------------------------------------------------------------------------------ pm
@_sample("bizbus.pm.ProjectChanged")
def _project_changed() -> Record:
    return {
        "meta": _meta("jira", "project", "P2025-001", 7, "P2025-001", _at(2025, 3, 3, 1, 30)),
        "op": "UPDATED",
        "project": "P2025-001",
        "name": "张江办公楼机电安装工程",
        "company": "SH01",
        "source_status": "In Progress",
        "manager": "E0007",
        "customer": "CUS-0007",
        "cost_center": None,
        "planned_start": date(2025, 1, 6),
        "planned_end": date(2025, 10, 31),
        "actual_end": None,
        "budget_amount": Decimal("3500000.00"),
        "currency": "CNY",
        "version": 7,
    }


@_sample("bizbus.pm.TaskChanged")
def _task_changed() -> Record:
    return {
        "meta": _meta("jira", "issue", "ZJ-123", 12, "P2025-001", _at(2025, 3, 12, 6, 45, 10)),
        "op": "UPDATED",
        "task": "ZJ-123",
        "project": "P2025-001",
        "parent_task": "ZJ-100",
        "title": "二层桥架安装",
        "status": "In Progress",
        "assignee": "E0042",
        "estimated_hours": Decimal("120.00"),
        "due_date": date(2025, 3, 31),
        "completed_at": None,
        "version": 12,
    }


@_sample("bizbus.pm.TimesheetEntry")
def _timesheet_entry() -> Record:
    return {
        "meta": _meta("jira", "worklog", "10042", 3, "P2025-001", _at(2025, 3, 14, 10, 12, 5, 123000),
                      trace={"connector": "jira-worklog-source"}),
        "op": "UPDATED",
        "worklog_id": "10042",
        "project": "P2025-001",
        "task": "ZJ-123",
        "employee": "E0042",
        "work_date": date(2025, 3, 14),
        "hours": Decimal("7.50"),
        "billable": True,
        "description": "二层桥架支吊架安装及调平",
        "version": 3,
    }


@_sample("bizbus.pm.MaterialNeed")
def _material_need() -> Record:
    return {
        "meta": _meta("glodon", "material_need", "BOM-P2025-001-0003", 1, "P2025-001",
                      _at(2025, 3, 10, 2, 0)),
        "op": "CREATED",
        "need_id": "BOM-P2025-001-0003",
        "project": "P2025-001",
        "task": "ZJ-123",
        "material": "M-STEEL-HRB400-20",
        "quantity": Decimal("12.5000"),
        "unit": "t",
        "need_by": date(2025, 3, 28),
        "warehouse": "WH-PD01",
        "version": 1,
    }


# ------------------------------------------------------------------------------------------ oa
@_sample("bizbus.oa.ApprovalChanged")
def _approval_changed() -> Record:
    return {
        "meta": _meta("dingtalk", "approval", "PROC-7F3A2C1E-2025-0318", 4, "PR-2025-0031",
                      _at(2025, 3, 18, 7, 20, 41, 500000)),
        "instance_id": "PROC-7F3A2C1E-2025-0318",
        "template_code": "PROC-PURCHASE-REQ",
        "template_name": "采购申请",
        "status": "APPROVED",
        "applicant": "E0042",
        "title": "王芳提交的采购申请",
        "amount": Decimal("58650.00"),
        "currency": "CNY",
        "project": "P2025-001",
        "business_ref": "PR-2025-0031",
        "form_fields": {"申请事由": "张江项目二层桥架及管道安装用料", "期望到货日期": "2025-03-28",
                        "付款方式": "月结30天"},
        "submitted_at": _at(2025, 3, 17, 1, 5, 0),
        "finished_at": _at(2025, 3, 18, 7, 20, 41, 500000),
        "version": 4,
    }


# ------------------------------------------------------------------------------------------ purchase
@_sample("bizbus.purchase.PurchaseRequisition")
def _purchase_requisition() -> Record:
    return {
        "meta": _meta("tryton", "purchase_requisition", "PR-2025-0031", 2, "PR-2025-0031",
                      _at(2025, 3, 18, 7, 21, 3), causation_id=_APPROVAL_EVENT),
        "op": "UPDATED",
        "requisition_no": "PR-2025-0031",
        "company": "SH01",
        "status": "APPROVED",
        "requester": "E0042",
        "project": "P2025-001",
        "cost_center": "CC-P2025-001",
        "request_date": date(2025, 3, 17),
        "currency": "CNY",
        "lines": [_steel(priced=False), _pipe(priced=False)],
        "total_amount": None,
        "approval_instance_id": "PROC-7F3A2C1E-2025-0318",
        "reason": "张江项目二层桥架及管道安装用料",
        "version": 2,
    }


@_sample("bizbus.purchase.PurchaseOrder")
def _purchase_order() -> Record:
    return {
        "meta": _meta("tryton", "purchase_order", "PO-2025-0088", 1, "PO-2025-0088", _at(2025, 3, 19, 3, 0)),
        "op": "CREATED",
        "order_no": "PO-2025-0088",
        "company": "SH01",
        "status": "APPROVED",
        "supplier": "SUP-0001",
        "order_date": date(2025, 3, 19),
        "delivery_date": date(2025, 3, 27),
        "currency": "CNY",
        "exchange_rate": None,
        "project": "P2025-001",
        "requisition_no": "PR-2025-0031",
        "warehouse": "WH-PD01",
        "lines": [_steel(), _pipe()],
        "total_amount": Decimal("58650.00"),
        "tax_amount": Decimal("7624.50"),
        "approval_instance_id": "PROC-7F3A2C1E-2025-0318",
        "version": 1,
    }


# ------------------------------------------------------------------------------------------ inventory
@_sample("bizbus.inventory.GoodsReceipt")
def _goods_receipt() -> Record:
    return {
        "meta": _meta("tryton", "goods_receipt", "GR-2025-0107", 1, "PO-2025-0088", _at(2025, 3, 27, 5, 40)),
        "op": "CREATED",
        "receipt_no": "GR-2025-0107",
        "company": "SH01",
        "warehouse": "WH-PD01",
        "supplier": "SUP-0001",
        "purchase_order_no": "PO-2025-0088",
        "project": "P2025-001",
        "posting_date": date(2025, 3, 27),
        "currency": "CNY",
        "lines": [_steel()],
        "version": 1,
    }


@_sample("bizbus.inventory.GoodsIssue")
def _goods_issue() -> Record:
    line = _steel(quantity="3.2500", amount="13390.00")
    line["project"] = "P2025-001"
    return {
        "meta": _meta("tryton", "goods_issue", "GI-2025-0212", 1, "P2025-001", _at(2025, 3, 28, 0, 15)),
        "op": "CREATED",
        "issue_no": "GI-2025-0212",
        "company": "SH01",
        "warehouse": "WH-PD01",
        "project": "P2025-001",
        "cost_center": "CC-P2025-001",
        "recipient": "E0042",
        "sales_order_no": None,
        "posting_date": date(2025, 3, 28),
        "currency": "CNY",
        "lines": [line],
        "version": 1,
    }


@_sample("bizbus.inventory.InventoryLevel")
def _inventory_level() -> Record:
    return {
        "meta": _meta("tryton", "stock_level", "WH-PD01/M-STEEL-HRB400-20", 1743120900000,
                      "WH-PD01/M-STEEL-HRB400-20", _at(2025, 3, 28, 0, 15)),
        "warehouse": "WH-PD01",
        "material": "M-STEEL-HRB400-20",
        "unit": "t",
        "on_hand": Decimal("9.2500"),
        "reserved": Decimal("4.0000"),
        "available": Decimal("5.2500"),
        "safety_stock": Decimal("6.0000"),
        "as_of": _at(2025, 3, 28, 0, 15),
    }


# ------------------------------------------------------------------------------------------ sales
@_sample("bizbus.sales.SalesOrder")
def _sales_order() -> Record:
    line = _line(1, "M-AHU-01", "组合式空调机组 AHU-01", "2.0000", "set", "86000.000000", "172000.00",
                 need_by=date(2025, 5, 15))
    return {
        "meta": _meta("kingdee", "sales_order", "SO-2025-0019", 1, "SO-2025-0019", _at(2025, 4, 2, 2, 30)),
        "op": "CREATED",
        "order_no": "SO-2025-0019",
        "company": "SH01",
        "status": "SUBMITTED",
        "customer": "CUS-0007",
        "order_date": date(2025, 4, 2),
        "delivery_date": date(2025, 5, 15),
        "warehouse": "WH-SH00",
        "currency": "CNY",
        "lines": [line],
        "total_amount": Decimal("172000.00"),
        "tax_amount": Decimal("22360.00"),
        "salesperson": "E0015",
        "version": 1,
    }


@_sample("bizbus.sales.OrderDecision")
def _order_decision() -> Record:
    order = _sales_order()
    return {
        "meta": _meta("bizbus", "order_decision", "SO-2025-0019", 1, "SO-2025-0019", _at(2025, 4, 2, 2, 31),
                      causation_id=order["meta"]["event_id"]),
        "order_no": "SO-2025-0019",
        "company": "SH01",
        "order_version": 1,
        "decision": "REFUSED",
        "reason": "M-AHU-01 in WH-SH00: 2.0000 set ordered, 1.0000 available to promise (short by 1.0000)",
        "warehouse": "WH-SH00",
        "lines": order["lines"],
        "shortfalls": {"M-AHU-01": "1.0000"},
        "decided_at": _at(2025, 4, 2, 2, 31),
    }


@_sample("bizbus.sales.AtpStep")
def _atp_step() -> Record:
    order = _sales_order()
    return {
        "meta": _meta("bizbus", "atp_step", "WH-SH00/M-AHU-01", 1, "SO-2025-0019", _at(2025, 4, 2, 2, 30),
                      causation_id=order["meta"]["event_id"]),
        "kind": "RESERVE",
        "stock_key": "WH-SH00/M-AHU-01",
        "order_no": "SO-2025-0019",
        "company": "SH01",
        "order_version": 1,
        "warehouse": "WH-SH00",
        "lines": order["lines"],
        "chain": [{"stock_key": "WH-SH00/M-AHU-01", "material": "M-AHU-01", "quantity": Decimal("2.0000"),
                   "unit": "set"}],
        "position": 0,
        "on_hand": None,
        "safety_stock": None,
        "unit": None,
        "as_of": None,
    }


@_sample("bizbus.inventory.ReplenishmentAlert")
def _replenishment_alert() -> Record:
    return {
        "meta": _meta("bizbus", "replenishment_alert", "WH-PD01/M-STEEL-HRB400-20", 1, "WH-PD01/M-STEEL-HRB400-20",
                      _at(2025, 3, 28, 0, 16)),
        "warehouse": "WH-PD01",
        "material": "M-STEEL-HRB400-20",
        "state": "BELOW",
        "available": Decimal("5.2500"),
        "safety_stock": Decimal("6.0000"),
        "unit": "t",
        "crossing": 1,
    }


# ------------------------------------------------------------------------------------------ hr
@_sample("bizbus.hr.Attendance")
def _attendance() -> Record:
    return {
        "meta": _meta("dingtalk", "attendance", "ATT-E0042-20250314", 2, "E0042/2025-03",
                      _at(2025, 3, 14, 11, 31, 7)),
        "attendance_id": "ATT-E0042-20250314",
        "employee": "E0042",
        "work_date": date(2025, 3, 14),
        "hours": Decimal("8.00"),
        "overtime_hours": Decimal("1.50"),
        "leave_type": None,
        "leave_hours": None,
        "check_in": _at(2025, 3, 14, 0, 52, 11),
        "check_out": _at(2025, 3, 14, 11, 31, 7),
        # stand-in ciphertext: real payloads are sealed by the source connector, opened only by payroll
        "payroll_payload": bytes.fromhex("01a3f2c9e05b7d4411e8c2a96f03bd7e5a19c4d2e8f7065b3c1a9d8e7f6a5b4c"),
        "payroll_key_id": "kms:payroll:2025q1",
        "version": 2,
    }


# ------------------------------------------------------------------------------------------ finance
@_sample("bizbus.finance.CostEntry")
def _cost_entry() -> Record:
    return {
        "meta": _meta("bizbus", "cost_entry", "CE-jira-10042-3", 1, "P2025-001",
                      _at(2025, 3, 14, 10, 12, 5, 123000), causation_id=_TIMESHEET_EVENT,
                      trace={"flow": "F2"}),
        "entry_id": "CE-jira-10042-3",
        "company": "SH01",
        "project": "P2025-001",
        "cost_center": "CC-P2025-001",
        "cost_type": "LABOR",
        "amount": Decimal("1398.75"),
        "currency": "CNY",
        "posting_date": date(2025, 3, 14),
        "source_ref": {"system": "jira", "document_type": "timesheet", "document_no": "10042",
                       "line_no": None},
        "quantity": Decimal("7.5000"),
        "unit": "h",
        "rate": Decimal("186.500000"),
        "employee": "E0042",
        "material": None,
        "reversal_of": None,
        "description": "王芳 2025-03-14 工时 7.5h × 186.50",
    }


@_sample("bizbus.sales.AtpChainLine")
def _atp_chain_line() -> Record:
    return dict(_atp_step()["chain"][0])


@_sample("bizbus.finance.VoucherLine")
def _voucher_line() -> Record:
    return {
        "line_no": 1,
        "account_code": "5001.01",
        "cost_center": "CC-P2025-001",
        "project": "P2025-001",
        "debit": Decimal("1398.75"),
        "credit": Decimal("0.00"),
        "description": "项目人工成本 生产成本-直接人工",
    }


@_sample("bizbus.finance.Voucher")
def _voucher() -> Record:
    credit_line = {
        "line_no": 2,
        "account_code": "2211.01",
        "cost_center": None,
        "project": None,
        "debit": Decimal("0.00"),
        "credit": Decimal("1398.75"),
        "description": "应付职工薪酬-工资",
    }
    return {
        "meta": _meta("bizbus", "voucher", "BZ-SH01-20250314-000123", 1, "P2025-001",
                      _at(2025, 3, 14, 10, 12, 5, 123000), causation_id=_COST_EVENT, trace={"flow": "F2"}),
        "voucher_no": "BZ-SH01-20250314-000123",
        "company": "SH01",
        "voucher_type": "记",
        "posting_date": date(2025, 3, 14),
        "currency": "CNY",
        "exchange_rate": None,
        "lines": [_voucher_line(), credit_line],
        "reversal_of": None,
        "source_refs": [
            {"system": "jira", "document_type": "timesheet", "document_no": "10042", "line_no": None},
            {"system": "bizbus", "document_type": "cost_entry", "document_no": "CE-jira-10042-3",
             "line_no": None},
        ],
        "description": "张江项目 2025-03-14 人工成本",
    }


# ------------------------------------------------------------------------------------------ master data
@_sample("bizbus.md.CostCenter")
def _cost_center() -> Record:
    return {
        "meta": _meta("kingdee", "cost_center", "CC-P2025-001", 2, "CC-P2025-001", _at(2025, 1, 6, 1, 0)),
        "code": "CC-P2025-001",
        "name": "张江办公楼机电安装项目部",
        "company": "SH01",
        "parent_code": "CC-PROJ",
        "project": "P2025-001",
        "manager": "E0007",
        "valid_from": date(2025, 1, 6),
        "valid_to": None,
        "active": True,
        "version": 2,
    }


@_sample("bizbus.md.Supplier")
def _supplier() -> Record:
    return {
        "meta": _meta("kingdee", "supplier", "SUP-0001", 5, "SUP-0001", _at(2024, 11, 20, 8, 0)),
        "code": "SUP-0001",
        "name": "上海宝钢钢材贸易有限公司",
        "short_name": "上海宝钢",
        "tax_id": "913101130000000001",
        "country": "CN",
        "contact_name": "李强",
        "contact_phone": "+86 21 5555 0101",
        "bank_name": "中国工商银行上海宝山支行",
        "bank_account": "1001 2345 6789 0000 001",
        "currency": "CNY",
        "payment_terms": "NET30",
        "valid_from": date(2020, 5, 1),
        "valid_to": None,
        "active": True,
        "version": 5,
    }


@_sample("bizbus.md.Employee")
def _employee() -> Record:
    return {
        "meta": _meta("dingtalk", "employee", "E0042", 9, "E0042", _at(2025, 1, 2, 2, 0)),
        "code": "E0042",
        "name": "王芳",
        "email": "wang.fang@example.com",
        "department": "D-ENG",
        "cost_center": "CC-ENG",
        "job_title": "机电工程师",
        "hourly_cost_rate": Decimal("186.500000"),
        "currency": "CNY",
        "valid_from": date(2025, 1, 1),
        "valid_to": None,
        "active": True,
        "version": 9,
    }


@_sample("bizbus.md.Material")
def _material() -> Record:
    return {
        "meta": _meta("kingdee", "material", "M-STEEL-HRB400-20", 3, "M-STEEL-HRB400-20",
                      _at(2024, 9, 1, 0, 0)),
        "code": "M-STEEL-HRB400-20",
        "name": "热轧带肋钢筋",
        "specification": "HRB400 Φ20",
        "unit": "t",
        "category": "STEEL-REBAR",
        "standard_cost": Decimal("4080.000000"),
        "currency": "CNY",
        "safety_stock": Decimal("6.0000"),
        "valid_from": date(2024, 9, 1),
        "valid_to": None,
        "active": True,
        "version": 3,
    }


@_sample("bizbus.md.IdCrosswalk")
def _id_crosswalk() -> Record:
    return {
        "meta": _meta("bizbus", "id_crosswalk", "project/jira/ZJ/kingdee/2025-01-06", 1, "P2025-001",
                      _at(2025, 1, 6, 1, 5)),
        "entity_type": "project",
        "source_system": "jira",
        "source_id": "ZJ",
        "target_system": "kingdee",
        "target_id": "CC-P2025-001",
        "target_entity_type": "cost_center",
        "valid_from": date(2025, 1, 6),
        "valid_to": None,
        "version": 1,
    }


# ------------------------------------------------------------------------------------------ ops
@_sample("bizbus.ops.DeadLetterHeader")
def _dead_letter_header() -> Record:
    return {"key": "source_system", "value": b"bizbus"}


@_sample("bizbus.ops.DeadLetter")
def _dead_letter() -> Record:
    return {
        "meta": _meta("bizbus", "dead_letter", "bizbus.finance.voucher.v1/3/18842", 1, "P2025-001",
                      _at(2025, 3, 14, 10, 12, 9, 876000), causation_id=_VOUCHER_EVENT),
        "key": b"BZ-SH01-20250314-000123",
        # Confluent wire format: magic byte 0, schema id 7, then the Avro body (truncated stand-in)
        "value": b"\x00\x00\x00\x00\x07" + bytes.fromhex("48" + "1f2e3d4c5b6a7988"),
        "headers": [
            {"key": "event_id", "value": _VOUCHER_EVENT.encode()},
            {"key": "source_system", "value": b"bizbus"},
            {"key": "x-empty", "value": None},
        ],
        "source_topic": "bizbus.finance.voucher.v1",
        "source_partition": 3,
        "source_offset": 18842,
        "source_timestamp": _at(2025, 3, 14, 10, 12, 5, 400000),
        "connector": "kingdee-voucher-sink",
        "error_class": "PERMANENT",
        "error_type": "UnknownCostCenter",
        "error_message": "cost center CC-P2025-001 is not open in Kingdee book SH01 on 2025-03-14",
        "attempts": 1,
        "failed_at": _at(2025, 3, 14, 10, 12, 9, 876000),
    }


# ------------------------------------------------------------------------------------------ budget control (F7)
@_sample("bizbus.finance.BudgetAlert")
def _budget_alert() -> Record:
    return {
        "meta": _meta("bizbus", "budget_alert", "P2025-001", 1, "P2025-001", _at(2025, 4, 10, 8, 0)),
        "project": "P2025-001",
        "company": "SH01",
        "state": "OVER",
        "budget_amount": Decimal("1000000.00"),
        "threshold_percent": Decimal("10.0000"),
        "labor_amount": Decimal("320000.00"),
        "material_amount": Decimal("650000.00"),
        "committed_amount": Decimal("140000.00"),
        "running_amount": Decimal("1110000.00"),
        "currency": "CNY",
        "crossing": 1,
    }


@_sample("bizbus.finance.MaterialCostStep")
def _material_cost_step() -> Record:
    return {
        "meta": _meta("bizbus", "material_cost_step", "SH01/WH-SH00", 1, "GI-2025-0042", _at(2025, 4, 10, 8, 0)),
        "kind": "ISSUE",
        "step_key": "SH01/WH-SH00",
        "document": "GI-2025-0042",
        "version": 1,
        "op": "CREATED",
        "company": "SH01",
        "currency": "CNY",
        "source_system": "kingdee",
        "posting_date": date(2025, 4, 10),
        "moves": [],
        "lines": [_material_issue_line()],
    }


@_sample("bizbus.finance.MaterialIssueLine")
def _material_issue_line() -> Record:
    return {"line_no": 1, "material": "M-AHU-01", "quantity": Decimal("2.0000"), "unit": "set",
            "project": "P2025-001", "cost_center": "CC-P2025-001", "valuation_key": "SH01/WH-SH00/M-AHU-01"}


@_sample("bizbus.finance.MaterialCostMove")
def _material_cost_move() -> Record:
    return {"valuation_key": "SH01/WH-SH00/M-AHU-01", "quantity": Decimal("2.0000"), "amount": Decimal("23000.00")}


@_sample("bizbus.finance.BudgetStep")
def _budget_step() -> Record:
    return {
        "meta": _meta("bizbus", "budget_step", "P2025-001", 1, "P2025-001", _at(2025, 4, 10, 8, 0)),
        "kind": "COST",
        "project": "P2025-001",
        "entry_id": "MAT-GI-2025-0042-1-1",
        "cost_type": "MATERIAL",
        "amount": Decimal("11500.00"),
        "currency": "CNY",
        "document": None,
        "covers": None,
        "uncovers": None,
        "company": None,
        "budget_amount": None,
        "project_version": 0,
    }


@_sample("bizbus.oa.PaymentFreezeCommand")
def _payment_freeze_command() -> Record:
    alert = _budget_alert()
    return {
        "meta": _meta("bizbus", "payment_freeze", "P2025-001/1/FREEZE", 1, "P2025-001", _at(2025, 4, 10, 8, 0),
                      causation_id=alert["meta"]["event_id"]),
        "command_id": "P2025-001/1/FREEZE",
        "project": "P2025-001",
        "company": "SH01",
        "action": "FREEZE",
        "reason": "running cost 1110000.00 CNY is 11.00 % over the budget of 1000000.00 CNY (alert line 10.00 %)",
        "alert_id": alert["meta"]["event_id"],
        "crossing": 1,
    }
