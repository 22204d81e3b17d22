"""The ``jira`` component type."""

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
    "jira",
    "source",
    "bizbus.connectors.sources.jira.connector:JiraSource",
    "Jira Cloud: signed webhooks (projects, issues, worklogs) plus a JQL / worklog backfill that finds lost ones.",
    writes=_writes,
    secrets=secret_vars,
    docs="docs/connectors/jira.md",
    guarantee="at least once into Kafka: stored in the inbox (PostgreSQL) before the vendor gets its answer; re-sent from there after a lost broker; deterministic event ids",
    example="deploy/examples/projects-to-tryton.yaml",
)
