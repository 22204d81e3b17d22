"""Every Prometheus metric bizbus exposes, in one place, with the small helpers the loops call.

Conventions: ``bizbus_`` prefix, counters end in ``_total``, durations in ``_seconds``, sizes in
``_bytes``; label values are bounded (component names from the pipeline file, error reasons from the
fixed set in :mod:`bizbus.failures`, topic/partition numbers) and never a record key.

``component`` is the name of a connector or flow in the pipeline file. The dashboards in
``deploy/grafana`` and the alert rules in ``deploy/prometheus`` are generated from
:mod:`bizbus.docgen.dashboards` and refer to these names only (a unit test checks that).

A process that runs children (``bizbus up`` and its flows worker) serves one ``/metrics`` with its own
metrics and every child's, each child's series carrying ``process="<child>"`` (:class:`MergedRegistry`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

# -- records through a component ----------------------------------------------------------------------
RECORDS_IN = Counter(
    "bizbus_records_in_total",
    "Records a component took in: changes read from a source system, records consumed by a sink or a flow",
    ["component"],
)
RECORDS_OUT = Counter(
    "bizbus_records_out_total",
    "Records a component finished: produced to Kafka (source, flow) or newly applied in the target (sink)",
    ["component"],
)
RECORDS_FAILED = Counter(
    "bizbus_records_failed_total",
    "Records a component could not process, by reason (each one is also a dead letter)",
    ["component", "reason"],
)
RECORDS_SKIPPED = Counter(
    "bizbus_records_skipped_total",
    "Records a component passed over on purpose (nothing to send for them, stale versions, tombstones)",
    ["component"],
)
DEAD_LETTERS = Counter(
    "bizbus_dead_letters_total",
    "Records sent to the dead-letter topic, by error class (poison, permanent, retryable after the budget)",
    ["component", "error_class"],
)
RETRIES = Counter(
    "bizbus_retries_total", "Calls retried after a retryable failure, by reason", ["component", "reason"]
)
SOURCE_RETRYING = Gauge(
    "bizbus_source_retrying",
    "Failed attempts at the record a source is stuck at (vendor down or throttling: unlimited; a record its"
    " converter fails on: until it is dead-lettered after max_attempts); 0 while records flow",
    ["component"],
)
IDEMPOTENT_HITS = Counter(
    "bizbus_idempotent_hits_total",
    "Records a sink found already applied (ledger or target idempotency key): duplicates absorbed",
    ["component"],
)
SINK_LOG_RESETS = Counter(
    "bizbus_sink_log_reset_total",
    "Times a sink found a partition's log not the one its ledger knew (a new broker, a re-created topic): it "
    "read the partition again from the beginning, duplicates absorbed by the ledger",
    ["component", "topic"],
)
SINK_PAUSED = Gauge(
    "bizbus_sink_paused",
    "1 while a sink waits for an unreachable target (its partitions paused, the batch retried), else 0",
    ["component"],
)
BATCH_SIZE = Histogram(
    "bizbus_batch_size_records", "Records per batch a component handled", ["component"], buckets=BATCH_BUCKETS
)
SINK_WRITE_SECONDS = Histogram(
    "bizbus_sink_write_seconds",
    "Time one sink write call took (a batch, or one record when isolating failures)",
    ["component"],
    buckets=LATENCY_BUCKETS,
)
END_TO_END_SECONDS = Histogram(
    "bizbus_end_to_end_seconds",
    "From the business change in the source system (meta.occurred_at) to applied in the target (sinks) "
    "or derived event sent (flows)",
    ["component"],
    buckets=E2E_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "bizbus_consumer_lag_records",
    "Records not yet consumed per partition: max(high watermark, last consumed + 1) - committed, never < 0",
    ["group", "topic", "partition"],
)
COMPONENT_UP = Gauge("bizbus_component_up", "1 while a pipeline component's loop runs", ["component", "type"])
TASK_RUNNING = Gauge(
    "bizbus_task_running", "1 while a connector task runs (0 when paused or stopped)", ["component", "task"]
)
TASK_RESTARTS = Counter(
    "bizbus_task_restarts_total",
    "Times a connector task's step failed with a retryable error (a lost database connection, a broker or "
    "target that is away) and the task was tried again after a back-off, by reason",
    ["component", "task", "reason"],
)
TASK_PROBLEM = Gauge(
    "bizbus_task_problem",
    "1 while a connector task cannot make progress (retrying after an error, waiting for its target, a record "
    "it retries); the text is in /connectors and /readyz",
    ["component", "task"],
)
SHARD_LEASED = Gauge(
    "bizbus_source_shard_leased", "1 while this process holds the shard's lease", ["component", "shard"]
)
SOURCE_REWINDS = Counter(
    "bizbus_source_rewinds_total",
    "Times a source shard found the broker's log changed (a restarted in-memory broker, a new cluster) and read its"
    " durable side again from the start, so that nothing the lost log held is missing",
    ["component"],
)
BROKER_RESTARTS = Counter(
    "bizbus_embedded_broker_restarts_total",
    "Restarts of the embedded broker by `bizbus up` after it exited unexpectedly",
)
SOURCE_NEWEST_CHANGE = Gauge(
    "bizbus_source_newest_change_timestamp_seconds",
    "Unix time of the newest business change (meta.occurred_at) a source has seen",
    ["component"],
)

FLOW_EVENTS = Counter(
    "bizbus_flow_events_total",
    "Input records a flow handled, by outcome (emitted, ignored, skipped_stale, reemitted, dead_letter, ...)",
    ["component", "outcome"],
)

# -- webhooks and backfill ------------------------------------------------------------------------------
HTTP_REFUSED = Counter(
    "bizbus_http_refused_total",
    "Connections and requests the HTTP server refused or closed early, by listener (public, admin) and reason "
    "(connection_limit, header_timeout, body_timeout, body_too_large, bad_request, unauthorized)",
    ["listener", "reason"],
)
WEBHOOK_REQUESTS = Counter(
    "bizbus_webhook_requests_total",
    "Webhook requests by outcome (accepted, duplicate, handshake, a rejection reason, error)",
    ["component", "outcome"],
)
WEBHOOK_SECONDS = Histogram(
    "bizbus_webhook_seconds", "Time from webhook request to answer", ["component"], buckets=LATENCY_BUCKETS
)
BACKFILL_GAPS = Counter(
    "bizbus_backfill_gaps_total",
    "Changes a backfill poll found that no webhook had delivered (a missed webhook)",
    ["component"],
)
BACKFILL_POLLS = Counter("bizbus_backfill_polls_total", "Backfill polls by outcome", ["component", "outcome"])

# -- CDC --------------------------------------------------------------------------------------------------
CDC_SLOT_LAG = Gauge(
    "bizbus_cdc_slot_lag_bytes",
    "WAL a replication slot holds back: current WAL position - the slot's confirmed (or restart) position",
    ["database", "slot"],
)
CDC_SLOT_ACTIVE = Gauge(
    "bizbus_cdc_slot_active", "1 while a reader is connected to the replication slot", ["database", "slot"]
)

# -- business ---------------------------------------------------------------------------------------------
DOCUMENTS = Counter(
    "bizbus_documents_total",
    "Business documents a sink created or changed in its target, by kind (voucher, voucher_reversal, "
    "cost_center, purchase_order, ...)",
    ["component", "document"],
)
VOUCHER_AMOUNT = Counter(
    "bizbus_voucher_amount_total",
    "Sum of the debit side of the vouchers a sink posted, by document (voucher, voucher_reversal: net = "
    "voucher - voucher_reversal) and currency",
    ["component", "document", "currency"],
)
BUDGET_ALERTS = Counter(
    "bizbus_budget_alerts_total",
    "Projects whose booked cost went over budget by more than the flow's threshold (once per crossing)",
    ["component"],
)


# -- helpers ----------------------------------------------------------------------------------------------


def partition_lag(high_watermark: int, consumed_next: int | None, committed: int | None) -> int:
    """Lag of one partition that is never negative, even on a broker whose high watermark trails.

    ``high_watermark`` as reported (negative: unknown), ``consumed_next`` one past the last record this
    consumer saw (None: none yet), ``committed`` the group's committed offset (None or negative: none)."""
    end = max(high_watermark, consumed_next if consumed_next is not None else -1)
    if end < 0:
        return 0
    start = committed if committed is not None and committed >= 0 else (consumed_next or 0)
    return max(0, end - start)


def occurred_seconds(value: dict[str, Any] | None) -> float | None:
    """Unix time of ``value['meta']['occurred_at']`` (datetime or epoch ms), None if absent."""
    meta = (value or {}).get("meta") if isinstance(value, dict) else None
    at = meta.get("occurred_at") if isinstance(meta, dict) else None
    if isinstance(at, datetime):
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    if isinstance(at, int | float):
        return float(at) / 1000.0
    return None


def observe_end_to_end(component: str, values: Iterable[dict[str, Any] | None], now: float | None = None) -> None:
    """Record occurred_at → now for each event (clock skew never makes a negative observation)."""
    now = time.time() if now is None else now
    hist = END_TO_END_SECONDS.labels(component)
    for v in values:
        at = occurred_seconds(v)
        if at is not None:
            hist.observe(max(0.0, now - at))


def saw_changes(component: str, values: Iterable[dict[str, Any] | None]) -> None:
    """Move a source's newest-change time forward to the newest occurred_at among ``values``."""
    newest = max((t for t in (occurred_seconds(v) for v in values) if t is not None), default=None)
    if newest is None:
        return
    gauge = SOURCE_NEWEST_CHANGE.labels(component)
    if newest > gauge._value.get():  # noqa: SLF001 (prometheus_client has no public getter)
        gauge.set(newest)


def retry_counter(component: str) -> Callable[[Any, int, float], None]:
    """An ``on_retry`` callback for :func:`~bizbus.failures.call_with_retry` that counts retries."""

    def on_retry(error: Any, _attempt: int, _delay: float) -> None:
        RETRIES.labels(component, getattr(error, "reason", "unexpected")).inc()

    return on_retry


def init_component(component: str, *counters: Counter) -> None:
    """Create a component's series at 0 when it starts, so dashboards and alerts see them before the first
    event (a missing series is not a zero in PromQL)."""
    for c in counters:
        c.labels(component)


def forget_lag(group: str, topic: str, partition: int) -> None:
    """Drop the lag series of a partition this process no longer consumes (after a rebalance)."""
    with contextlib.suppress(KeyError):
        CONSUMER_LAG.remove(group, topic, str(partition))


class FreshnessCollector(Collector):
    """``bizbus_source_freshness_seconds``: age of the newest change each source has seen, at scrape time."""

    def collect(self) -> Iterator[Metric]:
        fam = GaugeMetricFamily(
            "bizbus_source_freshness_seconds",
            "Seconds since the newest business change a source has seen (now - occurred_at of the newest)",
            labels=["component"],
        )
        now = time.time()
        for metric in SOURCE_NEWEST_CHANGE.collect():
            for s in metric.samples:
                if s.value > 0:
                    fam.add_metric([s.labels["component"]], max(0.0, now - s.value))
        yield fam


_freshness_registered = threading.Lock()
_FRESHNESS: FreshnessCollector | None = None


def register_collectors() -> None:
    """Register the scrape-time collectors once per process (idempotent)."""
    global _FRESHNESS
    with _freshness_registered:
        if _FRESHNESS is None:
            _FRESHNESS = FreshnessCollector()
            REGISTRY.register(_FRESHNESS)


class MergedRegistry:
    """This process's metrics plus those of child processes that serve ``/metrics`` on local ports.

    Families of the same name are merged into one (one HELP/TYPE), the children's samples get a
    ``process`` label, so counters of the same component in two processes never collide. A child that
    does not answer is left out of this scrape (and logged at debug level)."""

    def __init__(self, children: Callable[[], dict[str, str]], timeout: float = 2.0) -> None:
        self.children = children  # process label -> metrics URL, asked at every scrape
        self.timeout = timeout

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for fam in REGISTRY.collect():
            families[fam.name] = fam
        for process, url in self.children().items():
            try:
                text = httpx.get(url, timeout=self.timeout).text
            except httpx.HTTPError as exc:
                log.debug("child %s metrics at %s not available: %s", process, url, exc)
                continue
            for fam in text_string_to_metric_families(text):
                samples = [s._replace(labels={**s.labels, "process": process}) for s in fam.samples]
                mine = families.get(fam.name)
                if mine is None:
                    fam.samples = samples
                    families[fam.name] = fam
                elif mine.type == fam.type:
                    merged = Metric(mine.name, mine.documentation, mine.type, mine.unit)
                    merged.samples = [*mine.samples, *samples]
                    families[fam.name] = merged
        yield from families.values()
