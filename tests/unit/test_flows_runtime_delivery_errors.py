"""Which delivery errors make the flows replace their producer (streams/runtime/delivery.py)."""

from bizbus.streams.runtime.delivery import needs_new_producer
from confluent_kafka import KafkaError


def test_a_fenced_producer_is_replaced_and_a_timeout_is_retried_on_the_same_one() -> None:
    # seen against the embedded broker: after message timeouts every produce came back PRODUCER_FENCED, not
    # marked fatal, and the delivery retried on the fenced producer for ever
    assert needs_new_producer(KafkaError(KafkaError.PRODUCER_FENCED))
    assert needs_new_producer(KafkaError(KafkaError.INVALID_PRODUCER_EPOCH))
    assert needs_new_producer(KafkaError(KafkaError._MSG_TIMED_OUT, fatal=True))
    assert not needs_new_producer(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert not needs_new_producer(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
