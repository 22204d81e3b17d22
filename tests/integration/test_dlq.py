"""Dead letters reach their topic with the original bytes, coordinates and error, readable by anyone."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus.deadletters import DeadLetterWriter, dead_letter
from bizbus.failures import Permanent, Poison
from bizbus.kafka import read_until_quiet
from bizbus.serde import AvroSerde


def _consume_one(conf: dict, topic: str):
    consumer = Consumer({**conf, "group.id": f"t-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000})  # fmt: skip
    consumer.subscribe([topic])
    try:
        for m in read_until_quiet(consumer, 0, limit=1, timeout=30):
            return m
    finally:
        consumer.close()
    raise AssertionError(f"nothing on {topic} within 30 s")


def test_poison_record_is_dead_lettered_with_raw_bytes_and_coordinates(embedded_broker, registry) -> None:
    conf = {"bootstrap.servers": embedded_broker.bootstrap_servers}
    topic = f"bizbus.ops.dead-letter-{uuid.uuid4().hex[:6]}.v1"
    admin = AdminClient(conf)  # keep a reference: a collected client fails its futures
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(20)
    serde = AvroSerde({"url": registry.url})
    writer = DeadLetterWriter(conf, serde, topic=topic)
    writer.setup()
    raw = b'{"not": "avro"'
    headers = [("event_id", b"src-1"), ("correlation_id", b"PRJ-7"), ("x-binary", b"\x00\xff")]
    rec = dead_letter(connector="pg-sink", topic="bizbus.finance.voucher.v1", partition=2, offset=41, key=b"PRJ-7",
                      value=raw, headers=headers, timestamp_ms=1_795_000_000_000,
                      error=Poison("magic byte 123 is not 0"), attempts=1)  # fmt: skip
    writer.send(rec)
    writer.flush()
    msg = _consume_one(conf, topic)
    got = serde.decode(msg.value())
    assert got["value"] == raw and got["key"] == b"PRJ-7"
    assert {"key": "x-binary", "value": b"\x00\xff"} in got["headers"]
    assert (got["source_topic"], got["source_partition"], got["source_offset"]) == ("bizbus.finance.voucher.v1", 2, 41)
    assert got["error_class"] == "POISON" and "magic byte" in got["error_message"]
    assert got["meta"]["causation_id"] == "src-1" and got["meta"]["correlation_id"] == "PRJ-7"
    writer.close()


def test_dead_letter_id_is_deterministic_per_source_record() -> None:
    kw = dict(connector="c", topic="t", partition=0, offset=5, key=None, value=b"x", headers=None, timestamp_ms=None, attempts=3)
    a = dead_letter(error=Permanent("unknown cost center CC-9", reason="unknown_master_data"), **kw)
    b = dead_letter(error=Permanent("unknown cost center CC-9", reason="unknown_master_data"), **kw)
    c = dead_letter(error=Permanent("x"), **{**kw, "offset": 6})
    assert a["meta"]["event_id"] == b["meta"]["event_id"] != c["meta"]["event_id"]
    assert a["error_class"] == "PERMANENT" and a["error_type"] == "Permanent/unknown_master_data"
    assert a["meta"]["correlation_id"] == "t/0/5" and a["attempts"] == 3
