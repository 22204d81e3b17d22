"""Config of the ``labor-cost`` flow (F2) and its mapping file, f2_labor_cost.yaml."""

from __future__ import annotations

from datetime import date
from functools import cached_property
from typing import Annotated, Any

from bizbus.streams.runtime.config import (
    AccountCode,
    Code,
    DecimalText,
    FlowConfig,
    MappingModel,
    TimeZoneName,
    check_pattern,
)
from pydantic import Field, StringConstraints, field_validator


class RateRow(MappingModel):
    """One dated hourly cost rate of an employee (used when the Employee topic has none)."""

    employee: Code = Field(description="employee code")
    rate: DecimalText = Field(gt=0, description='hourly cost rate as a quoted decimal, e.g. "186.50"')
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = Field(
        default="CNY", description="ISO 4217"
    )
    valid_from: date = Field(description="first day the rate applies (ISO date)")
    valid_to: date | None = Field(default=None, description="last day, inclusive; null = open-ended")


class LaborCostMapping(MappingModel):
    """f2_labor_cost.yaml: accounts, voucher numbering, employee aliases and fallback rates."""

    labor_cost_account: AccountCode = Field(
        default="6601", description="debit: labor cost (e.g. 6601 / 5001.01)"
    )
    accrued_payroll_account: AccountCode = Field(
        default="2211", description="credit: accrued payroll (应付职工薪酬)"
    )
    voucher_type: str | None = Field(default="记", description="voucher word in the ERP, e.g. 记")
    voucher_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9]{0,9}$")] = Field(
        default="LAB", description="voucher_no = <prefix>-<worklog>-<version>"
    )
    default_currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = Field(
        default="CNY", description="currency of a rate that names none"
    )
    timezone: TimeZoneName = Field(
        default="Asia/Shanghai", description="time zone of the change date of a reversal"
    )
    description_pattern: str = Field(
        default="Labor {employee} {work_date}: {hours} h x {rate} {currency}/h on {project} (worklog {worklog})",
        description="voucher text; placeholders {employee} {work_date} {hours} {rate} {currency} {project} {worklog}",
    )
    employee_aliases: dict[str, Code] = Field(
        default_factory=dict, description='"<source_system>:<user id>" -> employee code'
    )
    rates: tuple[RateRow, ...] = Field(default=(), description="dated fallback rates by employee code")

    @cached_property
    def _rates_by_employee(self) -> dict[str, list[dict[str, Any]]]:
        by: dict[str, list[dict[str, Any]]] = {}
        for r in self.rates:
            by.setdefault(r.employee, []).append(
                {"valid_from": r.valid_from, "valid_to": r.valid_to, "rate": r.rate, "currency": r.currency})
        return by

    def rates_of(self, code: str) -> list[dict[str, Any]]:
        """The dated rates of employee ``code`` (valid_from, valid_to, rate, currency), in file order; indexed
        once, so a record looks at its employee's rows only."""
        return self._rates_by_employee.get(code, [])

    @field_validator("description_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        return check_pattern(v, ("employee", "work_date", "hours", "rate", "currency", "project", "worklog"))

    @field_validator("rates")
    @classmethod
    def _no_overlap(cls, rows: tuple[RateRow, ...]) -> tuple[RateRow, ...]:
        for row in rows:
            if row.valid_to is not None and row.valid_to < row.valid_from:
                raise ValueError(
                    f"rate of {row.employee}: valid_to {row.valid_to} is before valid_from {row.valid_from}"
                )
        return rows


class LaborCostConfig(FlowConfig):
    """Config of the ``labor-cost`` flow (F2)."""

    MAPPING_FILE = "f2_labor_cost.yaml"
    MAPPING_MODEL = LaborCostMapping

    budget_alert_percent: float = Field(
        default=10.0, ge=0, le=1000,
        description="alert (bizbus_budget_alerts_total, a warning log) once a project's booked labor cost "
                    "exceeds its budget_amount by more than this many percent; projects without a budget never alert",
    )  # fmt: skip
    cost_entries: bool = Field(
        default=True,
        description="also send a LABOR CostEntry (bizbus.finance.cost-entry.v1, entry_id = the voucher number, "
                    "negative for a reversal) after each voucher; the budget-control flow (F7) sums labor from them",
    )  # fmt: skip
