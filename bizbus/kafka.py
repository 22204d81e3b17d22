"""Kafka client helpers every part uses: which log a client talks to, and waiting for a broker to answer."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaException
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
