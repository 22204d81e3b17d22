"""Configuration of the ``pg-table`` sink."""

from __future__ import annotations

from bizbus.connectors.runtime.sinkconfig import SinkRuntimeConfig
from pydantic import Field, field_validator, model_validator

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
    upsert_key: tuple[str, ...] = Field(
        default=(), description="columns of a unique key of the table: a record whose key is there updates that "
                                "row (INSERT ... ON CONFLICT DO UPDATE) instead of adding one; empty: insert only",
        examples=[["order_no"]],
    )  # fmt: skip
    newer_column: str | None = Field(
        default=None, description="with upsert_key: the row is only updated by a record whose value of this "
                                  "column is at least the stored one (e.g. a document version), so an older "
                                  "record replayed late never overwrites a newer one",
        examples=["order_version"],
    )  # fmt: skip

    _dsn = field_validator("dsn")(no_password)

    @model_validator(mode="after")
    def _upsert_columns(self) -> PgTableSinkConfig:
        unknown = [c for c in (*self.upsert_key, *([self.newer_column] if self.newer_column else [])) if c not in self.columns]
        if unknown:
            raise ValueError(f"upsert_key / newer_column name column(s) not in columns: {', '.join(unknown)}")
        if self.newer_column and not self.upsert_key:
            raise ValueError("newer_column needs upsert_key")
        return self
