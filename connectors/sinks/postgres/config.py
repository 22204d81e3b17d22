"""Configuration of the ``pg-table`` sink."""

from __future__ import annotations

from bizbus.connectors.runtime.sinkconfig import SinkRuntimeConfig
from pydantic import Field, field_validator

from bizbus.settings import no_password


class PgTableSinkConfig(SinkRuntimeConfig):
    """Configuration of the ``pg-table`` sink."""

    dsn: str = Field(
        description="libpq DSN of the target database (no password: use PGPASSWORD or ~/.pgpass)"
    )
    table: str = Field(pattern=r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$", description="schema-qualified target table",
                       examples=["public.timesheet_entries"])  # fmt: skip
    columns: dict[str, str] = Field(min_length=1, description="column -> dotted field path or $effect_id/$topic/$partition/$offset",
                                    examples=[{"effect_id": "$effect_id", "employee": "employee.code", "hours": "hours"}])  # fmt: skip
    ledger_schema: str = Field(
        default="bizbus_ledger", description="schema of the ledger tables in the target database"
    )
    batch_size: int = Field(default=500, ge=1, le=50_000, description="records per transaction at most")

    _dsn = field_validator("dsn")(no_password)
