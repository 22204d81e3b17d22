"""Which delivery reports make a source record a dead letter (the broker refuses the record itself) and which
keep the cursor so that it is sent again (the broker is away, a timeout, anything unknown)."""

from __future__ import annotations

import pytest
from bizbus.connectors.runtime.source import delivery_outcome
from confluent_kafka import KafkaError


@pytest.mark.parametrize(("code", "outcome"), [
    (KafkaError.MSG_SIZE_TOO_LARGE, "refused"),
    (KafkaError.RECORD_LIST_TOO_LARGE, "refused"),
    (KafkaError.INVALID_MSG_SIZE, "refused"),
    (KafkaError.INVALID_RECORD, "refused"),
    (KafkaError._MSG_TIMED_OUT, "resend"),
    (KafkaError._TRANSPORT, "resend"),
    (KafkaError.NOT_ENOUGH_REPLICAS, "resend"),
    (KafkaError.UNKNOWN_TOPIC_OR_PART, "resend"),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, "resend"),
    (KafkaError._FENCED, "resend"),
])  # fmt: skip
def test_delivery_outcome(code: int, outcome: str) -> None:
    assert delivery_outcome(KafkaError(code)) == outcome


def test_a_good_delivery_is_acked_and_a_fatal_one_never_a_dead_letter() -> None:
    assert delivery_outcome(None) == "acked"
    assert delivery_outcome(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, fatal=True)) == "resend"
