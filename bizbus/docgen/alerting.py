"""Prometheus alert rules for bizbus, as typed code; ``bizbus docs`` writes them as one rule file.

Each rule is a *signal* (a PromQL expression that returns one series per component, group or slot
whenever the metric exists) compared with a threshold: ``expr = signal op threshold``. Keeping the
signal apart lets a test check that every signal returns series against a live Prometheus, while the
full expression only has to parse (it returns nothing while all is well).

Only metric names from :mod:`bizbus.metrics` are used. Every rule carries a ``severity`` label and
``summary`` / ``description`` / ``runbook`` annotations; the runbook says what to do first.
"""

from __future__ import annotations

import re
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bizbus.settings import PROJECT_ROOT

ALERT_RULES_FILE = PROJECT_ROOT / "deploy" / "prometheus" / "rules" / "bizbus-alerts.yml"

_DURATION = re.compile(r"^\d+[smhd]$")


class AlertRule(BaseModel):
    """One alerting rule: fires when ``signal op threshold`` holds for ``for_``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        description="alert name (CamelCase, unique in the rule file)", pattern=r"^[A-Z][A-Za-z0-9]+$"
    )
    group: str = Field(default="bizbus", description="rule group the alert belongs to")
    signal: str = Field(description="PromQL returning series whenever the metric exists (no comparison)")
    op: Literal[">", "<", ">=", "<=", "==", "!="] = Field(description="comparison of signal and threshold")
    threshold: float = Field(description="value the signal is compared with")
    for_: str = Field(default="0m", description="how long the condition must hold before firing, e.g. 10m")
    severity: Literal["critical", "warning", "info"] = Field(description="routing label for Alertmanager")
    summary: str = Field(min_length=1, description="one line; may use {{ $labels.x }} and {{ $value }}")
    description: str = Field(min_length=1, description="what the alert means and what usually causes it")
    runbook: str = Field(min_length=1, description="what to do first: commands, endpoints, dashboards")

    @field_validator("for_")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not _DURATION.match(v):
            raise ValueError(f"for_ must be a Prometheus duration like 30s, 10m or 1h, not {v!r}")
        return v

    @property
    def expr(self) -> str:
        """The alerting expression: ``signal op threshold``."""
        return f"{self.signal} {self.op} {_number(self.threshold)}"

    def model(self) -> dict[str, object]:
        """The rule as it appears in a Prometheus rule file."""
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, "service": "bizbus"},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook": self.runbook,
            },
        }


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


# thresholds an operator is most likely to tune (one place, named)
CONSUMER_LAG_RECORDS = 1000
SOURCE_STALE_SECONDS = 2 * 3600
FAILED_SHARE = 0.05
CDC_SLOT_LAG_BYTES = 1024**3

_FAILED = "sum by (component) (rate(bizbus_records_failed_total[10m]))"
_OUT = "sum by (component) (rate(bizbus_records_out_total[10m]))"


def alert_rules() -> list[AlertRule]:
    """Every bizbus alert rule, in the order they appear in the rule file."""
    return [
        AlertRule(
            name="DeadLettersGrowing",
            signal="sum by (component) (increase(bizbus_dead_letters_total[10m]))",
            op=">",
            threshold=0,
            for_="1m",
            severity="warning",
            summary="{{ $labels.component }} sent {{ $value | humanize }} record(s) to the dead-letter topic in 10m",
            description="Records of {{ $labels.component }} failed permanently (validation, unknown master data, "
            "a business error of the target) or could not be decoded; they wait in the dead-letter topic and "
            "nothing of theirs reached the target.",
            runbook="`bizbus dlq list --connector {{ $labels.component }}` shows them with error class and "
            "message, `bizbus dlq show ID` one in full. Fix the cause (mapping, master data, target config), "
            "then `bizbus dlq replay --connector {{ $labels.component }} --dry-run` and without --dry-run.",
        ),
        AlertRule(
            name="ConsumerLagHigh",
            signal="sum by (group, topic) (bizbus_consumer_lag_records)",
            op=">",
            threshold=CONSUMER_LAG_RECORDS,
            for_="10m",
            severity="warning",
            summary="group {{ $labels.group }} is {{ $value }} records behind on {{ $labels.topic }} for 10m",
            description="The consumer group does not keep up with its topic: the component is slow (target "
            "latency, retries), stuck, or stopped while producers continue.",
            runbook="Open the bizbus connector dashboard for the group's component: retries, sink write "
            "latency, failures. Check the process's /readyz and logs; `bizbus worker --only NAME` adds a "
            "worker (up to the topic's partition count).",
        ),
        AlertRule(
            name="SourceStale",
            signal="max by (component) (bizbus_source_freshness_seconds)",
            op=">",
            threshold=SOURCE_STALE_SECONDS,
            for_="15m",
            severity="warning",
            summary="{{ $labels.component }} has seen no business change for {{ $value | humanizeDuration }}",
            description="The newest change the source has seen is old: webhooks no longer arrive, polling "
            "fails, or the source system is quiet (a weekend). Tune the threshold per site "
            "(bizbus.docgen.alerting.SOURCE_STALE_SECONDS).",
            runbook="Check /readyz of the process running {{ $labels.component }}, its webhook requests and "
            "backfill polls by outcome on the bizbus connector dashboard, and the credentials / webhook "
            "subscription at the vendor.",
        ),
        AlertRule(
            name="SinkFailing",
            signal=f"{_FAILED} / clamp_min({_FAILED} + ({_OUT} or {_FAILED} * 0), 1e-9)",
            op=">",
            threshold=FAILED_SHARE,
            for_="10m",
            severity="critical",
            summary="{{ $labels.component }} fails {{ $value | humanizePercentage }} of its records",
            description="More than 5% of the records the component finished in the last 10m failed "
            "(failed / (failed + out)); each failure is a dead letter. Usually the target rejects writes "
            "(credentials, a closed period, missing master data) or its schema changed.",
            runbook="Failures by reason are on the bizbus connector dashboard; `bizbus dlq list --connector "
            "{{ $labels.component }}` shows the messages. Check /readyz and the target system, fix, then "
            "`bizbus dlq replay --connector {{ $labels.component }}`.",
        ),
        AlertRule(
            name="CdcSlotLagHigh",
            signal="max by (database, slot) (bizbus_cdc_slot_lag_bytes)",
            op=">",
            threshold=CDC_SLOT_LAG_BYTES,
            for_="15m",
            severity="critical",
            summary="replication slot {{ $labels.slot }} on {{ $labels.database }} holds back "
            "{{ $value | humanize1024 }}B of WAL",
            description="The CDC reader does not confirm WAL positions: the database keeps WAL for the slot "
            "and its disk fills up. The CDC source is stopped, crashing or far behind.",
            runbook="Is bizbus_cdc_slot_active 1 for the slot? Check /readyz and logs of the CDC source and "
            "restart it. A slot nobody will read again must be dropped "
            "(SELECT pg_drop_replication_slot('...')) before the disk is full.",
        ),
        AlertRule(
            name="WebhookGaps",
            signal="sum by (component) (increase(bizbus_backfill_gaps_total[30m]))",
            op=">",
            threshold=0,
            for_="0m",
            severity="warning",
            summary="{{ $labels.component }}: backfill found {{ $value | humanize }} change(s) no webhook delivered",
            description="The backfill poll repaired missed webhooks, so nothing is lost, but the push path "
            "is unreliable: the vendor drops deliveries, rejects our endpoint, or our signature check fails.",
            runbook="On the bizbus connector dashboard compare webhook requests by outcome (rejections, "
            "errors) with backfill gaps; check the webhook subscription and secret at the vendor and that "
            "the endpoint is reachable from outside.",
        ),
        AlertRule(
            name="BudgetOverrun",
            group="bizbus-business",
            signal="sum by (component) (increase(bizbus_budget_alerts_total[15m]))",
            op=">",
            threshold=0,
            for_="0m",
            severity="info",
            summary="{{ $labels.component }}: {{ $value | humanize }} project(s) went over budget",
            description="Booked cost of a project crossed its budget by more than the flow's threshold "
            "(counted once per crossing). A business signal, not a fault of bizbus.",
            runbook="See the bizbus business dashboard; tell the project controller. The flow's log names "
            "the project; `bizbus tryton show KEY` shows what bizbus booked for it.",
        ),
        AlertRule(
            name="TaskNotProgressing",
            signal="max by (component, task) (bizbus_task_problem)",
            op="==",
            threshold=1,
            for_="5m",
            severity="warning",
            summary="{{ $labels.component }} task {{ $labels.task }} has made no progress for 5m",
            description="The task keeps retrying after an error (its database or broker connection, a target "
            "that is away) or reports a problem (waiting for its target, a record it retries). It loses "
            "nothing and resumes by itself once the cause is gone, but meanwhile nothing of it moves.",
            runbook="GET /connectors (or /readyz) of the process shows the reason per task, and its log the "
            "line that began the streak; bizbus_task_restarts_total by reason tells a connection from a "
            "target problem. Fix the database, broker or target; no restart is needed.",
        ),
        AlertRule(
            name="ComponentDown",
            signal="min by (component, type) (bizbus_component_up)",
            op="==",
            threshold=0,
            for_="2m",
            severity="critical",
            summary="{{ $labels.component }} ({{ $labels.type }}) is not running",
            description="The component's loop ended (crash or stop) while its process keeps running; its "
            "records are not processed. (A process that is gone entirely shows as up == 0 of its scrape "
            "target instead.)",
            runbook="GET /readyz of the process shows the component's error; read its log, fix the cause "
            "(configuration, credentials, the target) and restart the process (`bizbus up` or "
            "`bizbus worker --only {{ $labels.component }}`).",
        ),
    ]


def render_rules(rules: list[AlertRule] | None = None) -> str:
    """The Prometheus rule file (YAML: groups -> rules) for ``rules`` (default: :func:`alert_rules`)."""
    rules = alert_rules() if rules is None else rules
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"alert names must be unique, repeated: {', '.join(dupes)}")
    groups: dict[str, list[dict[str, object]]] = {}
    for r in rules:
        groups.setdefault(r.group, []).append(r.model())
    doc = {"groups": [{"name": g, "rules": rs} for g, rs in groups.items()]}
    header = "# Generated by `bizbus docs` from bizbus/docgen/alerting.py; do not edit by hand.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)
