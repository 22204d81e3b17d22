"""Config of the ``material-cost`` flow (F6) and its mapping file, f6_material_cost.yaml."""

from __future__ import annotations

from typing import Annotated, Literal

from bizbus.streams.runtime.config import AccountCode, FlowConfig, MappingModel, TimeZoneName, check_pattern
from pydantic import Field, StringConstraints, field_validator


class MaterialCostMapping(MappingModel):
    """f6_material_cost.yaml: valuation scope, accounts and voucher numbering of material issues."""

    valuation_scope: Literal["warehouse", "company"] = Field(
        default="warehouse",
        description="warehouse: one moving average per company + warehouse + material (分仓核算); company: one "
                    "per company + material, all warehouses pooled",
    )  # fmt: skip
    material_cost_account: AccountCode = Field(
        default="5401.01", description="debit: the project's material cost (e.g. 合同履约成本-材料费)"
    )
    inventory_account: AccountCode = Field(default="1403", description="credit: inventory (原材料)")
    voucher_type: str | None = Field(default="记", description="voucher word in the ERP, e.g. 记")
    voucher_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9]{0,9}$")] = Field(
        default="MAT", description="voucher_no = <prefix>-<issue>-<version>, a reversal ...-R"
    )
    timezone: TimeZoneName = Field(default="Asia/Shanghai", description="time zone of the change date of a reversal")
    description_pattern: str = Field(
        default="Material {material} {quantity} {unit} x {unit_cost} to {project} (issue {issue})",
        description="line text; placeholders {material} {quantity} {unit} {unit_cost} {project} {issue}",
    )
    applied_ids_kept: int = Field(
        default=4096, ge=16, le=100_000,
        description="step ids a material's cost state keeps (streams/runtime/applied.py), and as many issue "
                    "costs; must exceed the movements of one material between two offset commits",
    )  # fmt: skip

    @field_validator("description_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        return check_pattern(v, ("material", "quantity", "unit", "unit_cost", "project", "issue"))


class MaterialCostConfig(FlowConfig):
    """Config of the ``material-cost`` flow (F6). Receipts and issues are re-keyed onto
    bizbus.finance.material-cost-step.v1, whose one agent writes the moving averages: it scales like any flow
    (more workers in the consumer group)."""

    MAPPING_FILE = "f6_material_cost.yaml"
    MAPPING_MODEL = MaterialCostMapping
