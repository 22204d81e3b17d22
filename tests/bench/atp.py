"""F5 throughput: sales orders → available-to-promise decisions through the ``stock-atp`` flow (a real
``bizbus flows run`` worker: order agent → re-keyed step on ``bizbus.sales.atp-step.v1`` → the stock key's
agent → OrderDecision), against a raw confluent-kafka loop over the same input in one process doing the
same work: the same two hops through the broker and the same ATP check.

Input: ``ctx.size(40_000)`` single-line SalesOrder records on the 3-partition order topic over 200 stock keys
(levels first, on hand sized so that about four in five orders are accepted). The figure is decisions/s from
the first to the last decision of this run seen on the decision topic (distinct order numbers; the worker's
start-up is left out, in the details). The baseline runs twice over the same input, before and after the
flow (as the processor benchmark does: a machine whose speed drifts weighs on both sides); each pass is timed
from its first consumed order to its final flush and the baseline is both passes together.

The raw loop (what changed, and why). Until 2026-12-08 it decided every order in the partition it was read
from: consume → decode → ATP → encode the OrderDecision → produce. The flow cannot do that: orders for one
stock key arrive in different partitions (and workers), so it re-keys each order by ``<warehouse>/<material>``
onto the step topic and decides there, in the key's one owner — the hop that makes the race rule hold.
A loop without that hop did half the Avro work of the flow (one decode and one encode per order instead of
two of each) and no produce/consume round trip, so the ratio compared different work. The loop now does
both hops, as the flow does, in one process and one consumer (assigned to the order partitions and to its
own step topic with the partitions of the real one): per order, decode → the chain (lines summed per stock
key, sorted) → an AtpStep with the same fields (derived meta and event id, the lines, the
chain, lineage headers) → encode → produce keyed by the stock key; per step consumed back, decode → ATP =
on hand − reserved − safety stock → reserve (and pass on to the chain's next key) or refuse (with the
flow's reason text, and RELEASE steps to the chain's other keys) → encode the OrderDecision → produce. What
it still leaves out is what the flow pays for its guarantees: no state changelog (the reservations live in
a dict of one process), no applied-id guard against redelivery, no offset commits, no dead letters.

Sizes. 40,000 orders at scale 1.0: about 3 s for each raw pass and 8–10 s for the flow, about 35 s in
all on the 2-core machine of docs/benchmarks.md (the first version, 30,000 orders, timed one second or less
at ``--scale 0.2``). The flow's cost per decision grows with the open holds of a stock key: each key keeps
one hold per accepted order, and its whole state, holds included, is packed and written to the changelog once
per batch. Orders are never released here, so at 120,000 orders (480 holds a key) the worker needed
0.235–0.27 ms of CPU per decision against 0.16–0.185 ms at 20,000–24,000, and the ratio fell to
0.24–0.29 in three runs at that size (docs/benchmarks.md). The size is chosen so that a key
ends with about 160 holds.

``BIZBUS_BENCH_PROFILE=FILE`` records a py-spy profile (raw collapsed stacks) of the worker from the first
decision on; ``python -c "from tests.bench.faust_profile import summarize; print(summarize(Path(FILE)))"``
sums it up.
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
STEP = "bizbus.sales.atp-step.v1"
ZERO = Decimal(0)
Q = Decimal("0.0001")
KEYS = 200
AT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
TARGET = 0.30
ORDERS = 40_000  # at scale 1.0 (see the module doc: the cost per decision grows with the open holds per key)
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


def _meta(src: dict[str, Any], role: str, correlation: str) -> dict[str, Any]:
    return lineage.meta(lineage.derived_id(src["event_id"], role), correlation, "bizbus", src["occurred_at"],
                        src["event_id"], {"flow": "stock-atp"})  # fmt: skip


def _raw_step(src: dict[str, Any], order: dict[str, Any], chain: list[dict[str, Any]], position: int) -> dict[str, Any]:
    key = chain[position]["stock_key"]
    return {"meta": _meta(src, f"reserve:{key}", order["order_no"]), "kind": "RESERVE", "stock_key": key,
            "order_no": order["order_no"], "company": order["company"], "order_version": order["order_version"],
            "warehouse": order["warehouse"], "lines": order["lines"], "chain": chain, "position": position,
            "on_hand": None, "safety_stock": None, "unit": None, "as_of": None}  # fmt: skip


def raw_loop(ctx: BenchContext, tag: str, n: int, level_starts: dict[int, int], order_starts: dict[int, int],
             run: int = 1) -> tuple[float, float, dict[str, float], int]:  # fmt: skip
    """decisions/s, seconds, CPU and accepted orders of the raw loop: both hops of the flow in one process
    and one consumer (orders and its own step topic), each step through the broker."""
    conf = {"bootstrap.servers": ctx.bootstrap}
    out_topic, step_topic = f"bench.atp.raw-{tag}-{run}", f"bench.atp.raw-step-{tag}-{run}"
    admin = AdminClient(conf)
    cat = load_catalogue(ROOT / "deploy" / "topics.yaml")
    steps = cat.get(STEP).partitions
    for f in admin.create_topics([NewTopic(out_topic, 3, 1), NewTopic(step_topic, steps, 1)]).values():
        f.result(15)
    serde = AvroSerde({"url": ctx.registry_url})
    level_reader = fastavro.parse_schema(catalog.load(cat.get(LEVEL).value_schema))
    order_reader = fastavro.parse_schema(catalog.load(cat.get(ORDER).value_schema))
    step_reader = fastavro.parse_schema(catalog.load(cat.get(STEP).value_schema))
    step_out = Avro(serde, cat.get(STEP).subject, cat.get(STEP).value_schema)
    out = Avro(serde, cat.get(DECISION).subject, cat.get(DECISION).value_schema)
    consumer = Consumer({**conf, "group.id": f"bench-atp-raw-{tag}-{run}", "enable.auto.commit": False})
    stock: dict[str, list[Decimal]] = {}  # key -> [on hand, reserved, safety]
    consumer.assign([TopicPartition(LEVEL, p, o) for p, o in level_starts.items()])
    while len(stock) < KEYS:
        for m in consumer.consume(2000, 1.0):
            if m.error() is None:
                lv = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), level_reader, None)
                if lv["warehouse"] == f"WB{tag}":
                    stock[f"{lv['warehouse']}/{lv['material']}"] = [lv["on_hand"], Decimal(0), lv["safety_stock"]]
    consumer.assign([TopicPartition(ORDER, p, o) for p, o in order_starts.items()]
                    + [TopicPartition(step_topic, p, 0) for p in range(steps)])  # fmt: skip
    producer = Producer({**conf, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    holds: dict[str, dict[str, Decimal]] = {}  # key -> order -> quantity held

    def send(topic: str, value: dict[str, Any], key: str, enc: Avro) -> None:
        produce(producer, topic, enc.encode(value), key.encode(), lineage.headers(value["meta"]))

    def decide(src: dict[str, Any], o: dict[str, Any], kind: str, reason: str | None,
               shortfalls: dict[str, str]) -> None:  # fmt: skip
        send(out_topic, {"meta": _meta(src, "decision", o["order_no"]), "order_no": o["order_no"],
                         "company": o["company"], "order_version": o["order_version"], "decision": kind,
                         "reason": reason, "warehouse": o["warehouse"], "lines": o["lines"], "shortfalls": shortfalls,
                         "decided_at": src["occurred_at"]}, o["order_no"], out)  # fmt: skip

    done, orders, accepted, t0 = 0, 0, 0, 0.0
    cpu = cpu_window(ctx, {"loop": os.getpid()})
    while done < n:
        for m in consumer.consume(2000, 0.2):
            if m.error() is not None:
                continue
            if not t0:
                t0 = time.monotonic()
                cpu.start()
            if m.topic() == ORDER:  # hop 1: the order's chain (lines summed per stock key, sorted), re-keyed
                if orders >= n:
                    continue
                orders += 1
                o = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), order_reader, None)
                by_key: dict[str, dict[str, Any]] = {}
                for ln in o["lines"]:
                    key = f"{o['warehouse']}/{ln['material']}"
                    entry = by_key.setdefault(key, {"stock_key": key, "material": ln["material"], "quantity": ZERO,
                                                    "unit": ln["unit"]})  # fmt: skip
                    entry["quantity"] += ln["quantity"]
                chain = [{**by_key[k], "quantity": by_key[k]["quantity"].quantize(Q)} for k in sorted(by_key)]
                o["order_version"] = o["version"]
                step = _raw_step(o["meta"], o, chain, 0)
                send(step_topic, step, step["stock_key"], step_out)
                continue
            # hop 2: the key's ATP check: reserve and pass on, or refuse (and release the chain's other keys)
            st = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), step_reader, None)
            key, no = st["stock_key"], st["order_no"]
            if st["kind"] == "RELEASE":
                stock[key][1] -= holds.setdefault(key, {}).pop(no, ZERO)
                continue
            s, held, here = stock[key], holds.setdefault(key, {}), st["chain"][st["position"]]
            available = s[0] - (s[1] - held.get(no, ZERO)) - s[2]
            quantity = here["quantity"]
            if quantity <= available:
                s[1] += quantity - held.get(no, ZERO)
                held[no] = quantity
                if st["position"] + 1 < len(st["chain"]):
                    nxt = _raw_step(st["meta"], st, st["chain"], st["position"] + 1)
                    send(step_topic, nxt, nxt["stock_key"], step_out)
                    continue
                accepted += 1
                decide(st["meta"], st, "ACCEPTED", None, {})
            else:
                s[1] -= held.pop(no, ZERO)
                short = (quantity - max(available, ZERO)).quantize(Q)
                for c in st["chain"]:
                    if c["stock_key"] != key:
                        rel = {**_raw_step(st["meta"], st, st["chain"], 0), "kind": "RELEASE", "stock_key": c["stock_key"],
                               "lines": [], "chain": [], "warehouse": None}  # fmt: skip
                        rel["meta"] = _meta(st["meta"], f"release:{c['stock_key']}", no)
                        send(step_topic, rel, c["stock_key"], step_out)
                reason = (f"{here['material']} in {st['warehouse']}: {quantity} {here['unit']} ordered, "
                          f"{max(available, ZERO).quantize(Q)} available to promise (short by {short})")  # fmt: skip
                decide(st["meta"], st, "REFUSED", reason, {here["material"]: str(short)})
            done += 1
        producer.poll(0)
    producer.flush(60)
    seconds = time.monotonic() - t0
    used = cpu.stop()
    consumer.close()
    return done / seconds, seconds, used, accepted


# -- the flow ---------------------------------------------------------------------------------------------


def watch_decisions(ctx: BenchContext, prefix: bytes, n: int, starts: dict[int, int], alive: Any,
                    timeout: float, on_first: Any = None) -> tuple[float, float, int, dict[str, int]]:  # fmt: skip
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
                if on_first is not None:
                    on_first()
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

    window = cpu_window(ctx, {"worker0": proc.pid})  # from the first decision on: the timed window
    spies: list[Any] = []

    def on_first() -> None:
        window.start()
        if os.environ.get("BIZBUS_BENCH_PROFILE"):  # py-spy the timed window (tests/bench/faust_profile.py)
            from tests.bench.faust_profile import start_profiler

            spies.append(start_profiler(proc.pid, Path(os.environ["BIZBUS_BENCH_PROFILE"]), 60))

    try:
        cpu.start()
        first, last, at_first, kinds = watch_decisions(ctx, f"SO{tag}".encode(), n, decision_starts, alive,
                                                       timeout=120 + n / 200, on_first=on_first)  # fmt: skip
        used, in_window = cpu.stop(), window.stop()
    finally:
        stop([proc])
        for spy in spies:
            if spy is not None:
                spy.wait(120)  # it writes its samples when the worker exits
    cpu_ms = None
    if last > first and n > at_first:
        rate, timed = (n - at_first) / (last - first), "first to last decision"
        cpu_ms = round(in_window.get("worker0_cores", 0.0) * (last - first) * 1000 / (n - at_first), 4)
    else:
        rate, timed = n / max(last - t_start, 1e-3), "process start to last decision"
    ctx.progress(f"stock-atp flow, 1 worker: {rate:,.0f} decisions/s ({n:,} orders, {kinds}; timed {timed}; "
                 f"{last - t_start:.1f} s from process start; cpu in the timed window {in_window})")  # fmt: skip
    return {"records_per_s": rate, "timed": timed, "decisions": kinds, "first_to_last_s": round(last - first, 2),
            "start_to_last_s": round(last - t_start, 2), "cpu_from_process_start": used,
            "cpu_timed_window": in_window, "worker_cpu_ms_per_decision": cpu_ms}  # fmt: skip


def run(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.size(ORDERS, minimum=500)
    tag = uuid.uuid4().hex[:6].upper()
    decision_starts = high_watermarks(ctx.bootstrap, DECISION, 3) if _topic_exists(ctx, DECISION) else None
    level_starts, order_starts = seed(ctx, tag, n)
    if decision_starts is None:
        decision_starts = high_watermarks(ctx.bootstrap, DECISION, 3)
    passes: list[tuple[float, float, dict[str, float], int]] = []

    def raw_pass(i: int) -> None:
        passes.append(raw_loop(ctx, tag, n, level_starts, order_starts, i))
        rate, seconds, cpu, accepted = passes[-1]
        ctx.progress(f"raw confluent-kafka ATP loop, pass {i}: {rate:,.0f} decisions/s ({seconds:.1f} s, "
                     f"{accepted:,} accepted; cpu {cpu})")  # fmt: skip

    raw_pass(1)
    flow = flow_stage(ctx, tag, n, decision_starts)
    raw_pass(2)
    raw_s = sum(p[1] for p in passes)
    raw_rate = len(passes) * n / raw_s
    raw_cpu_ms = sum(p[2].get("loop_cores", 0.0) * p[1] for p in passes) * 1000 / (len(passes) * n)
    accepted = flow["decisions"].get("ACCEPTED", 0)
    base = ("raw confluent-kafka loop, 1 process, before and after the flow: consume -> fastavro decode -> the "
            "order's chain -> AtpStep re-keyed by stock key -> encode -> produce; consume the step -> decode -> "
            "ATP check against an in-memory stock dict -> OrderDecision -> encode -> produce")  # fmt: skip
    return [BenchResult(NAME, "F5 stock-atp decisions/s, 1 worker", flow["records_per_s"], raw_rate, base,
                        "decisions/s", target=f"ratio >= {TARGET}",
                        details={"orders": n, "stock_keys": KEYS, "baseline_seconds": round(raw_s, 2),
                                 "baseline_passes_per_s": [round(p[0]) for p in passes],
                                 "baseline_accepted": [p[3] for p in passes], "flow_accepted": accepted,
                                 "baseline_cpu": [p[2] for p in passes],
                                 "baseline_cpu_ms_per_decision": round(raw_cpu_ms, 4), **flow})]  # fmt: skip


def _topic_exists(ctx: BenchContext, topic: str) -> bool:
    md = AdminClient({"bootstrap.servers": ctx.bootstrap}).list_topics(timeout=10)
    return topic in md.topics
