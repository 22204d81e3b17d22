"""Dead letters as a workflow: read them back, narrow them down, look at one, and replay them.

A dead letter keeps the original bytes and coordinates of a record a sink could not write
(bizbus/deadletters.py). Once the operator has fixed the cause (master data, a constraint, a mapping), a
replay rebuilds the original ``SinkRecord`` and hands it to a fresh writer of the same connector: the
same idempotent path as live traffic, ledger included. The effect id comes from the record's
``meta.event_id``, so a record that is already applied (by an earlier replay, or by the live sink after
a redelivery) is skipped by the ledger and a replay can be run as often as wanted.

Reading "to the end" of the dead-letter topic does not trust the high watermark (the embedded broker's
is unreliable): every partition is assigned from offset 0 and read until ``idle`` seconds bring nothing
new. Nothing is committed and the group id is throwaway, so reading never disturbs anyone.

``bizbus dlq list|show|replay`` (bizbus/cli/main.py) is the command line over this module.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from bizbus.connectors.runtime.sink import SinkConnector, SinkRecord, SinkWriter, WriteResult
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from bizbus.deadletters import DEAD_LETTER_TOPIC
from bizbus.errors import BizbusError, BrokerError, RegistryError
from bizbus.failures import ConnectorError, RetryPolicy, call_with_retry
from bizbus.host.components import RuntimeContext
from bizbus.host.pipeline import ConfiguredComponent, Pipeline
from bizbus.kafka import read_until_quiet
from bizbus.serde import AvroSerde, PoisonRecord

log = logging.getLogger(__name__)

ERROR_CLASSES = ("RETRYABLE", "PERMANENT", "POISON")
MESSAGE_WIDTH = 80  # characters of the error message in `dlq list` (the full text is in `dlq show`)
PREVIEW_BYTES = 256  # raw bytes shown for an undecodable value (enough to recognise it)


# -- the dead letter as the operator sees it ---------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterView:
    """One dead letter, decoded: what failed, where it came from, why, and its original bytes.

    ``id`` is the dead letter's ``meta.event_id`` (deterministic per connector and source coordinates),
    ``position`` its own (partition, offset) on the dead-letter topic, used only to order duplicates.
    """

    id: str
    connector: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: datetime | None
    error_class: str
    error_type: str | None
    error_message: str
    attempts: int
    failed_at: datetime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    correlation_id: str | None = None
    causation_id: str | None = None
    position: tuple[int, int] = (0, 0)

    @property
    def coordinates(self) -> str:
        """``topic[partition]@offset`` of the original record."""
        return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"

    @classmethod
    def from_record(cls, record: dict[str, Any], partition: int = 0, offset: int = 0) -> DeadLetterView:
        """The view of a decoded ``bizbus.ops.DeadLetter`` record read at ``partition``/``offset``."""
        meta = record["meta"]
        return cls(
            id=str(meta["event_id"]),
            connector=record["connector"],
            source_topic=record["source_topic"],
            source_partition=int(record["source_partition"]),
            source_offset=int(record["source_offset"]),
            source_timestamp=record.get("source_timestamp"),
            error_class=str(record["error_class"]),
            error_type=record.get("error_type"),
            error_message=record["error_message"],
            attempts=int(record["attempts"]),
            failed_at=record["failed_at"],
            key=record.get("key"),
            value=record.get("value"),
            headers=tuple((h["key"], h["value"]) for h in record.get("headers") or ()),
            correlation_id=meta.get("correlation_id"),
            causation_id=meta.get("causation_id"),
            position=(partition, offset),
        )


def dedupe(views: Iterable[DeadLetterView]) -> list[DeadLetterView]:
    """Oldest first, one view per id: a crash between the dead letter's delivery and the offset commit
    re-sends the same dead letter (same id, later ``failed_at``); the first one is the one to keep."""
    out: list[DeadLetterView] = []
    seen: set[str] = set()
    for v in sorted(views, key=lambda v: (v.failed_at, v.position)):
        if v.id not in seen:
            seen.add(v.id)
            out.append(v)
    return out


# -- reading the dead-letter topic -------------------------------------------------------------------


def read_dead_letters(
    kafka_config: dict[str, Any],
    serde: AvroSerde,
    topic: str = DEAD_LETTER_TOPIC,
    idle: float = 2.0,
    progress: Callable[[int], None] | None = None,
) -> list[DeadLetterView]:
    """Every dead letter on ``topic``, de-duplicated by id, oldest first.

    ``progress(n)`` is called about once a second while reading (n = messages read so far), so a long
    read shows signs of life. A message on the topic that is not a DeadLetter is logged and skipped.
    """
    consumer = Consumer({**kafka_config, "group.id": f"bizbus-dlq-{uuid.uuid4().hex[:12]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000})  # fmt: skip
    try:
        partitions = _partitions(consumer, topic, kafka_config.get("bootstrap.servers", "?"))
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        views = [v for v in (_view(m, serde) for m in _drain(consumer, idle, progress)) if v is not None]
    finally:
        consumer.close()
    return dedupe(views)


def _partitions(consumer: Consumer, topic: str, bootstrap: str) -> list[int]:
    """The topic's partition ids (metadata, not watermarks); a clear error when there is no such topic."""
    try:
        meta = consumer.list_topics(topic, timeout=10)
    except KafkaException as exc:
        raise BrokerError(f"broker {bootstrap} did not answer a metadata request: {exc}") from None
    tmeta = meta.topics.get(topic)
    if tmeta is None or tmeta.error is not None or not tmeta.partitions:
        reason = tmeta.error.str() if tmeta is not None and tmeta.error is not None else "no partitions"
        raise BizbusError(f"dead-letter topic {topic} is not readable on {bootstrap} ({reason}); "
                          "create the catalogue's topics with `bizbus topics apply`, or check --topic")  # fmt: skip
    return sorted(tmeta.partitions)


def _drain(consumer: Consumer, idle: float, progress: Callable[[int], None] | None) -> Iterator[Message]:
    """Messages until ``idle`` seconds pass without a new one (the end, as far as anyone can tell), with
    progress about once a second on long reads (``bizbus.kafka.read_until_quiet``)."""
    return read_until_quiet(consumer, idle, progress=progress,
                            on_error=lambda err: log.warning("reading dead letters: %s", err.str()))  # fmt: skip


def _view(msg: Message, serde: AvroSerde) -> DeadLetterView | None:
    """The view of one dead-letter message; None (logged) when it is not a DeadLetter at all."""
    try:
        record = serde.decode(msg.value())
        return DeadLetterView.from_record(record, msg.partition(), msg.offset())
    except (PoisonRecord, KeyError, TypeError, ValueError) as exc:
        log.warning("%s[%d]@%d is not a bizbus.ops.DeadLetter, skipped: %s",
                    msg.topic(), msg.partition(), msg.offset(), exc)  # fmt: skip
        return None


# -- narrowing the set -------------------------------------------------------------------------------

FILTER_KEYS: dict[str, str] = {
    "error_class": "RETRYABLE, PERMANENT or POISON (any case)",
    "error_type": "exact error type, or its part before '/' (Permanent matches Permanent/db_constraint)",
    "topic": "source topic of the original record",
    "id": "prefix of the dead letter's id",
    "since": "failed at or after this ISO date or datetime (UTC unless it has an offset)",
    "contains": "substring of the error message (any case)",
}


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a command acts on; every given criterion must hold (None = any)."""

    connector: str | None = None
    error_class: str | None = None
    error_type: str | None = None
    topic: str | None = None
    id_prefix: str | None = None
    since: datetime | None = None
    contains: str | None = None

    @classmethod
    def parse(cls, connector: str | None = None, filters: Sequence[str] = ()) -> DeadLetterFilter:
        """From ``--connector C`` and repeatable ``--filter key=value``; a bad one is a ``BizbusError``."""
        given: dict[str, Any] = {}
        for item in filters:
            key, value = _split_filter(item)
            if key in given:
                raise BizbusError(f"filter {key} is given twice; give each key at most once")
            given[key] = _filter_value(key, value)
        if "id" in given:
            given["id_prefix"] = given.pop("id")
        return cls(connector=connector or None, **given)

    def matches(self, v: DeadLetterView) -> bool:
        """True when ``v`` passes every criterion."""
        checks = (
            self.connector is None or v.connector == self.connector,
            self.error_class is None or v.error_class == self.error_class,
            self.error_type is None or _type_matches(self.error_type, v.error_type),
            self.topic is None or v.source_topic == self.topic,
            self.id_prefix is None or v.id.startswith(self.id_prefix),
            self.since is None or v.failed_at >= self.since,
            self.contains is None or self.contains.casefold() in v.error_message.casefold(),
        )
        return all(checks)

    def apply(self, views: Iterable[DeadLetterView]) -> list[DeadLetterView]:
        return [v for v in views if self.matches(v)]

    def describe(self) -> str:
        """``connector=x, topic=y`` for messages such as "no dead letters match ..."; "" when empty."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                shown = value.isoformat() if isinstance(value, datetime) else value
                parts.append(f"{'id' if f.name == 'id_prefix' else f.name}={shown}")
        return ", ".join(parts)


def _split_filter(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key, value = key.strip(), value.strip()
    known = ", ".join(FILTER_KEYS)
    if not sep:
        raise BizbusError(f"filter {item!r} is not key=value; known keys: {known}")
    if key not in FILTER_KEYS:
        raise BizbusError(f"unknown filter key {key!r}; known keys: {known}")
    if not value:
        raise BizbusError(f"filter {key} needs a value ({FILTER_KEYS[key]})")
    return key, value


def _filter_value(key: str, value: str) -> Any:
    if key == "error_class":
        upper = value.upper()
        if upper not in ERROR_CLASSES:
            raise BizbusError(f"error_class must be one of {', '.join(ERROR_CLASSES)}, not {value!r}")
        return upper
    if key == "since":
        return parse_since(value)
    if key == "id":
        return value.lower()
    return value


def parse_since(text: str) -> datetime:
    """An aware datetime from an ISO date (midnight UTC) or datetime (UTC when it has no offset)."""
    try:
        when = datetime.fromisoformat(text)  # a bare date is midnight
    except ValueError:
        raise BizbusError(
            f"since={text!r} is not an ISO date or datetime (e.g. 2026-11-23 or 2026-11-23T08:00:00Z)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _type_matches(wanted: str, actual: str | None) -> bool:
    if actual is None:
        return False
    w, a = wanted.casefold(), actual.casefold()
    return a == w or a.split("/", 1)[0] == w


def find_by_id(views: Sequence[DeadLetterView], ident: str) -> DeadLetterView:
    """The dead letter whose id is ``ident`` or starts with it; none or several is a ``BizbusError``."""
    ident = ident.strip().lower()
    exact = [v for v in views if v.id == ident]
    if exact:
        return exact[0]
    hits = [v for v in views if ident and v.id.startswith(ident)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise BizbusError(f"no dead letter has an id starting with {ident!r} ({len(views)} read)")
    shown = "\n".join(f"  {v.id}  {v.connector}  {v.coordinates}" for v in hits[:20])
    more = f"\n  ... and {len(hits) - 20} more" if len(hits) > 20 else ""
    raise BizbusError(f"id prefix {ident!r} is ambiguous; {len(hits)} dead letters match:\n{shown}{more}")


# -- replaying ---------------------------------------------------------------------------------------

ReplayStatus = Literal[
    "would create", "would skip", "applied", "already applied", "failed", "skipped", "undecodable",
    "would resend", "resent",
]


@dataclass(frozen=True)
class ReplayOutcome:
    """What a replay did (or, in a dry run, would do) with one dead letter."""

    id: str
    connector: str
    source_topic: str
    source_partition: int
    source_offset: int
    status: ReplayStatus
    detail: str = ""

    @property
    def coordinates(self) -> str:
        return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"

    @property
    def problem(self) -> bool:
        """The record is still not in the target and this run could not change that."""
        return self.status in ("failed", "undecodable")


def _outcome(v: DeadLetterView, status: ReplayStatus, detail: str = "") -> ReplayOutcome:
    return ReplayOutcome(
        v.id, v.connector, v.source_topic, v.source_partition, v.source_offset, status, detail
    )


def replay(
    views: Sequence[DeadLetterView],
    pipeline: Pipeline,
    ctx: RuntimeContext,
    dry_run: bool,
    policy: RetryPolicy | None = None,
    on_outcome: Callable[[ReplayOutcome], None] | None = None,
) -> list[ReplayOutcome]:
    """Replay ``views`` through their connectors' writers; one outcome per view, never an exception
    for a single record (a failure is an outcome and the others go on).

    ``policy`` None means each connector's own ``retry`` config. ``on_outcome`` sees each outcome as
    soon as it is known (progress for long runs). Views are grouped by connector, so each connector's
    writer is opened once.
    """
    outcomes: list[ReplayOutcome] = []

    def emit(o: ReplayOutcome) -> None:
        outcomes.append(o)
        if on_outcome is not None:
            on_outcome(o)

    components = {cc.name: cc for cc in pipeline.components}
    groups: dict[str, list[DeadLetterView]] = {}
    for v in views:
        groups.setdefault(v.connector, []).append(v)
    for name, group in groups.items():
        _replay_group(group, components.get(name), pipeline, ctx, dry_run, policy, emit)
    return outcomes


def _replay_group(
    group: list[DeadLetterView],
    cc: ConfiguredComponent | None,
    pipeline: Pipeline,
    ctx: RuntimeContext,
    dry_run: bool,
    policy: RetryPolicy | None,
    emit: Callable[[ReplayOutcome], None],
) -> None:
    """One connector's dead letters through one writer (opened once, always closed)."""
    name = group[0].connector
    if cc is not None and cc.type.kind == "flow":
        _resend_group(group, ctx, dry_run, emit)
        return
    found = _sink_for(name, cc, pipeline, ctx)
    if isinstance(found, str):
        for v in group:
            emit(_outcome(v, "skipped", found))
        return
    assert cc is not None
    pol = policy or getattr(cc.config, "retry", None) or RetryPolicy()
    writer = found.writer()
    try:
        try:
            call_with_retry(writer.setup, pol)
        except ConnectorError as exc:
            for v in group:
                emit(_outcome(v, "failed", f"cannot open {name}'s target: {describe_error(exc)}"))
            return
        for v in group:
            emit(_replay_one(v, writer, ctx.serde, dry_run, pol))
    finally:
        writer.close()


def _resend_group(group: list[DeadLetterView], ctx: RuntimeContext, dry_run: bool,
                  emit: Callable[[ReplayOutcome], None]) -> None:  # fmt: skip
    """A flow's dead letters go back to the flow's input topic as they were (key, value, headers), once the
    cause is fixed (e.g. the master data arrived). The flow derives the same output ids from the same input,
    so a second replay only repeats outputs the sinks already applied."""
    from confluent_kafka import Producer

    if dry_run:
        for v in group:
            emit(_outcome(v, "would resend", f"to {v.source_topic} (key {v.key!r}) for {v.connector} to process again"))
        return
    producer = Producer({**ctx.settings.kafka_config(), "enable.idempotence": True, "acks": "all"})
    results: dict[str, str | None] = {}
    for v in group:
        if v.value is None:
            emit(_outcome(v, "undecodable", "the dead letter has no value; nothing to resend"))
            continue
        producer.produce(v.source_topic, key=v.key, value=v.value, headers=list(v.headers),
                         on_delivery=lambda err, _m, i=v.id: results.__setitem__(i, str(err) if err else None))  # fmt: skip
        producer.poll(0)
    producer.flush(30)
    for v in group:
        if v.value is None:
            continue
        err = results.get(v.id, "not acknowledged by the broker")
        emit(_outcome(v, "failed", err) if err else _outcome(v, "resent", f"to {v.source_topic}"))


def _sink_for(
    name: str, cc: ConfiguredComponent | None, pipeline: Pipeline, ctx: RuntimeContext
) -> SinkConnector | str:
    """The sink connector ``name`` built from the pipeline (not set up: no tasks, no consumers), or why
    its dead letters cannot be replayed with this pipeline."""
    if cc is None:
        return f"connector {name} is not in {pipeline.path}"
    if cc.type.kind == "source":
        return f"{name} is a source; fix the record at the source"
    if cc.type.kind != "sink":
        return f"{name} is a {cc.type.kind}, not a sink; fix its input and let it run again"
    component = cc.type.load()(cc.name, cc.config, ctx)
    if not isinstance(component, SinkConnector):
        return f"{name} is not a sink connector; dead letters replay only into sinks"
    return component


def _replay_one(
    v: DeadLetterView, writer: SinkWriter, serde: AvroSerde, dry_run: bool, policy: RetryPolicy
) -> ReplayOutcome:
    rebuilt = rebuild_record(v, serde)
    if isinstance(rebuilt, ReplayOutcome):
        return rebuilt
    return _plan(v, rebuilt, writer, policy) if dry_run else _write(v, rebuilt, writer, policy)


def rebuild_record(v: DeadLetterView, serde: AvroSerde) -> SinkRecord | ReplayOutcome:
    """The original ``SinkRecord`` (original coordinates, so the effect id and ledger offsets are the
    live ones), or the outcome that says why there is none."""
    if v.value is None:
        return _outcome(v, "undecodable", "the dead letter has no value (a tombstone); nothing to write")
    try:
        value = serde.decode(v.value)
    except PoisonRecord as exc:
        return _outcome(v, "undecodable", str(exc))
    except RegistryError as exc:
        return _outcome(v, "failed", str(exc))
    if not isinstance(value, dict) or not isinstance(value.get("meta"), dict):
        return _outcome(v, "undecodable", "the value decodes but is not a bizbus event (no meta)")
    ts = int(v.source_timestamp.timestamp() * 1000) if v.source_timestamp is not None else None
    return SinkRecord(v.source_topic, v.source_partition, v.source_offset, v.key, value, v.value,
                      list(v.headers), ts)  # fmt: skip


def _plan(v: DeadLetterView, rec: SinkRecord, writer: SinkWriter, policy: RetryPolicy) -> ReplayOutcome:
    try:
        planned = call_with_retry(lambda: writer.plan([rec]), policy)
    except ConnectorError as exc:
        return _outcome(v, "failed", f"cannot plan: {describe_error(exc)}")
    if not planned:
        return _outcome(v, "failed", "the writer planned nothing for this record")
    p = planned[0]
    return _outcome(v, "would create" if p.action == "create" else "would skip", p.detail)


def _write(v: DeadLetterView, rec: SinkRecord, writer: SinkWriter, policy: RetryPolicy) -> ReplayOutcome:
    def attempt() -> WriteResult:
        res = writer.write([rec])
        if res.failed:  # raised, so a retryable per-record failure gets the policy's retries too
            raise next(iter(res.failed.values()))
        return res

    try:
        res = call_with_retry(attempt, policy)
    except ConnectorError as exc:
        return _outcome(v, "failed", describe_error(exc))
    if res.applied:
        return _outcome(v, "applied", f"effect {rec.effect_id}")
    if res.duplicates:
        return _outcome(v, "already applied", f"effect {rec.effect_id} is in the ledger")
    return _outcome(v, "failed", "the writer reported neither applied nor duplicate")


def describe_error(exc: ConnectorError) -> str:
    """``class (reason): message``, e.g. ``permanent (db_constraint): CheckViolation: ...``."""
    message = str(exc)
    return f"{exc.error_class} ({exc.reason})" + (f": {message}" if message else "")


# -- rendering (the CLI prints these) ----------------------------------------------------------------


def _when(t: datetime | None) -> str:
    if t is None:
        return "-"
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _one_line(text: str, width: int = MESSAGE_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def table(views: Sequence[DeadLetterView]) -> list[str]:
    """``dlq list`` rows under a header: short id, when, connector, class, coordinates, attempts, message."""
    cw = max([len("connector"), *(len(v.connector) for v in views)])
    sw = max([len("source"), *(len(v.coordinates) for v in views)])
    lines = [
        f"{'id':<8}  {'failed_at':<20}  {'connector':<{cw}}  {'class':<9}  {'source':<{sw}}  att  message"
    ]
    for v in views:
        lines.append(f"{v.id[:8]}  {_when(v.failed_at):<20}  {v.connector:<{cw}}  {v.error_class:<9}  "
                     f"{v.coordinates:<{sw}}  {v.attempts:>3}  {_one_line(v.error_message)}")  # fmt: skip
    return lines


def summary(views: Sequence[DeadLetterView]) -> str:
    """One line: how many, per connector and error class."""
    per: dict[str, Counter[str]] = {}
    for v in views:
        per.setdefault(v.connector, Counter())[v.error_class] += 1
    parts = [
        f"{c}: " + ", ".join(f"{k} {n}" for k, n in sorted(cnt.items())) for c, cnt in sorted(per.items())
    ]
    return f"{len(views)} dead letter{'s' if len(views) != 1 else ''} — " + "; ".join(parts)


def to_json(v: DeadLetterView) -> dict[str, Any]:
    """A JSON-ready summary of ``v`` (``dlq list --json``): text fields, sizes instead of bytes."""
    return {
        "id": v.id, "connector": v.connector, "source_topic": v.source_topic,
        "source_partition": v.source_partition, "source_offset": v.source_offset,
        "source_timestamp": _when(v.source_timestamp) if v.source_timestamp else None,
        "error_class": v.error_class, "error_type": v.error_type, "error_message": v.error_message,
        "attempts": v.attempts, "failed_at": _when(v.failed_at), "correlation_id": v.correlation_id,
        "key": bytes_text(v.key) if v.key is not None else None,
        "value_bytes": len(v.value) if v.value is not None else None,
    }  # fmt: skip


def bytes_text(data: bytes) -> str:
    """Bytes as readable text: UTF-8 with anything unprintable escaped (``\\x07``)."""
    text = data.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _json_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, bytes):
        return o.hex()
    return str(o)


def details(v: DeadLetterView, serde: AvroSerde) -> list[str]:
    """Every field of ``v`` for ``dlq show``; the value as JSON when it decodes, else its raw bytes."""
    lines = [
        f"id                {v.id}",
        f"connector         {v.connector}",
        f"error_class       {v.error_class}",
        f"error_type        {v.error_type or '-'}",
        f"attempts          {v.attempts}",
        f"failed_at         {_when(v.failed_at)}",
        f"source            {v.coordinates}",
        f"source_timestamp  {_when(v.source_timestamp)}",
        f"correlation_id    {v.correlation_id or '-'}",
        f"causation_id      {v.causation_id or '-'}",
        f"dead letter at    partition {v.position[0]}, offset {v.position[1]}",
        f"key               {bytes_text(v.key) if v.key is not None else '(none)'}",
        "error_message:",
        *(f"  {line}" for line in v.error_message.splitlines() or [""]),
        "headers:" if v.headers else "headers: (none)",
        *(f"  {k}: {bytes_text(h) if h is not None else '(null)'}" for k, h in v.headers),
    ]
    return lines + _value_lines(v.value, serde)


def _value_lines(raw: bytes | None, serde: AvroSerde) -> list[str]:
    if raw is None:
        return ["value: (null — the original was a tombstone)"]
    try:
        value = serde.decode(raw)
    except (PoisonRecord, RegistryError) as exc:
        head = raw[:PREVIEW_BYTES]
        cut = f" (first {PREVIEW_BYTES} of {len(raw)} bytes)" if len(raw) > PREVIEW_BYTES else ""
        return [f"value (undecodable: {exc}; {len(raw)} bytes):", f"  utf-8: {bytes_text(head)}{cut}",
                f"  hex:   {head.hex(' ')}{cut}"]  # fmt: skip
    text = json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)
    return [f"value (schema id {AvroSerde.schema_id_of(raw)}):", *(f"  {line}" for line in text.splitlines())]


def outcome_line(o: ReplayOutcome) -> str:
    """``id  coordinates  connector  status: detail`` — one per replayed dead letter."""
    detail = " ".join(o.detail.split())  # a multi-line database error still makes one line
    return f"{o.id[:8]}  {o.coordinates}  {o.connector}  {o.status}" + (f": {detail}" if detail else "")


def outcome_summary(outcomes: Sequence[ReplayOutcome], dry_run: bool) -> str:
    """``N dead letters: 3 applied, 1 already applied, ...`` (the order the statuses first appear)."""
    counts = Counter(o.status for o in outcomes)
    what = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"{'dry run, nothing written — ' if dry_run else ''}{len(outcomes)} dead letter(s): {what}"
