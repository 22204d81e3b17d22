"""The topic catalogue: every bizbus topic declared once (deploy/topics.yaml), created and checked from it.

``bizbus topics apply`` creates the topics that are missing and reports drift on existing ones
(partitions, cleanup policy, retention) without changing them; ``bizbus topics list`` prints the
catalogue next to the live state of the cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from bizbus.errors import BrokerError, ConfigError
from bizbus.yamlconf import load_model

TOPIC_NAME = r"^bizbus\.[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*\.v[0-9]+$"
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

Compatibility = Literal[
    "NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"
]


def retention_ms(value: str) -> int:
    """'30d' -> milliseconds; 'forever' -> -1."""
    if value == "forever":
        return -1
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"retention {value!r} is not a duration like 7d, 12h, 90m or 'forever'")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


class TopicSpec(BaseModel):
    """One topic: its shape on the cluster, its contract and who owns and reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, StringConstraints(pattern=TOPIC_NAME)] = Field(
        description="bizbus.<domain>.<event>.v<major>", examples=["bizbus.pm.timesheet.v1"]
    )
    description: str = Field(min_length=10, description="what one record on this topic means")
    owner: str = Field(description="team that owns the topic and its schema")
    value_schema: str = Field(description="full name of the Avro record in schemas/avro/")
    key: str = Field(description="what the record key is (the business key; compacted topics need one)")
    partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=3, ge=1, le=7, description="production value; capped at the broker count")
    cleanup_policy: Literal["delete", "compact"] = "delete"
    retention: str = Field(default="30d", description="7d, 12h, 90m or 'forever'")
    compatibility: Compatibility = "BACKWARD"
    readers: tuple[str, ...] = Field(default=(), description="teams allowed to read (ACLs)")
    config: dict[str, str] = Field(default_factory=dict, description="further topic configs, passed as is")
    internal: bool = Field(default=False, description="a flow's own repartition (step) topic: not a business event "
                           "for other teams; left out of the reporting database and of the producer/consumer check")

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        retention_ms(v)
        return v

    @property
    def subject(self) -> str:
        """Schema registry subject (Confluent TopicNameStrategy)."""
        return f"{self.name}-value"

    def topic_config(self) -> dict[str, str]:
        conf = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(retention_ms(self.retention))}
        conf.update(self.config)
        return conf


class Catalogue(BaseModel):
    """The whole catalogue file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    topics: tuple[TopicSpec, ...]

    @model_validator(mode="after")
    def _unique(self) -> Catalogue:
        seen: set[str] = set()
        for t in self.topics:
            if t.name in seen:
                raise ValueError(f"topic {t.name} is declared twice")
            seen.add(t.name)
        return self

    def get(self, name: str) -> TopicSpec:
        for t in self.topics:
            if t.name == name:
                return t
        raise ConfigError(f"topic {name!r} is not in the catalogue; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [t.name for t in self.topics]

    def for_schema(self, full_name: str) -> list[TopicSpec]:
        return [t for t in self.topics if t.value_schema == full_name]


def load_catalogue(path: Path) -> Catalogue:
    """Read and validate the catalogue; every value schema must exist in schemas/avro/."""
    from bizbus.schemas import catalog as avro  # the .avsc files

    cat, _ = load_model(path, Catalogue)
    known = {p.name.removesuffix(".avsc") for p in avro.schema_files()}
    missing = [f"{t.name}: value_schema {t.value_schema} not found in {avro.AVRO_DIR}" for t in cat.topics
               if t.value_schema not in known]
    if missing:
        raise ConfigError(f"invalid {path}:\n  " + "\n  ".join(missing))
    return cat


@dataclass
class TopicState:
    """The catalogue's view of one topic next to the cluster's."""

    spec: TopicSpec
    exists: bool
    partitions: int | None = None
    config: dict[str, str] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)
    action: str = ""

    @property
    def status(self) -> str:
        if self.action:
            return self.action
        if not self.exists:
            return "missing"
        return "drift" if self.drift else "ok"


def _describe(admin: AdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    futures = admin.describe_configs([ConfigResource("topic", n) for n in names])
    out: dict[str, dict[str, str]] = {}
    for res, fut in futures.items():
        try:
            out[res.name] = {k: v.value for k, v in fut.result(10).items() if v.value is not None}
        except KafkaException:
            out[res.name] = {}
    return out


def live_state(admin: AdminClient, cat: Catalogue) -> list[TopicState]:
    """Compare the catalogue with the cluster (read only)."""
    try:
        md = admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise BrokerError(f"cannot read the cluster's topics: {exc}") from None
    existing = {n: len(t.partitions) for n, t in md.topics.items()}
    configs = _describe(admin, [t.name for t in cat.topics if t.name in existing])
    states = []
    for spec in cat.topics:
        st = TopicState(spec, spec.name in existing, existing.get(spec.name), configs.get(spec.name, {}))
        if st.exists:
            if st.partitions != spec.partitions:
                st.drift.append(f"partitions: cluster {st.partitions}, catalogue {spec.partitions}")
            for key, want in spec.topic_config().items():
                have = st.config.get(key)
                if have is not None and have != want:
                    st.drift.append(f"{key}: cluster {have}, catalogue {want}")
        states.append(st)
    return states


def apply(admin: AdminClient, cat: Catalogue, dry_run: bool = False) -> list[TopicState]:
    """Create missing topics (replication capped at the broker count); report drift, change nothing else."""
    states = live_state(admin, cat)
    brokers = len(admin.list_topics(timeout=10).brokers)
    new = [
        NewTopic(s.spec.name, s.spec.partitions, min(s.spec.replication_factor, brokers), config=s.spec.topic_config())
        for s in states
        if not s.exists
    ]
    if dry_run or not new:
        for s in states:
            s.action = "would create" if (dry_run and not s.exists) else ""
        return states
    results = admin.create_topics(new, operation_timeout=30)
    by_name = {s.spec.name: s for s in states}
    for name, fut in results.items():
        st = by_name[name]
        try:
            fut.result(30)
            st.action = "created"
            rf = min(st.spec.replication_factor, brokers)
            if rf < st.spec.replication_factor:
                st.action += f" (replication {rf}: only {brokers} broker(s))"
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == 36:  # TOPIC_ALREADY_EXISTS: another process was faster
                st.action = "exists"
            else:
                st.action = f"FAILED: {err.str()}"
    return states
