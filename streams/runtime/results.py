"""What a flow's pure function answers, and the helpers every flow uses to build it.

A flow's business logic is a pure function over decoded Avro records (plain dicts), the entity's last
state and the flow's mapping; it returns one of

* :class:`Result` — what happened (``outcome``), the records to send (:class:`Output`) and the new state;
* :class:`Missing` — master data the record needs is not there (yet): the agent waits up to the flow's
  ``master_data_grace_seconds`` and asks again, then dead-letters the record as ``unknown_master_data``;
* :class:`Reject` — the record can never succeed as is: dead letter with ``reason``.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from bizbus import lineage

Outcome = Literal["emitted", "skipped_stale", "reemitted", "dead_letter", "ignored"]


@dataclass(frozen=True)
class Output:
    """One record to produce: topic, key (text) and the Avro record as a dict.

    An output re-emitted from a state the flows runtime recorded (:func:`sent_output`) carries ``wire``
    instead: the value bytes and the headers exactly as first sent, ``value`` being None."""

    topic: str
    key: str
    value: dict[str, Any] | None
    wire: tuple[bytes, list[tuple[str, bytes]]] | None = None

    def to_state(self) -> dict[str, Any]:
        return {"topic": self.topic, "key": self.key, "value": self.value}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Output:
        if "wire" in data:
            return cls(data["topic"], data["key"], None, (data["wire"], [(k, v) for k, v in data["headers"]]))
        return cls(data["topic"], data["key"], data["value"])


def sent_output(topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]]) -> dict[str, Any]:
    """An output as the flows runtime records it in a state once encoded: its bytes and headers, which
    :meth:`Output.from_state` gives back as ``wire``. A state is packed for every handled record, and bytes
    pack at a fraction of the cost of the record (Decimals, dates) they encode."""
    return {"topic": topic, "key": key, "wire": value, "headers": headers}


@dataclass(frozen=True)
class Result:
    """The record was handled: ``outputs`` to send, ``state`` to store (None: leave the state as is)."""

    outcome: Outcome
    outputs: tuple[Output, ...] = ()
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class Missing:
    """Master data the record needs is unknown; ``key`` identifies it (records waiting for the same key
    share one grace period), ``message`` says what is missing."""

    key: str
    message: str


@dataclass(frozen=True)
class Reject:
    """The record can never succeed as is: dead letter, error Permanent with ``reason``."""

    reason: str
    message: str


Verdict = Result | Missing | Reject


def version_gate(state: dict[str, Any] | None, version: int) -> Result | None:
    """None: a new version, process it. Otherwise the answer for an old one:
    lower than the last processed → ``skipped_stale``; equal → the record is being processed again after a
    crash: ``reemitted`` with exactly the outputs recorded for it (they may never have been sent)."""
    if state is None or state.get("version") is None:
        return None
    return versions_gate(int(state["version"]), state.get("outputs") or (), version)


def versions_gate(last: int | None, recorded: Iterable[dict[str, Any]], version: int) -> Result | None:
    """:func:`version_gate` for a typed state: ``last`` processed version (None: none) and the outputs
    ``recorded`` for it."""
    if last is None or version > last:
        return None
    if version < last:
        return Result("skipped_stale")
    return Result("reemitted", tuple(Output.from_state(o) for o in recorded))


def with_outputs(state: dict[str, Any], outputs: tuple[Output, ...]) -> dict[str, Any]:
    """``state`` plus the outputs recorded for its version."""
    return {**state, "outputs": [o.to_state() for o in outputs]}


def derived_meta(src: dict[str, Any], role: str, correlation_id: str, flow: str) -> dict[str, Any]:
    """``meta`` of an output derived from the input whose meta is ``src`` (deterministic: no clock)."""
    return lineage.meta(
        event_id=lineage.derived_id(src["event_id"], role),
        correlation_id=correlation_id,
        source_system="bizbus",
        occurred_at=src["occurred_at"],
        causation_id=src["event_id"],
        trace={"flow": flow},
    )


def local_date(when: datetime, tz: str) -> date:
    """The calendar day of ``when`` in time zone ``tz`` (naive datetimes are taken as UTC)."""
    if when.tzinfo is None:
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return when.astimezone(zoneinfo.ZoneInfo(tz)).date()
