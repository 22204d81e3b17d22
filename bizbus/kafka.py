"""Kafka client helpers every part uses: which log a client talks to, waiting for a broker to answer, and
reading a topic until it is quiet."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from bizbus.errors import BrokerError


def log_epoch(client: Any, timeout: float = 10.0) -> str:
    """The identity of the log a client talks to: the cluster id from a metadata request (any confluent-kafka
    Producer, Consumer or AdminClient). A different value than the one a source stored with its cursor means the
    broker that acknowledged those records is not this one (a restarted in-memory broker, a rebuilt cluster), so
    what it acknowledged may be gone. Raises ``KafkaException`` when the broker does not answer."""
    md = client.list_topics(timeout=timeout)
    cluster_id = getattr(md, "cluster_id", None)
    if not cluster_id:  # a broker without cluster ids (very old): the bootstrap address is all there is
        return f"unknown@{md.orig_broker_name}"
    return str(cluster_id)


def wait_for_metadata(conf: dict[str, Any], timeout: float) -> Any:
    """Block until the cluster answers a metadata request; returns the metadata."""
    admin = AdminClient({**conf, "socket.connection.setup.timeout.ms": 1000})
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"broker {conf.get('bootstrap.servers')} did not answer within {timeout:.0f}s: {last}")


def read_until_quiet(
    consumer: Any,
    idle: float,
    *,
    ends: MutableMapping[tuple[str, int], int] | None = None,
    limit: int = 0,
    timeout: float = 0.0,
    poll: float = 0.5,
    batch: int = 500,
    on_error: Callable[[KafkaError], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Any]:
    """The records ``consumer`` (assigned or subscribed) gets, until one of:

    * ``idle`` seconds bring no record (the end, as far as anyone can tell; ``idle <= 0``: never);
    * every partition in ``ends`` ((topic, partition) -> end offset, exclusive) has given its record at
      ``end - 1`` or a later one (records at or past the end are left out). A partition is removed from
      ``ends`` when it reaches its end: what is left in it after the read was not reached (quiet first);
    * ``limit`` records were given (0: no limit), or ``timeout`` seconds passed (0: no limit).

    Error messages are left out; ``on_error`` sees each but the end-of-partition notices. ``progress(n)``
    (n = records so far) is called about once a second, only while records still arrive after the first
    second, so a short read stays quiet and a long one shows it is moving."""
    start = last_new = last_report = time.monotonic()
    until_end = ends is not None
    open_ends = ends if ends is not None else {}
    for tp in [tp for tp, end in open_ends.items() if end <= 0]:
        del open_ends[tp]  # nothing to read there
    reached: set[tuple[str, int]] = set()
    seen = 0
    while True:
        now = time.monotonic()
        if (idle > 0 and now - last_new >= idle) or (timeout and now - start >= timeout):
            return
        if until_end and not open_ends:
            return
        wait = min(poll, idle) if idle > 0 else poll
        fresh = 0
        for msg in consumer.consume(min(batch, limit - seen) if limit else batch, wait):  # none read past limit
            err = msg.error()
            if err is not None:
                if on_error is not None and err.code() != KafkaError._PARTITION_EOF:
                    on_error(err)
                continue
            fresh += 1
            if until_end:
                tp = (msg.topic(), msg.partition())
                if tp in reached:
                    continue  # that partition's end was reached: what comes after is not asked for
                end = open_ends.get(tp)
                if end is not None and msg.offset() >= end - 1:
                    del open_ends[tp]
                    reached.add(tp)
                    if msg.offset() >= end:
                        continue
            seen += 1
            yield msg
            if limit and seen >= limit:
                return
        now = time.monotonic()
        if fresh:
            last_new = now
            if progress is not None and now - start >= 1.0 and now - last_report >= 1.0:
                progress(seen)
                last_report = now


def read_topic(
    kafka_config: Mapping[str, Any],
    topic: str,
    idle: float = 2.0,
    *,
    partitions: list[int] | None = None,
    start: int = 0,
    group_prefix: str = "bizbus-read",
    consumer_config: Mapping[str, Any] | None = None,
    **until: Any,
) -> list[Any]:
    """Every record of ``topic`` (its ``partitions``, default: all the broker lists) from offset ``start``,
    read by a throwaway consumer (a group of its own, nothing committed) with :func:`read_until_quiet`
    (``idle`` and the other stop conditions ``until``)."""
    consumer = Consumer({**kafka_config, "group.id": f"{group_prefix}-{uuid.uuid4().hex[:12]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         **(consumer_config or {})})  # fmt: skip
    try:
        if partitions is None:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            partitions = sorted(meta.partitions) if meta is not None and meta.error is None else [0]
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        return list(read_until_quiet(consumer, idle, **until))
    finally:
        consumer.close()
