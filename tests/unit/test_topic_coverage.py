"""Every catalogue topic has a producer and a consumer among the built-in components, as their configuration
examples configure them (the spec's ``reads`` / ``writes`` on the example's config). A topic nobody writes or
nobody reads is a promise the bus does not keep; the few that belong to work elsewhere are named here."""

from __future__ import annotations

from pathlib import Path

from bizbus.catalogue import load_catalogue
from bizbus.host.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
ELSEWHERE = {
    "bizbus.hr.attendance.v1": "payroll (F9) is not built; attendance belongs to the HR / payroll work",
}


def example_components():
    """(component type, reads, writes) of every component in every example pipeline of the repository."""
    files = sorted((ROOT / "deploy" / "examples").glob("*.yaml")) + [ROOT / "deploy" / "compose" / "pipeline.yaml"]
    for path in files:
        for c in load_pipeline(path).components:
            yield c.type.name, set(c.type.reads(c.config)), set(c.type.writes(c.config))


def test_every_topic_has_a_producer_and_a_consumer():
    catalogue = load_catalogue(ROOT / "deploy" / "topics.yaml")
    written: set[str] = set()
    read: set[str] = set()
    for _name, reads, writes in example_components():
        written |= writes
        read |= reads
    internal = {t.name for t in catalogue.topics if t.internal}
    topics = set(catalogue.names()) - set(ELSEWHERE) - internal - {"bizbus.ops.dead-letter.v1"}
    assert sorted(topics - written) == [], "topics no example pipeline writes"
    assert sorted(topics - read) == [], "topics no example pipeline reads"
