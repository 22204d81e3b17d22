"""Config of the ``material-need`` flow (F3) and its mapping file, f3_material_need.yaml."""

from __future__ import annotations

from typing import Annotated

from bizbus.streams.runtime.config import Code, FlowConfig, MappingModel, TimeZoneName
from pydantic import Field, StringConstraints

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class MaterialNeedMapping(MappingModel):
    """f3_material_need.yaml: company, numbering, the default warehouse and where a material's supplier comes
    from (the material master names none: by material code, else by the material's category, else the default)."""

    company: Code = Field(default="C01", description="company code of the requisitions")
    currency: Currency = Field(default="CNY", description="currency of the requisitions (prices from the material "
                                                          "master's standard cost when it is in this currency)")
    requisition_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9]{0,9}$")] = Field(
        default="PR", description="requisition_no = <prefix>-<need id> (one requisition per need, new versions on change)"
    )
    default_warehouse: Code | None = Field(
        default=None, description="warehouse whose stock covers a need that names none (null: such a need has no stock)"
    )
    use_safety_stock: bool = Field(
        default=True, description="keep the safety stock: free stock = available − safety stock"
    )
    missing_level_is_zero: bool = Field(
        default=False,
        description="a need whose warehouse has no stock level of the material yet: false = wait for the level like "
        "missing master data (then a dead letter to replay), true = no free stock, all of the need is short",
    )
    timezone: TimeZoneName = Field(default="Asia/Shanghai", description="time zone of the request date")
    supplier_by_material: dict[Code, Code] = Field(default_factory=dict, description="material code -> supplier code")
    supplier_by_category: dict[Code, Code] = Field(
        default_factory=dict, description="material category (bizbus.md.material.v1 category) -> supplier code"
    )
    default_supplier: Code | None = Field(
        default=None, description="supplier of a material found in neither map (null: such a need is a dead letter)"
    )

    def supplier_for(self, material: str, category: str | None) -> str | None:
        """The material's supplier: by code, else by category, else the default (None: none)."""
        if material in self.supplier_by_material:
            return self.supplier_by_material[material]
        if category is not None and category in self.supplier_by_category:
            return self.supplier_by_category[category]
        return self.default_supplier


class MaterialNeedConfig(FlowConfig):
    """Config of the ``material-need`` flow (F3)."""

    MAPPING_FILE = "f3_material_need.yaml"
    MAPPING_MODEL = MaterialNeedMapping
