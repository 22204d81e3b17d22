"""Every source, sink and monitor is one folder of one template, and its spec lives there."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from bizbus.connectors.runtime.documents import count_documents, document_kind
from bizbus.connectors.runtime.sink import SinkRecord
from bizbus.connectors.runtime.sinkconfig import SinkRuntimeConfig
from bizbus.schemas import catalog
from prometheus_client import REGISTRY

from bizbus.host.components import BUILTIN, COMPONENT_TYPES, ComponentSpec, load_spec
from bizbus.settings import PROJECT_ROOT

CONNECTORS = PROJECT_ROOT / "connectors"
KINDS = {"sources": "source", "sinks": "sink", "monitors": "monitor"}
TEMPLATE = {"__init__.py", "spec.py", "connector.py", "config.py"}
OPTIONAL = {"webhook.py", "convert.py", "mapping.py", "api.py", "backfill.py", "state.py"}
EXTRA = {"tryton": {"writer.py", "accounting.py", "purchases.py", "requests.py", "sales.py", "module"}}  # an ERP sink with several kinds
MAX_LINES = 400


def vendor_folders() -> list[Path]:
    return sorted(p for kind in KINDS for p in (CONNECTORS / kind).iterdir()
                  if p.is_dir() and p.name != "__pycache__")  # fmt: skip


def test_each_vendor_folder_follows_the_template() -> None:
    folders = vendor_folders()
    assert {p.name for p in folders} >= {"sample", "pg_outbox", "jira", "redmine", "dingtalk", "feishu",
                                         "postgres", "http_api", "tryton", "pg_slots"}  # fmt: skip
    for kind in KINDS:  # nothing but folders (and the package's own __init__) next to them
        loose = {p.name for p in (CONNECTORS / kind).iterdir() if p.is_file()} - {"__init__.py"}
        assert not loose, f"connectors/{kind}: modules outside a vendor folder: {sorted(loose)}"
    for folder in folders:
        names = {p.name for p in folder.iterdir() if p.name != "__pycache__"}
        assert names >= TEMPLATE, f"{folder.name}: lacks {sorted(TEMPLATE - names)}"
        unknown = names - TEMPLATE - OPTIONAL - EXTRA.get(folder.name, set())
        assert not unknown, f"{folder.name}: {sorted(unknown)} are not part of the template"
        assert (folder / "__init__.py").read_text(encoding="utf-8") == "", f"{folder.name}/__init__.py is not empty"
        for module in folder.glob("*.py"):
            lines = len(module.read_text(encoding="utf-8").splitlines())
            assert lines <= MAX_LINES, f"{module.relative_to(PROJECT_ROOT)} has {lines} lines (at most {MAX_LINES})"


def test_builtin_names_where_each_connector_spec_lives() -> None:
    located = {item for item in BUILTIN if isinstance(item, str)}
    for folder in vendor_folders():
        kind = folder.parent.name
        location = f"bizbus.connectors.{kind}.{folder.name}.spec:SPEC"
        assert location in located, f"BUILTIN does not name {location}"
        spec = load_spec(location)
        assert isinstance(spec, ComponentSpec) and spec.kind == KINDS[kind]
        assert spec.target.startswith(f"bizbus.connectors.{kind}.{folder.name}.connector:")
        assert COMPONENT_TYPES[spec.name] is spec
        assert spec.load().Config.__module__.endswith(f"{folder.name}.config")
        if spec.docs:
            assert spec.docs == f"docs/connectors/{folder.name}.md" and (PROJECT_ROOT / spec.docs).is_file()
    documented = {n for n, s in COMPONENT_TYPES.items() if s.docs}
    assert documented >= {"jira", "redmine", "dingtalk", "feishu", "tryton", "pg-outbox"}
    inline = [item for item in BUILTIN if isinstance(item, ComponentSpec)]
    assert not inline, "specs must live in their folders (BUILTIN names where)"


def test_spec_modules_import_no_connector_code() -> None:
    """Listing the component types reads the specs only: a spec imports nothing of its folder at the top."""
    for folder in vendor_folders():
        tree = ast.parse((folder / "spec.py").read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0 and node.module in ("__future__", "typing", "bizbus.host.components",
                                                           "bizbus.secrets"), (folder.name, node.module)  # fmt: skip


CONFIGS: dict[str, tuple[dict[str, Any], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # type: (config, reads, writes, secrets)
    "sample-events": ({"topic": "bizbus.pm.timesheet.v1"}, (), ("bizbus.pm.timesheet.v1",), ()),
    "pg-slot-monitor": ({}, (), (), ()),
    "pg-outbox": ({"dsn": "postgresql://app@db/erp", "topics": ["bizbus.pm.task.v1"]}, (), ("bizbus.pm.task.v1",), ()),
    "jira": ({"base_url": "https://acme.atlassian.net", "email": "bot@acme.example", "token_env": "JIRA_T",
              "secret_env": "JIRA_S", "company": "C1"}, (),
             ("bizbus.pm.project.v1", "bizbus.pm.task.v1", "bizbus.pm.timesheet.v1"), ("JIRA_T", "JIRA_S")),
    "redmine": ({"base_url": "https://redmine.example", "api_key_env": "RM_KEY", "company": "C1"}, (),
                ("bizbus.pm.project.v1", "bizbus.pm.task.v1", "bizbus.pm.timesheet.v1"), ("RM_KEY",)),
    "dingtalk": ({"token_env": "DT_T", "aes_key_env": "DT_A", "app_key": "k", "app_secret_env": "DT_S"}, (),
                 ("bizbus.oa.approval.v1",), ("DT_T", "DT_A", "DT_S")),
    "feishu": ({"app_id": "cli_1", "app_secret_env": "FS_S", "verification_token_env": "FS_V",
                "encrypt_key_env": "FS_E"}, (), ("bizbus.oa.approval.v1",), ("FS_S", "FS_V", "FS_E")),
    "pg-table": ({"topics": ["bizbus.pm.timesheet.v1"], "dsn": "postgresql://u@h/d", "table": "public.t",
                  "columns": {"id": "$effect_id"}}, ("bizbus.pm.timesheet.v1",), (), ()),
    "http-api": ({"topics": ["bizbus.pm.timesheet.v1"], "base_url": "https://erp.example", "create_path": "/o",
                  "lookup_path": "/o", "body": {"h": "hours"}, "token_env": "ERP_TOKEN"},
                 ("bizbus.pm.timesheet.v1",), (), ("ERP_TOKEN",)),
    "tryton": ({"url": "http://127.0.0.1:8000/db/", "password_env": "TRY_PW"},
               ("bizbus.md.cost-center.v1", "bizbus.finance.voucher.v1", "bizbus.purchase.order.v1"), (), ("TRY_PW",)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_spec_derives_topics_and_secrets_from_the_config(name: str) -> None:
    raw, reads, writes, secrets = CONFIGS[name]
    spec = COMPONENT_TYPES[name]
    config = spec.config_model().model_validate(raw)
    assert (spec.reads(config), spec.writes(config), spec.secrets(config)) == (reads, writes, secrets)


def test_sinks_share_the_runtime_settings_with_their_own_defaults() -> None:
    expected = {  # (batch_size, its maximum, batch_timeout_seconds, topics required) as before the move
        "pg-table": (500, 50_000, 0.2, True), "http-api": (100, 10_000, 0.2, True), "tryton": (200, 10_000, 0.5, False),
    }  # fmt: skip
    for name, (size, most, timeout, topics_required) in expected.items():
        model = COMPONENT_TYPES[name].config_model()
        assert issubclass(model, SinkRuntimeConfig)
        fields = model.model_fields
        assert {"topics", "tasks_max", "batch_size", "batch_timeout_seconds", "retry"} <= set(fields)
        assert (fields["batch_size"].default, fields["batch_timeout_seconds"].default) == (size, timeout)
        assert fields["tasks_max"].default == 1 and fields["topics"].is_required() is topics_required
        assert any(getattr(m, "le", None) == most for m in fields["batch_size"].metadata), name


def _counted(doc: str) -> float:
    return REGISTRY.get_sample_value("bizbus_documents_total", {"component": "doc-test", "document": doc}) or 0.0


def test_document_counting_is_by_canonical_schema() -> None:
    voucher = catalog.sample("bizbus.finance.Voucher")
    cost_center = {**catalog.sample("bizbus.md.CostCenter"), "active": False}
    timesheet = catalog.sample("bizbus.pm.TimesheetEntry")
    assert (document_kind(voucher), document_kind(cost_center), document_kind(timesheet)) == (
        "voucher_reversal" if voucher.get("reversal_of") else "voucher", "cost_center_closed", None)  # fmt: skip
    kind = document_kind(voucher)
    records = [SinkRecord("t", 0, i, None, v, b"", [], None) for i, v in enumerate((voucher, cost_center, timesheet))]
    assert len({r.effect_id for r in records}) == 3
    before = (_counted(kind), _counted("cost_center_closed"))
    count_documents("doc-test", records, {r.effect_id for r in records})
    count_documents("doc-test", records, set())  # nothing applied: nothing counted
    assert (_counted(kind), _counted("cost_center_closed")) == (before[0] + 1, before[1] + 1)
    debit = sum(Decimal(str(line["debit"] or 0)) for line in voucher["lines"])
    amount = REGISTRY.get_sample_value("bizbus_voucher_amount_total",
                                       {"component": "doc-test", "document": kind, "currency": voucher["currency"]})  # fmt: skip
    assert amount == pytest.approx(float(debit))
