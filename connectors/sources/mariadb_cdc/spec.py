"""The ``mariadb-cdc`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec
from bizbus.secrets import secret_vars


def _writes(config: Any) -> tuple[str, ...]:
    from pathlib import Path  # imported when asked: listing the component types stays light

    from bizbus.connectors.runtime.cdc import load_mapping

    return load_mapping(Path(config.mapping)).topics()


SPEC = ComponentSpec(
    "mariadb-cdc",
    "source",
    "bizbus.connectors.sources.mariadb_cdc.connector:MariaDbCdcSource",
    "MariaDB binlog CDC (ROW, full images): snapshot handed over at its GTID, resume by GTID, tables mapped"
    " to canonical topics by YAML; journal in the state database.",
    writes=_writes,
    secrets=secret_vars,
    docs="docs/connectors/mariadb_cdc.md",
    guarantee="each committed row change once per event id, in commit order per key: journaled in the state DB"
    " (GTID + chunk) before it is sent, resumed after the journal's GTID; the journal is re-sent after a lost broker",
    example="deploy/examples/jxc-mariadb-cdc.yaml",
)
