"""``postgres-cdc``: a PostgreSQL database as a source of canonical records, by logical decoding.

    tables ──WAL──► slot bizbus_<name> (pgoutput, publication bizbus_<name>) ──► capture task
        ──► journal (inbox_<name>, state DB) ──► mapping ──► canonical topics
        slot flush LSN ◄── confirmed once the journal holds a commit and the publishing cursor passed it

Why pgoutput: it is built into PostgreSQL 10+ (no server package to install, unlike wal2json), publishes
only the publication's tables, and sends every value as text with the relation's columns and types,
which gives the schema check its column types. See docs/connectors/postgres_cdc.md.
"""

from __future__ import annotations

from bizbus.connectors.runtime import probes
from bizbus.connectors.runtime.cdc import CdcConnector, LogReader

from .api import PgLogReader
from .config import PostgresCdcConfig


class PostgresCdcSource(CdcConnector):
    Config = PostgresCdcConfig
    config: PostgresCdcConfig

    def log_reader(self) -> LogReader:
        return PgLogReader(self.config, self.name, self.cdc_mapping.tables())

    def probe(self) -> str | None:
        return probes.pg(self.config.state_dsn) or probes.pg(self.config.dsn)
