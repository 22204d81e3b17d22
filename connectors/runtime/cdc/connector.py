"""The CDC connector base: an inbox connector without a webhook, whose capture task reads the database's
log into the journal (the inbox), and whose inbox source task publishes the journal by the mapping.

A vendor folder subclasses ``CdcConnector`` with a ``Config`` extending ``CdcConfig`` and provides
``log_reader()``; everything else (journal, snapshot handover, confirmation, mapping, dead letters, the
re-send after a lost broker) is here."""

from __future__ import annotations

import functools
import json
from abc import abstractmethod
from pathlib import Path
from typing import Any

from bizbus.connectors.runtime.base import Task, TaskSpec
from bizbus.connectors.runtime.cdc.capture import CaptureTask
from bizbus.connectors.runtime.cdc.converter import CdcConverter, Rejected
from bizbus.connectors.runtime.cdc.docstate import DocState
from bizbus.connectors.runtime.cdc.mapping import CdcMapping, load_mapping
from bizbus.connectors.runtime.cdc.model import LogReader
from bizbus.connectors.runtime.inbox.connector import InboxConfig, InboxConnector
from bizbus.connectors.runtime.inbox.interface import InboxRow, WebhookHandler
from bizbus.connectors.runtime.inbox.reader import InboxReader
from bizbus.connectors.runtime.source import SourceItem, SourceTask
from pydantic import Field

from bizbus.deadletters import DeadLetterWriter


class CdcConfig(InboxConfig):
    """Settings every CDC source has (the journal lives in the state database, the inbox of the connector)."""

    mapping: str = Field(description="the mapping YAML: tables -> canonical topics (see docs/connectors/postgres_cdc.md)",
                         examples=["deploy/examples/mappings/jxc-cdc.yaml"])  # fmt: skip
    chunk_rows: int = Field(default=500, ge=1, le=10_000,
                            description="row changes per journal row (a bigger transaction takes several)")  # fmt: skip
    read_rows: int = Field(default=5000, ge=1, le=100_000,
                           description="row changes the capture task reads from the log per step")  # fmt: skip
    confirm_interval_seconds: float = Field(default=0.5, ge=0.05, le=60,
                                            description="how often the published position is confirmed to the database")  # fmt: skip


class CdcReader(InboxReader):
    """The inbox reader of a CDC source: a row of the journal may yield records and dead letters side by side
    (a row that does not fit the mapping is dead-lettered with its key; the rows beside it flow on)."""

    converter: CdcConverter

    def _items(self, row: InboxRow) -> list[SourceItem]:
        outs = self.converter.convert_rows(row)
        origin = f"cdc:{self.connector}"
        if not outs:
            return [SourceItem(position={"id": row.id}, origin=origin, offset=row.id, raw=b"")]
        items = []
        for i, o in enumerate(outs):
            pos = {"id": row.id} if i == len(outs) - 1 else {"id": row.id - 1}
            if isinstance(o, Rejected):
                items.append(SourceItem(position=pos, origin=origin, offset=row.id, raw=o.raw, key=o.key.encode(),
                                        error=o.error))  # fmt: skip
            else:
                items.append(SourceItem(position=pos, origin=origin, offset=row.id, topic=o.topic, key=o.key.encode(),
                                        value=o.value, raw=functools.partial(_event_raw, o.value)))  # fmt: skip
        return items


def _event_raw(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, default=str).encode()


class CdcConnector(InboxConnector):
    """A CDC source: tasks ``inbox`` (publish the journal) and ``capture`` (read the log into it)."""

    takes_webhooks = False
    config: Any

    @abstractmethod
    def log_reader(self) -> LogReader:
        """A new reader of the database's log (one per capture task)."""

    def handler(self) -> WebhookHandler | None:
        return None

    @functools.cached_property
    def cdc_mapping(self) -> CdcMapping:
        return load_mapping(Path(self.config.mapping))

    def converter(self) -> CdcConverter:
        c = self.config
        return CdcConverter(self.cdc_mapping, DocState(c.state_dsn, c.state_schema, self.name))

    def topics(self) -> tuple[str, ...]:
        return self.cdc_mapping.topics()

    def task_specs(self, max_tasks: int) -> list[TaskSpec]:
        return [TaskSpec(0, shard="inbox"), TaskSpec(1, shard="capture")]

    def create_task(self, spec: TaskSpec) -> Task:
        c = self.config
        if spec.shard == "capture":
            return CaptureTask(self.name, self.log_reader(), self.cdc_mapping, self._inbox(), c.state_dsn,
                               c.state_schema, max_rows=c.read_rows, chunk_rows=c.chunk_rows,
                               confirm_every=c.confirm_interval_seconds)  # fmt: skip
        kafka = self.ctx.settings.kafka_config()
        reader = CdcReader(self.name, self._inbox(), self.converter(), max_attempts=c.max_attempts)
        return SourceTask(self.name, "inbox", reader, kafka, self.ctx.serde, self.ctx.catalogue,
                          DeadLetterWriter(kafka, self.ctx.serde), c.state_dsn, c.state_schema, batch_size=c.batch_size)  # fmt: skip
