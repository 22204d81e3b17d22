"""The Grafana dashboards and alert rules refer only to real bizbus metrics and labels, and are well formed."""

from __future__ import annotations

import json
import re
from itertools import combinations
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from bizbus import metrics
from bizbus.docgen.alerting import ALERT_RULES_FILE, AlertRule, alert_rules, render_rules
from bizbus.docgen.dashboards import (
    DASHBOARD_DIR,
    DATASOURCE,
    PROVISIONING_DASHBOARDS,
    PROVISIONING_DATASOURCES,
    Dashboard,
    Panel,
    Target,
    all_queries,
    dashboards,
    generated_files,
    substitute,
)

EXPECTED_UIDS = {"bizbus-overview", "bizbus-connector", "bizbus-business"}
EXPECTED_ALERTS = {
    "DeadLettersGrowing",
    "ConsumerLagHigh",
    "SourceStale",
    "SinkFailing",
    "CdcSlotLagHigh",
    "WebhookGaps",
    "BudgetOverrun",
    "ComponentDown",
    "TaskNotProgressing",
}
# labels whose values grow with traffic or deployment size: never a grouping label on a board or rule
UNBOUNDED = {"partition", "instance", "process", "key", "event_id", "correlation_id"}


def _exposed() -> dict[str, set[str]]:
    """Every series name bizbus exposes -> its label names (histograms as _bucket/_sum/_count)."""
    names: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, Counter):
            names[f"{obj._name}_total"] = set(obj._labelnames)
        elif isinstance(obj, Histogram):
            for suffix in ("_bucket", "_sum", "_count"):
                names[obj._name + suffix] = set(obj._labelnames) | ({"le"} if suffix == "_bucket" else set())
        elif isinstance(obj, Gauge):
            names[obj._name] = set(obj._labelnames)
    for fam in metrics.FreshnessCollector().collect():  # computed at scrape time, not a module attribute
        names[fam.name] = {"component"}
    return names


EXPOSED = _exposed()
NAME = re.compile(r"\bbizbus_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(bizbus_[a-z0-9_]+)\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(by|without)\s*\(([^)]*)\)")


def _panel_exprs() -> list[tuple[str, str]]:
    return [(f"{d.uid} / {p.title}", t.expr) for d in dashboards() for p in d.panels for t in p.targets]


def _all_exprs() -> list[tuple[str, str]]:
    return _panel_exprs() + [(f"alert {r.name}", r.expr) for r in alert_rules()]


def test_the_known_metrics_include_counters_histograms_and_the_freshness_gauge() -> None:
    """Guards the name derivation below: if it broke, the metric-name test would pass vacuously or fail all."""
    assert "bizbus_records_in_total" in EXPOSED
    assert {"bizbus_end_to_end_seconds_bucket", "bizbus_end_to_end_seconds_count"} <= EXPOSED.keys()
    assert EXPOSED["bizbus_consumer_lag_records"] == {"group", "topic", "partition"}
    assert "bizbus_source_freshness_seconds" in EXPOSED
    assert "bizbus_records_in" not in EXPOSED


@pytest.mark.parametrize(("where", "expr"), _all_exprs())
def test_every_query_uses_existing_metrics_and_their_labels(where: str, expr: str) -> None:
    used = set(NAME.findall(expr))
    assert used, f"{where}: no bizbus metric in {expr}"
    unknown = used - EXPOSED.keys()
    assert not unknown, f"{where}: {sorted(unknown)} not exposed by bizbus.metrics"
    for name, matchers in SELECTOR.findall(expr):
        labels = set(MATCHER_LABEL.findall(matchers))
        assert labels <= EXPOSED[name], f"{where}: {name} has no label(s) {sorted(labels - EXPOSED[name])}"


@pytest.mark.parametrize(("where", "expr"), _all_exprs())
def test_no_query_groups_by_an_unbounded_or_foreign_label(where: str, expr: str) -> None:
    available = set().union(*(EXPOSED[n] for n in NAME.findall(expr)))
    for keyword, labels in GROUPING.findall(expr):
        assert keyword == "by", f"{where}: `without` keeps every other label, unbounded ones too: {expr}"
        grouped = {label.strip() for label in labels.split(",") if label.strip()}
        assert not grouped & UNBOUNDED, f"{where}: groups by unbounded {sorted(grouped & UNBOUNDED)}"
        assert grouped <= available, (
            f"{where}: groups by {sorted(grouped - available)}, not a label of its metrics"
        )


@pytest.mark.parametrize(("where", "expr"), _panel_exprs())
def test_panel_windows_follow_grafana_and_quantiles_group_by_le(where: str, expr: str) -> None:
    for window in re.findall(r"\brate\([^\[]*\[([^\]]+)\]", expr):
        assert window == "$__rate_interval", f"{where}: rate over [{window}]"
    for window in re.findall(r"\bincrease\([^\[]*\[([^\]]+)\]", expr):
        assert window in {"$__rate_interval", "$__range", "1h"}, f"{where}: increase over [{window}]"
    if "histogram_quantile" in expr:
        assert "_bucket" in expr
        assert all("le" in [x.strip() for x in g.split(",")] for _, g in GROUPING.findall(expr)), expr


def test_three_dashboards_with_unique_uids_schema_39_and_the_datasource_variable() -> None:
    models = [d.model() for d in dashboards()]
    assert [m["uid"] for m in models] == ["bizbus-overview", "bizbus-connector", "bizbus-business"]
    assert {m["uid"] for m in models} == EXPECTED_UIDS
    for m in models:
        assert m["schemaVersion"] == 39
        variables = {v["name"]: v for v in m["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
    connector_vars = {v["name"]: v for v in models[1]["templating"]["list"]}
    component = connector_vars["component"]
    assert component["type"] == "query"
    assert component["definition"] == "label_values(bizbus_records_in_total, component)"
    assert component["allValue"] == ".+"
    assert component["datasource"] == DATASOURCE == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("board", dashboards(), ids=lambda d: d.uid)
def test_panels_have_unique_ids_titles_targets_and_do_not_overlap(board: Dashboard) -> None:
    panels: list[dict[str, Any]] = board.model()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {board.uid}"
    for p in panels:
        assert p["title"].strip()
        assert p["type"] in {"timeseries", "stat", "table"}
        assert p["datasource"] == DATASOURCE
        g = p["gridPos"]
        assert set(g) == {"x", "y", "w", "h"} and all(isinstance(v, int) for v in g.values())
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0
        assert p["targets"], f"{p['title']} has no target"
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for t in p["targets"]:
            assert t["expr"].strip() and "legendFormat" in t and t["datasource"] == DATASOURCE
            assert t["instant"] is (p["type"] != "timeseries")
    for a, b in combinations(panels, 2):
        ga, gb = a["gridPos"], b["gridPos"]
        apart = (
            ga["x"] + ga["w"] <= gb["x"]
            or gb["x"] + gb["w"] <= ga["x"]
            or ga["y"] + ga["h"] <= gb["y"]
            or gb["y"] + gb["h"] <= ga["y"]
        )
        assert apart, f"{board.uid}: {a['title']!r} overlaps {b['title']!r}"
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), f"{board.uid}: duplicate titles make all_queries() ambiguous"


def test_connector_board_filters_every_selector_by_the_component_variable() -> None:
    board = next(d for d in dashboards() if d.uid == "bizbus-connector")
    for p in board.panels:
        for t in p.targets:
            selectors = re.findall(r"\bbizbus_[a-z0-9_]+(\{[^}]*\})?", t.expr)
            assert selectors and all('component=~"$component"' in s for s in selectors), (
                f"{p.title}: {t.expr}"
            )


def test_business_board_reads_documents_amounts_and_budget_alerts() -> None:
    board = next(d for d in dashboards() if d.uid == "bizbus-business")
    exprs = " ".join(t.expr for p in board.panels for t in p.targets)
    for needle in (
        'document="voucher"',
        'document="voucher_reversal"',
        'document=~"purchase_.*"',
        'document=~"cost_center.*"',
        "bizbus_voucher_amount_total",
        "bizbus_budget_alerts_total",
    ):
        assert needle in exprs


def test_panel_models_reject_a_panel_without_targets_and_an_oversized_width() -> None:
    with pytest.raises(ValidationError, match="targets"):
        Panel(title="empty", targets=())
    with pytest.raises(ValidationError, match="width"):
        Panel(title="wide", width=25, targets=(Target(expr="up"),))


def test_all_queries_covers_every_target_and_rule_with_variables_substituted() -> None:
    queries = all_queries()
    n_targets = sum(len(p.targets) for d in dashboards() for p in d.panels)
    rules = alert_rules()
    assert len(queries) == n_targets + 2 * len(rules)
    assert len({q.where for q in queries}) == len(queries), "where must identify a query"
    for q in queries:
        assert "$" not in q.expr, f"{q.where}: unsubstituted variable in {q.expr}"
    by_where = {q.where: q for q in queries}
    assert by_where["bizbus-overview / Dead letters in range / A"].expr.endswith("[5m]))")
    assert 'component=~".+"' in by_where["bizbus-connector / Records in / out / failed / skipped / B"].expr
    for r in rules:
        assert by_where[f"alert {r.name} signal"].must_return_series is True
        assert by_where[f"alert {r.name}"].must_return_series is False
        assert by_where[f"alert {r.name}"].expr == r.expr
    assert substitute("rate(x[$__rate_interval]) $__range $component") == "rate(x[1m]) 5m .+"


def test_rule_file_on_disk_has_every_rule_with_severity_summary_and_runbook() -> None:
    doc = yaml.safe_load(ALERT_RULES_FILE.read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    assert len(rules) == len(EXPECTED_ALERTS)
    by_name = {r.name: r for r in alert_rules()}
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        assert re.fullmatch(r"\d+[smhd]", r["for"])
        ann = r["annotations"]
        assert ann["summary"].strip() and ann["description"].strip()
        assert any(hint in ann["runbook"] for hint in ("bizbus ", "/readyz", "dashboard")), r["alert"]
        typed = by_name[r["alert"]]
        assert r["expr"] == typed.expr
        signal_op, threshold = r["expr"].rsplit(" ", 1)
        assert signal_op == f"{typed.signal} {typed.op}" and float(threshold) == typed.threshold
    assert (
        by_name["DeadLettersGrowing"].expr
        == "sum by (component) (increase(bizbus_dead_letters_total[10m])) > 0"
    )
    assert "bizbus dlq list" in by_name["DeadLettersGrowing"].runbook
    assert by_name["ComponentDown"].op == "=="


def test_alert_rule_validation_rejects_bad_durations_and_duplicate_names() -> None:
    rule = alert_rules()[0]
    with pytest.raises(ValidationError, match="Prometheus duration"):
        AlertRule(**{**rule.model_dump(), "for_": "10 minutes"})
    with pytest.raises(ValueError, match="unique.*DeadLettersGrowing"):
        render_rules([rule, rule])


def test_generated_files_are_the_dashboards_provisioning_and_rules() -> None:
    files = generated_files()
    assert set(files) == {
        DASHBOARD_DIR / "bizbus-overview.json",
        DASHBOARD_DIR / "bizbus-connector.json",
        DASHBOARD_DIR / "bizbus-business.json",
        PROVISIONING_DASHBOARDS,
        PROVISIONING_DATASOURCES,
        ALERT_RULES_FILE,
    }
    board = json.loads(files[DASHBOARD_DIR / "bizbus-overview.json"])
    assert board["uid"] == "bizbus-overview" and files[DASHBOARD_DIR / "bizbus-overview.json"].endswith("}\n")
    provider = yaml.safe_load(files[PROVISIONING_DASHBOARDS])["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
    ds = yaml.safe_load(files[PROVISIONING_DATASOURCES])["datasources"][0]
    assert (ds["type"], ds["uid"], ds["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
