"""State tables: Faust tables whose values are flow states, written once per batch."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from bizbus.streams.runtime.delivery import OutRecord
from bizbus.streams.runtime.events import current_event, handling
from bizbus.streams.runtime.statecodec import dumps_state, loads_state

T = TypeVar("T")


class StateTable(Generic[T]):
    """A Faust table whose values are states (:func:`dumps_state`: dicts as MessagePack), keyed by text.

    Writes are buffered until :meth:`flush` (once per batch): a key written many times in a batch (a
    project's cost roll-up) is encoded and sent to the changelog once. :meth:`get` sees the buffered
    writes, so later records of the batch and other agents of the worker read the newest state.

    ``load``: the typed model of the states (e.g. ``ProjectState.from_state``): :meth:`get` then answers the
    model, built once per stored value; :meth:`set` still takes the dict, which is what is stored.

    ``key_partitions``: the changelog partition of a key is fixed by the key (``crc32(key) % key_partitions``)
    instead of the partition of the event that wrote it. For a table whose keys are written by events of
    several partitions or topics (a material's moving average from receipts and issues): every write of a
    key then lands in one changelog partition, in order, so a recovery ends at the newest value."""

    CACHE_MAX = 4096  # decoded states kept

    def __init__(self, table: Any, load: Callable[[dict[str, Any]], T] | None = None,
                 key_partitions: int | None = None) -> None:  # fmt: skip
        self.table = table
        self.key_partitions = key_partitions
        self._load = load
        self._changelog_topic: str | None = None
        self._decoded: dict[str, tuple[bytes, Any]] = {}
        self._dirty: dict[str, tuple[dict[str, Any], Any]] = {}  # key -> (state, event that wrote it)
        self._dirty_loaded: dict[str, Any] = {}  # key -> the typed form of its buffered state

    def get(self, key: str) -> T | None:
        dirty = self._dirty.get(key)
        if dirty is not None:
            if self._load is None:
                return dirty[0]  # type: ignore[return-value]
            loaded = self._dirty_loaded.get(key)
            if loaded is None:
                loaded = self._dirty_loaded[key] = self._load(dirty[0])
            return loaded  # type: ignore[no-any-return]
        # the store itself: Faust's Table.__getitem__ adds sensor callbacks per read (≈ 3 % of a worker's time)
        raw = self._read(key.encode("utf-8"))
        if raw is None:
            return None
        hit = self._decoded.get(key)
        if hit is not None and hit[0] is raw:
            return hit[1]
        state = loads_state(raw)
        assert state is not None
        loaded = state if self._load is None else self._load(state)
        self._remember(key, raw, loaded)
        return loaded  # type: ignore[no-any-return]

    def _remember(self, key: str, raw: bytes, state: Any) -> None:
        """Keep a decoded state for the next read (master data is read for every record). Bounded: a cache
        of every worklog ever seen doubled the worker's memory, and the garbage collector's full passes
        over those dicts took ≈ 8 % of its time (measured with gc.callbacks, 30,000 worklogs)."""
        if len(self._decoded) >= self.CACHE_MAX:
            self._decoded.clear()
        self._decoded[key] = (raw, state)

    def set(self, key: str, state: dict[str, Any]) -> None:
        self._dirty[key] = (state, current_event())
        self._dirty_loaded.pop(key, None)

    def _store(self) -> Any:
        """Where the table's values are (a Faust table's store; a plain mapping in tests)."""
        return getattr(self.table, "data", self.table)

    def _read(self, raw_key: bytes) -> bytes | None:
        """The stored bytes of ``raw_key``. Faust's memory store keeps its values in a dict (``data``); its own
        ``get`` is ``Mapping.get``: three Python calls a read, and a raised KeyError for a key it lacks (an
        unknown material is read for every stock step of F5: ≈ 5 % of that worker)."""
        store = self._store()
        inner = getattr(store, "data", None)
        if type(inner) is dict:
            return inner.get(raw_key)  # type: ignore[no-any-return]
        return store.get(raw_key)  # type: ignore[no-any-return]

    def flush(self, changelog: list[OutRecord] | None = None) -> int:
        """Write the buffered states to the Faust table; how many keys.

        A changelog record goes to the changelog partition of the event that set the key (a batch spans
        partitions). With ``changelog`` the value is put in the table's store and its changelog record
        appended there, for the caller to produce (streams/runtime/delivery.py); without, Faust's
        ``Table.__setitem__`` sends it through the app's producer."""
        dirty, self._dirty = self._dirty, {}
        self._dirty_loaded.clear()
        decoded = self._decoded
        for key, (state, event) in dirty.items():
            raw = dumps_state(state)
            raw_key = key.encode("utf-8")
            if key in decoded:  # a key read from the store before (a stock key of F5, read again every batch)
                if self._load is None:
                    decoded[key] = (raw, state)
                else:
                    del decoded[key]
            if changelog is None or event is None:
                with handling(event):
                    self.table[raw_key] = raw
            else:
                self._store()[raw_key] = raw
                partition = (event.message.partition if self.key_partitions is None
                             else zlib.crc32(raw_key) % self.key_partitions)  # fmt: skip
                changelog.append(OutRecord(self.changelog_topic, raw_key, raw, None, partition))
        # remembered as decoded only when the key had been read from the store (it is read again: F5's
        # stock keys, each decoded once a batch before). A key written without having been read (a
        # worklog, a new order) is not kept: most are not read again soon, and keeping each written state
        # alive only gave the collector more to walk
        return len(dirty)

    @property
    def changelog_topic(self) -> str:
        if self._changelog_topic is None:
            self._changelog_topic = self.table.changelog_topic.get_topic_name()
        return self._changelog_topic
