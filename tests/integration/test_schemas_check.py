"""`bizbus schemas check`: against git history and against a registry."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from bizbus.schemas import catalog
from bizbus.schemas.check import against_git, against_registry

from bizbus.catalogue import load_catalogue
from bizbus.devstack.stack import register_schemas
from bizbus.errors import SchemaError
from bizbus.serde import AvroSerde
from bizbus.settings import PROJECT_ROOT

CAT = load_catalogue(PROJECT_ROOT / "deploy" / "topics.yaml")
TIMESHEET = "bizbus.pm.TimesheetEntry"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def schema_repo(tmp_path: Path) -> Path:
    avro = tmp_path / "schemas" / "avro"
    shutil.copytree(catalog.AVRO_DIR, avro)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "v1")
    return avro


def _edit(avro: Path, name: str, new_field: dict) -> None:
    path = avro / f"{name}.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append(new_field)
    path.write_text(json.dumps(schema))


def _by_topic(findings):
    return {f.topic: f for f in findings}


def test_git_check_accepts_optional_field_and_refuses_required_one(schema_repo: Path) -> None:
    _edit(schema_repo, TIMESHEET, {"name": "site", "type": ["null", "string"], "default": None, "doc": "site office"})
    f = _by_topic(against_git(CAT, schema_repo))["bizbus.pm.timesheet.v1"]
    assert f.ok and "1 earlier version" in f.compared_with

    _edit(schema_repo, TIMESHEET, {"name": "shift", "type": "string", "doc": "no default: old data cannot be read"})
    findings = _by_topic(against_git(CAT, schema_repo))
    bad = findings["bizbus.pm.timesheet.v1"]
    assert not bad.ok and any("shift" in p for p in bad.problems)
    assert findings["bizbus.finance.voucher.v1"].ok  # untouched schemas stay green


def test_git_check_sees_the_previous_commit_when_the_tree_is_clean(schema_repo: Path) -> None:
    """In CI the working tree equals HEAD: the check compares HEAD with the commits before it."""
    _edit(schema_repo, TIMESHEET, {"name": "shift", "type": "string", "doc": "breaking"})
    repo = schema_repo.parent.parent
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "v2 breaks readers")
    bad = _by_topic(against_git(CAT, schema_repo))["bizbus.pm.timesheet.v1"]
    assert not bad.ok and any("shift" in p for p in bad.problems)


def test_a_schema_that_does_not_parse_is_named(schema_repo: Path) -> None:
    (schema_repo / f"{TIMESHEET}.avsc").write_text('{"type": "record", "name": "TimesheetEntry", "fields": [')
    with pytest.raises(SchemaError) as err:
        against_git(CAT, schema_repo)
    assert f"{TIMESHEET}.avsc: not a valid Avro schema" in str(err.value)


def test_registry_check(registry) -> None:
    register_schemas(AvroSerde({"url": registry.url}), CAT)
    findings = against_registry(CAT, {"url": registry.url})
    assert len(findings) == len(CAT.topics) and all(f.ok for f in findings)
    assert {f.level for f in findings} == {"BACKWARD"}
