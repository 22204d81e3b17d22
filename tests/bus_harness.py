"""Run ``bizbus up`` as an operator does (its own embedded broker and registry, a pipeline file, a data folder)
and restart it, stop it, or kill its broker: for the tests of what survives restarts and a lost broker.

    bus = BusProcess(tmp_path, pipeline, env)
    bus.start()                # waits for the banner
    bus.kill_broker()          # SIGKILL the embedded Tansu; `bizbus up` restarts it
    bus.stop()                 # SIGTERM, waits for a clean exit
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from bizbus.devstack.procs import free_port

BIZBUS = [sys.executable, "-m", "bizbus"]
BANNER_END = "Ctrl-C stops everything"  # the last line of `bizbus up`'s banner: the bus is up


def read_banner(proc: subprocess.Popen, timeout: float) -> list[str]:
    """The lines ``proc`` (``bizbus up`` with its stdout piped as text) prints up to its banner's last line,
    within ``timeout`` seconds or until its output ends (the caller asserts on what came)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if BANNER_END in line:
            break
    return lines


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def write_pipeline(path: Path, connectors: list[dict[str, Any]], flows: list[dict[str, Any]] | None = None,
                   name: str = "durability") -> Path:  # fmt: skip
    path.write_text(yaml.safe_dump({"version": 1, "name": name, "connectors": connectors, "flows": flows or []},
                                   allow_unicode=True))  # fmt: skip
    return path


class BusProcess:
    """One ``bizbus up`` at a time on fixed ports (kept across restarts, as an operator's would be)."""

    def __init__(self, tmp: Path, pipeline: Path, env: dict[str, str] | None = None) -> None:
        self.tmp, self.pipeline = tmp, pipeline
        self.http_port = free_port()
        self.admin_port = free_port()
        self.token = "bus-admin-" + os.urandom(8).hex()
        self.env = {**os.environ, **(env or {}), "BIZBUS_BROKER_PORT": str(free_port()),
                    "BIZBUS_REGISTRY_PORT": str(free_port()), "BIZBUS_HTTP_PORT": str(self.http_port),
                    "BIZBUS_ADMIN_PORT": str(self.admin_port), "BIZBUS_ADMIN_TOKEN": self.token,
                    "BIZBUS_DATA_DIR": str(tmp / "data"), "BIZBUS_PIPELINE_FILE": str(pipeline),
                    "BIZBUS_LOG_FORMAT": "text"}  # fmt: skip
        self.env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        self.env.pop("SCHEMA_REGISTRY_URL", None)
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.runs = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.env['BIZBUS_BROKER_PORT']}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.env['BIZBUS_REGISTRY_PORT']}"

    @property
    def url(self) -> str:
        """The public listener (webhooks, /healthz)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_url(self) -> str:
        """The admin listener (/metrics, /readyz, /connectors and pause/resume/restart with the token)."""
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 120) -> None:
        self.runs += 1
        log = open(self.tmp / f"up-{self.runs}.log", "w")  # noqa: SIM115 - the child writes it
        self.proc = subprocess.Popen([*BIZBUS, "up"], stdout=log, stderr=subprocess.STDOUT, text=True, env=self.env)
        self._log_path = self.tmp / f"up-{self.runs}.log"
        self.wait_output(BANNER_END, timeout)

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("up-*.log")))

    def wait_output(self, text: str, timeout: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self._log_path.read_text(errors="replace")
            if current.count(text) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"bizbus up exited ({self.proc.returncode}) before {text!r}:\n{current[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not seen within {timeout:.0f} s:\n{self._log_path.read_text()[-4000:]}")

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM and wait for the exit (the drain commits what is in hand)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)
        self.proc = None

    def broker_pid(self) -> int:
        assert self.proc is not None
        for pid in children(self.proc.pid):
            try:
                if "tansu" in Path(f"/proc/{pid}/cmdline").read_text():
                    return pid
            except OSError:
                continue
        raise AssertionError("no embedded broker among the children of bizbus up")

    def kill_broker(self) -> int:
        pid = self.broker_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def admin_get(self, path: str) -> httpx.Response:
        return httpx.get(self.admin_url + path, timeout=10, headers={"Authorization": f"Bearer {self.token}"})

    def admin_post(self, path: str) -> httpx.Response:
        return httpx.post(self.admin_url + path, timeout=10, headers={"Authorization": f"Bearer {self.token}"})


def wait_until(cond: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{detail()}")
