"""A state table written by events of several partitions (F6's moving averages, F7's project states) puts
every write of a key in ONE changelog partition fixed by the key, so a recovery ends at the newest value;
an ordinary table follows the partition of the event that wrote the key."""

from __future__ import annotations

import zlib
from types import SimpleNamespace
from typing import Any

from bizbus.streams.runtime.delivery import OutRecord
from bizbus.streams.runtime.events import handling
from bizbus.streams.runtime.statecodec import loads_state
from bizbus.streams.runtime.tables import StateTable


class Event:
    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def write(table: StateTable[Any], key: str, value: int, partition: int) -> list[OutRecord]:
    changelog: list[OutRecord] = []
    with handling(Event(partition)):
        table.set(key, {"v": value})
    table.flush(changelog)
    return changelog


def table(key_partitions: int | None) -> StateTable[Any]:
    t: StateTable[Any] = StateTable({}, key_partitions=key_partitions)
    t._changelog_topic = "app-t-changelog"
    return t


def test_by_key_every_write_of_a_key_goes_to_one_partition() -> None:
    t = table(6)
    records = [r for p, v in ((0, 1), (2, 2), (5, 3)) for r in write(t, "SH01/WH1/M-STEEL", v, p)]
    assert {r.partition for r in records} == {zlib.crc32(b"SH01/WH1/M-STEEL") % 6}
    assert [loads_state(r.value)["v"] for r in records] == [1, 2, 3]  # in write order, within that partition
    assert t.get("SH01/WH1/M-STEEL") == {"v": 3}
    assert {r.partition for k in ("P1", "P2", "P3", "P4", "P5", "P6", "P7") for r in write(t, k, 1, 0)} != {0}


def test_an_ordinary_table_follows_the_event() -> None:
    t = table(None)
    assert [r.partition for p in (0, 2, 5) for r in write(t, "k", p, p)] == [0, 2, 5]
