"""The HTTP edge holds (issue 18, finding 7), on real sockets in front of a real ``jira`` connector (inbox in
PostgreSQL, embedded broker) and with real ``bizbus worker`` processes:

* slow and idle clients (trickling heads, unfinished bodies, idle keep-alive connections up to the limit) are
  closed after the timeouts, a connection beyond the limit gets 503, and signed webhooks on fresh connections
  are answered 200 while the hostile clients are connected;
* unsigned requests declaring 16 MiB bodies are refused (401) before the body is sent, an oversized signed one
  413; a process out of file descriptors says so in its log;
* the admin routes answer only on the admin listener, the control routes only with the bearer token;
* a pause is stored in PostgreSQL: a second worker process of the connector applies it, a restarted one too.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bizbus.devstack.procs import free_port
from bizbus.host.httpserver import Limits, serve_http
from bizbus.host.pauses import PauseStore
from bizbus.host.runner import Health
from bizbus.settings import load_settings
from tests.chaos.harness import Worker, private_stack, write_pipeline
from tests.fakes.jira_api import JiraCloudFake
from tests.webhook_harness import Rig, webhook_rig

SECRET = "edge-secret-" + uuid.uuid4().hex[:8]
TOKEN = "edge-admin-" + uuid.uuid4().hex
DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
LIMITS = Limits(header_timeout=8.0, body_timeout=8.0, idle_timeout=10.0, max_connections=1000)


@pytest.fixture
def rig(embedded_broker: Any, registry: Any, postgres: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setenv("BIZBUS_TEST_EDGE_SECRET", SECRET)
    monkeypatch.setenv("BIZBUS_TEST_EDGE_TOKEN", "api-token")
    with JiraCloudFake(token="api-token") as fake:
        conf = {"base_url": fake.url, "email": fake.email, "token_env": "BIZBUS_TEST_EDGE_TOKEN",
                "secret_env": "BIZBUS_TEST_EDGE_SECRET", "company": "C100", "backfill": False}  # fmt: skip
        with webhook_rig(embedded_broker, registry, "jira", conf, limits=LIMITS, admin_token=TOKEN) as r:
            yield r


def signed_post(url: str) -> int:
    """A signed Jira webhook (an event the connector answers and ignores) on a fresh connection."""
    body = json.dumps({"timestamp": int(time.time() * 1000), "webhookEvent": "jira:edge_probe"}).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature": sig, "Content-Type": "application/json"}
    return httpx.post(url, content=body, headers=headers, timeout=10).status_code


def connect(port: int, data: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        s.sendall(data)
    return s


def wait_closed(socks: list[socket.socket], timeout: float) -> tuple[int, list[bytes]]:
    """How many of ``socks`` the server closed within ``timeout`` s, and what it sent before (first bytes)."""
    deadline = time.monotonic() + timeout
    closed, answers = 0, []
    for s in socks:
        got = b""
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                break
            except ConnectionError:
                closed += 1
                break
            if not chunk:
                closed += 1
                break
            got += chunk
        answers.append(got[:40])
        s.close()
    return closed, answers


def test_slow_and_idle_clients_are_closed_while_signed_webhooks_are_answered(rig: Rig) -> None:
    port = rig.server.server_address[1]
    path = f"/webhooks/{rig.name}"
    head = f"POST {path} HTTP/1.1\r\nHost: h\r\n".encode()
    trickling = [connect(port, head[:20]) for _ in range(300)]  # a request head that never ends
    unfinished = [connect(port, head + b"X-Hub-Signature: sha256=00\r\nContent-Length: 1000\r\n\r\n{")
                  for _ in range(20)]  # fmt: skip  # a body that never ends
    idle = [connect(port) for _ in range(680)]
    stop = threading.Event()

    def trickle() -> None:  # one more byte now and then: a slow client, not a dead one
        i = 20
        while not stop.wait(0.5) and i < len(head):
            for s in trickling:
                with contextlib.suppress(OSError):
                    s.send(head[i : i + 1])
            i += 1

    threading.Thread(target=trickle, daemon=True).start()
    try:
        deadline = time.monotonic() + 10
        while rig.server.connections("public") < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rig.server.connections("public") == 1000, "the server holds the 1,000 hostile connections"
        # the limit is reached: a new connection gets a clear 503 (and is closed)
        with connect(port, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n") as extra:
            extra.settimeout(10)
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too many open connections" in answer
        for s in idle[600:]:  # 80 idle clients leave; 920 hostile ones stay
            s.close()
        idle = idle[:600]
        while rig.server.connections("public") > 920 and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        # signed webhooks on fresh connections are answered while the hostile clients are connected
        assert rig.server.connections("public") == 920
        assert [signed_post(rig.url) for _ in range(10)] == [200] * 10
        # every hostile client is closed after its timeout (generous bound: a loaded machine)
        closed, answers = wait_closed(trickling + unfinished + idle, 60)
    finally:
        stop.set()
    assert closed == 300 + 20 + 600
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers[:300]), answers[:3]  # head too slow
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers[300:320]), answers[300:303]  # body too slow
    deadline = time.monotonic() + 10  # the server's side of a closed connection goes a moment later
    while rig.server.connections("public") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rig.server.connections("public") == 0
    assert signed_post(rig.url) == 200


def test_unsigned_large_bodies_are_refused_before_the_body_is_sent(rig: Rig) -> None:
    """8 connections declare 16 MiB bodies without a signature: each is answered 401 before a byte of the
    body was sent (so nothing of it can have been buffered); a signed one larger than the connector's
    ``max_body_bytes`` gets 413 the same way; a body within the limit still works."""
    port = rig.server.server_address[1]
    unsigned = (f"POST /webhooks/{rig.name} HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                f"Content-Length: {16 * 1024 * 1024}\r\n\r\n").encode()  # fmt: skip
    socks = [connect(port, unsigned) for _ in range(8)]
    for s in socks:
        s.settimeout(10)
        assert s.recv(4096).startswith(b"HTTP/1.1 401 ")  # the answer comes while the body is still unsent
    closed, _ = wait_closed(socks, 10)
    assert closed == 8  # and the connection is closed: the body will not be read
    signed_big = unsigned.replace(b"Content-Type", b"X-Hub-Signature: sha256=00\r\nContent-Type")
    with connect(port, signed_big) as s:
        s.settimeout(10)
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"larger than 4194304" in answer
    assert rig.metric("bizbus_webhook_requests_total", outcome="bad_signature") >= 8
    assert signed_post(rig.url) == 200


def test_admin_routes_only_on_the_admin_listener_and_control_only_with_the_token(rig: Rig) -> None:
    public = f"http://127.0.0.1:{rig.server.server_address[1]}"
    admin = f"http://127.0.0.1:{rig.server.admin_address[1]}"
    for method, path in (("GET", "/metrics"), ("GET", "/readyz"), ("GET", "/connectors"),
                         ("POST", f"/connectors/{rig.name}/pause"), ("POST", f"/connectors/{rig.name}/resume")):  # fmt: skip
        r = httpx.request(method, public + path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 404, (method, path, r.status_code)
    assert httpx.get(public + "/healthz").status_code == 200
    assert httpx.get(admin + "/metrics").status_code == 200  # Prometheus: no token
    assert httpx.get(admin + "/readyz").json()["checks"]  # probes: no token
    pause = f"{admin}/connectors/{rig.name}/pause"
    assert httpx.post(pause).status_code == 401
    assert httpx.post(pause, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(admin + "/connectors").status_code == 401
    # what a cross-site HTML form can send, even with the token guessed: refused
    form = httpx.post(pause, headers={"Authorization": f"Bearer {TOKEN}"}, data={"a": "b"})
    assert form.status_code == 415
    assert rig.component.states() and set(rig.component.states().values()) == {"running"}  # nothing paused
    r = httpx.get(admin + "/connectors", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and rig.name in r.json()
    # a process without a configured token says how to set one
    srv = serve_http("127.0.0.1", 0, Health(rig.settings, []), admin=("127.0.0.1", 0))
    try:
        r = httpx.post(f"http://127.0.0.1:{srv.admin_address[1]}/connectors/x/pause")
        assert r.status_code == 403 and "BIZBUS_ADMIN_TOKEN" in r.json()["error"]
    finally:
        srv.shutdown()
        srv.server_close()


FD_SCRIPT = """
import resource, sys, time, logging
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))
from bizbus.host.httpserver import serve_http
srv = serve_http("127.0.0.1", 0, object())
print("PORT", srv.server_address[1], flush=True)
time.sleep(60)
"""


def test_running_out_of_file_descriptors_is_logged(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", FD_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        lines = []
        while not (line := proc.stdout.readline()).startswith("PORT"):
            lines.append(line)
            assert line, "".join(lines)
        port = int(line.split()[1])
        socks = [connect(port) for _ in range(120)]  # more than the process has descriptors
        time.sleep(2.5)
    finally:
        proc.kill()
        out = "".join(lines) + proc.communicate(timeout=10)[0]
        for s in socks:
            s.close()
    assert "file-descriptor limit (96) is below" in out  # at start
    assert "of 96 file descriptors in use" in out, out  # when it happens


# -- pauses across worker processes ---------------------------------------------------------------------

TOPIC = "bizbus.pm.timesheet.v1"


@pytest.fixture
def sink_table(postgres: Any) -> Iterator[str]:
    schema = f"edge_{uuid.uuid4().hex[:8]}"
    postgres.execute(f"CREATE SCHEMA {schema}")
    postgres.execute(f"CREATE TABLE {schema}.entries (effect_id text, worklog_id text, hours numeric(9,2))")
    yield schema
    postgres.execute(f"DROP SCHEMA {schema} CASCADE")
    name = schema.replace("_", "-") + "-sink"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("DELETE FROM bizbus_state.connector_pauses WHERE connector = %s", (name,))
        for table in ("applied_effects", "offsets"):
            if conn.execute("SELECT to_regclass(%s)", (f"bizbus_ledger.{table}",)).fetchone()[0] is not None:
                conn.execute(f"DELETE FROM bizbus_ledger.{table} WHERE connector = %s", (name,))


def test_a_pause_is_stored_and_applies_to_every_worker_also_after_a_restart(sink_table: str, tmp_path: Path) -> None:
    name = sink_table.replace("_", "-") + "-sink"
    with private_stack(tmp_path, {TOPIC: 2, "bizbus.ops.dead-letter.v1": 1}) as stack:
        pipeline = write_pipeline(tmp_path / "pipeline.yaml", [
            {"name": name, "type": "pg-table",
             "config": {"topics": [TOPIC], "dsn": DSN, "table": f"{sink_table}.entries",
                        "columns": {"effect_id": "$effect_id", "worklog_id": "worklog_id", "hours": "hours"}}},
        ])  # fmt: skip
        ports = [free_port(), free_port()]
        workers = [Worker(f"{name}#{i}", stack, pipeline, env={"BIZBUS_ADMIN_PORT": str(ports[i]),
                                                                "BIZBUS_ADMIN_TOKEN": TOKEN}) for i in range(2)]  # fmt: skip
        auth = {"Authorization": f"Bearer {TOKEN}", "X-Bizbus-Actor": "edge test"}

        def tasks(i: int) -> dict[str, Any]:
            try:
                r = httpx.get(f"http://127.0.0.1:{ports[i]}/connectors", headers=auth, timeout=5)
            except httpx.HTTPError:
                return {}
            return r.json().get(name, {}) if r.status_code == 200 else {}

        def wait_state(i: int, state: str, timeout: float = 60) -> dict[str, Any]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                got = tasks(i)
                if got.get("tasks") and set(got["tasks"].values()) == {state}:
                    return got
                assert workers[i].alive(), workers[i].logs()
                time.sleep(0.3)
            raise AssertionError(f"worker {i}: tasks not {state}: {tasks(i)}\n{workers[i].logs()}")

        try:
            workers[0].start()
            wait_state(0, "running")
            r = httpx.post(f"http://127.0.0.1:{ports[0]}/connectors/{name}/pause", headers=auth, timeout=10)
            assert r.status_code == 202, r.text
            first = wait_state(0, "paused")
            assert first["paused"].startswith("paused since ") and first["paused"].endswith("by edge test")
            assert httpx.get(f"http://127.0.0.1:{ports[0]}/readyz").json()["paused"] == {name: first["paused"]}
            workers[1].start()  # a second worker of the same connector starts paused
            assert wait_state(1, "paused")["paused"] == first["paused"]
            workers[0].stop()
            workers[0].start()  # the pause outlives the process
            assert wait_state(0, "paused")["paused"] == first["paused"]
            r = httpx.post(f"http://127.0.0.1:{ports[1]}/connectors/{name}/resume", headers=auth, timeout=10)
            assert r.status_code == 202, r.text
            for i in (0, 1):  # a resume given to one worker reaches the other through the store
                assert "paused" not in wait_state(i, "running")
            assert name not in PauseStore(DSN).all()
        finally:
            for w in workers:
                w.stop()


def test_state_dsn_and_admin_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:  # fmt: skip
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    monkeypatch.setenv("BIZBUS_ADMIN_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("BIZBUS_ADMIN_PORT", "18089")
    s = load_settings()
    assert s.admin_token is not None and s.admin_token.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(s) and s.admin_port == 18089 and s.admin_host == "127.0.0.1"
    monkeypatch.setenv("BIZBUS_STATE_DSN", "postgresql://u:secret@db/x")
    with pytest.raises(Exception, match="BIZBUS_STATE_DSN|state_dsn"):
        load_settings()
