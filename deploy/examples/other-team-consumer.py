#!/usr/bin/env python3
"""Read a bizbus topic from another team's code: only confluent-kafka, no bizbus package.

bizbus writes Avro in the Confluent wire format (magic byte 0, 4-byte schema id, Avro body) and registers
each topic's value schema under the subject `<topic>-value`, so the standard AvroDeserializer decodes every
record with the exact schema it was written with. Decimals arrive as decimal.Decimal, timestamps as aware
datetimes, dates as datetime.date. The field docs and an example record: docs/topics.md, or
`bizbus topics describe TOPIC`.

    pip install 'confluent-kafka[avro]'           # avro extra: fastavro, httpx, ... for the registry client
    export KAFKA_BOOTSTRAP_SERVERS=kafka-1:9093 SCHEMA_REGISTRY_URL=https://schema-registry:8081
    python other-team-consumer.py bizbus.pm.timesheet.v1 --team finance --purpose labor-report --from-beginning

Optional: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD (e.g.
SASL_SSL / SCRAM-SHA-512 as your team's KafkaUser) and SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO (user:password).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from confluent_kafka import DeserializingConsumer
from confluent_kafka.error import ConsumeError, ValueDeserializationError
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import StringDeserializer


def kafka_settings() -> dict[str, str]:
    """Connection settings from the environment (secrets never on the command line)."""
    conf = {"bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")}
    for env, key in (
        ("KAFKA_SECURITY_PROTOCOL", "security.protocol"),
        ("KAFKA_SASL_MECHANISM", "sasl.mechanism"),
        ("KAFKA_SASL_USERNAME", "sasl.username"),
        ("KAFKA_SASL_PASSWORD", "sasl.password"),
    ):
        if os.environ.get(env):
            conf[key] = os.environ[env]
    return conf


def registry_settings() -> dict[str, str]:
    conf = {"url": os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081")}
    if os.environ.get("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"):
        conf["basic.auth.user.info"] = os.environ["SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"]
    return conf


def text(value: object) -> str:
    """Decimal("7.50") -> 7.50, dates and datetimes as ISO 8601, lists as a count."""
    if isinstance(value, list):
        return f"[{len(value)} items]"
    iso = getattr(value, "isoformat", None)  # datetime.date and datetime.datetime
    return iso() if iso else str(value)


def summary(value: dict) -> str:
    """The lineage fields of `meta`, then the record's own simple fields."""
    meta = value.get("meta") or {}
    parts = [f"{k}={text(meta.get(k))}" for k in ("event_id", "correlation_id", "occurred_at")]
    parts += [
        f"{name}={text(field)}"
        for name, field in value.items()
        if name != "meta" and field is not None and not isinstance(field, dict)
    ]
    return " ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description="Print the records of a bizbus topic, decoded.")
    ap.add_argument("topic", nargs="?", default="bizbus.pm.timesheet.v1")
    ap.add_argument(
        "--team", default="bi", help="your team: the ACLs allow the group ids starting with <team>-"
    )
    ap.add_argument("--purpose", default="explore", help="what the group is for; group id = <team>-<purpose>")
    ap.add_argument(
        "--from-beginning",
        action="store_true",
        help="a group without committed offsets starts at the oldest record (default: the newest)",
    )
    ap.add_argument("--max-records", type=int, default=0, help="stop after N records (0: run until Ctrl-C)")
    ap.add_argument(
        "--idle-timeout", type=float, default=0, help="stop after N seconds without a record (0: never)"
    )
    args = ap.parse_args()

    registry = SchemaRegistryClient(registry_settings())
    consumer = DeserializingConsumer(
        {
            **kafka_settings(),
            # one group per team and purpose, with its own offsets
            "group.id": f"{args.team}-{args.purpose}",
            "auto.offset.reset": "earliest" if args.from_beginning else "latest",
            # store (and so commit) an offset only after the record was processed: at least once
            "enable.auto.offset.store": False,
            # a dead consumer's partitions move to the others after 10 s
            "session.timeout.ms": 10000,
            # the key is the business key as a UTF-8 string
            "key.deserializer": StringDeserializer("utf_8"),
            # no reader schema: every record is decoded with the schema it was written with
            "value.deserializer": AvroDeserializer(registry),
        }
    )
    consumer.subscribe([args.topic])
    seen, last = 0, time.monotonic()
    try:
        while args.max_records == 0 or seen < args.max_records:
            try:
                msg = consumer.poll(1.0)
            except ValueDeserializationError as exc:
                # not Avro of a known schema: report and skip it (a real consumer would dead-letter it)
                print(f"undecodable record skipped: {exc}", file=sys.stderr)
                consumer.store_offsets(exc.kafka_message)
                msg, last = None, time.monotonic()
            except ConsumeError as exc:
                # e.g. the topic does not exist yet; the client keeps trying
                print(f"consumer error: {exc}", file=sys.stderr)
                msg = None
            if msg is None:
                if args.idle_timeout and time.monotonic() - last > args.idle_timeout:
                    break
                continue
            last = time.monotonic()
            # Delivery is at least once: a consumer that acts on records de-duplicates by meta.event_id.
            print(
                f"{msg.topic()}[{msg.partition()}]@{msg.offset()} key={msg.key()} {summary(msg.value())}",
                flush=True,
            )
            consumer.store_offsets(msg)  # committed in the background, and on close
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(f"{seen} records read from {args.topic} by group {args.team}-{args.purpose}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
