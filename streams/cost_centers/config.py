"""Config of the ``cost-centers`` flow (F1 + F8 close) and its mapping file, f1_cost_centers.yaml."""

from __future__ import annotations

from bizbus.streams.runtime.config import Code, FlowConfig, MappingModel, TimeZoneName, check_pattern
from pydantic import Field, field_validator


class CostCenterMapping(MappingModel):
    """f1_cost_centers.yaml: how a project becomes a cost center."""

    code_pattern: str = Field(default="CC-{project}", description="cost center code when the project has none; "
                              "placeholders {project}, {company}")  # fmt: skip
    name_pattern: str = Field(default="{project} {name}", description="cost center name; placeholders "
                              "{project}, {name}, {company}")  # fmt: skip
    parent_code: Code | None = Field(
        default="CC", description="parent cost center of every project cost center"
    )
    target_system: Code = Field(default="erp", description="target_system of the IdCrosswalk records")
    timezone: TimeZoneName = Field(default="Asia/Shanghai", description="time zone of business dates")

    @field_validator("code_pattern")
    @classmethod
    def _code(cls, v: str) -> str:
        return check_pattern(v, ("project", "company"))

    @field_validator("name_pattern")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_pattern(v, ("project", "name", "company"))


class CostCentersConfig(FlowConfig):
    """Config of the ``cost-centers`` flow (F1 + F8 close)."""

    MAPPING_FILE = "f1_cost_centers.yaml"
    MAPPING_MODEL = CostCenterMapping
