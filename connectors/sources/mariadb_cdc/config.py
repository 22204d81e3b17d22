"""Configuration of the ``mariadb-cdc`` source."""

from __future__ import annotations

from bizbus.connectors.runtime.cdc import CdcConfig
from pydantic import Field

from bizbus.secrets import EnvSecret


class MariaDbCdcConfig(CdcConfig):
    """MariaDB binlog change data capture (ROW format, full row images, resume by GTID) of the tables
    the mapping names in one database; the journal (the connector's inbox) lives in the state database."""

    host: str = Field(description="the MariaDB server (the primary: replicas need log_slave_updates)",
                      examples=["erp-db.internal"])  # fmt: skip
    port: int = Field(default=3306, ge=1, le=65535, description="its TCP port")
    user: str = Field(description="a user with REPLICATION SLAVE, REPLICATION CLIENT and SELECT on the database",
                      examples=["bizbus_cdc"])  # fmt: skip
    password_env: EnvSecret | None = Field(default=None,
                                           description="name of the environment variable holding the user's password"
                                           " (none: the user has no password)", examples=["JXC_DB_PASSWORD"])  # fmt: skip
    database: str = Field(pattern=r"^[A-Za-z0-9_$]{1,64}$",
                          description="the database whose tables the mapping names (bare table names)",
                          examples=["jxc"])  # fmt: skip
    server_id: int = Field(default=4_201_001, ge=1, le=4_294_967_295,
                           description="the replica server id this reader registers with; unique among the server's"
                           " replicas and other binlog readers")  # fmt: skip
    heartbeat_seconds: float = Field(default=0.5, ge=0.05, le=60,
                                     description="how often an idle server sends a heartbeat (bounds how long a"
                                     " read waits, so pausing and stopping stay prompt)")  # fmt: skip
    snapshot_chunk: int = Field(default=1000, ge=1, le=100_000,
                                description="rows fetched per round trip during the initial snapshot")  # fmt: skip
    connect_timeout_seconds: float = Field(default=5, ge=0.5, le=120, description="connect timeout")
