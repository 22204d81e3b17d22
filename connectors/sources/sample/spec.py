"""The ``sample-events`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec


def _writes(config: Any) -> tuple[str, ...]:
    return (config.topic,)


SPEC = ComponentSpec(
    "sample-events",
    "source",
    "bizbus.connectors.sources.sample.connector:SampleEventsSource",
    "Emits realistic canonical sample events to a catalogue topic at a fixed rate (demo, smoke tests).",
    writes=_writes,
    guarantee="at least once into Kafka (demo data; ids deterministic per sequence)",
    example="deploy/pipeline.yaml",
)
