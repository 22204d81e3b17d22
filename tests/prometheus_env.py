"""A real Prometheus server for tests: scrapes given targets every second, optionally evaluates rule files.

    with PrometheusServer(["127.0.0.1:8089"], rule_files=[ALERT_RULES_FILE], workdir=tmp_path) as prom:
        prom.wait_scraped(30)
        series = prom.query("sum by (component) (rate(bizbus_records_in_total[1m]))")

Needs the ``prometheus`` binary (Debian package ``prometheus``, which ``make test`` installs). Tests skip
with :data:`SKIP_REASON` when it is missing. The server's log stays in ``workdir/prometheus.log``; errors
raised here quote its tail.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from bizbus.devstack.procs import free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
SKIP_REASON = "install the Debian package prometheus (make test does)"


class PrometheusError(RuntimeError):
    """Prometheus refused a request (e.g. a query that does not parse), with its own error text."""


class PrometheusServer:
    """Start ``prometheus`` on a free local port for the duration of a ``with`` block."""

    def __init__(
        self,
        targets: Sequence[str],
        rule_files: Sequence[Path] = (),
        workdir: Path | None = None,
        job: str = "bizbus",
        start_timeout: float = 30.0,
    ) -> None:
        if PROMETHEUS is None:
            raise RuntimeError(SKIP_REASON)
        self.targets = list(targets)
        self.rule_files = [Path(f).resolve() for f in rule_files]
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bizbus-prometheus-"))
        self.job = job
        self.start_timeout = start_timeout
        self.port = 0
        self.log_path = self.workdir / "prometheus.log"
        self.config_path = self.workdir / "prometheus.yml"
        self._proc: subprocess.Popen[bytes] | None = None
        self._client = httpx.Client(timeout=10.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------------------

    def write_config(self) -> None:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in self.rule_files],
            "scrape_configs": [{"job_name": self.job, "static_configs": [{"targets": self.targets}]}],
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def start(self) -> None:
        self.write_config()
        self.port = free_port()
        assert PROMETHEUS is not None
        cmd = [
            PROMETHEUS,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=info",
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        try:
            self._wait(self._ready, self.start_timeout, "Prometheus to answer /-/ready")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: Prometheus shuts down cleanly
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._client.close()

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's log (for failure messages)."""
        with contextlib.suppress(OSError):
            return "\n".join(
                self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            )
        return "(no log)"

    # -- HTTP API ---------------------------------------------------------------------------------------------

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with code {self._proc.returncode}:\n{self.log_tail()}")
        try:
            return self._client.get(f"{self.url}/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; :class:`PrometheusError` on an error answer."""
        resp = self._client.get(f"{self.url}/api/v1/{path}", params=params)
        try:
            body = resp.json()
        except ValueError:
            raise PrometheusError(f"{path}: HTTP {resp.status_code}: {resp.text[:500]}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType', 'error')}: {body.get('error', resp.text[:500])}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result series (``metric``, ``value``); a scalar or string comes as one entry
        without labels. Raises :class:`PrometheusError` with Prometheus's message when ``expr`` is bad."""
        try:
            data = self.api("query", query=expr)
        except PrometheusError as exc:
            raise PrometheusError(f"{exc}\n  in query: {expr}") from None
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets_state(self) -> list[dict[str, Any]]:
        """The active scrape targets with ``health``, ``lastError``, ``scrapeUrl``."""
        return list(self.api("targets", state="active")["activeTargets"])

    def wait_scraped(self, timeout: float = 30.0) -> None:
        """Wait until every target was scraped successfully (health "up")."""

        def all_up() -> bool:
            active = self.targets_state()
            return len(active) == len(self.targets) and all(t["health"] == "up" for t in active)

        try:
            self._wait(all_up, timeout, "every target scraped")
        except TimeoutError as exc:
            states = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.targets_state()]
            raise TimeoutError(f"{exc}; targets: {states}") from None

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (flattened over groups) with ``name``, ``health``, ``lastError``, ``state``."""
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts with ``labels`` and ``state``."""
        return list(self.api("alerts")["alerts"])

    def wait_for_series(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Query ``expr`` until it returns series; the series, or TimeoutError."""
        found: list[dict[str, Any]] = []

        def has_series() -> bool:
            found[:] = self.query(expr)
            return bool(found)

        self._wait(has_series, timeout, f"series for {expr}")
        return found

    def _wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f}s for {what}; prometheus log:\n{self.log_tail()}")
            time.sleep(0.2)
