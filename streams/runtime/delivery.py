"""How a flows worker makes a batch's outputs and table writes durable.

A batch (streams/runtime/agents.py) ends with a list of records to put on the broker: the encoded outputs and the
changelog records of the table states it wrote. :class:`ConfluentDelivery` produces them with one
idempotent confluent-kafka producer (librdkafka, C) and resolves one asyncio future when the broker
acknowledged the last of them (librdkafka's ``flush``, awaited in a thread). The agent asks
Faust for its next batch (which is when Faust acks this batch's events and may commit their offsets) only
after that future resolved.

Why not Faust's own producer (aiokafka, pure Python): per record it cost ≈ 40 µs of the event loop
(``Topic.publish_message``, aiokafka's accumulator, one future per record), a changelog write the same
through ``Table.__setitem__`` — about a fifth of a worker's time at 1,500 records/s
(``python -m tests.bench.faust_profile --profile``). librdkafka's ``produce`` costs a few µs.

Table writes: :class:`~bizbus.streams.runtime.tables.StateTable` puts the value in the Faust table's store (what the
worker reads) and hands the changelog record (topic ``<app>-<table>-changelog``, the partition of the event
that wrote it, raw key and value bytes, as Faust would have written it) to this delivery. Faust still owns
the tables: it creates the changelog topics, recovers a table from its changelog on start and keeps
GlobalTables in step from other workers' changelog records.

:class:`FaustDelivery` sends through ``app.producer`` instead (the broker-less tests' fakes, or any app
without a confluent-kafka configuration).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, Producer

from bizbus.backoff import Backoff

log = logging.getLogger("bizbus.flows")

MAX_BACKOFF = 30.0


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce: ``partition`` None lets the producer's partitioner choose (by key)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None


class Delivery(Protocol):
    """Puts records on the broker; ``send`` returns once each was acknowledged (retrying failures)."""

    changelog: bool  # True: table writes go through ``send`` as changelog records (not Faust's producer)

    def setup(self) -> None: ...

    async def send(self, records: list[OutRecord]) -> None: ...

    def close(self) -> None: ...


class FaustDelivery:
    """Through the Faust app's producer: one ``send`` per record, their futures awaited together."""

    changelog = False

    def __init__(self, app: Any) -> None:
        self.app = app

    def setup(self) -> None:
        return None

    async def send(self, records: list[OutRecord]) -> None:
        streak = Backoff(0.5, MAX_BACKOFF).streak()
        while True:
            try:
                futures = [await self.app.producer.send(r.topic, r.key, r.value, r.partition, None, r.headers)
                           for r in records]  # fmt: skip
                await asyncio.gather(*futures)
                return
            except Exception as exc:  # the broker refused or is unreachable: the batch is not done yet
                delay = streak.next()
                log.warning("sending %d record(s) failed (%s: %s); retrying in %.1f s",
                            len(records), type(exc).__name__, exc, delay)  # fmt: skip
                await asyncio.sleep(delay)

    def close(self) -> None:
        return None


_DEAD_PRODUCER = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                            KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError._FENCED})  # fmt: skip


def needs_new_producer(err: KafkaError) -> bool:
    """Whether only a new producer can deliver again: a fatal error, or a broker that fenced this producer's id
    or epoch. After message timeouts librdkafka bumps the idempotent producer's epoch, and the embedded broker
    then answers every produce with "a newer producer ... fences the current one" without librdkafka marking
    it fatal: retrying on the same producer never ends (the flows stalled for good, seen in a test)."""
    return err.fatal() or err.code() in _DEAD_PRODUCER


def _again(msg: Any) -> OutRecord:
    """The record of a message the broker refused, to produce again (its partition, if one was chosen)."""
    partition = msg.partition()
    return OutRecord(msg.topic(), msg.key(), msg.value(), list(msg.headers() or []) or None,
                     partition if partition is not None and partition >= 0 else None)  # fmt: skip


class ConfluentDelivery:
    """One idempotent confluent-kafka producer (``acks=all``) for the outputs and changelog writes of every
    agent of a worker.

    A round (one ``send``) produces its records and waits, in a thread, for librdkafka's ``flush``: the
    local queue is empty when every record is acknowledged or failed. Only failures are reported
    (``delivery.report.only.error``): no Python callback per record, no thread serving reports meanwhile.
    Rounds take turns (a lock), so the failures a flush reports are those of the round waiting for it."""

    changelog = True
    QUEUE_FULL_WAIT = 0.05  # s: the local queue is full; let deliveries free it
    FLUSH_TIMEOUT = 30.0  # s per flush call; a round waits as many as it takes

    def __init__(self, kafka_config: dict[str, Any], linger_ms: float = 5.0) -> None:
        self.kafka_config = kafka_config
        self.linger_ms = linger_ms
        self._producer: Producer | None = None
        self._failed: list[tuple[Any, KafkaError]] = []  # filled by librdkafka's report callback
        self._turn: asyncio.Lock | None = None

    def setup(self) -> None:
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        return Producer({**self.kafka_config, "enable.idempotence": True, "acks": "all",
                         "linger.ms": self.linger_ms, "queue.buffering.max.messages": 1_000_000,
                         "batch.num.messages": 10_000, "delivery.report.only.error": True,
                         "on_delivery": self._on_failure})  # fmt: skip

    def _on_failure(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failed.append((msg, err))

    async def send(self, records: list[OutRecord]) -> None:
        """Produce ``records`` and return when the broker acknowledged each; what it refused is produced
        again after a back-off (records stay in order per partition within one round)."""
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            pending: list[OutRecord] = list(records)
            streak = Backoff(0.5, MAX_BACKOFF).streak()
            while pending:
                failed = await self._round(pending)
                if not failed:
                    return
                errors = [e for _, e in failed]
                delay = streak.next()
                log.warning("%d of %d record(s) not delivered (%s); producing them again in %.1f s",
                            len(failed), len(pending), errors[0].str(), delay)  # fmt: skip
                if any(needs_new_producer(e) for e in errors):
                    self._replace_producer()
                pending = [_again(m) for m, _ in failed]
                await asyncio.sleep(delay)

    async def _round(self, records: list[OutRecord]) -> list[tuple[Any, KafkaError]]:
        """Produce ``records`` and wait until none is in flight; the ones that failed."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("ConfluentDelivery.send before setup()")
        produce = producer.produce
        for r in records:
            while True:
                try:
                    if r.partition is None:
                        produce(r.topic, r.value, r.key, headers=r.headers)
                    else:
                        produce(r.topic, r.value, r.key, r.partition, headers=r.headers)
                    break
                except BufferError:  # a million records in flight: let the broker catch up
                    await asyncio.to_thread(producer.poll, self.QUEUE_FULL_WAIT)
        while await asyncio.to_thread(producer.flush, self.FLUSH_TIMEOUT):
            log.warning("records still in flight after %.0f s; waiting on", self.FLUSH_TIMEOUT)
        failed, self._failed = self._failed, []
        return failed

    def _replace_producer(self) -> None:
        """After a fatal error or a fence (the idempotent producer lost its sequence or epoch) only a new producer
        works."""
        old, self._producer = self._producer, self._new_producer()
        log.error("the flows' producer hit a fatal error; replaced it with a new one")
        if old is not None:
            old.flush(1)

    def close(self, timeout: float = 10.0) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)
