"""The ``reporting-db`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec


def _reads(config: Any) -> tuple[str, ...]:
    return tuple(config.topics)


SPEC = ComponentSpec(
    "reporting-db",
    "sink",
    "bizbus.connectors.sinks.reporting.connector:ReportingSink",
    "PostgreSQL reporting tables for BI: current state by business key, document lines, history; exactly once.",
    reads=_reads,
    docs="docs/connectors/reporting.md",
    guarantee="exactly once: rows and ledger entry in one transaction; an older version never overwrites a newer one",
    example="deploy/examples/reporting.yaml",
)
