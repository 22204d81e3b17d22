"""Grafana dashboards for bizbus as typed code, the list of every PromQL query they and the alerts use.

Small frozen builders (:class:`Target`, :class:`Panel`, :class:`Variable`, :class:`Dashboard`) render
the Grafana dashboard JSON model (schemaVersion 39). Every panel reads the Prometheus data source chosen
in the ``datasource`` template variable. Three boards: *bizbus overview* (the whole bus at a glance),
*bizbus connector* (one or more components in depth, variable ``component``) and *bizbus business*
(documents, voucher amounts, budget alerts).

``bizbus docs`` writes the boards to ``deploy/grafana/dashboards``, Grafana provisioning files to
``deploy/grafana/provisioning`` and the alert rules of :mod:`bizbus.docgen.alerting` to ``deploy/prometheus``
(:func:`generated_files`). :func:`all_queries` lists every query with its template variables
substituted, for tests against a real Prometheus.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from bizbus.docgen.alerting import ALERT_RULES_FILE, alert_rules, render_rules
from bizbus.settings import PROJECT_ROOT

GRAFANA_DIR = PROJECT_ROOT / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
PROVISIONING_DASHBOARDS = GRAFANA_DIR / "provisioning" / "dashboards" / "bizbus.yaml"
PROVISIONING_DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml"
GRAFANA_DASHBOARDS_PATH = "/var/lib/grafana/dashboards"  # where the file provider reads the JSON files

SCHEMA_VERSION = 39
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24

# what a test substitutes for Grafana's template variables to run a query against Prometheus directly
SUBSTITUTIONS: dict[str, str] = {"$__rate_interval": "1m", "$__range": "5m", "$component": ".+"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Target(_Frozen):
    """One PromQL query of a panel."""

    expr: str = Field(min_length=1, description="PromQL; may use $__rate_interval, $__range, $component")
    legend: str = Field(default="", description="legendFormat, e.g. {{component}}")


class Panel(_Frozen):
    """A panel; its id, refIds and position are assigned when the dashboard is rendered."""

    title: str = Field(min_length=1, description="panel title")
    kind: Literal["timeseries", "stat", "table"] = Field(
        default="timeseries", description="Grafana panel type"
    )
    targets: tuple[Target, ...] = Field(min_length=1, description="queries, refIds A, B, ... in this order")
    description: str = Field(default="", description="hover text: what the panel shows")
    unit: str = Field(default="short", description="Grafana unit id (short, s, ops, bytes, percentunit, ...)")
    width: int = Field(default=12, ge=1, le=GRID_WIDTH, description="grid columns (of 24)")
    height: int = Field(default=8, ge=1, description="grid rows")
    red_at: float | None = Field(
        default=None, description="value from which the panel turns red (stat, table)"
    )
    stack: bool = Field(default=False, description="stack the series (timeseries)")

    def model(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        """Grafana JSON of this panel at grid position (x, y)."""
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        if self.red_at is not None:
            steps.append({"color": "red", "value": self.red_at})
        defaults: dict[str, Any] = {"unit": self.unit, "thresholds": {"mode": "absolute", "steps": steps}}
        instant = self.kind != "timeseries"
        targets = [
            {
                "datasource": DATASOURCE,
                "expr": t.expr,
                "legendFormat": t.legend,
                "refId": string.ascii_uppercase[i],
                "instant": instant,
                "range": not instant,
                **({"format": "table"} if self.kind == "table" else {}),
            }
            for i, t in enumerate(self.targets)
        ]
        panel: dict[str, Any] = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": self.width, "h": self.height},
            "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
        }
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 20 if self.stack else 0,
                "stacking": {"mode": "normal" if self.stack else "none", "group": "A"},
                "spanNulls": False,
            }
            panel["options"] = {
                "legend": {
                    "displayMode": "table",
                    "placement": "right",
                    "showLegend": True,
                    "calcs": ["max"],
                },
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        elif self.kind == "stat":
            panel["options"] = {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "none",
                "textMode": "auto",
                "justifyMode": "auto",
                "orientation": "auto",
            }
        else:
            panel["options"] = {"showHeader": True, "cellHeight": "sm"}
            panel["transformations"] = [
                {"id": "merge", "options": {}},
                {"id": "organize", "options": {"excludeByName": {"Time": True}}},
            ]
        return panel


class Variable(_Frozen):
    """A template variable of type query over the dashboard's Prometheus data source."""

    name: str = Field(pattern=r"^[a-z_]+$", description="referenced as $name in queries")
    label: str = Field(description="shown above the dashboard")
    query: str = Field(description="e.g. label_values(bizbus_records_in_total, component)")
    multi: bool = Field(default=True, description="several values at once (queries then use =~)")
    all_value: str = Field(default=".+", description="regex the All option stands for")

    def model(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": self.query, "refId": f"{self.name}-variable"},
            "definition": self.query,
            "refresh": 2,  # on time range change: new components show up without a reload
            "multi": self.multi,
            "includeAll": True,
            "allValue": self.all_value,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "sort": 1,
            "regex": "",
            "hide": 0,
        }


DATASOURCE_VARIABLE: dict[str, Any] = {
    "name": "datasource",
    "label": "Data source",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "options": [],
    "refresh": 1,
    "regex": "",
    "hide": 0,
    "multi": False,
    "includeAll": False,
}


class Dashboard(_Frozen):
    """A dashboard; panels flow left to right in the order given and wrap at 24 columns."""

    uid: str = Field(pattern=r"^[a-z0-9-]{1,40}$", description="stable uid (links and provisioning use it)")
    title: str = Field(min_length=1, description="dashboard title")
    description: str = Field(default="", description="what the board is for")
    panels: tuple[Panel, ...] = Field(min_length=1, description="panels in reading order")
    variables: tuple[Variable, ...] = Field(default=(), description="template variables besides datasource")

    def model(self) -> dict[str, Any]:
        """The Grafana dashboard JSON model."""
        panels: list[dict[str, Any]] = []
        x = y = row_height = 0
        for number, p in enumerate(self.panels, start=1):
            if x + p.width > GRID_WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panels.append(p.model(number, x, y))
            x += p.width
            row_height = max(row_height, p.height)
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["bizbus"],
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "time": {"from": "now-6h", "to": "now"},
            "refresh": "30s",
            "timezone": "browser",
            "annotations": {"list": []},
            "links": [
                {
                    "type": "dashboards",
                    "tags": ["bizbus"],
                    "asDropdown": True,
                    "title": "bizbus",
                    "includeVars": False,
                }
            ],
            "templating": {"list": [DATASOURCE_VARIABLE, *(v.model() for v in self.variables)]},
            "panels": panels,
        }

    def render(self) -> str:
        """The JSON file text (indent 2, sorted keys, trailing newline)."""
        return json.dumps(self.model(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _rate(metric: str, by: str, sel: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{sel}[$__rate_interval]))"


def _quantile(q: float, metric: str, by: str, sel: str = "") -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{sel}[$__rate_interval])))"


def overview() -> Dashboard:
    """The whole bus: throughput, failures, dead letters, lag, latency, health, freshness."""
    return Dashboard(
        uid="bizbus-overview",
        title="bizbus overview",
        description="Every component of the bus: records in/out, failures, dead letters, consumer lag, "
        "end-to-end latency, components up, source freshness.",
        panels=(
            Panel(
                title="Components up",
                kind="stat",
                width=6,
                height=4,
                targets=(Target(expr="sum(max by (component) (bizbus_component_up))"),),
                description="Pipeline components whose loop runs.",
            ),
            Panel(
                title="Components down",
                kind="stat",
                width=6,
                height=4,
                red_at=1,
                targets=(Target(expr="sum(1 - max by (component) (bizbus_component_up))"),),
                description="Components whose loop ended (see /readyz of their process).",
            ),
            Panel(
                title="Dead letters in range",
                kind="stat",
                width=6,
                height=4,
                red_at=1,
                unit="none",
                targets=(Target(expr="sum(increase(bizbus_dead_letters_total[$__range]))"),),
                description="Records sent to the dead-letter topic in the selected time range (`bizbus dlq list`).",
            ),
            Panel(
                title="Stalest source",
                kind="stat",
                width=6,
                height=4,
                unit="s",
                targets=(Target(expr="max(bizbus_source_freshness_seconds)"),),
                description="Age of the newest business change of the source that has been quiet longest.",
            ),
            Panel(
                title="Records in per component",
                unit="ops",
                targets=(Target(expr=_rate("bizbus_records_in_total", "component"), legend="{{component}}"),),
                description="Changes read by sources, records consumed by sinks and flows, per second.",
            ),
            Panel(
                title="Records out per component",
                unit="ops",
                targets=(
                    Target(expr=_rate("bizbus_records_out_total", "component"), legend="{{component}}"),
                ),
                description="Records produced (sources, flows) or newly applied in the target (sinks), per second.",
            ),
            Panel(
                title="Failures by component and reason",
                unit="ops",
                stack=True,
                targets=(
                    Target(
                        expr=_rate("bizbus_records_failed_total", "component, reason"),
                        legend="{{component}} {{reason}}",
                    ),
                ),
                description="Records that failed, per second; each one is also a dead letter.",
            ),
            Panel(
                title="Dead letters",
                unit="none",
                stack=True,
                targets=(
                    Target(
                        expr="sum by (component, error_class) "
                        "(increase(bizbus_dead_letters_total[$__rate_interval]))",
                        legend="{{component}} {{error_class}}",
                    ),
                ),
                description="Records sent to the dead-letter topic per interval, by error class.",
            ),
            Panel(
                title="Consumer lag by group and topic",
                unit="none",
                targets=(
                    Target(
                        expr="sum by (group, topic) (bizbus_consumer_lag_records)",
                        legend="{{group}} {{topic}}",
                    ),
                ),
                description="Records not yet consumed, summed over partitions.",
            ),
            Panel(
                title="End-to-end latency p50 / p99",
                unit="s",
                targets=(
                    Target(
                        expr=_quantile(0.5, "bizbus_end_to_end_seconds", "component"),
                        legend="{{component}} p50",
                    ),
                    Target(
                        expr=_quantile(0.99, "bizbus_end_to_end_seconds", "component"),
                        legend="{{component}} p99",
                    ),
                ),
                description="From the business change in the source system to applied in the target or sent "
                "by a flow.",
            ),
            Panel(
                title="Source freshness",
                unit="s",
                targets=(
                    Target(
                        expr="max by (component) (bizbus_source_freshness_seconds)", legend="{{component}}"
                    ),
                ),
                description="Seconds since the newest business change each source has seen.",
            ),
            Panel(
                title="CDC replication slot lag",
                unit="bytes",
                targets=(
                    Target(
                        expr="max by (database, slot) (bizbus_cdc_slot_lag_bytes)",
                        legend="{{database}} {{slot}}",
                    ),
                ),
                description="WAL each replication slot holds back in its database (alert CdcSlotLagHigh).",
            ),
            Panel(
                title="Components",
                kind="table",
                width=24,
                targets=(
                    Target(expr="max by (component, type) (bizbus_component_up)", legend="{{component}}"),
                ),
                description="Every component with its type; value 1 while its loop runs, 0 when it ended.",
            ),
        ),
    )


def connector() -> Dashboard:
    """One or more components (variable ``component``) in depth."""
    sel = '{component=~"$component"}'
    return Dashboard(
        uid="bizbus-connector",
        title="bizbus connector",
        description="A connector or flow in depth: throughput, retries, batches, sink writes, duplicates, "
        "dead letters, webhooks, backfill, freshness, shard leases and tasks.",
        variables=(
            Variable(
                name="component", label="Component", query="label_values(bizbus_records_in_total, component)"
            ),
        ),
        panels=(
            *(
                Panel(
                    title=f"Records {word}",
                    kind="stat",
                    width=6,
                    height=4,
                    unit="none",
                    red_at=1 if word == "failed" else None,
                    targets=(Target(expr=f"sum(increase(bizbus_records_{word}_total{sel}[$__range]))"),),
                    description=f"Records {word} in the selected time range.",
                )
                for word in ("in", "out", "failed", "skipped")
            ),
            Panel(
                title="Records in / out / failed / skipped",
                unit="ops",
                width=24,
                targets=(
                    Target(
                        expr=_rate("bizbus_records_in_total", "component", sel), legend="{{component}} in"
                    ),
                    Target(
                        expr=_rate("bizbus_records_out_total", "component", sel), legend="{{component}} out"
                    ),
                    Target(
                        expr=_rate("bizbus_records_failed_total", "component", sel),
                        legend="{{component}} failed",
                    ),
                    Target(
                        expr=_rate("bizbus_records_skipped_total", "component", sel),
                        legend="{{component}} skipped",
                    ),
                ),
                description="Per second.",
            ),
            Panel(
                title="Retries by reason",
                unit="ops",
                stack=True,
                targets=(
                    Target(
                        expr=_rate("bizbus_retries_total", "component, reason", sel),
                        legend="{{component}} {{reason}}",
                    ),
                ),
                description="Calls retried after a retryable failure (timeout, 429, 5xx, lock conflict).",
            ),
            Panel(
                title="Dead letters by error class",
                unit="none",
                stack=True,
                targets=(
                    Target(
                        expr=f"sum by (component, error_class) (increase(bizbus_dead_letters_total{sel}"
                        "[$__rate_interval]))",
                        legend="{{component}} {{error_class}}",
                    ),
                ),
                description="Per interval; `bizbus dlq list --connector NAME` lists them.",
            ),
            Panel(
                title="Batch size p50 / p95",
                unit="none",
                targets=(
                    Target(
                        expr=_quantile(0.5, "bizbus_batch_size_records", "component", sel),
                        legend="{{component}} p50",
                    ),
                    Target(
                        expr=_quantile(0.95, "bizbus_batch_size_records", "component", sel),
                        legend="{{component}} p95",
                    ),
                ),
                description="Records per batch.",
            ),
            Panel(
                title="Sink write latency p50 / p99",
                unit="s",
                targets=(
                    Target(
                        expr=_quantile(0.5, "bizbus_sink_write_seconds", "component", sel),
                        legend="{{component}} p50",
                    ),
                    Target(
                        expr=_quantile(0.99, "bizbus_sink_write_seconds", "component", sel),
                        legend="{{component}} p99",
                    ),
                ),
                description="One write call to the target (a batch, or one record when isolating a failure).",
            ),
            Panel(
                title="Idempotent hits (duplicates absorbed)",
                unit="ops",
                targets=(
                    Target(
                        expr=_rate("bizbus_idempotent_hits_total", "component", sel), legend="{{component}}"
                    ),
                ),
                description="Records the sink found already applied (ledger or target idempotency key).",
            ),
            Panel(
                title="Flow events by outcome",
                unit="ops",
                stack=True,
                targets=(
                    Target(
                        expr=_rate("bizbus_flow_events_total", "component, outcome", sel),
                        legend="{{component}} {{outcome}}",
                    ),
                ),
                description="Input records a flow handled: emitted, ignored, skipped as stale, re-emitted, "
                "dead-lettered.",
            ),
            Panel(
                title="End-to-end latency p50 / p99",
                unit="s",
                targets=(
                    Target(
                        expr=_quantile(0.5, "bizbus_end_to_end_seconds", "component", sel),
                        legend="{{component}} p50",
                    ),
                    Target(
                        expr=_quantile(0.99, "bizbus_end_to_end_seconds", "component", sel),
                        legend="{{component}} p99",
                    ),
                ),
                description="From the business change in the source system to applied / sent.",
            ),
            Panel(
                title="Webhook requests by outcome",
                unit="reqps",
                stack=True,
                targets=(
                    Target(
                        expr=_rate("bizbus_webhook_requests_total", "component, outcome", sel),
                        legend="{{component}} {{outcome}}",
                    ),
                ),
                description="accepted, duplicate, handshake, a rejection reason (e.g. bad signature), error.",
            ),
            Panel(
                title="Webhook latency p99",
                unit="s",
                targets=(
                    Target(
                        expr=_quantile(0.99, "bizbus_webhook_seconds", "component", sel),
                        legend="{{component}} p99",
                    ),
                ),
                description="From webhook request to answer.",
            ),
            Panel(
                title="Backfill gaps (missed webhooks)",
                unit="none",
                targets=(
                    Target(
                        expr=f"sum by (component) (increase(bizbus_backfill_gaps_total{sel}[$__rate_interval]))",
                        legend="{{component}}",
                    ),
                ),
                description="Changes a backfill poll found that no webhook had delivered, per interval.",
            ),
            Panel(
                title="Backfill polls by outcome",
                unit="ops",
                targets=(
                    Target(
                        expr=_rate("bizbus_backfill_polls_total", "component, outcome", sel),
                        legend="{{component}} {{outcome}}",
                    ),
                ),
                description="Backfill polls per second, ok or failed.",
            ),
            Panel(
                title="Source freshness",
                unit="s",
                targets=(
                    Target(
                        expr=f"max by (component) (bizbus_source_freshness_seconds{sel})",
                        legend="{{component}}",
                    ),
                ),
                description="Seconds since the newest business change the source has seen.",
            ),
            Panel(
                title="Shard leases",
                kind="table",
                width=6,
                targets=(
                    Target(
                        expr=f"max by (component, shard) (bizbus_source_shard_leased{sel})",
                        legend="{{component}} {{shard}}",
                    ),
                ),
                description="1 while a process holds the shard's lease.",
            ),
            Panel(
                title="Tasks running",
                kind="table",
                width=6,
                targets=(
                    Target(
                        expr=f"max by (component, task) (bizbus_task_running{sel})",
                        legend="{{component}} {{task}}",
                    ),
                ),
                description="1 while a connector task runs, 0 when paused or stopped.",
            ),
            Panel(
                title="Task problems and restarts",
                unit="none",
                targets=(
                    Target(
                        expr=f"max by (component, task) (bizbus_task_problem{sel})",
                        legend="{{component}} {{task}} problem",
                    ),
                    Target(
                        expr=f"sum by (component, task, reason) (increase(bizbus_task_restarts_total{sel}[$__rate_interval]))",
                        legend="{{component}} {{task}} retried: {{reason}}",
                    ),
                ),
                description="1 while a task makes no progress (retrying after an error, waiting for its target; "
                "the reason is in /connectors); steps retried after a back-off, by reason, per interval.",
            ),
        ),
    )


def _net_amount(window: str) -> str:
    """Posted minus reversed voucher amount per currency (a currency without reversals counts 0 for them)."""
    metric = "bizbus_voucher_amount_total"
    posted = f'sum by (currency) (increase({metric}{{document="voucher"}}[{window}]))'
    reversed_ = f'sum by (currency) (increase({metric}{{document="voucher_reversal"}}[{window}]))'
    return f"{posted} - ({reversed_} or {posted} * 0)"


def business() -> Dashboard:
    """What the bus did for the business: documents, voucher amounts, budget alerts."""
    vouchers = 'bizbus_documents_total{document="voucher"}'
    reversals = 'bizbus_documents_total{document="voucher_reversal"}'
    return Dashboard(
        uid="bizbus-business",
        title="bizbus business",
        description="Documents the sinks created in the target systems (vouchers, reversals, purchase "
        "documents, cost centers), voucher amounts by currency, budget alerts.",
        panels=(
            Panel(
                title="Vouchers posted in range",
                kind="stat",
                width=6,
                height=4,
                unit="none",
                targets=(Target(expr=f"sum(increase({vouchers}[$__range]))"),),
                description="Balanced vouchers posted into the ERP in the selected time range.",
            ),
            Panel(
                title="Reversals in range",
                kind="stat",
                width=6,
                height=4,
                unit="none",
                targets=(Target(expr=f"sum(increase({reversals}[$__range]))"),),
                description="Compensating reversal vouchers (红字), e.g. after an approval was revoked.",
            ),
            Panel(
                title="Net voucher amount in range",
                kind="stat",
                width=6,
                height=4,
                unit="none",
                targets=(Target(expr=_net_amount("$__range"), legend="{{currency}}"),),
                description="Debit side of the posted vouchers minus that of the reversals, by currency.",
            ),
            Panel(
                title="Budget alerts in range",
                kind="stat",
                width=6,
                height=4,
                unit="none",
                red_at=1,
                targets=(Target(expr="sum(increase(bizbus_budget_alerts_total[$__range]))"),),
                description="Projects whose booked cost went over budget (once per crossing).",
            ),
            Panel(
                title="Vouchers and reversals per hour",
                unit="none",
                targets=(
                    Target(expr=f"sum(increase({vouchers}[1h]))", legend="vouchers"),
                    Target(expr=f"sum(increase({reversals}[1h]))", legend="reversals"),
                ),
                description="Posted in the hour up to each point in time.",
            ),
            Panel(
                title="Voucher amount per hour by currency",
                unit="none",
                targets=(
                    Target(
                        expr="sum by (currency, document) (increase(bizbus_voucher_amount_total[1h]))",
                        legend="{{currency}} {{document}}",
                    ),
                    Target(expr=_net_amount("1h"), legend="{{currency}} net"),
                ),
                description="Debit side of the vouchers and of the reversals posted in the hour up to each point "
                "in time, and the net amount.",
            ),
            Panel(
                title="Purchase orders and requisitions per hour",
                unit="none",
                targets=(
                    Target(
                        expr='sum by (document) (increase(bizbus_documents_total{document=~"purchase_.*"}[1h]))',
                        legend="{{document}}",
                    ),
                ),
                description="Purchase documents created or changed in the ERP, by kind.",
            ),
            Panel(
                title="Cost centers opened / closed per hour",
                unit="none",
                targets=(
                    Target(
                        expr='sum by (document) (increase(bizbus_documents_total{document=~"cost_center.*"}[1h]))',
                        legend="{{document}}",
                    ),
                ),
                description="Cost centers / analytic accounts opened or closed, by kind.",
            ),
            Panel(
                title="Budget alerts per hour",
                unit="none",
                targets=(
                    Target(
                        expr="sum by (component) (increase(bizbus_budget_alerts_total[1h]))",
                        legend="{{component}}",
                    ),
                ),
                description="Budget crossings the flows reported in the hour up to each point in time.",
            ),
            Panel(
                title="Documents by sink and kind in range",
                kind="table",
                targets=(
                    Target(
                        expr="sum by (component, document) (increase(bizbus_documents_total[$__range]))",
                        legend="{{component}} {{document}}",
                    ),
                ),
                description="Every document kind each sink wrote in the selected time range.",
            ),
        ),
    )


def dashboards() -> list[Dashboard]:
    """The three bizbus dashboards."""
    return [overview(), connector(), business()]


class Query(_Frozen):
    """One PromQL query of a dashboard panel or an alert rule, runnable against Prometheus as is."""

    where: str = Field(description='e.g. "bizbus-overview / Dead letters / A" or "alert DeadLettersGrowing"')
    expr: str = Field(description="PromQL with the Grafana template variables substituted")
    must_return_series: bool = Field(description="True: returns series whenever its metrics exist")


def substitute(expr: str) -> str:
    """``expr`` with the Grafana template variables replaced by :data:`SUBSTITUTIONS` (longest first)."""
    for var in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(var, SUBSTITUTIONS[var])
    return expr


def all_queries() -> list[Query]:
    """Every panel target (must return series), every alert signal (must return series) and every full
    alert expression (must only parse: it returns nothing while all is well)."""
    out: list[Query] = []
    for d in dashboards():
        for p in d.panels:
            for i, t in enumerate(p.targets):
                where = f"{d.uid} / {p.title} / {string.ascii_uppercase[i]}"
                out.append(Query(where=where, expr=substitute(t.expr), must_return_series=True))
    for r in alert_rules():
        out.append(Query(where=f"alert {r.name} signal", expr=r.signal, must_return_series=True))
        out.append(Query(where=f"alert {r.name}", expr=r.expr, must_return_series=False))
    return out


def provisioning_dashboards() -> str:
    """Grafana provisioning: a file provider loading the dashboards from /var/lib/grafana/dashboards."""
    doc = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "bizbus",
                "orgId": 1,
                "folder": "bizbus",
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": GRAFANA_DASHBOARDS_PATH, "foldersFromFilesStructure": False},
            }
        ],
    }
    return _yaml_file("copy deploy/grafana/dashboards/*.json to " + GRAFANA_DASHBOARDS_PATH, doc)


def provisioning_datasources() -> str:
    """Grafana provisioning: the Prometheus data source (uid ``prometheus``) at http://prometheus:9090."""
    doc = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": "prometheus",
                "type": "prometheus",
                "access": "proxy",
                "url": "http://prometheus:9090",
                "isDefault": True,
                "editable": False,
                # match the scrape interval so $__rate_interval always spans enough samples
                "jsonData": {"timeInterval": "15s"},
            }
        ],
    }
    return _yaml_file("set url to where your Prometheus answers", doc)


def _yaml_file(hint: str, doc: dict[str, Any]) -> str:
    header = f"# Generated by `bizbus docs` from bizbus/docgen/dashboards.py; do not edit by hand ({hint}).\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=1000)


def generated_files() -> dict[Path, str]:
    """Dashboards, provisioning and alert rule files with their current text (for ``bizbus docs``)."""
    files: dict[Path, str] = {DASHBOARD_DIR / f"{d.uid}.json": d.render() for d in dashboards()}
    files[PROVISIONING_DASHBOARDS] = provisioning_dashboards()
    files[PROVISIONING_DATASOURCES] = provisioning_datasources()
    files[ALERT_RULES_FILE] = render_rules()
    return files
