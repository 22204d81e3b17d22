"""Configuration of the ``postgres-cdc`` source (a frozen pydantic model; no password in it)."""

from __future__ import annotations

from bizbus.connectors.runtime.cdc import CdcConfig
from pydantic import Field, field_validator

from bizbus.settings import no_password


class PostgresCdcConfig(CdcConfig):
    """A PostgreSQL database read by logical decoding (pgoutput); needs wal_level=logical and a role with
    REPLICATION (see docs/connectors/postgres_cdc.md)."""

    dsn: str = Field(description="the captured database (no password: PGPASSWORD or ~/.pgpass); its role needs"
                     " REPLICATION and ownership of the captured tables (publication, replica identity)",
                     examples=["postgresql://bizbus_cdc@erp-db:5432/jxc"])  # fmt: skip
    schema_name: str = Field(default="public", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
                             description="the schema whose tables the mapping names", examples=["public"])  # fmt: skip
    slot: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,63}$",
                             description="replication slot name (default bizbus_<connector>); created by the connector")  # fmt: skip
    publication: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,63}$",
                                    description="publication name (default bizbus_<connector>)")  # fmt: skip
    manage_publication: bool = Field(default=True, description="create the publication / set its tables to the"
                                     " mapped ones (false: the DBA made it)")  # fmt: skip
    replica_identity_full: bool = Field(default=True, description="ALTER TABLE .. REPLICA IDENTITY FULL on the"
                                        " captured tables, so deletes carry the whole row")  # fmt: skip
    status_interval_seconds: float = Field(default=5, ge=1, le=60, description="replication feedback interval")
    snapshot_fetch_rows: int = Field(default=2000, ge=1, le=100_000, description="rows per fetch in the snapshot")

    _src = field_validator("dsn")(no_password)
