"""A state table's reads: from the memory store's dict, decoded once per stored value; a key read from the
store and written again (F5's stock keys, every batch) is served decoded after the flush, a key written
without a read is not kept decoded, and bytes replaced in the store (a recovery) are decoded anew."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from bizbus.streams.runtime import tables
from bizbus.streams.runtime.delivery import OutRecord
from bizbus.streams.runtime.events import handling
from bizbus.streams.runtime.statecodec import dumps_state
from bizbus.streams.runtime.tables import StateTable


class Store:
    """Faust's memory store as the runtime sees it: a ``data`` dict behind a Mapping whose ``get`` must not be
    used for reads (it raises and catches KeyError for a missing key)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        raise AssertionError("read through Mapping.get, not the store's dict")

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.data[key] = value


def table() -> tuple[StateTable[Any], Store]:
    store = Store()
    t: StateTable[Any] = StateTable(SimpleNamespace(data=store))
    t._changelog_topic = "app-t-changelog"
    return t, store


class Event:  # weakly referenceable, as Faust's events (the current event is a weak reference)
    message = SimpleNamespace(partition=0)


EVENT = Event()


def write(t: StateTable[Any], key: str, state: dict[str, Any]) -> list[OutRecord]:
    """Set ``key`` as an event's handling does, then flush (the changelog records)."""
    out: list[OutRecord] = []
    with handling(EVENT):
        t.set(key, state)
    t.flush(out)
    return out


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    seen: list[bytes] = []
    real = tables.loads_state

    def counting(raw: bytes) -> Any:
        seen.append(raw)
        return real(raw)

    monkeypatch.setattr(tables, "loads_state", counting)
    return seen


def test_a_key_read_and_written_is_served_decoded_after_the_flush(decodes: list[bytes]) -> None:
    t, store = table()
    store.data[b"WH1/M1"] = dumps_state({"on_hand": "5", "holds": {}})
    assert t.get("WH1/M1") == {"on_hand": "5", "holds": {}} and len(decodes) == 1
    assert write(t, "WH1/M1", {"on_hand": "5", "holds": {"SO-1": [1, "2"]}})[0].value == store.data[b"WH1/M1"]
    assert t.get("WH1/M1") == {"on_hand": "5", "holds": {"SO-1": [1, "2"]}} and len(decodes) == 1  # not decoded again
    store.data[b"WH1/M1"] = dumps_state({"on_hand": "9", "holds": {}})  # recovered from the changelog
    assert t.get("WH1/M1") == {"on_hand": "9", "holds": {}} and len(decodes) == 2
    assert t.get("unknown") is None


def test_a_key_written_without_a_read_is_decoded_when_read(decodes: list[bytes]) -> None:
    t, store = table()
    write(t, "SO-1", {"version": 1})
    assert "SO-1" not in t._decoded
    assert t.get("SO-1") == {"version": 1} and len(decodes) == 1
