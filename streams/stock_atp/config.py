"""Config of the ``stock-atp`` flow (F5) and its mapping file, f5_stock_atp.yaml."""

from __future__ import annotations

from typing import Annotated

from bizbus.streams.runtime.applied import DEFAULT_LIMIT
from bizbus.streams.runtime.config import Code, DecimalText, FlowConfig, MappingModel
from pydantic import Field, StringConstraints, model_validator

UnitCode = Annotated[str, StringConstraints(min_length=1, max_length=16)]
WarehouseCode = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^/]+$")]


class UnitConversion(MappingModel):
    """A sales unit that is not the stock unit: ``quantity × factor`` in ``unit``."""

    unit: UnitCode = Field(description="the stock unit it converts to, e.g. pcs")
    factor: DecimalText = Field(gt=0, description='how many stock units one sales unit is, as a quoted decimal, e.g. "12"')


class StockAtpMapping(MappingModel):
    """f5_stock_atp.yaml: the units a sales line may use, conversions, the default warehouse and which order
    statuses give a reservation back."""

    units: tuple[UnitCode, ...] = Field(
        default=("pcs", "set", "t", "kg", "m", "m2", "m3"),
        description="unit codes a sales line may use as they are (a line in any other unit that has no "
                    "conversion goes to the dead-letter topic as unknown_unit)",
    )  # fmt: skip
    conversions: dict[UnitCode, UnitConversion] = Field(
        default_factory=dict, description="sales unit -> stock unit and factor, e.g. box: {unit: pcs, factor: \"12\"}"
    )
    default_warehouse: WarehouseCode | None = Field(
        default=None, description="warehouse of an order that names none (null: such an order is refused as invalid input)"
    )
    releasing_statuses: tuple[Code, ...] = Field(
        default=("CANCELLED", "CLOSED", "REJECTED"),
        description="order statuses that give the order's reservation back (decision RELEASED); a DELETED "
                    "order always does",
    )  # fmt: skip
    ignored_statuses: tuple[Code, ...] = Field(
        default=("DRAFT",), description="order statuses that are not checked yet (no decision)"
    )

    @model_validator(mode="after")
    def _targets_known(self) -> StockAtpMapping:
        for name, conv in self.conversions.items():
            if conv.unit not in self.units:
                raise ValueError(f"conversion {name} -> {conv.unit}: {conv.unit} is not among units")
        return self


class StockAtpConfig(FlowConfig):
    """Config of the ``stock-atp`` flow (F5)."""

    MAPPING_FILE = "f5_stock_atp.yaml"
    MAPPING_MODEL = StockAtpMapping

    applied_limit: int = Field(
        default=DEFAULT_LIMIT, ge=16, le=100_000,
        description="input event ids each stock key keeps to recognise a redelivery (must exceed the steps one "
                    "key sees between two commits of its partition: one batch)",
    )  # fmt: skip
