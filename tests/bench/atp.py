"""F5 throughput: sales orders → available-to-promise decisions through the ``stock-atp`` flow (a real
``bizbus flows run`` worker: order agent → re-keyed step on ``bizbus.sales.atp-step.v1`` → the stock key's
agent → OrderDecision), against a raw confluent-kafka loop over the same input in one process doing the
same ATP check (consume the levels into a dict, then per order: consume → fastavro decode → ATP = on hand −
reserved − safety per line → reserve or refuse → encode the OrderDecision → produce).

Input: ``ctx.size(30_000)`` single-line SalesOrder records on the 3-partition order topic over 200 stock keys
(levels first, on hand sized so that about four in five orders are accepted). The figure is decisions/s from
the first to the last decision of this run seen on the decision topic (distinct order numbers; the worker's
start-up is left out, in the details); the baseline is timed from its first consumed order to its final
flush. The baseline keeps its reservations in a dict of one process: it has no repartition hop, no state
changelog, no redelivery guard — what the flow pays for exactly-once reservations across partitions.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import yaml
from bizbus.schemas import catalog
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bizbus import lineage
from bizbus.catalogue import apply, load_catalogue
from bizbus.devstack.stack import register_schemas
from bizbus.serde import AvroSerde
from tests.bench.core import BenchContext, BenchResult, produce
from tests.bench.processor import Avro, cpu_window, high_watermarks, start_worker, stop

NAME = "atp"
ROOT = Path(__file__).resolve().parents[2]
ORDER = "bizbus.sales.order.v1"
LEVEL = "bizbus.inventory.level.v1"
DECISION = "bizbus.sales.order-decision.v1"
KEYS = 200
AT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
TARGET = 0.30
STALL = 90.0


def level_record(wh: str, mat: str, on_hand: int) -> dict[str, Any]:
    key = f"{wh}/{mat}"
    return {"meta": lineage.meta(lineage.event_id("bench", "stock", key, 1), key, "bench", AT), "warehouse": wh,
            "material": mat, "unit": "pcs", "on_hand": Decimal(on_hand), "reserved": Decimal(0),
            "available": Decimal(on_hand), "safety_stock": Decimal(2), "as_of": AT}  # fmt: skip


def order_record(no: str, wh: str, mat: str, quantity: int) -> dict[str, Any]:
    line = {"line_no": 1, "material": mat, "material_name": None, "quantity": Decimal(quantity), "unit": "pcs",
            "unit_price": None, "amount": None, "tax_rate": None, "project": None, "need_by": None, "description": None}  # fmt: skip
    return {"meta": lineage.meta(lineage.event_id("bench", "sales_order", no, 1), no, "bench", AT + timedelta(seconds=1)),
            "op": "CREATED", "order_no": no, "company": "SH01", "status": "SUBMITTED", "customer": "C1",
            "order_date": AT.date(), "delivery_date": None, "warehouse": wh, "currency": "CNY", "lines": [line],
            "total_amount": Decimal("0.00"), "tax_amount": None, "salesperson": None, "version": 1}  # fmt: skip


def seed(ctx: BenchContext, tag: str, n: int) -> tuple[dict[int, int], dict[int, int]]:
    """Topics, schemas, levels and ``n`` orders; the level and order offsets where this run starts."""
    conf = {"bootstrap.servers": ctx.bootstrap}
    cat = load_catalogue(ROOT / "deploy" / "topics.yaml")
    failed = [s for s in apply(AdminClient(conf), cat) if s.action.startswith("FAILED")]
    if failed:
        raise RuntimeError(f"catalogue topics not created: {failed}")
    serde = AvroSerde({"url": ctx.registry_url})
    register_schemas(serde, cat)
    level_starts = high_watermarks(ctx.bootstrap, LEVEL, cat.get(LEVEL).partitions)
    order_starts = high_watermarks(ctx.bootstrap, ORDER, cat.get(ORDER).partitions)
    producer = Producer({**conf, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000,
                         "batch.size": 1_000_000})  # fmt: skip
    wh = f"WB{tag}"
    per_key = n // KEYS + 1
    lvl = Avro(serde, cat.get(LEVEL).subject, cat.get(LEVEL).value_schema)
    for k in range(KEYS):  # 2 pieces an order on average: about 4 of 5 orders fit (after the safety stock of 2)
        rec = level_record(wh, f"M{k:04d}", 2 + per_key * 2 * 4 // 5)
        producer.produce(LEVEL, key=f"{wh}/M{k:04d}".encode(), value=lvl.encode(rec), headers=lineage.headers(rec["meta"]))
    producer.flush(30)
    enc = Avro(serde, cat.get(ORDER).subject, cat.get(ORDER).value_schema)
    t0 = time.monotonic()
    for i in range(n):
        rec = order_record(f"SO{tag}{i:07d}", wh, f"M{i % KEYS:04d}", 1 + i % 3)
        produce(producer, ORDER, enc.encode(rec), rec["order_no"].encode(), lineage.headers(rec["meta"]))
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("input records were not acknowledged by the broker")
    ctx.progress(f"produced {KEYS} levels and {n:,} sales orders in {time.monotonic() - t0:.1f} s")
    return level_starts, order_starts


# -- the baseline: a raw confluent-kafka loop doing the ATP check -----------------------------------------


def raw_loop(ctx: BenchContext, tag: str, n: int, level_starts: dict[int, int],
             order_starts: dict[int, int]) -> tuple[float, float, dict[str, float], int]:  # fmt: skip
    conf = {"bootstrap.servers": ctx.bootstrap}
    out_topic = f"bench.atp.raw-{tag}"
    admin = AdminClient(conf)
    for f in admin.create_topics([NewTopic(out_topic, 3, 1)]).values():
        f.result(15)
    serde = AvroSerde({"url": ctx.registry_url})
    cat = load_catalogue(ROOT / "deploy" / "topics.yaml")
    level_reader = fastavro.parse_schema(catalog.load(cat.get(LEVEL).value_schema))
    order_reader = fastavro.parse_schema(catalog.load(cat.get(ORDER).value_schema))
    out = Avro(serde, cat.get(DECISION).subject, cat.get(DECISION).value_schema)
    consumer = Consumer({**conf, "group.id": f"bench-atp-raw-{tag}", "enable.auto.commit": False})
    stock: dict[str, list[Decimal]] = {}  # key -> [on hand, reserved, safety]
    consumer.assign([TopicPartition(LEVEL, p, o) for p, o in level_starts.items()])
    while len(stock) < KEYS:
        for m in consumer.consume(2000, 1.0):
            if m.error() is None:
                lv = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), level_reader, None)
                if lv["warehouse"] == f"WB{tag}":
                    stock[f"{lv['warehouse']}/{lv['material']}"] = [lv["on_hand"], Decimal(0), lv["safety_stock"]]
    consumer.assign([TopicPartition(ORDER, p, o) for p, o in order_starts.items()])
    producer = Producer({**conf, "linger.ms": 10, "queue.buffering.max.messages": 1_000_000})
    done, accepted, t0 = 0, 0, 0.0
    cpu = cpu_window(ctx, {"loop": os.getpid()})
    while done < n:
        for m in consumer.consume(2000, 1.0):
            if m.error() is not None or done >= n:
                continue
            if not t0:
                t0 = time.monotonic()
                cpu.start()
            o = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), order_reader, None)
            shortfalls: dict[str, str] = {}
            want = [(f"{o['warehouse']}/{ln['material']}", ln) for ln in o["lines"]]
            for key, ln in want:
                s = stock[key]
                available = s[0] - s[1] - s[2]
                if ln["quantity"] > available:
                    shortfalls[ln["material"]] = str(ln["quantity"] - max(available, Decimal(0)))
            if not shortfalls:
                for key, ln in want:
                    stock[key][1] += ln["quantity"]
                accepted += 1
            src = o["meta"]
            value = {"meta": lineage.meta(lineage.derived_id(src["event_id"], "decision"), o["order_no"], "bizbus",
                                          src["occurred_at"], src["event_id"], {"flow": "stock-atp"}),
                     "order_no": o["order_no"], "company": o["company"], "order_version": o["version"],
                     "decision": "REFUSED" if shortfalls else "ACCEPTED",
                     "reason": "short: " + ", ".join(shortfalls) if shortfalls else None, "warehouse": o["warehouse"],
                     "lines": o["lines"], "shortfalls": shortfalls, "decided_at": src["occurred_at"]}  # fmt: skip
            produce(producer, out_topic, out.encode(value), o["order_no"].encode(), lineage.headers(value["meta"]))
            done += 1
        producer.poll(0)
    producer.flush(60)
    seconds = time.monotonic() - t0
    used = cpu.stop()
    consumer.close()
    return done / seconds, seconds, used, accepted


# -- the flow ---------------------------------------------------------------------------------------------


def watch_decisions(ctx: BenchContext, prefix: bytes, n: int, starts: dict[int, int], alive: Any,
                    timeout: float) -> tuple[float, float, int, dict[str, int]]:  # fmt: skip
    consumer = Consumer({"bootstrap.servers": ctx.bootstrap, "group.id": f"bench-atp-watch-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(DECISION, p, o) for p, o in starts.items()])
    seen: dict[bytes, str] = {}
    first = 0.0
    at_first = 0
    deadline, moved = time.monotonic() + timeout, time.monotonic()
    try:
        while len(seen) < n:
            now = time.monotonic()
            if now > deadline or now - moved > STALL:
                raise TimeoutError(f"{len(seen):,} of {n:,} decisions after {now - deadline + timeout:.0f} s")
            alive()
            for m in consumer.consume(5000, 0.2):
                if m.error() is None and m.key() is not None and m.key().startswith(prefix):
                    # the decision kind sits after the meta, order_no, company and version: count by content
                    seen[m.key()] = "REFUSED" if b"short by" in m.value() else "ACCEPTED"
                    moved = time.monotonic()
            if seen and not first:
                first, at_first = time.monotonic(), len(seen)
        kinds: dict[str, int] = {}
        for k in seen.values():
            kinds[k] = kinds.get(k, 0) + 1
        return first, time.monotonic(), at_first, kinds
    finally:
        consumer.close()


def flow_stage(ctx: BenchContext, tag: str, n: int, decision_starts: dict[int, int]) -> dict[str, Any]:
    name = f"bench-atp-{tag.lower()}"
    doc = {"version": 1, "name": name, "connectors": [],
           "flows": [{"name": "stock-atp", "type": "stock-atp", "config": {}}]}  # fmt: skip
    pipeline = ctx.workdir / f"{name}.pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(doc))
    t_start = time.monotonic()
    proc = start_worker(ctx, pipeline, name, 0)
    cpu = cpu_window(ctx, {"worker0": proc.pid})

    def alive() -> None:
        if proc.poll() is not None:
            log = (ctx.workdir / f"{name}.worker0.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"flow worker exited with {proc.returncode}:\n{log}")

    try:
        cpu.start()
        first, last, at_first, kinds = watch_decisions(ctx, f"SO{tag}".encode(), n, decision_starts, alive,
                                                       timeout=120 + n / 200)  # fmt: skip
        used = cpu.stop()
    finally:
        stop([proc])
    if last > first and n > at_first:
        rate, timed = (n - at_first) / (last - first), "first to last decision"
    else:
        rate, timed = n / max(last - t_start, 1e-3), "process start to last decision"
    ctx.progress(f"stock-atp flow, 1 worker: {rate:,.0f} decisions/s ({n:,} orders, {kinds}; timed {timed}; "
                 f"{last - t_start:.1f} s from process start; cpu {used})")  # fmt: skip
    return {"records_per_s": rate, "timed": timed, "decisions": kinds, "first_to_last_s": round(last - first, 2),
            "start_to_last_s": round(last - t_start, 2), "cpu_from_process_start": used}  # fmt: skip


def run(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.size(30_000, minimum=500)
    tag = uuid.uuid4().hex[:6].upper()
    decision_starts = high_watermarks(ctx.bootstrap, DECISION, 3) if _topic_exists(ctx, DECISION) else None
    level_starts, order_starts = seed(ctx, tag, n)
    if decision_starts is None:
        decision_starts = high_watermarks(ctx.bootstrap, DECISION, 3)
    raw_rate, raw_s, raw_cpu, raw_accepted = raw_loop(ctx, tag, n, level_starts, order_starts)
    ctx.progress(f"raw confluent-kafka ATP loop: {raw_rate:,.0f} decisions/s ({raw_s:.1f} s, {raw_accepted:,} "
                 f"accepted; cpu {raw_cpu})")  # fmt: skip
    flow = flow_stage(ctx, tag, n, decision_starts)
    accepted = flow["decisions"].get("ACCEPTED", 0)
    base = ("raw confluent-kafka loop, 1 process: consume -> fastavro decode -> ATP check against an in-memory "
            "stock dict -> OrderDecision -> encode -> produce")
    return [BenchResult(NAME, "F5 stock-atp decisions/s, 1 worker", flow["records_per_s"], raw_rate, base,
                        "decisions/s", target=f"ratio >= {TARGET}",
                        details={"orders": n, "stock_keys": KEYS, "baseline_seconds": round(raw_s, 2),
                                 "baseline_accepted": raw_accepted, "flow_accepted": accepted,
                                 "baseline_cpu": raw_cpu, **flow})]  # fmt: skip


def _topic_exists(ctx: BenchContext, topic: str) -> bool:
    md = AdminClient({"bootstrap.servers": ctx.bootstrap}).list_topics(timeout=10)
    return topic in md.topics
