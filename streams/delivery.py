"""How a flows worker makes a batch's outputs and table writes durable.

A batch (streams/agents.py) ends with a list of records to put on the broker: the encoded outputs and the
changelog records of the table states it wrote. :class:`ConfluentDelivery` produces them with one
idempotent confluent-kafka producer (librdkafka, C) and resolves one asyncio future when the broker
acknowledged the last of them; a background thread serves librdkafka's delivery reports. The agent asks
Faust for its next batch (which is when Faust acks this batch's events and may commit their offsets) only
after that future resolved.

Why not Faust's own producer (aiokafka, pure Python): per record it cost ≈ 40 µs of the event loop
(``Topic.publish_message``, aiokafka's accumulator, one future per record), a changelog write the same
through ``Table.__setitem__`` — about a fifth of a worker's time at 1,500 records/s
(``python -m tests.bench.faust_profile --profile``). librdkafka's ``produce`` costs a few µs.

Table writes: :class:`~bizbus.streams.agents.StateTable` puts the value in the Faust table's store (what the
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
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, Producer

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

    async def send(self, records: list[OutRecord]) -> None: ...

    def close(self) -> None: ...


class FaustDelivery:
    """Through the Faust app's producer: one ``send`` per record, their futures awaited together."""

    changelog = False

    def __init__(self, app: Any) -> None:
        self.app = app

    async def send(self, records: list[OutRecord]) -> None:
        backoff = 0.5
        while True:
            try:
                futures = [await self.app.producer.send(r.topic, r.key, r.value, r.partition, None, r.headers)
                           for r in records]  # fmt: skip
                await asyncio.gather(*futures)
                return
            except Exception as exc:  # the broker refused or is unreachable: the batch is not done yet
                log.warning("sending %d record(s) failed (%s: %s); retrying in %.1f s",
                            len(records), type(exc).__name__, exc, backoff)  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def close(self) -> None:
        return None


@dataclass
class _Round:
    """The delivery reports one ``send`` waits for (counted in the poller thread)."""

    loop: asyncio.AbstractEventLoop
    left: int
    done: asyncio.Future[None]
    failed: list[Any] = field(default_factory=list)  # messages the broker did not take
    errors: list[KafkaError] = field(default_factory=list)

    def on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.failed.append(msg)
            self.errors.append(err)
        self.left -= 1
        if self.left == 0:
            self.loop.call_soon_threadsafe(_resolve, self.done)


def _again(msg: Any) -> OutRecord:
    """The record of a message the broker refused, to produce again (its partition, if one was chosen)."""
    partition = msg.partition()
    return OutRecord(msg.topic(), msg.key(), msg.value(), list(msg.headers() or []) or None,
                     partition if partition is not None and partition >= 0 else None)  # fmt: skip


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ConfluentDelivery:
    """One idempotent confluent-kafka producer (``acks=all``) for the outputs and changelog writes of every
    agent of a worker; a daemon thread polls it for delivery reports."""

    changelog = True
    QUEUE_FULL_WAIT = 0.005  # s: the local queue is full; wait for deliveries to free it

    def __init__(self, kafka_config: dict[str, Any], linger_ms: float = 5.0) -> None:
        self.kafka_config = kafka_config
        self.linger_ms = linger_ms
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def setup(self) -> None:
        self._producer = self._new_producer()
        self._poller = threading.Thread(target=self._poll, name="bizbus-flows-delivery", daemon=True)
        self._poller.start()

    def _new_producer(self) -> Producer:
        return Producer({**self.kafka_config, "enable.idempotence": True, "acks": "all",
                         "linger.ms": self.linger_ms, "queue.buffering.max.messages": 1_000_000,
                         "batch.num.messages": 10_000})  # fmt: skip

    def _poll(self) -> None:
        while not self._closed.is_set():
            producer = self._producer
            if producer is not None:
                producer.poll(0.05)

    async def send(self, records: list[OutRecord]) -> None:
        """Produce ``records`` and return when the broker acknowledged each; what it refused is produced
        again after a back-off (records stay in order per partition within one round)."""
        pending: list[OutRecord] = list(records)
        backoff = 0.5
        while pending:
            rnd = await self._round(pending)
            if not rnd.failed:
                return
            first = rnd.errors[0]
            log.warning("%d of %d record(s) not delivered (%s); producing them again in %.1f s",
                        len(rnd.failed), len(pending), first.str(), backoff)  # fmt: skip
            if any(e.fatal() for e in rnd.errors):
                self._replace_producer()
            pending = [_again(m) for m in rnd.failed]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _round(self, records: list[OutRecord]) -> _Round:
        producer = self._producer
        if producer is None:
            raise RuntimeError("ConfluentDelivery.send before setup()")
        loop = asyncio.get_running_loop()
        rnd = _Round(loop, len(records), loop.create_future())
        if not records:
            return rnd
        produce, report = producer.produce, rnd.on_delivery
        for r in records:
            while True:
                try:
                    if r.partition is None:
                        produce(r.topic, r.value, r.key, headers=r.headers, on_delivery=report)
                    else:
                        produce(r.topic, r.value, r.key, r.partition, headers=r.headers, on_delivery=report)
                    break
                except BufferError:  # a million records in flight: let the broker catch up
                    await asyncio.sleep(self.QUEUE_FULL_WAIT)
        await rnd.done
        return rnd

    def _replace_producer(self) -> None:
        """After a fatal error (the idempotent producer lost its sequence) only a new producer works."""
        with self._lock:
            old, self._producer = self._producer, self._new_producer()
        log.error("the flows' producer hit a fatal error; replaced it with a new one")
        if old is not None:
            old.flush(1)

    def close(self, timeout: float = 10.0) -> None:
        self._closed.set()
        if self._poller is not None:
            self._poller.join(1.0)
        if self._producer is not None:
            self._producer.flush(timeout)
