"""Config of the ``approvals-to-erp`` flow (F4) and its mapping file, f4_approvals.yaml."""

from __future__ import annotations

from typing import Literal

from bizbus.streams.runtime.config import Code, FlowConfig, MappingModel, TimeZoneName, check_pattern
from pydantic import Field, field_validator


class FormFields(MappingModel):
    """Which form field (by its label) holds each value of the document."""

    supplier: str = Field(description="form field with the supplier code")
    material: str = Field(description="form field with the material code")
    quantity: str = Field(description="form field with the quantity")
    unit_price: str = Field(description="form field with the unit price (excl. tax)")
    project: str | None = Field(
        default=None, description="form field with the project code (the event's project wins)"
    )
    description: str | None = Field(default=None, description="form field with the purpose / remark")


class TemplateMapping(MappingModel):
    """What one approval template creates in the ERP."""

    document: Literal["purchase_order"] = Field(description="document type to create")
    number_pattern: str = Field(default="OA-{instance_id}", description="order number; placeholders {instance_id}, "
                                "{business_ref}")  # fmt: skip
    fields: FormFields
    unit: Code = Field(default="u", description="unit of measure of the line")
    currency: str = Field(
        default="CNY", pattern=r"^[A-Z]{3}$", description="currency when the event has none"
    )
    company: Code | None = Field(default=None, description="company when the approval names no project")

    @field_validator("number_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        return check_pattern(v, ("instance_id", "business_ref"))


class ApprovalsMapping(MappingModel):
    """f4_approvals.yaml: approval templates → ERP documents."""

    timezone: TimeZoneName = Field(default="Asia/Shanghai", description="time zone of the order date")
    templates: dict[str, TemplateMapping] = Field(
        default_factory=dict, description="template code -> mapping"
    )
    ignored_templates: tuple[str, ...] = Field(
        default=(), description="template codes that create nothing (no dead letter)"
    )


class ApprovalsConfig(FlowConfig):
    """Config of the ``approvals-to-erp`` flow (F4)."""

    MAPPING_FILE = "f4_approvals.yaml"
    MAPPING_MODEL = ApprovalsMapping
