"""The topic catalogue file."""

from __future__ import annotations

from pathlib import Path

import pytest
from bizbus.schemas import catalog

from bizbus.catalogue import load_catalogue, retention_ms
from bizbus.errors import ConfigError
from bizbus.settings import PROJECT_ROOT

CATALOGUE = PROJECT_ROOT / "deploy" / "topics.yaml"


def test_shipped_catalogue_covers_every_canonical_event() -> None:
    cat = load_catalogue(CATALOGUE)
    carried = {t.value_schema for t in cat.topics}
    assert set(catalog.top_level_names()) <= carried
    for t in cat.topics:
        assert t.owner and t.description and t.key
        if t.cleanup_policy == "compact":
            assert t.retention == "forever"
    md = [t for t in cat.topics if t.name.startswith("bizbus.md.")]
    assert md and all(t.cleanup_policy == "compact" for t in md)
    assert cat.get("bizbus.pm.timesheet.v1").subject == "bizbus.pm.timesheet.v1-value"


def test_retention_parsing() -> None:
    assert retention_ms("30d") == 30 * 86_400_000
    assert retention_ms("90m") == 5_400_000
    assert retention_ms("forever") == -1
    with pytest.raises(ValueError, match="not a duration"):
        retention_ms("30 days")


def test_topic_config_renders_kafka_names() -> None:
    voucher = load_catalogue(CATALOGUE).get("bizbus.finance.voucher.v1")
    conf = voucher.topic_config()
    assert conf["cleanup.policy"] == "delete"
    assert conf["retention.ms"] == str(400 * 86_400_000)
    assert conf["min.insync.replicas"] == "2"


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "topics.yaml"
    p.write_text("version: 1\ntopics:\n" + body)
    return p


def test_bad_topic_name_and_unknown_schema(tmp_path: Path) -> None:
    p = _write(tmp_path, """  - name: Timesheets
    description: not following the naming rule
    owner: x
    value_schema: bizbus.pm.TimesheetEntry
    key: k
""")
    msg = str(pytest.raises(ConfigError, load_catalogue, p).value)
    assert f"{p}:3: topics[0].name: String should match pattern" in msg
    p = _write(tmp_path, """  - name: bizbus.pm.thing.v1
    description: a schema that does not exist
    owner: x
    value_schema: bizbus.pm.Nope
    key: k
""")
    assert "value_schema bizbus.pm.Nope not found" in str(pytest.raises(ConfigError, load_catalogue, p).value)


def test_unknown_key_and_duplicate(tmp_path: Path) -> None:
    entry = """  - name: bizbus.pm.thing.v1
    description: a thing that happened
    owner: x
    value_schema: bizbus.pm.TimesheetEntry
    key: k
"""
    p = _write(tmp_path, entry + "    partitons: 3\n")
    assert f"{p}:8: topics[0].partitons: unknown key" in str(pytest.raises(ConfigError, load_catalogue, p).value)
    p = _write(tmp_path, entry + entry)
    assert "declared twice" in str(pytest.raises(ConfigError, load_catalogue, p).value)
