"""The CDC kit shared by the change-data-capture sources (PostgreSQL logical decoding, MariaDB binlog).

    database log ──LogReader──► CaptureTask ──► journal (the connector's inbox, state DB)
                                                   │ delivery_id "<position>/<chunk>": a re-sent
                                                   │ transaction is dropped
                                                   ▼
                   CdcReader + CdcConverter (the mapping YAML) ──► SourceTask ──► canonical topics
                                                   │
    LogReader.confirm(position) ◄── the publishing cursor passed the position (broker acknowledged)

A vendor folder provides a ``LogReader`` and a ``CdcConnector`` subclass with ``log_reader()``.
"""

from bizbus.connectors.runtime.cdc.capture import CaptureTask
from bizbus.connectors.runtime.cdc.connector import CdcConfig, CdcConnector, CdcReader
from bizbus.connectors.runtime.cdc.converter import CdcConverter, Rejected
from bizbus.connectors.runtime.cdc.fields import RowRejected
from bizbus.connectors.runtime.cdc.journal import deliveries, jsonable, snapshot_deliveries
from bizbus.connectors.runtime.cdc.mapping import CdcMapping, load_mapping
from bizbus.connectors.runtime.cdc.model import (
           FAMILIES,
           LogReader,
           RowChange,
           SchemaIncompatible,
           Transaction,
)
from bizbus.connectors.runtime.cdc.schema import check_columns

__all__ = ["FAMILIES", "CaptureTask", "CdcConfig", "CdcConnector", "CdcConverter", "CdcMapping", "CdcReader",
           "LogReader", "Rejected", "RowChange", "RowRejected", "SchemaIncompatible", "Transaction",
           "check_columns", "deliveries", "jsonable", "load_mapping", "snapshot_deliveries"]  # fmt: skip
