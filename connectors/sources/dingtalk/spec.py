"""The ``dingtalk`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec
from bizbus.secrets import secret_vars


def _writes(_config: Any) -> tuple[str, ...]:
    from .mapping import TOPIC  # imported when asked: listing the component types stays light

    return (TOPIC,)


SPEC = ComponentSpec(
    "dingtalk",
    "source",
    "bizbus.connectors.sources.dingtalk.connector:DingTalkSource",
    "DingTalk approvals: encrypted event callbacks, instance details read through the DingTalk API.",
    writes=_writes,
    secrets=secret_vars,
    docs="docs/connectors/dingtalk.md",
    guarantee="at least once into Kafka: stored in the inbox (PostgreSQL) before the vendor gets its answer; re-sent from there after a lost broker; deterministic event ids",
    example="deploy/examples/projects-to-tryton.yaml",
)
