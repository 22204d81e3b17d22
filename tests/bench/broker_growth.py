"""Probe of the embedded broker alone: plain produce -> consume latency at a fixed rate, per 10-s window,
and the broker's CPU, for a few client settings. It shows how Tansu's memory engine slows down as a
partition fills (a fetch scans the partition's stored batches) and what a second consumer or a longer
producer linger does to that.

    python -m tests.bench.broker_growth [--seconds 40] [--rate 1000]

Each setting runs on a fresh 6-partition topic of one private Tansu (tests/chaos/harness.private_stack):
one consumer (fetch wait 10 ms) and an idempotent producer (acks=all, linger 5 ms), as the latency
benchmark's baseline; then two consumers; then linger 50 ms. One JSON line per setting:
``p99_ms_per_10s`` (p99 of the records sent in each 10-s window) and ``broker_cpu_percent`` (Tansu's
user + system CPU over the run, % of one core; -1 if its process was not found). Compare runs of the same machine only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from tests.bench.cdc import create_topics
from tests.bench.core import process_cpu
from tests.bench.latency import by_window, paced
from tests.bench.processor import broker_pid
from tests.chaos.harness import private_stack

SETTINGS: tuple[dict[str, int], ...] = (
    {"consumers": 1, "linger_ms": 5},
    {"consumers": 2, "linger_ms": 5},
    {"consumers": 1, "linger_ms": 50},
)


def run_setting(bootstrap: str, broker: int | None, seconds: float, rate: int, consumers: int,
                linger_ms: int) -> dict[str, Any]:  # fmt: skip
    """One setting on a fresh topic; the first consumer's latencies are kept, the others only fetch."""
    topic = f"bizbus.bench.growth-{uuid.uuid4().hex[:8]}.v1"
    create_topics(bootstrap, [topic])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "acks": "all",
                         "enable.idempotence": True})  # fmt: skip
    group = uuid.uuid4().hex[:6]
    members = []
    for i in range(consumers):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"growth-{group}-{i}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 10})  # fmt: skip
        parts = c.list_topics(topic, 10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        c.consume(10, 1.0)  # let the fetchers start
        members.append(c)
    timed: list[tuple[float, float]] = []
    stop = threading.Event()

    def consume(c: Consumer, keep: bool) -> None:
        while not stop.is_set():
            m = c.poll(0.1)
            if keep and m is not None and m.error() is None:
                sent = float(m.value())
                timed.append((sent, (time.time() - sent) * 1000))

    threads = [threading.Thread(target=consume, args=(c, i == 0), daemon=True) for i, c in enumerate(members)]
    for t in threads:
        t.start()
    lock = threading.Lock()

    def send(seq: int) -> bool:
        with lock:
            producer.produce(topic, key=str(seq % 64).encode(), value=repr(time.time()).encode())
            producer.poll(0)
        return True

    cpu0, t0 = process_cpu(broker) if broker else 0.0, time.monotonic()
    sent = paced(rate, seconds, 1, send)
    producer.flush(30)
    deadline = time.monotonic() + 30
    while len(timed) < sent["sent_ok"] and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu = ((process_cpu(broker) - cpu0) / (time.monotonic() - t0) * 100) if broker else -1
    stop.set()
    for t in threads:
        t.join(5)
    for c in members:
        c.close()
    return {"consumers": consumers, "linger_ms": linger_ms, "rate": rate, "seconds": seconds,
            "records": len(timed), "p99_ms_per_10s": by_window(timed, 10.0),
            "broker_cpu_percent": round(cpu)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=40.0, help="per setting (default 40)")
    ap.add_argument("--rate", type=int, default=1000, help="records/s offered (default 1000)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bizbus-growth-") as d, private_stack(Path(d), {}) as st:
        pid = broker_pid(st.bootstrap)
        for setting in SETTINGS:
            print(json.dumps(run_setting(st.bootstrap, pid, args.seconds, args.rate, **setting)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
