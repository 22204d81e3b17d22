"""The ``feishu`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec
from bizbus.secrets import secret_vars


def _writes(_config: Any) -> tuple[str, ...]:
    from .mapping import TOPIC  # imported when asked: listing the component types stays light

    return (TOPIC,)


SPEC = ComponentSpec(
    "feishu",
    "source",
    "bizbus.connectors.sources.feishu.connector:FeishuSource",
    "Feishu / Lark approvals: signed, encrypted v2 events for subscribed approval definitions.",
    writes=_writes,
    secrets=secret_vars,
    docs="docs/connectors/feishu.md",
    guarantee="at least once into Kafka: stored in the inbox (PostgreSQL) before the vendor gets its answer; re-sent from there after a lost broker; deterministic event ids",
    example="docs/connectors/feishu.md",
)
