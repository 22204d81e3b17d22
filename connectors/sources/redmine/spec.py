"""The ``redmine`` component type."""

from __future__ import annotations

from typing import Any

from bizbus.host.components import ComponentSpec
from bizbus.secrets import secret_vars


def _writes(_config: Any) -> tuple[str, ...]:
    from .mapping import (  # imported when asked: listing the component types stays light
        PROJECT_TOPIC,
        TASK_TOPIC,
        TIMESHEET_TOPIC,
    )

    return (PROJECT_TOPIC, TASK_TOPIC, TIMESHEET_TOPIC)


SPEC = ComponentSpec(
    "redmine",
    "source",
    "bizbus.connectors.sources.redmine.connector:RedmineSource",
    "Redmine: polls projects, issues and time entries by updated_on (Redmine has no webhooks).",
    writes=_writes,
    secrets=secret_vars,
    docs="docs/connectors/redmine.md",
    guarantee="at least once into Kafka: polled changes stored in the inbox (PostgreSQL) first; re-sent after a lost broker; deterministic event ids",
    example="docs/connectors/redmine.md",
)
