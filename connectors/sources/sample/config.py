"""Configuration of the ``sample-events`` source."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SampleEventsConfig(BaseModel):
    """Configuration of the ``sample-events`` source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field(description="catalogue topic to write to", examples=["bizbus.pm.timesheet.v1"])
    rate_per_second: float = Field(default=1.0, gt=0, le=100_000, description="records per second")
    count: int | None = Field(default=None, ge=1, description="stop after this many records (default: run on)")
