"""The pipeline file: typed component config, errors with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bizbus.errors import ConfigError
from bizbus.host.pipeline import load_pipeline
from bizbus.settings import PROJECT_ROOT


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pipeline.yaml"
    p.write_text(text)
    return p


def test_shipped_pipeline_is_valid() -> None:
    pl = load_pipeline(PROJECT_ROOT / "deploy" / "pipeline.yaml")
    assert [c.name for c in pl.enabled()] == ["demo-timesheets"]
    cfg = pl.enabled()[0].config
    assert cfg.topic == "bizbus.pm.timesheet.v1"  # typed, not a dict


def test_unknown_config_key_names_file_line_and_field(tmp_path: Path) -> None:
    p = write(tmp_path, """version: 1
connectors:
  - name: demo
    type: sample-events
    config:
      topic: bizbus.pm.timesheet.v1
      rate_per_secnd: 5
""")
    with pytest.raises(ConfigError) as err:
        load_pipeline(p)
    msg = str(err.value)
    assert f"{p}:7: connectors[0].config.rate_per_secnd: unknown key" in msg


def test_wrong_type_and_missing_field(tmp_path: Path) -> None:
    p = write(tmp_path, """connectors:
  - name: a
    type: sample-events
    config: {topic: bizbus.pm.timesheet.v1, rate_per_second: fast}
  - name: b
    type: sample-events
    config: {}
""")
    msg = str(pytest.raises(ConfigError, load_pipeline, p).value)
    assert "connectors[0].config.rate_per_second: Input should be a valid number" in msg
    assert f"{p}:7: connectors[1].config.topic: Field required" in msg


def test_unknown_type_lists_known_types(tmp_path: Path) -> None:
    p = write(tmp_path, "connectors:\n  - name: a\n    type: kafka-magic\n")
    msg = str(pytest.raises(ConfigError, load_pipeline, p).value)
    assert f"{p}:3: connectors[0].type: unknown connector type 'kafka-magic'" in msg
    assert "sample-events" in msg


def test_duplicate_names_and_bad_top_level_key(tmp_path: Path) -> None:
    p = write(tmp_path, """connectors:
  - {name: a, type: sample-events, config: {topic: t}}
  - {name: a, type: sample-events, config: {topic: t}}
""")
    assert "repeated: a" in str(pytest.raises(ConfigError, load_pipeline, p).value)
    p = write(tmp_path, "conectors: []\n")
    assert f"{p}:1: conectors: unknown key" in str(pytest.raises(ConfigError, load_pipeline, p).value)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    p = write(tmp_path, "connectors:\n  - name: a\n   type: [unclosed\n")
    msg = str(pytest.raises(ConfigError, load_pipeline, p).value)
    assert "not valid YAML" in msg and f"{p}:" in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_pipeline(tmp_path / "absent.yaml")


def test_example_pipelines_are_valid() -> None:
    examples = sorted((PROJECT_ROOT / "deploy" / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        pl = load_pipeline(path)
        assert pl.components, path
