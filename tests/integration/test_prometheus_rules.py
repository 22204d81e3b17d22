"""The alert rules and every dashboard query against a real Prometheus scraping the real bizbus registry.

promtool checks the generated rule file (and rejects broken ones); a Prometheus started by the test
scrapes an in-process exporter of ``bizbus.metrics`` with a value set for every metric, loads the rule
file, and must parse every query of :func:`bizbus.docgen.dashboards.all_queries`, return series for the panel
targets and alert signals, evaluate every rule healthily and raise the alerts the values call for.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from bizbus import metrics
from bizbus.devstack.procs import free_port
from bizbus.docgen.alerting import ALERT_RULES_FILE, alert_rules, render_rules
from bizbus.docgen.dashboards import all_queries
from tests.prometheus_env import PROMETHEUS, PROMTOOL, SKIP_REASON, PrometheusError, PrometheusServer

pytestmark = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason=SKIP_REASON)

SINK = "h1-test-sink"
DOWN = "h1-test-down"
# one value per label name; every metric of bizbus.metrics gets one series with these
LABEL_VALUES = {
    "component": SINK,
    "reason": "timeout",
    "error_class": "permanent",
    "group": "h1-test-group",
    "topic": "bizbus.h1.test.v1",
    "partition": "0",
    "type": "test_sink",
    "task": "0",
    "shard": "0",
    "outcome": "accepted",
    "database": "h1db",
    "slot": "h1_slot",
    "document": "voucher",
    "currency": "CNY",
}


def _promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_generated_rule_file() -> None:
    result = _promtool_check(ALERT_RULES_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_accepts_the_local_prometheus_config_of_make_prometheus() -> None:
    """deploy/prometheus/local.yml (make prometheus) loads the rule file and scrapes make run's admin port."""
    local = ALERT_RULES_FILE.parents[1] / "local.yml"
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, "check", "config", str(local)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout
    assert "127.0.0.1:8089" in local.read_text()  # make run serves /metrics on its admin listener


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"signal": "sum by (component) (increase(bizbus_dead_letters_total[10m])"}, "parse error"),
        ({"summary": "{{ $labels.component } is broken"}, "template"),
    ],
    ids=["unbalanced-parenthesis", "broken-annotation-template"],
)
def test_promtool_rejects_a_broken_rule_file(tmp_path: Path, change: dict[str, str], error: str) -> None:
    """Proves the check above is real: the same rule, broken once, fails."""
    broken = alert_rules()[0].model_copy(update=change)
    path = tmp_path / "broken.yml"
    path.write_text(render_rules([broken]), encoding="utf-8")
    result = _promtool_check(path)
    assert result.returncode != 0
    assert error in (result.stdout + result.stderr)


def _set_every_metric() -> None:
    for obj in vars(metrics).values():
        if not isinstance(obj, Counter | Gauge | Histogram):
            continue
        child = obj.labels(**{name: LABEL_VALUES.get(name, "h1") for name in obj._labelnames}) if obj._labelnames else obj
        if isinstance(obj, Counter):
            child.inc(3)
        elif isinstance(obj, Histogram):
            child.observe(0.2)
        else:
            child.set(1)
    metrics.SOURCE_NEWEST_CHANGE.labels(SINK).set(time.time() - 30)  # freshness ~30 s
    for doc in (
        "voucher_reversal",
        "purchase_order",
        "purchase_requisition",
        "cost_center",
        "cost_center_closed",
    ):
        metrics.DOCUMENTS.labels(SINK, doc).inc()
    metrics.VOUCHER_AMOUNT.labels(SINK, "voucher_reversal", "CNY").inc(100)
    metrics.COMPONENT_UP.labels(DOWN, "test_sink").set(0)
    metrics.register_collectors()


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    """The real bizbus registry on a free local port, with a value for every metric."""
    _set_every_metric()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=REGISTRY)
    yield f"127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def prometheus(exporter: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer(
        [exporter], rule_files=[ALERT_RULES_FILE], workdir=tmp_path_factory.mktemp("prometheus")
    ) as prom:
        prom.wait_scraped(30)
        metrics.DEAD_LETTERS.labels(SINK, "permanent").inc()  # growth between scrapes: DeadLettersGrowing
        # rate() needs two samples in its window: wait until the counters have them
        prom.wait_for_series(f'rate(bizbus_dead_letters_total{{component="{SINK}"}}[1m]) > 0', 30)
        yield prom


def test_query_raises_with_prometheus_error_text(prometheus: PrometheusServer) -> None:
    with pytest.raises(PrometheusError, match="parse error"):
        prometheus.query("sum by (component (bizbus_records_in_total)")


def test_every_query_parses_and_panel_targets_and_signals_return_series(prometheus: PrometheusServer) -> None:
    empty = []
    for q in all_queries():
        result = prometheus.query(q.expr)  # raises with Prometheus's message if it does not parse
        if q.must_return_series and not result:
            empty.append(f"{q.where}: {q.expr}")
    assert not empty, "no series although every metric has a value:\n" + "\n".join(empty)


def test_queries_see_the_values_the_test_set(prometheus: PrometheusServer) -> None:
    by_where = {q.where: q.expr for q in all_queries()}
    up = prometheus.query(by_where["bizbus-overview / Components / A"])
    states = {s["metric"]["component"]: s["value"][1] for s in up}
    assert states[SINK] == "1" and states[DOWN] == "0"
    kinds = prometheus.query(by_where["bizbus-business / Purchase orders and requisitions per hour / A"])
    assert {"purchase_order", "purchase_requisition"} <= {s["metric"]["document"] for s in kinds}
    fresh = prometheus.query(f'bizbus_source_freshness_seconds{{component="{SINK}"}}')
    assert fresh and float(fresh[0]["value"][1]) >= 30


def test_every_rule_is_loaded_and_evaluates_healthily(prometheus: PrometheusServer) -> None:
    expected = {r.name for r in alert_rules()}

    def evaluated() -> bool:
        rules = prometheus.rules()
        return {r["name"] for r in rules} == expected and all(
            not r["lastEvaluation"].startswith("0001-") for r in rules
        )

    deadline = time.monotonic() + 30
    while not evaluated() and time.monotonic() < deadline:
        time.sleep(0.5)
    rules = prometheus.rules()
    assert {r["name"] for r in rules} == expected
    unhealthy = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy, f"{unhealthy}\n{prometheus.log_tail()}"


def test_alerts_follow_the_values(prometheus: PrometheusServer) -> None:
    """A component at up 0 and a growing dead-letter counter raise their alerts; a running one does not."""

    def active() -> set[tuple[str, str]]:
        return {(a["labels"]["alertname"], a["labels"].get("component", "")) for a in prometheus.alerts()}

    wanted = {("ComponentDown", DOWN), ("DeadLettersGrowing", SINK)}
    deadline = time.monotonic() + 30
    while not wanted <= active() and time.monotonic() < deadline:
        time.sleep(0.5)
    seen = active()
    assert wanted <= seen, f"active alerts: {sorted(seen)}"
    assert ("ComponentDown", SINK) not in seen
    assert ("SourceStale", SINK) not in seen  # 30 s old is fresh
