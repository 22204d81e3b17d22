"""The ``http-api`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec
from bizbus.secrets import secret_vars


def _reads(config: Any) -> tuple[str, ...]:
    return tuple(config.topics)


SPEC = ComponentSpec(
    "http-api",
    "sink",
    "bizbus.connectors.sinks.http_api.connector:HttpApiSink",
    "Creates one object per event at a REST API exactly once (idempotency key or lookup before create).",
    reads=_reads,
    secrets=secret_vars,
    guarantee="exactly once: intent ledger + the API's idempotency key or a lookup before create",
    example="deploy/examples/outbox-to-postgres-and-api.yaml",
)
