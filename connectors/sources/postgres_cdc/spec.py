"""The ``postgres-cdc`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec


def _writes(config: Any) -> tuple[str, ...]:
    from bizbus.connectors.runtime.cdc import load_mapping  # imported when asked: listing types stays light

    return load_mapping(config.mapping).topics()


SPEC = ComponentSpec(
    "postgres-cdc",
    "source",
    "bizbus.connectors.sources.postgres_cdc.connector:PostgresCdcSource",
    "PostgreSQL change data capture (logical decoding, pgoutput): snapshot then stream, journaled in the state"
    " DB, mapped to canonical topics by YAML.",
    writes=_writes,
    docs="docs/connectors/postgres_cdc.md",
    guarantee="each committed row change once per event id, in commit order per key: journaled in the state DB before"
    " it is sent, the slot confirmed only after the broker's ack; the journal is re-sent after a lost broker",
    example="deploy/examples/jxc-postgres-cdc.yaml",
)
