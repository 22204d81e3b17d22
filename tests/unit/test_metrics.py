"""The metric helpers: lag that is never negative, freshness, end-to-end latency, merging a child's metrics,
and the F2 budget roll-up behind bizbus_budget_alerts_total."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.labor_cost.logic import roll_up
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bizbus import metrics


def test_lag_uses_the_larger_of_high_watermark_and_what_was_consumed() -> None:
    assert metrics.partition_lag(100, 90, 80) == 20  # a normal broker: high watermark ahead
    # Tansu: the high watermark trails what the consumer already read -> the consumed end counts
    assert metrics.partition_lag(50, 90, 80) == 10
    assert metrics.partition_lag(50, 90, 90) == 0
    assert metrics.partition_lag(-1001, None, None) == 0  # nothing known yet
    assert metrics.partition_lag(10, None, None) == 10  # nothing committed, nothing consumed: all of it
    assert metrics.partition_lag(5, 12, 20) == 0  # a committed offset ahead of both never goes negative


def test_end_to_end_latency_is_taken_from_meta_occurred_at() -> None:
    now = time.time()
    value = {"meta": {"occurred_at": datetime.fromtimestamp(now - 42, UTC)}}
    assert abs(metrics.occurred_seconds(value) - (now - 42)) < 0.01
    assert metrics.occurred_seconds({"meta": {"occurred_at": 1_700_000_000_000}}) == 1_700_000_000.0
    assert metrics.occurred_seconds({"no": "meta"}) is None
    hist = metrics.END_TO_END_SECONDS.labels("unit-e2e")
    before = _hist_count(hist)
    future = {"meta": {"occurred_at": datetime.fromtimestamp(now + 60, UTC)}}  # skewed clock
    metrics.observe_end_to_end("unit-e2e", [value, future, {"x": 1}], now=now)
    assert _hist_count(hist) == before + 2
    assert _bucket(hist, 0.05) >= 1  # the skewed one counted as 0 s, not negative
    assert _bucket(hist, 30) == _bucket(hist, 0.05) and _bucket(hist, 60) == before + 2  # 42 s lands in 60


def test_freshness_is_age_of_the_newest_change_and_only_moves_forward() -> None:
    metrics.register_collectors()
    metrics.register_collectors()  # idempotent
    old = datetime.now(UTC) - timedelta(seconds=300)
    newer = datetime.now(UTC) - timedelta(seconds=30)
    metrics.saw_changes("unit-fresh", [{"meta": {"occurred_at": old}}, {"meta": {"occurred_at": newer}}])
    metrics.saw_changes("unit-fresh", [{"meta": {"occurred_at": old}}])  # an older change does not rewind
    age = _sample("bizbus_source_freshness_seconds", {"component": "unit-fresh"})
    assert 29 <= age < 60


def test_merged_registry_adds_the_child_process_label_and_keeps_one_family() -> None:
    child_registry = CollectorRegistry()
    c = Counter("bizbus_records_in_total", "x", ["component"], registry=child_registry)
    c.labels("unit-merge").inc(7)
    body = generate_latest(child_registry)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        metrics.RECORDS_IN.labels("unit-merge").inc(3)
        merged = metrics.MergedRegistry(
            lambda: {"flows": f"http://127.0.0.1:{server.server_address[1]}/metrics", "gone": "http://127.0.0.1:9/x"}
        )
        text = generate_latest(merged).decode()
    finally:
        server.shutdown()
    assert text.count("# TYPE bizbus_records_in_total counter") == 1
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {tuple(sorted(s.labels.items())): s.value for s in fams["bizbus_records_in"].samples
               if s.name.endswith("_total") and s.labels.get("component") == "unit-merge"}  # fmt: skip
    assert samples[(("component", "unit-merge"),)] >= 3
    assert samples[(("component", "unit-merge"), ("process", "flows"))] == 7


def test_budget_roll_up_alerts_once_when_crossing_and_is_idempotent_per_worklog() -> None:
    project = ProjectState("P1", 1, "CREATED", "P", "C", budget=Decimal("1000.00"), currency="CNY")

    def voucher(amount: str) -> dict:
        return {"lines": [{"debit": Decimal(amount)}, {"debit": Decimal("0")}]}

    state, alert = roll_up(None, project, "P1", "W1", voucher("600.00"), 10)
    assert alert is None and state["over"] is False
    state, alert = roll_up(state, project, "P1", "W1", voucher("600.00"), 10)  # same worklog again
    assert alert is None and sum(Decimal(v) for v in state["worklogs"].values()) == Decimal("600.00")
    state, alert = roll_up(state, project, "P1", "W2", voucher("500.00"), 10)  # 1100 = exactly +10 %: not over
    assert alert is None
    state, alert = roll_up(state, project, "P1", "W3", voucher("0.01"), 10)
    assert alert is not None and alert.booked == Decimal("1100.01") and "P1" in alert.message
    state, again = roll_up(state, project, "P1", "W4", voucher("50.00"), 10)
    assert again is None  # already over: no second alert
    state, _ = roll_up(state, project, "P1", "W4", None, 10)  # W4 deleted
    state, _ = roll_up(state, project, "P1", "W3", None, 10)  # back to 1100: under the line
    assert state["over"] is False
    _, alert = roll_up(state, project, "P1", "W5", voucher("1.00"), 10)
    assert alert is not None  # crossed once more
    _, none = roll_up(None, replace(project, budget=None), "P2", "W1", voucher("1e6"), 10)
    assert none is None  # no budget, no alert


def _hist_count(_child: object) -> float:
    return _bucket(_child, float("inf"))


def _bucket(_child: object, le: float) -> float:
    from prometheus_client import REGISTRY, utils

    value = REGISTRY.get_sample_value(
        "bizbus_end_to_end_seconds_bucket", {"component": "unit-e2e", "le": utils.floatToGoString(le)}
    )
    return value or 0.0


def _sample(name: str, labels: dict[str, str]) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, f"no sample {name}{labels}"
    return value
