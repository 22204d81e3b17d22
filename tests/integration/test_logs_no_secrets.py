"""Real bizbus processes with BIZBUS_LOG_FORMAT=json and secrets in their environment: every stderr line is
a JSON object, no secret and no pay rate appears in it, and a line about a record names its event_id.

1. ``bizbus worker`` runs an ``http-api`` sink pushing Employee master data (with the hourly cost rate) to a
   small HR API of this test. The API accepts the first record without an id (the sink warns about that
   record), refuses the second with 422 echoing the request body and the Authorization header it got (the
   sink dead-letters it and logs the reason), and answers the third with 401 echoing the header again
   (the sink task stops with a fatal error).
2. A bizbus process runs the F2 labor-cost function on an employee with a rate and logs its inputs and the
   voucher it made (the rate is in the Employee state, the voucher text and the amounts' reprs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from bizbus.schemas import catalog
from confluent_kafka import Producer

from bizbus import lineage
from bizbus.serde import AvroSerde
from tests.chaos.harness import private_stack

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "bizbus.md.employee.v1"
DLQ = "bizbus.ops.dead-letter.v1"
RATE = "613.47"  # the hourly cost rate: must never reach a log line
TOKEN_ENV = "HR_API_TOKEN"


class HrApi:
    """POST /api/employees: code E-OK -> 200 without an id; E-BAD -> 422 echoing body and Authorization;
    anything else -> 401 echoing Authorization. GET (lookup) -> no match."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (code, Authorization header)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                self._reply(200, {"items": []})

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                auth = self.headers.get("Authorization", "")
                code = json.loads(raw).get("code")
                api.seen.append((code, auth))
                if code == "E-OK":
                    self._reply(200, {"status": "accepted"})
                elif code == "E-BAD":
                    self._reply(422, {"message": f"invalid employee {raw} (sent with Authorization: {auth})"})
                else:
                    self._reply(401, {"message": f"unknown credentials {auth}"})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HrApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ledger_schema(postgres) -> Iterator[str]:
    schema = f"ledger_logs_{uuid.uuid4().hex[:8]}"
    yield schema
    postgres.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _employee(code: str, n: int) -> dict[str, Any]:
    rec = catalog.sample("bizbus.md.Employee")
    rec["meta"]["event_id"] = lineage.event_id("logs-test", code, uuid.uuid4().hex)
    rec["meta"]["correlation_id"] = code
    rec.update(code=code, version=n, hourly_cost_rate=Decimal(RATE))
    return rec


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line, parsed; fails naming the first line that is not a JSON log object."""
    out = []
    for line in stderr.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            pytest.fail(f"stderr line is not JSON: {line!r}\n--- stderr:\n{stderr[-4000:]}")
        assert isinstance(doc, dict) and {"ts", "level", "logger", "message"} <= set(doc), line
        out.append(doc)
    return out


def test_worker_logs_json_without_token_or_rate(tmp_path: Path, ledger_schema: str) -> None:
    token = f"hr-tok-{uuid.uuid4().hex}"
    records = [_employee("E-OK", 1), _employee("E-BAD", 2), _employee("E-401", 3)]
    with HrApi() as api, private_stack(tmp_path, {TOPIC: 1, DLQ: 1}) as stack:
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(yaml.safe_dump({"version": 1, "name": "logs", "flows": [], "connectors": [{
            "name": "hr-push", "type": "http-api",
            "config": {"topics": [TOPIC], "base_url": api.url, "create_path": "/api/employees",
                       "lookup_path": "/api/employees", "token_env": TOKEN_ENV, "ledger_schema": ledger_schema,
                       "body": {"code": "code", "name": "name", "hourly_cost_rate": "hourly_cost_rate"},
                       "batch_size": 1, "retry": {"max_attempts": 2, "initial_delay": 0.05, "max_delay": 0.1}}}]}))  # fmt: skip
        encode = AvroSerde({"url": stack.registry_url}).encoder(
            f"{TOPIC}-value", catalog.load("bizbus.md.Employee")
        )
        producer = Producer({"bootstrap.servers": stack.bootstrap, "enable.idempotence": True})
        for rec in records:
            producer.produce(
                TOPIC, key=rec["code"].encode(), value=encode(rec), headers=lineage.headers(rec["meta"])
            )
        assert producer.flush(20) == 0
        del producer  # gone before the broker stops: no reconnect noise

        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "SCHEMA_REGISTRY_URL": stack.registry_url,
               "BIZBUS_HTTP_PORT": "0", "BIZBUS_ADMIN_PORT": "0", "BIZBUS_DATA_DIR": str(tmp_path / "data"), "BIZBUS_LOG_LEVEL": "INFO",
               "BIZBUS_LOG_FORMAT": "json", TOKEN_ENV: token}  # fmt: skip
        cmd = [sys.executable, "-m", "bizbus", "worker", "--pipeline", str(pipeline), "--only", "hr-push"]
        out, err = tmp_path / "stdout", tmp_path / "stderr"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(cmd, stdout=o, stderr=e, env=env, cwd=tmp_path)
            try:
                deadline = time.monotonic() + 25
                while time.monotonic() < deadline and "task hr-push/0 failed" not in err.read_text():
                    assert proc.poll() is None, err.read_text()
                    time.sleep(0.2)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    stderr, stdout = err.read_text(), out.read_text()
    assert [code for code, _ in api.seen] == ["E-OK", "E-BAD", "E-401"], api.seen
    assert all(auth == f"Bearer {token}" for _, auth in api.seen)  # sent every time, never shown

    lines = _json_lines(stderr)
    for text in (stderr, stdout):
        assert token not in text and RATE not in text
    no_id = [x for x in lines if "returned no id" in x["message"]]
    assert len(no_id) == 1 and no_id[0]["event_id"] == records[0]["meta"]["event_id"], no_id
    assert no_id[0]["correlation_id"] == "E-OK" and no_id[0]["component"] == "hr-push"
    dead = [x for x in lines if "dead-lettering" in x["message"]]
    assert len(dead) == 1 and "HTTP 422" in dead[0]["message"], lines
    assert '"code":"E-BAD"' in dead[0]["message"]  # the echo is logged, with the rate masked ...
    assert (
        '"hourly_cost_rate":"***"' in dead[0]["message"] and "Bearer ***" in dead[0]["message"]
    )  # ... and the token
    failed = [x for x in lines if "task hr-push/0 failed" in x["message"]]
    assert failed and failed[0]["level"] == "ERROR" and "HTTP 401" in failed[0]["message"]
    assert TOKEN_ENV in failed[0]["message"] and "exc_info" in failed[0]


F2_SCRIPT = """
import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from bizbus.cli.main import _logging
from bizbus.logs import record_fields
from bizbus.streams.cost_centers.state import ProjectState
from bizbus.streams.labor_cost import config as f2c, logic as f2
from bizbus.settings import load_settings

s = load_settings()
_logging(s.log_level, s.log_format)
log = logging.getLogger("bizbus.flows")
m = f2c.LaborCostMapping()
employee = {"meta": {}, "code": "E0042", "valid_from": date(2026, 1, 1), "valid_to": None,
            "hourly_cost_rate": Decimal("%(rate)s"), "currency": "CNY", "version": 1}
state = f2.merge_employee(employee, None)
meta = {"event_id": "%(event_id)s", "correlation_id": "P-7", "source_system": "jira",
        "occurred_at": datetime(2026, 1, 2, tzinfo=UTC), "causation_id": None, "trace": {}}
entry = {"meta": meta, "op": "CREATED", "worklog_id": "W1", "version": 1, "project": "P-7",
         "employee": "E0042", "work_date": date(2026, 1, 2), "hours": Decimal("8.00")}
project = ProjectState(project="P-7", version=1, op="CREATED", name="P", company="ACME",
                       intervals=({"code": "CC-1", "valid_from": date(2025, 1, 1), "valid_to": None},))
verdict = f2.post_labor(entry, None, lambda code: project, lambda code: state, m)
fields = record_fields(meta, component="labor-cost")
log.warning("labor-cost: employee state %%r", state, extra=fields)
log.warning("labor-cost: %%s -> %%r", entry["worklog_id"], verdict.outputs[0].value, extra=fields)
log.info("labor-cost: rate row", extra={**fields, "row": {"employee": "E0042", "rate": state["rates"][0]["rate"]}})
print(verdict.outputs[0].value["lines"][0]["description"])
"""


def test_labor_cost_rate_never_reaches_the_log(tmp_path: Path) -> None:
    event_id = lineage.event_id("logs-test", "worklog", uuid.uuid4().hex)
    env = {**os.environ, "BIZBUS_LOG_FORMAT": "json", "BIZBUS_LOG_LEVEL": "INFO"}
    script = F2_SCRIPT % {"rate": RATE, "event_id": event_id}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert RATE in proc.stdout  # the voucher text does carry the rate (it goes to the ERP) ...
    lines = _json_lines(proc.stderr)
    assert RATE not in proc.stderr  # ... but not into the log
    assert len(lines) == 3 and all(
        x["event_id"] == event_id and x["component"] == "labor-cost" for x in lines
    )
    assert "'rates': ***" in lines[0]["message"]
    assert "*** CNY/h" in lines[1]["message"] and "'voucher_no': 'LAB-W1-1'" in lines[1]["message"]
    assert lines[2]["row"] == {"employee": "E0042", "rate": "***"}
