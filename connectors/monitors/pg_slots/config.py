"""Configuration of the ``pg-slot-monitor``."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bizbus.settings import no_password

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


class PgSlotMonitorConfig(BaseModel):
    """Settings of one ``pg-slot-monitor``."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    dsn: str = Field(
        DEFAULT_DSN,
        description="PostgreSQL server whose slots to watch (no password inside: use PGPASSWORD / PGPASSFILE)",
        examples=["postgresql://monitor@erp-db:5432/erp"],
    )
    database_label: str | None = Field(
        None,
        description="value of the `database` label; default: the DSN's host/database",
        examples=["erp-db"],
    )
    slots: str = Field(
        ".*",
        description="regular expression the slot names must match fully to be reported",
        examples=["debezium_.*"],
    )
    interval_seconds: float = Field(15.0, ge=0.1, le=3600, description="seconds between two reads")

    _dsn = field_validator("dsn")(no_password)

    @field_validator("slots")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"slots is not a regular expression: {exc}") from None
        return v
