"""A closed dead-letter writer lets its producer go: no client of a closed task lives on and reconnects to the next
broker that answers on the address (a restarted embedded broker saw such clients: "reports different ClusterId")."""

from __future__ import annotations

from confluent_kafka import Producer

from bizbus.deadletters import DeadLetterWriter


def test_close_drops_the_producer_and_may_be_repeated() -> None:
    writer = DeadLetterWriter({"bootstrap.servers": "127.0.0.1:9"}, serde=None)  # type: ignore[arg-type]
    writer._producer = Producer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 1000})
    writer.close()
    assert getattr(writer, "_producer", None) is None
    writer.close()  # a second close (a connector's and a task's) is harmless
    writer.abandon()
