"""The ``mariadb-cdc`` source: the CDC kit's connector with the binlog reader of this folder."""

from __future__ import annotations

import pymysql
from bizbus.connectors.runtime.cdc import CdcConnector, LogReader

from .api import BinlogReader
from .config import MariaDbCdcConfig


class MariaDbCdcSource(CdcConnector):
    """Tasks ``capture`` (binlog → journal) and ``inbox`` (journal → canonical topics, by the mapping)."""

    Config = MariaDbCdcConfig
    config: MariaDbCdcConfig

    def validate(self) -> None:  # at start: the topics are in the catalogue, the password is set
        super().validate()
        self._password()

    def _password(self) -> str:
        env = self.config.password_env
        return "" if env is None else env.read("MariaDB password", f"connector {self.name}")

    def log_reader(self) -> LogReader:
        c = self.config
        connection = {"host": c.host, "port": c.port, "user": c.user, "password": self._password(),
                      "database": c.database, "connect_timeout": c.connect_timeout_seconds}  # fmt: skip
        return BinlogReader(connection, c.server_id, c.database, self.cdc_mapping.tables(),
                            heartbeat=c.heartbeat_seconds, snapshot_chunk=c.snapshot_chunk)  # fmt: skip

    def probe(self) -> str | None:
        """The state database (the journal), then the MariaDB server."""
        problem = super().probe()
        if problem:
            return problem
        c = self.config
        try:
            pymysql.connect(host=c.host, port=c.port, user=c.user, password=self._password(), connect_timeout=2).close()
        except pymysql.err.MySQLError as exc:
            return f"mariadb {c.host}:{c.port}: {exc}"
        return None
