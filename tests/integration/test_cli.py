"""The `bizbus` command as a user runs it: bad input gives a message and a non-zero exit, never a
traceback; `bizbus up` brings the stack up and Ctrl-C takes every child process down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bizbus.schemas import catalog

from bizbus.catalogue import load_catalogue
from bizbus.devstack.procs import free_port
from tests.bus_harness import BIZBUS, read_banner


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*BIZBUS, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          input=stdin, timeout=timeout)  # fmt: skip


def assert_clean_failure(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    for n in needles:
        assert n in p.stderr, f"{n!r} not in stderr:\n{p.stderr}"


def test_help_explains_each_command() -> None:
    out = run("--help").stdout
    for cmd in ("up", "topics", "schemas", "tail", "produce", "check"):
        assert cmd in out
    assert "Ctrl-C stops" in run("up", "--help").stdout
    assert "drift" in run("topics", "--help").stdout


def test_version_and_shell_completion() -> None:
    from importlib.metadata import version

    assert run("--version").stdout == f"bizbus {version('bizbus')}\n"
    script = run("--show-completion", "bash")
    assert script.returncode == 0 and "_BIZBUS_COMPLETE=complete_bash" in script.stdout, script.stdout


def test_components_show_real_defaults_and_nested_settings() -> None:
    out = run("components").stdout
    assert "PydanticUndefined" not in out
    assert "    retry: backoff for retryable errors and 429s (see retry.*)" in out
    assert "    retry.max_attempts: Total calls including the first one. (default 8)" in out
    assert "    table: schema-qualified target table (e.g. `public.timesheet_entries`) (required)" in out


def test_docs_writes_only_below_out(tmp_path: Path) -> None:
    from bizbus.catalogue import load_catalogue
    from bizbus.docgen.refdocs import generated
    from bizbus.settings import PROJECT_ROOT

    out = tmp_path / "site"
    p = run("docs", "--out", str(out))
    assert p.returncode == 0, p.stderr
    expected = {path.relative_to(PROJECT_ROOT) for path in generated(load_catalogue(PROJECT_ROOT / "deploy" / "topics.yaml"))}
    written = {path.relative_to(out) for path in out.rglob("*") if path.is_file()}
    assert written == expected and Path("docs/reference.md") in written
    assert run("docs", "--check", "--out", str(out)).returncode == 0
    (out / "docs" / "reference.md").write_text("edited by hand\n")
    assert_clean_failure(run("docs", "--check", "--out", str(out)), "stale generated file(s)", "reference.md")


def test_unknown_config_key(tmp_path: Path) -> None:
    p = tmp_path / "pipeline.yaml"
    p.write_text("connectors:\n  - name: a\n    type: sample-events\n    config: {topic: bizbus.pm.timesheet.v1, burst: 3}\n")
    assert_clean_failure(run("check", "--pipeline", str(p)), f"{p}:4: connectors[0].config.burst: unknown key")


def test_invalid_environment_value() -> None:
    assert_clean_failure(run("check", env={"BIZBUS_HTTP_PORT": "eighty"}), "BIZBUS_HTTP_PORT")


def test_schema_that_does_not_parse(tmp_path: Path) -> None:
    bad = tmp_path / "avro"
    shutil.copytree(catalog.AVRO_DIR, bad)
    (bad / "bizbus.finance.Voucher.avsc").write_text('{"type": "record", "name": "Voucher", "fields": [{"name": "x", "type": "money"}]}')
    p = run("schemas", "check", "--against", "git", env={"BIZBUS_SCHEMA_DIR": str(bad)})
    assert_clean_failure(p, "bizbus.finance.Voucher.avsc: not a valid Avro schema")


def test_port_in_use_for_up(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run("up", env={"BIZBUS_BROKER_PORT": str(port), "BIZBUS_DATA_DIR": str(tmp_path)})
    assert_clean_failure(p, f"127.0.0.1:{port}", "already in use", "BIZBUS_BROKER_PORT")


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def bus(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen, dict[str, str], list[str]]]:
    env = {**os.environ, "BIZBUS_BROKER_PORT": str(free_port()), "BIZBUS_REGISTRY_PORT": str(free_port()),
           "BIZBUS_HTTP_PORT": str(free_port()), "BIZBUS_ADMIN_PORT": str(free_port()),
           "BIZBUS_DATA_DIR": str(tmp_path / "data"), **getattr(request, "param", {})}  # fmt: skip
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("SCHEMA_REGISTRY_URL", None)
    proc = subprocess.Popen([*BIZBUS, "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = read_banner(proc, 90)
    try:
        yield proc, env, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_up_runs_the_stack_and_ctrl_c_stops_every_child(bus) -> None:
    proc, env, lines = bus
    banner = "".join(lines)
    assert "bizbus is up" in banner, banner
    assert f"127.0.0.1:{env['BIZBUS_BROKER_PORT']} (embedded Tansu" in banner
    assert f"http://127.0.0.1:{env['BIZBUS_REGISTRY_PORT']} (embedded" in banner
    n = len(load_catalogue(Path(__file__).resolve().parents[2] / "deploy" / "topics.yaml").names())
    assert n >= 20, n  # the catalogue only grows
    assert f"topics: {n} created" in banner and f"schemas: {n} subjects registered" in banner
    children = _children(proc.pid)
    assert len(children) == 2, f"expected broker and registry as children, got {children}"

    ready = httpx.get(f"http://127.0.0.1:{env['BIZBUS_ADMIN_PORT']}/readyz", timeout=10).json()
    assert ready == {"ready": True, "checks": {"broker": "ok", "registry": "ok", "component:demo-timesheets": "ok"}}
    subjects = httpx.get(f"http://127.0.0.1:{env['BIZBUS_REGISTRY_PORT']}/subjects", timeout=10).json()
    assert "bizbus.finance.voucher.v1-value" in subjects

    # the demo source's records can be read back, decoded, with lineage headers
    tail = subprocess.run([*BIZBUS, "tail", "bizbus.pm.timesheet.v1", "--from-beginning", "--max", "1", "--timeout", "30"],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    rec = json.loads(tail.stdout.splitlines()[0])
    assert rec["headers"]["source_system"] == "bizbus-sample"
    assert rec["value"]["meta"]["event_id"] == rec["headers"]["event_id"]

    # produce: a record with a wrong type is refused with the line and field, nothing is written
    good = {**json.loads(json.dumps(catalog.sample("bizbus.pm.TimesheetEntry"), default=str))}
    bad = {**good, "hours": True}
    p = subprocess.run([*BIZBUS, "produce", "bizbus.pm.timesheet.v1", "-"], input=json.dumps(good) + "\n" + json.dumps(bad) + "\n",
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert_clean_failure(p, "-:2: does not match bizbus.pm.TimesheetEntry: hours")
    p = subprocess.run([*BIZBUS, "produce", "bizbus.pm.timesheet.v1", "-"], input=json.dumps(good) + "\n",
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert p.returncode == 0 and "1 records produced" in p.stdout, p.stderr

    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "every child process has exited" in rest
    for pid in children:
        assert not _alive(pid), f"child {pid} survived Ctrl-C"


@pytest.mark.parametrize("bus", [{"BIZBUS_BROKER_RESTARTS": "1"}], indirect=True)
def test_up_restarts_a_dead_embedded_broker_a_bounded_number_of_times_then_stops(bus) -> None:
    proc, env, lines = bus
    assert "bizbus is up" in "".join(lines)

    def kill_broker() -> int:
        pid = next(pid for pid in _children(proc.pid) if "tansu" in Path(f"/proc/{pid}/cmdline").read_text())
        os.kill(pid, signal.SIGKILL)
        return pid

    first = kill_broker()
    seen = ""
    deadline = time.monotonic() + 90
    while "the embedded broker is back" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    assert "restarting it (1 of 1 restarts within 10 min)" in seen, seen
    second = kill_broker()  # the budget is spent: a clear message, exit code 1, nothing left behind
    assert second != first
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1, rest
    assert "after 1 restart(s) within 10 min; stopping" in rest and "BIZBUS_BROKER_RESTARTS" in rest, rest
    for pid in _children(proc.pid):
        assert not _alive(pid), f"child {pid} left behind"
