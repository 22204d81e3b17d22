"""Flow mappings (packaged YAML, overrides, errors with file:line), flow configs in the pipeline, state
codec, grace deadlines and the worker's flow plan."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from bizbus.streams.approvals import config as f4
from bizbus.streams.cost_centers import config as f1
from bizbus.streams.labor_cost import config as f2
from bizbus.streams.runtime.config import load_mapping
from bizbus.streams.runtime.grace import GraceClock
from bizbus.streams.runtime.plan import plan_flows
from bizbus.streams.runtime.results import Output, version_gate
from bizbus.streams.runtime.statecodec import dumps_state, loads_state
from pydantic import ValidationError

from bizbus.errors import ConfigError
from bizbus.host.pipeline import load_pipeline


@pytest.mark.parametrize(("config", "file", "model"), [
    (f1.CostCentersConfig, "cost_centers/f1_cost_centers.yaml", f1.CostCenterMapping),
    (f2.LaborCostConfig, "labor_cost/f2_labor_cost.yaml", f2.LaborCostMapping),
    (f4.ApprovalsConfig, "approvals/f4_approvals.yaml", f4.ApprovalsMapping)])  # fmt: skip
def test_packaged_mappings_are_in_the_flows_folder_and_valid(config: type, file: str, model: type) -> None:
    path = config.packaged_mapping()
    assert path.as_posix().endswith(f"/streams/{file}") and path.is_file()
    assert isinstance(load_mapping(path, model), model)


def test_packaged_labor_mapping_has_the_documented_accounts_and_no_invented_rates() -> None:
    m = f2.LaborCostConfig().loaded_mapping()
    assert (m.labor_cost_account, m.accrued_payroll_account, m.rates, m.employee_aliases) == (
        "6601",
        "2211",
        (),
        {},
    )


def test_packaged_approval_mapping_uses_the_chinese_form_labels() -> None:
    t = f4.ApprovalsConfig().loaded_mapping().templates["PROC-PURCHASE-01"]
    assert (t.fields.supplier, t.fields.quantity, t.fields.unit_price, t.number_pattern) == (
        "供应商编码",
        "数量",
        "单价",
        "OA-{instance_id}",
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def errors_of(path: Path, model: type) -> str:
    with pytest.raises(ConfigError) as info:
        load_mapping(path, model)
    return str(info.value)


def test_an_account_written_as_a_number_names_file_line_and_field(tmp_path: Path) -> None:
    p = write(tmp_path, "f2.yaml", 'voucher_type: "记"\nlabor_cost_account: 6601\n')
    assert f"{p}:2: labor_cost_account:" in errors_of(p, f2.LaborCostMapping)


def test_a_rate_written_as_a_float_is_refused_with_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, "f2.yaml", "rates:\n  - employee: E1\n    rate: 186.5\n    valid_from: 2026-01-01\n")
    text = errors_of(p, f2.LaborCostMapping)
    assert f"{p}:3: rates[0].rate:" in text and "quoted strings" in text


def test_unknown_keys_placeholders_and_time_zones_are_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "f1.yaml", 'code_pattern: "CC-{projekt}"\ntimezone: "Mars/Olympus"\ncolour: red\n')
    text = errors_of(p, f1.CostCenterMapping)
    assert f"{p}:1: code_pattern:" in text and "{projekt}" in text
    assert f"{p}:2: timezone:" in text and "Mars/Olympus" in text
    assert f"{p}:3: colour: unknown key" in text


def test_a_template_without_required_fields_names_the_nested_path(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "f4.yaml",
        "templates:\n  T1:\n    document: purchase_order\n    fields:\n      supplier: 供应商\n",
    )
    text = errors_of(p, f4.ApprovalsMapping)
    assert f"{p}:5: templates.T1.fields.material: Field required" in text


def test_a_broken_yaml_file_names_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, "f4.yaml", "templates:\n  T1: [unclosed\n")
    assert f"{p}:" in errors_of(p, f4.ApprovalsMapping) and "not valid YAML" in errors_of(
        p, f4.ApprovalsMapping
    )


def test_flow_config_loads_its_override_mapping(tmp_path: Path) -> None:
    p = write(tmp_path, "f2.yaml", 'labor_cost_account: "5001.01"\n')
    cfg = f2.LaborCostConfig(mapping=p, master_data_grace_seconds=1)
    assert cfg.loaded_mapping().labor_cost_account == "5001.01" and cfg.mapping_path == p
    with pytest.raises(ValidationError):
        f2.LaborCostConfig(master_data_grace_seconds=-1)


def test_bizbus_check_path_reports_a_broken_mapping_with_both_files(tmp_path: Path) -> None:
    bad = write(tmp_path, "f2.yaml", "labor_cost_account: 6601\n")
    pipeline = write(tmp_path, "pipeline.yaml", f"version: 1\nflows:\n  - name: labor\n    type: labor-cost\n"
                                                f"    config: {{mapping: {bad}}}\n")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_pipeline(pipeline)
    text = str(info.value)
    assert f"{pipeline}:5" in text and f"{bad}:1: labor_cost_account:" in text


def test_a_missing_mapping_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read mapping"):
        f1.CostCentersConfig(mapping=tmp_path / "nope.yaml")


def test_state_codec_keeps_types() -> None:
    state = {"version": 3, "amount": Decimal("925.93"), "day": date(2026, 3, 1), "none": None, "raw": b"\x00\x01",
             "at": datetime(2026, 3, 1, 2, 3, 4, 123000, tzinfo=UTC), "lines": [{"debit": Decimal("0.00")}], "中": "文"}  # fmt: skip
    back = loads_state(dumps_state(state))
    assert back == state and str(back["lines"][0]["debit"]) == "0.00" and back["at"].tzinfo is not None
    assert dumps_state(state) == dumps_state(back)  # stable bytes
    assert loads_state(None) is None


def test_state_written_as_json_by_an_earlier_version_is_still_read() -> None:
    legacy = (b'{"amount":{"$dec":"925.93"},"at":{"$ts":"2026-03-01T02:03:04+00:00"},"day":{"$date":"2026-03-01"},'
              b'"raw":{"$b64":"AAE="},"version":3}')  # fmt: skip
    assert loads_state(legacy) == {"version": 3, "amount": Decimal("925.93"), "day": date(2026, 3, 1), "raw": b"\x00\x01",
                                   "at": datetime(2026, 3, 1, 2, 3, 4, tzinfo=UTC)}  # fmt: skip
    assert dumps_state({"a": 1})[:1] == b"\x01"  # new states are MessagePack


def test_a_state_refuses_a_value_it_could_not_read_back() -> None:
    with pytest.raises(TypeError, match="cannot hold set"):
        dumps_state({"tags": {"a", "b"}})


def test_version_gate() -> None:
    out = Output("t", "k", {"a": 1})
    state = {"version": 5, "outputs": [out.to_state()]}
    assert version_gate(None, 1) is None
    assert version_gate(state, 6) is None
    assert version_gate(state, 4).outcome == "skipped_stale"
    same = version_gate(state, 5)
    assert same.outcome == "reemitted" and same.outputs == (out,)


def test_grace_period_is_shared_by_records_missing_the_same_key() -> None:
    now = [100.0]
    grace = GraceClock(20.0, lambda: now[0])
    assert grace.deadline("project:P") == 120.0
    now[0] = 121.0
    assert grace.deadline("project:P") == 120.0  # the next record for P does not wait again ...
    assert grace.deadline("project:Q") == 141.0  # ... but another key gets its own period
    now[0] = 141.0
    assert grace.deadline("project:P") == 161.0  # long after: a fresh period


def pipeline_file(tmp_path: Path, flows: str) -> Path:
    return write(tmp_path, "p.yaml", f"version: 1\nname: t\nflows:\n{flows}")


def test_plan_runs_the_enabled_flows_and_only_the_named_ones(tmp_path: Path) -> None:
    pl = load_pipeline(pipeline_file(tmp_path, "  - {name: cc, type: cost-centers}\n  - {name: lab, type: labor-cost}\n"
                                               "  - {name: oa, type: approvals-to-erp, enabled: false}\n"))  # fmt: skip
    plan = plan_flows(pl)
    assert plan.names == ["cc", "lab"] and plan.of_type("approvals-to-erp") is None
    assert plan.app_id == "bizbus-flows-t-cc-lab"
    only = plan_flows(pl, ("oa",))
    assert only.names == ["oa"] and only.of_type("cost-centers") is None
    # the cost-centers flow is kept for its projects table, under the master-data label, sending nothing
    assert [(f.name, f.spec.name, f.emit) for f in only.with_kept()] == [
        ("master-data", "cost-centers", False), ("oa", "approvals-to-erp", True)]
    with pytest.raises(ConfigError, match="no flow named nope"):
        plan_flows(pl, ("nope",))


def test_plan_refuses_two_flows_of_one_type(tmp_path: Path) -> None:
    pl = load_pipeline(
        pipeline_file(tmp_path, "  - {name: a, type: labor-cost}\n  - {name: b, type: labor-cost}\n")
    )
    with pytest.raises(ConfigError, match="both of type labor-cost"):
        plan_flows(pl)


def test_stall_detector_needs_waiting_records_an_idle_agent_and_no_progress() -> None:
    from bizbus.streams.runtime.watchdog import StallDetector

    d = StallDetector(60)
    tp = ("bizbus.pm.timesheet.v1", 2)
    assert not d.stalled(tp, 7, pending=True, busy=False, now=0)  # starts the clock
    assert not d.stalled(tp, 7, pending=True, busy=False, now=59)
    assert d.stalled(tp, 7, pending=True, busy=False, now=60)
    assert not d.stalled(tp, 8, pending=True, busy=False, now=61)  # progress: the clock starts again
    assert not d.stalled(tp, 8, pending=True, busy=True, now=200)  # busy (e.g. waiting for master data)
    assert not d.stalled(tp, 8, pending=True, busy=False, now=201)
    assert not d.stalled(tp, 8, pending=False, busy=False, now=300)  # nothing waits: not a stall
    assert not d.stalled(tp, 8, pending=True, busy=False, now=301)


def test_the_watchdog_follows_the_slowest_of_two_agents_of_one_topic() -> None:
    """F1's agent and F7's own agent both read the project topic: a partition counts as handled up to the
    offset both handled (None while one handled nothing there)."""
    from bizbus.streams.runtime.agents import AgentSpec
    from bizbus.streams.runtime.grace import GraceClock
    from bizbus.streams.runtime.watchdog import handled_offsets

    def spec(source: str, progress: dict[bytes, bytes]) -> AgentSpec:
        return AgentSpec("t", lambda r: None, lambda r, s: None, GraceClock(1, lambda: 0.0), progress, (), source)  # type: ignore[arg-type,return-value]

    project, cost = "bizbus.pm.project.v1", "bizbus.finance.cost-entry.v1"
    specs = {project: spec(project, {b"0": b"9", b"1": b"4"}), f"{project}#budget-project": spec(project, {b"0": b"7"}),
             cost: spec(cost, {b"2": b"3"})}  # fmt: skip
    assert handled_offsets(specs, [(project, 0), (project, 1), (cost, 2), (cost, 0)]) == {
        (project, 0): 7, (project, 1): None, (cost, 2): 3, (cost, 0): None}


def test_flow_tables_have_no_standby_copies_unless_asked(tmp_path: Path) -> None:
    """Faust's default (1 standby) made every worker also apply the other workers' table changes; bizbus
    keeps none by default and takes the number from BIZBUS_FLOWS_STANDBY_REPLICAS."""
    from bizbus.streams.runtime.app import create_app

    from bizbus.settings import Settings

    plan = plan_flows(load_pipeline(pipeline_file(tmp_path, "  - {name: lab, type: labor-cost}\n")))
    assert create_app(Settings(data_dir=tmp_path), plan).conf.table_standby_replicas == 0
    two = Settings(data_dir=tmp_path, flows_standby_replicas=2)
    assert create_app(two, plan).conf.table_standby_replicas == 2
