"""Config of the ``budget-control`` flow (F7) and its mapping file, f7_budget_control.yaml."""

from __future__ import annotations

from decimal import Decimal

from bizbus.streams.runtime.config import DecimalText, FlowConfig, MappingModel
from pydantic import Field, model_validator


class BudgetControlMapping(MappingModel):
    """f7_budget_control.yaml: the alert line, its hysteresis and what counts as committed."""

    alert_percent: DecimalText = Field(
        default=Decimal("10"), ge=0, le=1000,
        description="OVER (and FREEZE) once the running cost is above budget × (1 + alert_percent / 100)",
    )  # fmt: skip
    hysteresis_percent: DecimalText = Field(
        default=Decimal("2"), ge=0, le=1000,
        description="BACK_UNDER (and UNFREEZE) only once the running cost is at or below budget × "
                    "(1 + (alert_percent - hysteresis_percent) / 100): a cost wavering at the line does not "
                    "freeze and unfreeze the project's payments on every record",
    )  # fmt: skip
    committed_requisition_statuses: tuple[str, ...] = Field(
        default=("SUBMITTED", "APPROVED"),
        description="statuses in which a purchase requisition counts as committed (until an order names it)",
    )
    committed_order_statuses: tuple[str, ...] = Field(
        default=("SUBMITTED", "APPROVED"),
        description="statuses in which a purchase order counts as committed (CLOSED: received, its cost comes "
                    "through the goods issues of F6; CANCELLED: released)",
    )  # fmt: skip
    applied_ids_kept: int = Field(
        default=4096, ge=16, le=100_000,
        description="step ids (cost entry ids for cost entries) a project's state keeps "
                    "(streams/runtime/applied.py); must exceed the steps of one project between two offset commits",
    )  # fmt: skip

    @model_validator(mode="after")
    def _band(self) -> BudgetControlMapping:
        if self.hysteresis_percent > self.alert_percent + 100:
            raise ValueError("hysteresis_percent may not put the BACK_UNDER line below zero")
        return self


class BudgetControlConfig(FlowConfig):
    """Config of the ``budget-control`` flow (F7). Its inputs are re-keyed by project onto
    bizbus.finance.budget-step.v1, whose one agent writes the project states: it scales like any flow (more
    workers in the consumer group)."""

    MAPPING_FILE = "f7_budget_control.yaml"
    MAPPING_MODEL = BudgetControlMapping
