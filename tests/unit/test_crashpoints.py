"""Crash points kill the process for real (SIGKILL, logged first) when armed, and do nothing otherwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bizbus import crashpoints

SCRIPT = (
    "from bizbus.crashpoints import crashpoint\n"
    "crashpoint('other')\n"
    "crashpoint('x')\n"
    "print('survived', flush=True)\n"
)


def _run(tmp_path: Path, spec: str | None) -> tuple[subprocess.CompletedProcess[str], Path]:
    log = tmp_path / "crashes.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (crashpoints.CRASHPOINTS_ENV, crashpoints.CRASHPOINT_LOG_ENV)
    }
    if spec is not None:
        env[crashpoints.CRASHPOINTS_ENV] = spec
        env[crashpoints.CRASHPOINT_LOG_ENV] = str(log)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    return proc, log


def test_armed_point_kills_with_sigkill_and_logs_first(tmp_path: Path) -> None:
    before = time.time()
    proc, log = _run(tmp_path, "x:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "survived" not in proc.stdout
    name, pid, when = log.read_text().splitlines()[0].split()
    assert name == "x" and int(pid) > 0 and before <= float(when) <= time.time()
    assert len(log.read_text().splitlines()) == 1


@pytest.mark.parametrize("spec", [None, "", "x:0", "y:1"])
def test_unarmed_or_zero_probability_does_nothing(tmp_path: Path, spec: str | None) -> None:
    proc, log = _run(tmp_path, spec)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "survived"
    assert not log.exists()


def test_parse_accepts_lists_and_refuses_typos() -> None:
    assert crashpoints.parse("") == {}
    assert crashpoints.parse("http-api.after-create:0.01, b:1") == {"http-api.after-create": 0.01, "b": 1.0}
    for bad in ("x", "x:", ":0.5", "x:1.5", "x:-0.1", "x:often"):
        with pytest.raises(ValueError, match="BIZBUS_CRASHPOINTS"):
            crashpoints.parse(bad)


def test_environment_is_read_once_then_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(crashpoints.os, "kill", lambda pid, sig: kills.append((pid, sig)))  # no real kill
    monkeypatch.delenv(crashpoints.CRASHPOINT_LOG_ENV, raising=False)
    monkeypatch.setenv(crashpoints.CRASHPOINTS_ENV, "x:1")
    crashpoints.reset()
    try:
        crashpoints.crashpoint("x")
        assert kills == [(os.getpid(), signal.SIGKILL)]
        monkeypatch.setenv(crashpoints.CRASHPOINTS_ENV, "")
        crashpoints.crashpoint("x")  # the setting was read on the first call: still armed
        assert len(kills) == 2
        crashpoints.reset()
        crashpoints.crashpoint("x")  # re-read: now unarmed
        assert len(kills) == 2
    finally:
        crashpoints.reset()


def test_nth_arrival_form_is_deterministic(tmp_path: Path) -> None:
    log = tmp_path / "crashes.log"
    env = {**os.environ, crashpoints.CRASHPOINTS_ENV: "x:@3", crashpoints.CRASHPOINT_LOG_ENV: str(log)}
    script = "from bizbus.crashpoints import crashpoint\nfor i in range(5):\n    print(i, flush=True)\n    crashpoint('x')\n"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split() == ["0", "1", "2"]  # died on the third arrival, not before
    assert crashpoints.parse("x:@3") == {"x": -3.0}
    with pytest.raises(ValueError):
        crashpoints.parse("x:@0")
