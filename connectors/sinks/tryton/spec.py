"""The ``tryton`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec
from bizbus.secrets import secret_vars


def _reads(config: Any) -> tuple[str, ...]:
    return tuple(config.topics)


SPEC = ComponentSpec(
    "tryton",
    "sink",
    "bizbus.connectors.sinks.tryton.connector:TrytonSink",
    "Tryton ERP over JSON-RPC: cost centers, posted vouchers and purchase orders; opt in: purchase requests, "
    "material cost moves and sale decisions; exactly once by bizbus_ref.",
    reads=_reads,
    secrets=secret_vars,
    docs="docs/connectors/tryton.md",
    guarantee="exactly once: intent ledger + lookup by bizbus_ref external_ref before create",
    example="deploy/examples/projects-to-tryton.yaml",
)
