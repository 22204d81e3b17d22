"""Configuration of the ``pg-outbox`` source."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bizbus.settings import no_password

DEFAULT_STATE_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


class PgOutboxConfig(BaseModel):
    """Configuration of the ``pg-outbox`` source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dsn: str = Field(description="libpq DSN of the application database (no password: use PGPASSWORD or ~/.pgpass)",
                     examples=["postgresql://app@db.internal:5432/erp"])  # fmt: skip
    table: str = Field(default="public.bizbus_outbox", pattern=r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$",
                       description="schema-qualified outbox table")  # fmt: skip
    create_table: bool = Field(default=True, description="create the outbox table if it does not exist")
    source_system: str = Field(default="outbox", pattern=r"^[a-z][a-z0-9_-]*$",
                               description="meta.source_system of the events, part of event_id", examples=["erp"])  # fmt: skip
    topics: tuple[str, ...] = Field(
        default=(), description="topics rows may name (default: any catalogue topic)"
    )
    batch_size: int = Field(default=500, ge=1, le=50_000, description="rows per read")
    gap_grace_seconds: float = Field(default=1.0, ge=0, le=600,
                                     description="how long a gap in ids must stay before the source checks who could still fill it")  # fmt: skip
    state_dsn: str = Field(
        default=DEFAULT_STATE_DSN, description="PostgreSQL for cursors and shard leases (no password)"
    )

    _dsn = field_validator("dsn", "state_dsn")(no_password)
