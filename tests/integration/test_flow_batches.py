"""A real F2 worker (`bizbus flows run`) takes a backlog in batches: a poison record in the middle of a
batch becomes a dead letter with its original bytes, and every other timesheet gives exactly one voucher.

A private broker and registry (the flows consume shared catalogue topics); about 30 s.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bizbus.connectors.runtime.replay import read_dead_letters
from bizbus.schemas import catalog
from confluent_kafka import Producer

from bizbus import lineage
from bizbus.deadletters import DEAD_LETTER_TOPIC
from bizbus.kafka import read_topic
from bizbus.serde import AvroSerde
from tests.bench.faust_profile import TIMESHEET_TOPIC, VOUCHER_TOPIC, prepare, timesheet_record
from tests.chaos.harness import Worker, private_stack, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

POISON = b"\x00\x00\x00\x00\x07not avro at all"


def vouchers(bootstrap: str) -> dict[bytes, int]:
    """Voucher number (the key) -> how many records carry it."""
    out: dict[bytes, int] = {}
    for m in read_topic({"bootstrap.servers": bootstrap}, VOUCHER_TOPIC, 1.0, partitions=list(range(6)),
                        group_prefix="batch-test", poll=0.2):  # fmt: skip
        out[m.key()] = out.get(m.key(), 0) + 1
    return out


def test_a_poison_record_in_the_middle_of_a_batch(tmp_path: Path) -> None:
    with private_stack(tmp_path, {}) as stack:
        pipeline = prepare(stack, 0)
        serde = AvroSerde({"url": stack.registry_url})
        enc = serde.encoder(f"{TIMESHEET_TOPIC}-value", catalog.load("bizbus.pm.TimesheetEntry"))
        producer = Producer({"bootstrap.servers": stack.bootstrap})
        key = b"BP00"  # one key: one partition, one batch
        for n in range(40):
            if n == 20:
                producer.produce(TIMESHEET_TOPIC, key=key, value=POISON)
            rec = {**timesheet_record(n * 12), "project": "BP00"}  # n * 12: project BP00, distinct worklogs
            producer.produce(TIMESHEET_TOPIC, key=key, value=enc(rec), headers=lineage.headers(rec["meta"]))
        assert producer.flush(20) == 0
        worker = Worker("flows", stack, pipeline, command=["flows", "run", "--pipeline", str(pipeline)])
        worker.start()
        try:
            wait_for(lambda: len(vouchers(stack.bootstrap)) >= 40, 120, "40 vouchers", [worker])
            letters = read_dead_letters(
                {"bootstrap.servers": stack.bootstrap}, serde, DEAD_LETTER_TOPIC, idle=1.0
            )
            time.sleep(2)  # anything sent twice would show up by now
            got = vouchers(stack.bootstrap)
        finally:
            worker.stop()
        assert len(letters) == 1, worker.logs()
        assert (letters[0].connector, letters[0].source_offset) == ("labor-cost", 20)
        assert letters[0].error_class == "POISON"
        assert set(got) == {f"LAB-BW{n * 12:08d}-1".encode() for n in range(40)}
        assert set(got.values()) == {1}, {k: v for k, v in got.items() if v != 1}
