"""MariaDB binlog CDC throughput: the ``mariadb-cdc`` source (a ``bizbus worker`` process: binlog → journal
→ mapping → topic) vs a bare loop in one process (binlog read → canonical record → Avro → produce).

Both read the same binlog range of a private mariadbd (tests/mariadb_private.py): ``n`` stock level updates
committed in transactions of 500 rows while the source is stopped (after its snapshot of the rows), so each
side then reads a backlog as fast as it can. The bare loop builds the same ``InventoryLevel`` records the
mapping makes (deploy/examples/mappings/jxc-cdc.yaml, entity inventory_level), encodes them in the Confluent
wire format and produces them (idempotent, acks=all, flush per 500). Rates come from the produced records'
timestamps on each side's own topic: from the moment reading began (the bare loop's start; the worker's
capture task taking its lease, from its log) to the last record, so process start-up is not counted.
"""

from __future__ import annotations

import datetime as dt
import decimal
import time
import uuid
from pathlib import Path

import yaml
from confluent_kafka import Producer

from tests.bench.cdc import create_topics, lease_taken_ms, rate_from, stack_of, topic_timestamps
from tests.bench.core import BenchContext, BenchResult
from tests.chaos.harness import ROOT, Worker, write_pipeline
from tests.mariadb_private import PrivateMariaDB, create_jxc, private_mariadb

NAME = "mariadb_cdc"
BATCH = 500  # rows per transaction written, per flush of the bare loop
KEYS = 2000
PARTITIONS = 3
LEVEL = "bizbus.inventory.level.v1"
Q4 = decimal.Decimal("0.0001")


def private_setup(workdir: Path, topics: list[str]) -> tuple[Path, Path]:
    """(topics file, mapping file): the catalogue plus ``topics`` shaped like the stock level topic, and the
    jxc mapping's inventory_level entity writing to the first of them."""
    doc = yaml.safe_load((ROOT / "deploy" / "topics.yaml").read_text())
    base = next(t for t in doc["topics"] if t["name"] == LEVEL)
    for name in topics:
        doc["topics"].append({**base, "name": name, "partitions": PARTITIONS, "description": "benchmark topic"})
    topics_file = workdir / f"topics-{uuid.uuid4().hex[:6]}.yaml"
    topics_file.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    mapping = yaml.safe_load((ROOT / "deploy" / "examples" / "mappings" / "jxc-cdc.yaml").read_text())
    entity = next(e for e in mapping["entities"] if e["name"] == "inventory_level")
    mapping["entities"], mapping["documents"] = [{**entity, "topic": topics[0]}], []
    mapping_file = workdir / f"mapping-{uuid.uuid4().hex[:6]}.yaml"
    mapping_file.write_text(yaml.safe_dump(mapping, allow_unicode=True, sort_keys=False))
    return topics_file, mapping_file


def seed(db: PrivateMariaDB) -> None:
    create_jxc(db)
    with db.connect("jxc", autocommit=False) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO warehouses (code, name) VALUES ('W1', 'main')")
        cur.executemany("INSERT INTO materials (code, name, unit) VALUES (%s, 'm', 'PCS')",
                        [(f"M{k:05d}",) for k in range(KEYS)])  # fmt: skip
        cur.executemany("INSERT INTO stock_levels (warehouse, material, unit) VALUES ('W1', %s, 'PCS')",
                        [(f"M{k:05d}",) for k in range(KEYS)])  # fmt: skip
        conn.commit()


def write_updates(db: PrivateMariaDB, n: int) -> None:
    with db.connect("jxc", autocommit=False) as conn, conn.cursor() as cur:
        for start in range(0, n, BATCH):
            cur.executemany("UPDATE stock_levels SET on_hand = on_hand + 1, reserved = 1 WHERE warehouse = 'W1'"
                            " AND material = %s", [(f"M{i % KEYS:05d}",) for i in range(start, min(n, start + BATCH))])  # fmt: skip
            conn.commit()


def bare_loop(ctx: BenchContext, db: PrivateMariaDB, start: str, topic: str, n: int) -> int:
    """The baseline: binlog rows → InventoryLevel → Avro → produce, flush per 500 rows; the ``n`` rows after
    ``start`` (a blocking dump: MariaDB's non-blocking one ends in an error the client answers by reconnecting
    at the start again)."""
    from bizbus.schemas import catalog
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import UpdateRowsEvent

    from bizbus import lineage
    from bizbus.serde import AvroSerde

    schema = catalog.load("bizbus.inventory.InventoryLevel")
    encode = AvroSerde({"url": ctx.registry_url}).encoder(f"{topic}-value", schema)
    producer = Producer({"bootstrap.servers": ctx.bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5})  # fmt: skip
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": db.port, "user": "root", "passwd": ""}, server_id=9101,
        blocking=True, slave_heartbeat=0.5, is_mariadb=True, auto_position=start, only_events=[UpdateRowsEvent], only_schemas=["jxc"],
        enable_logging=False, freeze_schema=True)  # fmt: skip  (the source's reader options)
    sent = 0
    try:
        for event in stream:
            when = dt.datetime.fromtimestamp(event.timestamp, dt.UTC)
            for row in event.rows:
                r = row["after_values"]
                key = f"{r['warehouse']}/{r['material']}"
                on_hand, reserved = r["on_hand"].quantize(Q4), r["reserved"].quantize(Q4)
                m = lineage.meta(lineage.event_id("bench", event.table, key, event.packet.log_pos, sent), key,
                                 "bench", when)  # fmt: skip
                value = {"meta": m, "warehouse": r["warehouse"], "material": r["material"], "unit": r["unit"],
                         "on_hand": on_hand, "reserved": reserved, "available": (on_hand - reserved).quantize(Q4),
                         "safety_stock": r["safety_stock"].quantize(Q4), "as_of": when}  # fmt: skip
                producer.produce(topic, key=key.encode(), value=encode(value), headers=lineage.headers(m))
                producer.poll(0)
                sent += 1
                if sent % BATCH == 0 and producer.flush(30) != 0:
                    raise RuntimeError("baseline producer: records not acknowledged")
            if sent >= n:
                break
    finally:
        stream.close()
    if producer.flush(30) != 0:
        raise RuntimeError("baseline producer: records not acknowledged")
    return sent


def run(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.size(60_000, minimum=2000)
    tag = uuid.uuid4().hex[:8]
    src_topic, base_topic = f"bizbus.bench.maria-{tag}.v1", f"bizbus.bench.maria-raw-{tag}.v1"
    connector = f"bench-maria-{tag}"
    topics_file, mapping_file = private_setup(ctx.workdir, [src_topic, base_topic])
    create_topics(ctx.bootstrap, [src_topic, base_topic], PARTITIONS)
    worker: Worker | None = None
    with private_mariadb() as db:
        seed(db)
        pipeline = write_pipeline(ctx.workdir / f"maria-{tag}.yaml", [
            {"name": connector, "type": "mariadb-cdc", "config": {
                "host": "127.0.0.1", "port": db.port, "user": "root", "database": "jxc", "mapping": str(mapping_file),
                "server_id": 9100, "state_dsn": ctx.pg_dsn, "batch_size": 1000}}])  # fmt: skip
        worker = Worker(connector, stack_of(ctx), pipeline, env={"BIZBUS_TOPICS_FILE": str(topics_file)})
        try:
            ctx.progress(f"mariadb_cdc: snapshot of {KEYS} rows by the source, then it stops")
            worker.start()
            if len(topic_timestamps(ctx.bootstrap, src_topic, KEYS, timeout=90)) < KEYS:
                raise RuntimeError("the snapshot did not reach the topic\n" + worker.logs())
            worker.stop()
            start = db.gtid_pos()
            ctx.progress(f"mariadb_cdc: {n} updates in transactions of {BATCH} into the binlog")
            write_updates(db, n)
            ctx.progress("mariadb_cdc: baseline bare binlog loop")
            t0, began = time.monotonic(), time.time() * 1000
            sent = bare_loop(ctx, db, start, base_topic, n)
            base_wall = time.monotonic() - t0
            base_rate, base_span = rate_from(began, topic_timestamps(ctx.bootstrap, base_topic, sent))
            ctx.progress("mariadb_cdc: the mariadb-cdc source worker on the backlog")
            t0 = time.monotonic()
            worker.start()
            # idle: the worker's start (process, lease, first journaled batch) may take longer than the default 5 s
            ts = topic_timestamps(ctx.bootstrap, src_topic, KEYS + n, timeout=60 + n / 500, idle=30)
            wall = time.monotonic() - t0
            if len(ts) < KEYS + n:
                raise RuntimeError(f"the source put {len(ts) - KEYS} of the {n} backlog changes on its topic\n"
                                   + worker.logs())
            worker.stop()
            # from the moment the capture task starts reading the binlog (its log line), not from the first
            # record: the first produce waits for the first journaled batch, which the rate must include
            rate, span = rate_from(lease_taken_ms(worker), sorted(ts)[KEYS:])  # the backlog, not the snapshot
        finally:
            worker.stop()
    return [
        BenchResult(
            benchmark=NAME, metric="binlog row changes -> topic, records/s (mariadb-cdc worker)",
            figure=round(rate, 1), baseline=round(base_rate, 1),
            baseline_what="bare loop in one process: mysql-replication BinLogStreamReader (MariaDB GTID, table maps parsed"
            " once per table id, as the source does) -> the same"
            " InventoryLevel record -> Avro -> confluent-kafka produce (idempotent, acks=all, linger 5 ms), flush"
            " per 500",
            unit="records/s", higher_is_better=True, target="ratio >= 0.8",
            details={"row_changes": n, "rows_per_transaction": BATCH, "keys": KEYS, "partitions": PARTITIONS,
                     "records_on_topic": len(ts), "baseline_records_on_topic": sent,
                     "seconds_read_start_to_last_record": round(span, 2),
                     "baseline_seconds_read_start_to_last": round(base_span, 2),
                     "worker_wall_seconds_incl_startup": round(wall, 2), "baseline_wall_seconds": round(base_wall, 2),
                     "measured": "records / (last record's produce timestamp - the moment reading began: the bare loop's"
                     " start, the worker's capture lease taken), each side on its own topic;"
                     " the source also journals every transaction in the state database (PostgreSQL) and maps it"
                     " by the YAML mapping before producing"},
        )  # fmt: skip
    ]
