"""Configuration of the ``reporting-db`` sink."""

from __future__ import annotations

from bizbus.connectors.runtime.sinkconfig import SinkRuntimeConfig
from pydantic import Field, field_validator

from bizbus.settings import no_password

_NAME = r"^[a-z_][a-z0-9_]*$"


class ReportingSinkConfig(SinkRuntimeConfig):
    """Configuration of the ``reporting-db`` sink: the catalogue topics it lands, where, and overrides of the
    table name and business key per topic (the defaults: docs/connectors/reporting.md)."""

    dsn: str = Field(description="libpq DSN of the reporting database (no password: use PGPASSWORD or ~/.pgpass)")
    schema_name: str = Field(default="reporting", alias="schema", pattern=_NAME,
                             description="PostgreSQL schema of the reporting tables (made if missing)")  # fmt: skip
    tables: dict[str, str] = Field(default_factory=dict, description="topic -> table name, where the derived one "
                                   "(bizbus.sales.order.v1 -> sales_order) does not suit",
                                   examples=[{"bizbus.md.material.v1": "material"}])  # fmt: skip
    keys: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="topic -> business-key columns, where "
                                             "the built-in key of its schema does not suit",
                                             examples=[{"bizbus.sales.order.v1": ["company", "order_no"]}])  # fmt: skip
    ledger_schema: str = Field(default="bizbus_ledger", pattern=_NAME,
                               description="schema of the ledger tables in the reporting database")  # fmt: skip
    ddl_lock_timeout_ms: int = Field(default=2000, ge=100, le=60_000, description="how long an ALTER TABLE may wait "
                                     "for readers' locks before it gives up and is tried again later (readers are "
                                     "never blocked longer than this)")  # fmt: skip
    batch_size: int = Field(default=200, ge=1, le=10_000, description="records per transaction at most")

    model_config = {**SinkRuntimeConfig.model_config, "populate_by_name": True}

    _dsn = field_validator("dsn")(no_password)

    @field_validator("tables")
    @classmethod
    def _table_names(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        bad = [t for t in v.values() if not re.match(_NAME, t) or len(t) > 50]
        if bad:
            raise ValueError(f"table names must be lower-case SQL names of at most 50 characters: {bad}")
        return v
