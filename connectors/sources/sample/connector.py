"""``sample-events``: a demo source that emits realistic canonical events to one catalogue topic.

Useful for a first look (`make run` shows records flowing) and for smoke tests of a deployment. Each
record is the schema's sample with a fresh, deterministic ``event_id`` (component name + sequence).
"""

from __future__ import annotations

import copy
import logging
import time
from datetime import UTC, datetime
from threading import Event

from bizbus.schemas import catalog
from confluent_kafka import Producer

from bizbus import lineage, metrics
from bizbus.host.components import Component

from .config import SampleEventsConfig

log = logging.getLogger(__name__)


class SampleEventsSource(Component):
    """Produces ``catalog.sample(value_schema)`` records with fresh lineage at a fixed rate."""

    Config = SampleEventsConfig
    config: SampleEventsConfig

    def setup(self) -> None:
        spec = self.ctx.catalogue.get(self.config.topic)
        self._schema_name = spec.value_schema
        self._encode = self.ctx.serde.encoder(spec.subject, catalog.load(spec.value_schema))
        self._template = catalog.sample(spec.value_schema)
        self._producer = self._new_producer()
        self.sent = 0

    def _new_producer(self) -> Producer:
        return Producer(
            {**self.ctx.settings.kafka_config(), "enable.idempotence": True, "acks": "all", "linger.ms": 20}
        )

    def halt_tasks(self, timeout: float = 60.0, drain: bool = True) -> None:
        """The broker is being replaced: drop what was not delivered (demo records, not durable anywhere)."""
        if not drain:
            self._producer.purge()

    def start_tasks(self, paused: bool | None = None) -> None:
        """A new producer for the new broker (an idempotent producer of the old one never delivers again)."""
        self._producer = self._new_producer()

    def record(self, seq: int) -> dict:
        rec = copy.deepcopy(self._template)
        old = rec["meta"]
        rec["meta"] = lineage.meta(
            event_id=lineage.event_id("sample", self.name, self.config.topic, seq),
            correlation_id=old["correlation_id"],
            source_system="bizbus-sample",
            occurred_at=datetime.now(UTC),
        )
        return rec

    def run(self, stop: Event) -> None:
        interval = 1.0 / self.config.rate_per_second
        next_at = time.monotonic()
        seq = 0
        while not stop.is_set() and (self.config.count is None or seq < self.config.count):
            rec = self.record(seq)
            self._producer.produce(
                self.config.topic,
                key=rec["meta"]["correlation_id"].encode(),
                value=self._encode(rec),
                headers=lineage.headers(rec["meta"]),
                on_delivery=self._delivered,
            )
            metrics.RECORDS_IN.labels(self.name).inc()
            metrics.saw_changes(self.name, [rec])
            self._producer.poll(0)
            seq += 1
            self.sent = seq
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)
        self._producer.flush(10)
        log.info("sample-events %s: %d records sent to %s", self.name, seq, self.config.topic)

    def _delivered(self, err: object, _msg: object) -> None:
        if err is None:
            metrics.RECORDS_OUT.labels(self.name).inc()
        else:
            log.warning("sample-events %s: a record was not delivered: %s", self.name, err)

    def close(self) -> None:
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.flush(10)
