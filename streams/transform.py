"""Consume-transform-produce with Kafka transactions where they work, and the same end result where not.

A flow step is a pure function ``transform(event) -> [Output]``; every output carries an id derived from
its input's id and its role (``lineage.derived_id``), so processing a record twice produces the same
outputs. ``TransformTask`` runs it in one of two modes, chosen from the broker's capability probe:

* **transactional** (the probe saw aborted records hidden from ``read_committed`` consumers, i.e. real
  Apache Kafka): outputs and the input offsets commit in one Kafka transaction. A crash aborts it;
  downstream readers never see the partial batch.
* **idempotent** (no isolation, e.g. the embedded Tansu broker): outputs are produced with the
  idempotent producer and flushed, then the input offsets are committed. A crash re-processes the
  batch and re-sends outputs with the same ids; sinks drop them through their applied-effect ledger.

Either way, what reaches a target system is each effect once (DESIGN.md, "Kafka transactions are a
bonus, not the base"). Inputs that cannot be decoded, and inputs the transform rejects, are dead letters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bizbus.connectors.runtime.base import Task
from bizbus.connectors.runtime.sink import next_offsets
from bizbus.schemas import catalog
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from bizbus import lineage
from bizbus.catalogue import Catalogue
from bizbus.crashpoints import crashpoint
from bizbus.deadletters import DeadLetterWriter, dead_letter
from bizbus.devstack.broker import BrokerCapabilities
from bizbus.failures import ConnectorError, Poison, classify
from bizbus.serde import AvroSerde, PoisonRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    """One record a transform emits; ``value['meta']['event_id']`` must be derived from the input's id."""

    topic: str
    key: bytes | None
    value: dict[str, Any]


Transform = Callable[[dict[str, Any]], list[Output]]


def use_transactions(caps: BrokerCapabilities | None) -> bool:
    """Transactions only when the probe proved they isolate; unknown means no."""
    return bool(caps and caps.transactions and caps.transaction_isolation)


class TransformTask(Task):
    """One consumer-group member running ``transform`` over ``inputs``."""

    def __init__(self, name: str, task_id: int, inputs: list[str], transform: Transform, kafka_config: dict[str, Any],
                 serde: AvroSerde, catalogue: Catalogue, dlq: DeadLetterWriter, transactional: bool,
                 batch_size: int = 500, batch_timeout: float = 0.2) -> None:  # fmt: skip
        self.name, self.task_id, self.inputs, self.transform = name, task_id, inputs, transform
        self.kafka_config, self.serde, self.catalogue, self.dlq = kafka_config, serde, catalogue, dlq
        self.transactional, self.batch_size, self.batch_timeout = transactional, batch_size, batch_timeout
        self.encoders: dict[str, Callable[[dict[str, Any]], bytes]] = {}
        self.processed = 0

    def setup(self) -> None:
        self.dlq.setup()
        producer_conf = {**self.kafka_config, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        if self.transactional:
            # a stable id per task: a restarted task fences its dead predecessor and aborts its open transaction
            producer_conf["transactional.id"] = f"bizbus-flow-{self.name}-{self.task_id}"
        self.producer = Producer(producer_conf)
        if self.transactional:
            self.producer.init_transactions(30)
        self.consumer = Consumer({
            **self.kafka_config, "group.id": f"bizbus-flow-{self.name}", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed", "session.timeout.ms": 6000,
        })  # fmt: skip
        self.consumer.subscribe(self.inputs)

    def _encoder(self, topic: str) -> Callable[[dict[str, Any]], bytes]:
        enc = self.encoders.get(topic)
        if enc is None:
            spec = self.catalogue.get(topic)
            enc = self.encoders[topic] = self.serde.encoder(spec.subject, catalog.load(spec.value_schema))
        return enc

    def _apply(self, msg: Any) -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]:
        """Decode, transform and encode one input; raises ConnectorError for a dead letter."""
        try:
            value = self.serde.decode(msg.value())
        except PoisonRecord as exc:
            raise Poison(str(exc)) from None
        try:
            outs = self.transform(value)
            return [
                (o.topic, o.key, self._encoder(o.topic)(o.value), lineage.headers(o.value["meta"]))
                for o in outs
            ]
        except Exception as exc:
            raise classify(exc) from exc

    def step(self) -> int:
        msgs = [m for m in self.consumer.consume(self.batch_size, self.batch_timeout) if m.error() is None]
        if not msgs:
            return 0
        if not self.transactional:
            return self._process(msgs)
        self.producer.begin_transaction()
        try:
            return self._process(msgs)
        except Exception:
            self.producer.abort_transaction(
                30
            )  # nothing of this batch becomes visible to read_committed readers
            raise

    def _process(self, msgs: list[Any]) -> int:
        """Transform one batch and commit outputs and offsets (in the open transaction, if any).

        A failure raises: the task stops and its restart re-processes the batch from the committed
        offsets (same derived ids), which is how a crash is handled too.
        """
        dead = 0
        for m in msgs:
            try:
                produced = self._apply(m)
            except ConnectorError as err:
                if err.error_class in ("fatal", "retryable"):
                    raise
                self.dlq.send(dead_letter(connector=self.name, topic=m.topic(), partition=m.partition(),
                                          offset=m.offset(), key=m.key(), value=m.value(),
                                          headers=list(m.headers() or []), timestamp_ms=m.timestamp()[1],
                                          error=err, attempts=1))  # fmt: skip
                dead += 1
                continue
            for topic, key, value, headers in produced:
                self.producer.produce(topic, key=key, value=value, headers=headers)
        if dead:
            self.dlq.flush()
        offsets = self._next_offsets(msgs)
        crashpoint("transform.before-commit")
        if self.transactional:
            self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(30)
        else:
            if self.producer.flush(30):
                raise KafkaException(
                    f"flow {self.name}: outputs not acknowledged; the batch will be re-processed"
                )
            self.consumer.commit(offsets=offsets, asynchronous=False)
        self.processed += len(msgs)
        return len(msgs)

    @staticmethod
    def _next_offsets(msgs: list[Any]) -> list[TopicPartition]:
        """Offsets to commit after the batch (a seam the crash test overrides)."""
        return next_offsets(msgs)

    def pause(self) -> None:
        self.consumer.pause(self.consumer.assignment())

    def resume(self) -> None:
        self.consumer.resume(self.consumer.assignment())

    def close(self) -> None:
        consumer = getattr(self, "consumer", None)
        if consumer is not None:
            consumer.close()
        producer = getattr(self, "producer", None)
        if producer is not None:
            producer.flush(10)
        self.dlq.close()
