"""The Faust app of the flows and its worker: ``bizbus flows run`` runs one worker in the foreground.

One worker hosts the agents of the pipeline's enabled flows (or of ``--only`` ones). Its app id, and so
its consumer group and table changelog topics, is ``bizbus-flows-<pipeline>-<flow names>``: run the same
set of flows on more machines to share the partitions. Faust runs ``at_least_once`` (the embedded Tansu
broker cannot do aiokafka transactions); an input counts as processed only after the broker acknowledged
every output, and outputs carry ids derived from the input, so a crash re-sends identical records.

``bizbus up`` starts one ``bizbus flows run`` child for all enabled flows and restarts it when it dies
(bizbus/devstack/up.py); ``bizbus worker`` runs connectors only.

Flow performance (F2 labor cost, Avro in and out, 12 projects, 7 employees, backlog produced before the
worker starts; ``python -m tests.bench.faust_profile --records N [--workers 2] [--profile]``; 2 cores
shared with other jobs; raw confluent-kafka pass-through ≈ 64k rec/s here, the bench's raw loop building
the real voucher ≈ 8–9k rec/s):

* before: 228 rec/s (N = 20,000, 1 worker). py-spy: 45 % of the time in ``store_worklog``: the
  ``project-costs`` state held every worklog's amount, so each record re-encoded (JSON, 27 %) and re-sent
  to the changelog a state growing with the project — quadratic; the rest per-event awaits and Faust.
* F2's roll-up stored per worklog (:class:`~bizbus.streams.labor_cost.costs.ProjectCosts`), batches
  (``take_events(2000, within=0.05)``), state writes buffered per batch, one await for all outputs,
  dead letters flushed once per batch: 889 rec/s (N = 20,000).
* + uvloop, :func:`_monitor_class` (no per-event bookkeeping), ``producer_linger`` 5 ms: 1,175 rec/s;
  + ``within=0.2`` (batches of ≈ 1,200–1,600 instead of ≈ 200): 1,309 rec/s (N = 20,000), 1,242 rec/s
  (N = 50,000). Log level INFO was already the default (no DEBUG formatting).
* then (per record): handling 0.29 ms (Avro encode of the voucher 17 % of the profile, a third of it
  ``serde.decimal_problems`` rebuilding the schema's named types on every encode; the worklog state's
  JSON 11 %; decode 4 %; ``post_labor`` 5 %), making the batch durable 0.2 ms (Faust's changelog
  ``send_soon`` per key, ``producer.send`` per output), Faust's per-event delivery ≈ 0.16 ms.
* + outputs and changelog records through one confluent-kafka producer per worker, one await per batch
  (streams/runtime/delivery.py: Faust's aiokafka producer cost ≈ 40 µs of the event loop per record), the state
  as MessagePack instead of tagged JSON (pack 58 → 18 µs for a voucher state), the decimal check compiled
  once per schema: 2,204 rec/s (N = 20,000, load ≈ 4).
* + failure-only delivery reports and one ``flush`` per round (no Python callback per record, no poller
  thread): worker CPU 0.45 → 0.40 ms per record (``worker_cpu_ms_per_record``; CPU time is the steadier
  figure on a shared machine); + metrics counted per batch, table reads from the store (Faust's
  ``Table.__getitem__`` runs sensors), :func:`tune_gc` (full GC passes 1.2 s → 0.36 s of a 12.5 s run):
  2,345–2,419 rec/s (N = 30,000, load ≈ 4).
* where the time goes now (py-spy, N = 30,000): our batch handling ≈ 51 % (fastavro encode of the
  voucher 11–14 %, decode 6–7 %, ``post_labor`` ≈ 10 %, state pack and changelog/out production ≈ 8 %),
  Faust's consumer and stream machinery ≈ 13–19 %, the aiokafka fetch thread ≈ 8 %. A voucher's fastavro
  encode alone is ≈ 50 µs (two lines with decimals, the meta record), the same in the raw baseline of
  ``make bench``: what is left above that baseline is Faust's per-event path and the state writes.
* + the consumer's hand-over without tasks per message (streams/runtime/consumer.py; Faust's
  ``wait_first(callback(message), suspend_flow.wait())`` and the waits it started were ≈ 9 % of the worker
  in a py-spy of the processor benchmark): 2,680 → 2,935–2,975 rec/s, worker CPU 0.37 → 0.33–0.34 ms per
  record (N = 60,000, 1 worker, quiet machine). With 2 workers, no standby copies of the partitioned
  tables (``BIZBUS_FLOWS_STANDBY_REPLICAS=0``; Faust's default 1 made each worker apply the other's
  changelog too): 3,095 → 4,379 rec/s (N = 40,000).
* 2026-12-06, on an AMD EPYC (the bench's raw loop ≈ 19–21k rec/s there): worker CPU 0.19–0.22 ms per
  record (N = 60,000). py-spy: our batch handling ≈ 72–80 % of the worker; in it, encoding the outputs
  ≈ 22 %, ``post_labor`` ≈ 17 %, ``store_worklog`` ≈ 15 %, packing states ≈ 17 %, producing ≈ 9 %.
  + a state records its outputs as the Avro bytes sent (:func:`~bizbus.streams.runtime.agents.recorded_as_sent`;
  they were the voucher's dicts, packed again), the money check of encode as two C calls per amount,
  F2's rates indexed by employee, the budget roll-up from the worklog's previous state (no per-worklog
  cost entry: one state and one changelog record less per record): 0.158–0.165 ms per record, ≈ 6,000
  rec/s (N = 60,000), 0.178–0.19 ms at N = 200,000. What is left: encode and decode, ``post_labor``,
  packing the worklog state (its voucher's Decimals and dates are MessagePack extension types, one
  Python call each), producing, and Faust's fetcher and stream (≈ 15–20 %).
* 2026-12-06 evening, on a slower AMD EPYC (the raw loop ≈ 7k rec/s): ``make bench`` processor ratio
  0.29 at the start. py-spy (``faust_profile --records 60000 --profile``) within the batch handling:
  fastavro encode ≈ 24 %, packing states ≈ 11 % (most of it the worklog voucher's Decimals and dates as
  extension types), ``recorded_as_sent``/``with_outputs`` ≈ 5 %. + F2 keeps the voucher only as the bytes
  sent (``labor_cost.logic.stored_state``; read back by ``full_state`` when a worklog changes), and written states are
  no longer kept decoded (fewer long-lived objects for the collector): ratio 0.38–0.40 in three runs.
* two workers: the second worker's ``projects`` GlobalTable did not see the projects the first worker
  handled, so its timesheets waited out the grace period and were dead-lettered: fixed, see below.

Table recovery: :mod:`bizbus.streams.runtime.recovery`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from bizbus.streams.runtime.plan import FlowPlan
from bizbus.streams.runtime.recovery import table_manager

from bizbus import logs

if TYPE_CHECKING:
    import faust

    from bizbus.settings import Settings

PRODUCER_LINGER = 0.005  # s: the outputs of a batch are sent at once and awaited once
MAX_POLL_RECORDS = 200  # records one fetch hands to Faust at most (Faust's default: no limit)
GC_YOUNG = 20_000  # allocations between two collections of the youngest generation (Python: 700), see tune_gc


def _app_class() -> type:
    """``faust.App`` whose flow control clears the stream buffers only when flow really resumes, and whose
    consumer hands fetched messages to the streams without tasks per message (streams/runtime/consumer.py).

    Faust 0.15 finishes a table recovery with: resume the stream partitions, seek them to the committed
    offsets (the fetcher already delivers records meanwhile), then ``flow_control.resume()``, which
    clears every stream buffer even though flow was already on. Records fetched in between were dropped
    while the consumer's position had moved past them: an agent stalled until the next restart (seen
    after a SIGKILL whose table write had to be recovered). Clearing on the real suspended → resumed
    transition keeps what the rebalance must drop, and nothing else.
    """
    import faust
    from mode.utils.objects import cached_property
    from mode.utils.queues import FlowControlEvent

    class SteadyFlowControl(FlowControlEvent):
        def resume(self) -> None:
            if self.is_active():
                return
            super().resume()

    class FlowsApp(faust.App):
        @cached_property
        def flow_control(self) -> FlowControlEvent:
            return SteadyFlowControl(loop=self.loop)

        def _new_consumer(self) -> Any:
            """The transport's consumer with the cheaper message hand-over of streams/runtime/consumer.py."""
            from bizbus.streams.runtime.consumer import consumer_class

            transport = self.transport
            return consumer_class(transport.Consumer)(
                transport, callback=self.topics.on_message, on_partitions_revoked=self._on_partitions_revoked,
                on_partitions_assigned=self._on_partitions_assigned, beacon=self.beacon, loop=transport.loop,
            )  # fmt: skip

    return FlowsApp


def _monitor_class() -> type:
    """Faust's Monitor without its per-message bookkeeping (timestamps, counters by stream and task on every
    message, event, send and table access: several % of a worker's time). bizbus has its own metrics
    (bizbus/metrics.py); offsets, commits and rebalances are still tracked by the base class."""
    from faust.sensors.monitor import Monitor

    class QuietMonitor(Monitor):
        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            self.tp_read_offsets[tp] = offset

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
            self.stream_inbound_time[tp] = time.monotonic()  # Faust's stalled-stream check reads it

        def on_stream_event_out(
            self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
        ) -> None:
            return None

        def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
            return None

        def on_table_get(self, table: Any, key: Any) -> None:
            return None

        def on_table_set(self, table: Any, key: Any, value: Any) -> None:
            return None

        def on_send_initiated(
            self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
        ) -> None:
            return None

        def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
            return None

    return QuietMonitor


def tune_gc(app: Any) -> None:
    """Keep the garbage collector's full passes off the objects that live as long as the worker.

    A full pass walks every tracked object; in a flows worker most of them are modules, classes and Faust's
    services, created before the first record and never freed. Measured with ``gc.callbacks`` over 30,000
    timesheets (``python -m tests.bench.faust_profile``): 1.2 s of full passes of 12.5 s, 0.36 s once
    those objects are frozen (``gc.freeze``) before the worker starts and again when it is ready.

    The youngest generation is collected every :data:`GC_YOUNG` allocations instead of Python's 700. A batch
    keeps its decoded records, outputs and states alive until it is durable (≈ 10 objects per record,
    thousands of records), so with 700 they were walked by several young passes, promoted, and set off full
    passes, each walking every state a worker keeps (F5's stock keys with their holds). F5, 20,000 orders
    (``python -m tests.bench --only atp --scale 0.5``, ``gc.callbacks``): 10 full passes and 0.31 s in the
    collector, 0.177 ms of worker CPU per decision; with 20,000: 1 full pass, 0.26 s, 0.154 ms."""
    import gc

    from bizbus.gcfreeze import freeze_long_lived

    freeze_long_lived()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, older, oldest)

    async def freeze_after_startup() -> None:
        freeze_long_lived()

    app.on_startup_finished = freeze_after_startup


def install_uvloop() -> bool:
    """Use uvloop's event loop for the worker when it is installed (Linux, macOS); True if so."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def _credentials(settings: Settings) -> Any:
    """Faust broker credentials from the settings (None for PLAINTEXT)."""
    import ssl

    import faust

    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    ctx = None
    if proto in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location)
        if settings.kafka_ssl_certificate_location:
            ctx.load_cert_chain(settings.kafka_ssl_certificate_location, settings.kafka_ssl_key_location)
    if proto == "SSL":
        return faust.SSLCredentials(ctx)
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
    return faust.SASLCredentials(username=settings.kafka_sasl_username, password=password,
                                 mechanism=settings.kafka_sasl_mechanism or "PLAIN", ssl_context=ctx)  # fmt: skip


def stream_buffer_size(partitions: int, max_poll_records: int = MAX_POLL_RECORDS) -> int:
    """Events an agent's stream buffer holds, so that delivering a fetch never waits for room in it.

    Faust delivers every fetched record from one loop. It stops fetching a partition once its agent's buffer
    is 80 % full, but hands over what it has fetched already and, when the buffer is full, waits for room:
    the records of every other partition, table changelogs included, wait too. An agent waiting for master
    data (up to its grace period) then holds up the project agent and the GlobalTable updates it waits for
    (seen: two workers on a backlog of 20,000 timesheets, each stuck on the other's projects). Past 80 %,
    at most one fetch per partition of the agent's topic arrives, ``partitions × max_poll_records``
    records; the buffer keeps room for them (and as much again in reserve)."""
    return max(4096, 10 * partitions * max_poll_records)


def create_app(settings: Settings, plan: FlowPlan, replication_factor: int = 1,
               partitions: int = 6) -> faust.App:  # fmt: skip
    """The Faust app of ``plan`` (no agents yet; :func:`bizbus.streams.runtime.register.register` adds them);
    ``partitions``: the most partitions of a topic its agents read (see :func:`stream_buffer_size`)."""
    return _app_class()(
        plan.app_id,
        broker=[f"kafka://{host}" for host in settings.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        processing_guarantee="at_least_once",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        autodiscover=False,
        datadir=str(settings.data_dir / "faust" / plan.app_id),
        topic_replication_factor=replication_factor,
        topic_allow_declare=True,
        producer_acks=-1,
        producer_linger=PRODUCER_LINGER,
        producer_max_batch_size=256 * 1024,
        broker_max_poll_records=MAX_POLL_RECORDS,
        stream_buffer_maxsize=stream_buffer_size(partitions),
        # Faust's default is 1: with two workers each also applied the other's changelog records of the
        # partitioned tables (~one per input record in F2), which cost about a fifth of a worker's CPU
        table_standby_replicas=settings.flows_standby_replicas,
        Monitor=_monitor_class(),
        TableManager=table_manager(settings.kafka_config()),
        loghandlers=logs.faust_loghandlers(),  # JSON lines with the same redaction as the rest of bizbus
    )
