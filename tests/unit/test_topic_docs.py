"""Topic pages for other teams (`bizbus topics describe`, docs/topics.md) and the ACLs derived from the
catalogue's readers (kafka-acls.sh, Strimzi KafkaUsers, the probe's verdicts). No broker needed."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bizbus.schemas import catalog
from typer.testing import CliRunner

from bizbus.catalogue import Catalogue, TopicSpec, load_catalogue
from bizbus.cli.main import app
from bizbus.docgen import acls, refdocs, topicdocs
from bizbus.errors import BizbusError, BrokerError
from bizbus.jsonavro import from_json
from bizbus.settings import PROJECT_ROOT

CAT = load_catalogue(PROJECT_ROOT / "deploy" / "topics.yaml")
TIMESHEET = CAT.get("bizbus.pm.timesheet.v1")


def _flat(text: str) -> str:
    return " ".join(text.split())


def _raw_fields(full_name: str) -> list[dict]:
    return json.loads((catalog.AVRO_DIR / f"{full_name}.avsc").read_text(encoding="utf-8"))["fields"]


# ------------------------------------------------------------------------------------------ describe


def test_describe_shows_the_catalogue_entry() -> None:
    text = topicdocs.describe(TIMESHEET)
    lines = text.splitlines()
    assert lines[0] == "bizbus.pm.timesheet.v1" and TIMESHEET.description in text
    expected = {"owner": "pm-integration", "value schema": "bizbus.pm.TimesheetEntry", "partitions": "6",
                "cleanup policy": "delete", "readers": "finance, hr, bi"}  # fmt: skip
    for key, value in expected.items():
        assert re.search(rf"^  {key} +{re.escape(value)}$", text, re.M), key
    assert re.search(r"^  replication +3 ", text, re.M) and re.search(r"^  retention +90d ", text, re.M)
    assert re.search(r"^  compatibility +BACKWARD: ", text, re.M)
    assert re.search(r"^  subject +bizbus\.pm\.timesheet\.v1-value ", text, re.M)
    assert re.search(r"^  key +project key; a UTF-8 string$", text, re.M)


def test_describe_lists_every_field_with_its_doc_and_nested_meta() -> None:
    flat = _flat(topicdocs.describe(TIMESHEET))
    for f in _raw_fields("bizbus.pm.TimesheetEntry") + _raw_fields("bizbus.common.EventMeta"):
        assert _flat(f["doc"]) in flat, f["name"]
    rows = {r.path: r for r in topicdocs.page(TIMESHEET).fields}
    assert [p for p in rows if p.startswith("meta.")] == [
        "meta.event_id", "meta.causation_id", "meta.correlation_id", "meta.source_system", "meta.occurred_at",
        "meta.trace"]  # fmt: skip
    assert rows["meta"].type == "record bizbus.common.EventMeta"
    assert rows["meta.occurred_at"].type == "timestamp-millis"
    assert rows["meta.causation_id"].type == "null | string"
    assert rows["meta.trace"].type == "map<string, string>"
    assert rows["hours"].type == "decimal(9,2)" and rows["work_date"].type == "date"
    assert rows["op"].type == "enum bizbus.common.ChangeOp {CREATED, UPDATED, DELETED}"


def test_array_items_and_optional_decimals_are_expanded() -> None:
    rows = {r.path: r for r in topicdocs.page(CAT.get("bizbus.finance.voucher.v1")).fields}
    assert rows["lines"].type == "array<record bizbus.finance.VoucherLine>"
    assert rows["lines[].debit"].type == "decimal(18,2)"
    assert rows["exchange_rate"].type == "null | decimal(18,6)"
    line_docs = {f["name"]: _flat(f["doc"]) for f in _raw_fields("bizbus.finance.VoucherLine")}
    assert {
        p.removeprefix("lines[]."): r.doc for p, r in rows.items() if p.startswith("lines[].")
    } == line_docs


@pytest.mark.parametrize("spec", CAT.topics, ids=lambda s: s.name)
def test_the_example_is_json_that_fits_the_schema(spec: TopicSpec) -> None:
    """The example is plain JSON (decimals and dates as strings) that `bizbus produce` turns into the sample."""
    page = topicdocs.page(spec)
    parsed = json.loads(page.example_json)
    record = from_json(catalog.load(spec.value_schema), parsed)
    catalog.validate(spec.value_schema, record)  # fastavro validation plus the decimal precision check
    assert record == catalog.sample(spec.value_schema)
    assert "\n".join("  " + line for line in page.example_json.splitlines()) in topicdocs.describe(spec)


def test_describe_says_how_to_consume() -> None:
    flat = _flat(topicdocs.describe(TIMESHEET))
    assert "`<team>-<purpose>`, e.g. `finance-timesheet-reader`" in flat
    assert "subject `bizbus.pm.timesheet.v1-value`" in flat and "AvroDeserializer" in flat
    assert "de-duplicate by `meta.event_id`" in flat
    assert "deploy/examples/other-team-consumer.py bizbus.pm.timesheet.v1" in flat
    compacted = _flat(topicdocs.describe(CAT.get("bizbus.md.employee.v1")))
    assert "forever (compacted: the latest record per key is kept)" in compacted
    assert "read from the beginning" in compacted


def test_markdown_page_has_an_index_and_a_section_per_topic() -> None:
    page = topicdocs.render_page(CAT)
    index = [line for line in page.splitlines() if line.startswith("| [`bizbus.")]
    assert [re.match(r"\| \[`([^`]+)`\]", line).group(1) for line in index] == CAT.names()  # type: ignore[union-attr]
    for line in index:
        name, anchor = re.match(r"\| \[`([^`]+)`\]\(#([^)]+)\)", line).groups()  # type: ignore[union-attr]
        assert anchor == name.replace(".", "")
    sections = re.findall(r"^## `([^`]+)`$", page, re.M)
    assert sections == CAT.names()
    assert "| `meta.event_id` | `string` |" in page and "| `lines[].debit` | `decimal(18,2)` |" in page
    assert "| `meta.causation_id` | `null \\| string` |" in page  # a pipe inside a table cell is escaped
    assert page.count("```json") == len(CAT.topics)
    assert (
        "| key | &lt;warehouse>/&lt;material code>; a UTF-8 string |" in page
    )  # not swallowed as an HTML tag
    assert "`array<record bizbus.common.DocumentLine>`" in page  # inside code spans nothing is escaped


def test_generated_files_are_registered() -> None:
    files = refdocs.generated(CAT)
    assert files[topicdocs.TOPICS_PAGE] == topicdocs.render_page(CAT)
    assert files[acls.KAFKA_ACLS_SCRIPT] == acls.render_kafka_cli(CAT)
    assert files[acls.STRIMZI_USERS] == acls.render_strimzi(CAT)


def test_cli_describe() -> None:
    result = CliRunner().invoke(app, ["topics", "describe", "bizbus.pm.timesheet.v1"])
    assert result.exit_code == 0, result.output
    assert result.output == topicdocs.describe(TIMESHEET)


def test_cli_describe_unknown_topic_lists_the_known_ones() -> None:
    p = subprocess.run([sys.executable, "-m", "bizbus", "topics", "describe", "bizbus.pm.timesheets.v1"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 2 and p.stdout == ""
    assert "Traceback" not in p.stderr
    assert (
        "error: topic 'bizbus.pm.timesheets.v1' is not in the catalogue; known: bizbus.pm.project.v1,"
        in p.stderr
    )
    assert all(name in p.stderr for name in CAT.names())


# ------------------------------------------------------------------------------------------ ACLs

_READ = re.compile(r"--allow-principal User:(\S+) --operation Read --operation Describe --topic (\S+)$")
_GROUP = re.compile(
    r"--allow-principal User:(\S+) --operation Read --resource-pattern-type prefixed --group (\S+)$"
)


def _expected_reads(cat: Catalogue) -> set[tuple[str, str]]:
    return {(team, spec.name) for spec in cat.topics for team in spec.readers}


def test_kafka_cli_grants_exactly_the_readers() -> None:
    lines = [line for line in acls.render_kafka_cli(CAT).splitlines() if line.startswith("kafka-acls.sh ")]
    assert all(
        '--bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" "${CONFIG[@]}" --add ' in line for line in lines
    )
    reads = [m.groups() for line in lines if (m := _READ.search(line))]
    assert len(reads) == len(set(reads)) and set(reads) == _expected_reads(CAT)
    groups = {m.groups() for line in lines if (m := _GROUP.search(line))}
    teams = {team for spec in CAT.topics for team in spec.readers}
    assert groups == {(team, f"{team}-") for team in teams} | {("bizbus", "bizbus-")}
    writes = {line.rsplit(" ", 1)[1] for line in lines if "User:bizbus --operation Write --operation Describe" in line
              and "--topic " in line}  # fmt: skip
    assert writes == set(CAT.names())
    assert any(
        line.endswith("--allow-principal User:bizbus --operation IdempotentWrite --cluster") for line in lines
    )
    assert not any(
        "--allow-principal User:bizbus" in line and "--topic" in line and "Read" not in line for line in lines
    )


def test_a_new_reader_gets_exactly_its_topic() -> None:
    spec = TIMESHEET.model_copy(update={"readers": ("audit",)})
    cat = Catalogue(topics=(spec, CAT.get("bizbus.pm.project.v1")))
    lines = acls.render_kafka_cli(cat).splitlines()
    assert [m.groups() for line in lines if (m := _READ.search(line)) and m.group(1) == "audit"] == [
        ("audit", "bizbus.pm.timesheet.v1")]  # fmt: skip
    assert {m.groups() for line in lines if (m := _READ.search(line))} == _expected_reads(cat)


def test_the_script_runs_kafka_acls_once_per_rule(tmp_path: Path) -> None:
    """The generated script with a stand-in kafka-acls.sh that records its arguments."""
    script = tmp_path / "acls.sh"
    script.write_text(acls.render_kafka_cli(CAT), encoding="utf-8")
    fake = tmp_path / "bin" / "kafka-acls.sh"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s|" "$@" >> "$CALLS"\necho >> "$CALLS"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "CALLS": str(calls),
           "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9093", "KAFKA_ADMIN_CONFIG": str(tmp_path / "admin properties")}  # fmt: skip
    p = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    argvs = [line.rstrip("|").split("|") for line in calls.read_text().splitlines()]
    assert len(argvs) == len(acls.rules(CAT))
    head = [
        "--bootstrap-server",
        "kafka-1:9093",
        "--command-config",
        str(tmp_path / "admin properties"),
        "--add",
    ]
    assert all(argv[:5] == head for argv in argvs)
    assert ["--allow-principal", "User:hr", "--operation", "Read", "--operation", "Describe", "--topic",
            "bizbus.pm.timesheet.v1"] in [argv[5:] for argv in argvs]  # fmt: skip

    env.pop("KAFKA_BOOTSTRAP_SERVERS")
    calls.unlink()
    p = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "set KAFKA_BOOTSTRAP_SERVERS" in p.stderr and not calls.exists()


_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_STRIMZI_OPS = {"Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "AlterConfigs",
                "DescribeConfigs", "IdempotentWrite", "All"}  # fmt: skip


@pytest.mark.parametrize("auth", ["tls", "scram-sha-512"])
def test_strimzi_users_are_valid_kafkausers_with_exactly_the_readers(auth: str) -> None:
    docs = list(yaml.safe_load_all(acls.render_strimzi(CAT, auth=auth, cluster="prod-kafka")))  # type: ignore[arg-type]
    teams = list(dict.fromkeys(team for spec in CAT.topics for team in spec.readers))
    assert [d["metadata"]["name"] for d in docs] == [*teams, "bizbus"]
    reads: set[tuple[str, str]] = set()
    for d in docs:
        assert set(d) == {"apiVersion", "kind", "metadata", "spec"}
        assert d["apiVersion"] == "kafka.strimzi.io/v1beta2" and d["kind"] == "KafkaUser"
        assert _DNS_1123.match(d["metadata"]["name"])
        assert d["metadata"]["labels"]["strimzi.io/cluster"] == "prod-kafka"
        assert d["spec"]["authentication"] == {"type": auth}
        authz = d["spec"]["authorization"]
        assert authz["type"] == "simple" and authz["acls"]
        for acl in authz["acls"]:
            res = acl["resource"]
            assert set(acl) == {"resource", "operations", "host"} and acl["host"] == "*"
            assert set(acl["operations"]) <= _STRIMZI_OPS
            if res["type"] == "cluster":
                assert res == {"type": "cluster"}
            else:
                assert res["type"] in ("topic", "group", "transactionalId") and res["patternType"] in (
                    "literal",
                    "prefix",
                )
            if d["metadata"]["name"] != "bizbus" and res["type"] == "topic":
                assert res["patternType"] == "literal" and acl["operations"] == ["Read", "Describe"]
                reads.add((d["metadata"]["name"], res["name"]))
            if d["metadata"]["name"] != "bizbus" and res["type"] == "group":
                assert res == {"type": "group", "name": f"{d['metadata']['name']}-", "patternType": "prefix"}
        if d["metadata"]["name"] != "bizbus":
            assert {a["resource"]["type"] for a in authz["acls"]} == {
                "topic",
                "group",
            }  # nothing more for readers
    assert reads == _expected_reads(CAT)
    bizbus_acls = docs[-1]["spec"]["authorization"]["acls"]
    assert {"resource": {"type": "cluster"}, "operations": ["IdempotentWrite"], "host": "*"} in bizbus_acls


def test_cli_acls_renders_both_formats() -> None:
    runner = CliRunner()
    kafka = runner.invoke(app, ["topics", "acls"])
    assert kafka.exit_code == 0 and kafka.output == acls.render_kafka_cli(CAT)
    strimzi = runner.invoke(app, ["topics", "acls", "--format", "strimzi", "--auth", "scram-sha-512"])
    assert strimzi.exit_code == 0 and strimzi.output == acls.render_strimzi(CAT, auth="scram-sha-512")
    bad = runner.invoke(app, ["topics", "acls", "--format", "json"])
    assert isinstance(bad.exception, BizbusError) and "--format must be kafka-cli or strimzi" in str(
        bad.exception
    )


# ------------------------------------------------------------------------------------------ probe verdicts


def _answer(**out: object) -> str:
    return "some librdkafka noise\n" + json.dumps(out) + "\n"


def test_probe_verdicts() -> None:
    crash = acls.verdict(-6, "", "b:9092")
    assert not crash.supported and "crashed (signal SIGABRT)" in crash.reason
    off = acls.verdict(
        0, _answer(cluster_id="x", acl_error=["SECURITY_DISABLED", "No Authorizer is configured"]), "b"
    )
    assert not off.supported and "SECURITY_DISABLED" in off.reason
    tansu = acls.verdict(0, _answer(cluster_id="bizbus-embedded-tansu", acls=0, broker_configs=0), "b")
    assert not tansu.supported and "Tansu" in tansu.reason
    silent = acls.verdict(0, _answer(cluster_id="abc", acls=0, broker_configs=0), "b")
    assert not silent.supported and "no broker configuration" in silent.reason
    no_authorizer = acls.verdict(0, _answer(cluster_id="abc", acls=0, broker_configs=250, authorizer=""), "b")
    assert not no_authorizer.supported
    real = acls.verdict(0, _answer(cluster_id="abc", acls=3, broker_configs=250,
                                   authorizer="org.apache.kafka.metadata.authorizer.StandardAuthorizer"), "b")  # fmt: skip
    assert real.supported and "StandardAuthorizer" in real.reason and "3 ACL binding(s)" in real.reason
    no_configs_access = acls.verdict(0, _answer(cluster_id="abc", acls=0, config_error=["X", "denied"]), "b")
    assert no_configs_access.supported  # DescribeAcls alone answered: an authorizer is there
    with pytest.raises(BrokerError, match="cannot reach the broker at b:9092"):
        acls.verdict(0, _answer(unreachable="timed out"), "b:9092")
    with pytest.raises(BizbusError, match="may not describe or change ACLs"):
        acls.verdict(0, _answer(acl_error=["CLUSTER_AUTHORIZATION_FAILED", "denied"]), "b")


def test_every_rule_becomes_admin_client_bindings() -> None:
    from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

    rules = acls.rules(CAT)
    made = [(rule, b) for rule in rules for b in acls.bindings(rule)]
    assert len(made) == sum(len(rule.operations) for rule in rules)
    cluster = [b for rule, b in made if rule.resource == "cluster"]
    assert [(b.restype, b.name, b.operation, b.principal) for b in cluster] == [
        (ResourceType.BROKER, "kafka-cluster", AclOperation.IDEMPOTENT_WRITE, "User:bizbus")]  # fmt: skip
    groups = {(b.principal, b.name) for rule, b in made if b.restype == ResourceType.GROUP}
    assert all(
        b.resource_pattern_type == ResourcePatternType.PREFIXED
        for _, b in made
        if b.restype == ResourceType.GROUP
    )
    assert ("User:finance", "finance-") in groups and all(b.host == "*" for _, b in made)
