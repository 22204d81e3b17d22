"""`bizbus check` cross-checks topics and secret variables named by the component specs (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bizbus.catalogue import load_catalogue
from bizbus.cli.main import app
from bizbus.errors import ConfigError
from bizbus.host import pipeline as pipeline_mod
from bizbus.host.components import ComponentSpec, _Registry
from bizbus.host.crosscheck import cross_check
from bizbus.host.pipeline import load_pipeline
from bizbus.settings import PROJECT_ROOT

CATALOGUE = PROJECT_ROOT / "deploy" / "topics.yaml"
# a fake type on the sample source's class and config: it reads its `topic`, writes a fixed one and needs
# a token named in the environment
FAKE = ComponentSpec(
    "fake-copier", "source", "bizbus.connectors.sources.sample.connector:SampleEventsSource", "test only",
    reads=lambda c: (c.topic,), writes=lambda c: ("bizbus.nowhere.v1", "bizbus.pm.task.v1"),
    secrets=lambda c: ("FAKE_TOKEN",),
)  # fmt: skip
PIPELINE = """version: 1
connectors:
  - name: copier
    type: fake-copier
    config: {topic: bizbus.pm.timesheet.v1}
  - name: spare
    type: fake-copier
    enabled: false
    config: {topic: bizbus.not.there.v1}
"""


@pytest.fixture
def pipeline_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(pipeline_mod, "COMPONENT_TYPES", _Registry((FAKE,)))
    monkeypatch.delenv("FAKE_TOKEN", raising=False)
    monkeypatch.delenv("FAKE_TOKEN_FILE", raising=False)
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE, encoding="utf-8")
    return path


def test_missing_topic_and_secret_are_reported(pipeline_file: Path, tmp_path: Path) -> None:
    pl, cat = load_pipeline(pipeline_file), load_catalogue(CATALOGUE)
    assert cross_check(pl, cat, {}) == [
        "copier (fake-copier) writes topic 'bizbus.nowhere.v1', which is not in the catalogue",
        "copier (fake-copier) needs the secret variable FAKE_TOKEN (or FAKE_TOKEN_FILE); it is not set",
    ]  # the disabled component's topic is not checked
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    assert cross_check(pl, cat, {"FAKE_TOKEN_FILE": str(secret)})[1:] == []
    assert cross_check(pl, cat, {"FAKE_TOKEN": "x"})[1:] == []
    assert cross_check(pl, cat, {"FAKE_TOKEN_FILE": str(tmp_path / "gone")})[1:] == [
        f"copier (fake-copier): FAKE_TOKEN_FILE={tmp_path / 'gone'} is not a readable file"
    ]


def test_check_warns_offline_and_fails_with_strict(pipeline_file: Path) -> None:
    runner = CliRunner()
    args = ["check", "--pipeline", str(pipeline_file), "--topics", str(CATALOGUE)]
    warned = runner.invoke(app, args)
    assert warned.exit_code == 0, warned.output
    assert "warning: copier (fake-copier) writes topic 'bizbus.nowhere.v1'" in warned.output
    assert "warning: copier (fake-copier) needs the secret variable FAKE_TOKEN" in warned.output
    assert "(2 warnings; --strict fails on them)" in warned.output
    strict = runner.invoke(app, [*args, "--strict"])
    assert isinstance(strict.exception, ConfigError)  # main() prints it and exits 2
    assert "bizbus.nowhere.v1" in str(strict.exception) and "FAKE_TOKEN" in str(strict.exception)


def test_a_clean_pipeline_passes_strict(pipeline_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = ComponentSpec(FAKE.name, FAKE.kind, FAKE.target, FAKE.summary, reads=FAKE.reads, secrets=FAKE.secrets)
    monkeypatch.setattr(pipeline_mod, "COMPONENT_TYPES", _Registry((clean,)))
    monkeypatch.setenv("FAKE_TOKEN", "x")
    result = CliRunner().invoke(app, ["check", "--strict", "-p", str(pipeline_file), "--topics", str(CATALOGUE)])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
