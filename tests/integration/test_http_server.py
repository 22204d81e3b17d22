"""bizbus's HTTP server (bizbus.host.httpserver.serve_http, aiohttp) on real sockets: keep-alive and pipelined
requests get their answers in order, header names reach the webhook handler lower-case, Expect: 100-continue
works, HTTP/1.0 and ``Connection: close`` end the connection, broken or ambiguous requests are a 400 without a
traceback, and each answer goes out as one write (no ~40 ms Nagle / delayed-ACK stall per keep-alive request).
The listeners' split, timeouts and limits: tests/integration/test_http_edge.py."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from bizbus.connectors.runtime.inbox import HttpRequest, HttpResponse

from bizbus.host.httpserver import serve_http


class FakeHealth:
    """What serve_http calls on ``Health``; webhooks echo what the handler received."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self.lock = threading.Lock()

    def webhook(self, name: str, request: HttpRequest) -> HttpResponse:
        with self.lock:
            self.requests.append(request)
        return HttpResponse(202, b'{"name":"%s","n":%d}' % (name.encode(), len(request.body)))

    def connectors(self) -> dict[str, Any]:
        return {}

    def checks(self) -> dict[str, str]:
        return {"broker": "ok"}

    def metrics(self) -> bytes:
        return b"# metrics\n"

    def control(self, name: str, action: str, by: str = "") -> tuple[int, dict[str, Any]]:
        return 202, {"component": name, "requested": action}


TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def serving(health: Any) -> Iterator[tuple[int, Any]]:
    """(port, health) of a server for the test (``health.admin``: the admin port); stopped afterwards."""
    srv = serve_http("127.0.0.1", 0, health, admin=("127.0.0.1", 0), admin_token=TOKEN)
    assert srv.admin_address is not None
    health.admin = srv.admin_address[1]
    yield srv.server_address[1], health
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server() -> Iterator[tuple[int, FakeHealth]]:
    yield from serving(FakeHealth())


def read_answer(f: Any) -> tuple[int, dict[str, str], bytes]:
    status = int(f.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, f.read(int(headers.get("content-length", 0)))


def exchange(port: int, data: bytes, answers: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Send ``data`` (pipelined requests) on one connection and read that many answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(data)
        return [read_answer(f) for _ in range(answers)]


def test_keep_alive_and_pipelined_requests_are_answered_in_order(server) -> None:
    port, health = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(b"POST /webhooks/a/sub?x=1 HTTP/1.1\r\nHost: h\r\nX-Hub-Signature: sha256=ab\r\n"
                  b"Content-Length: 3\r\n\r\nabc"
                  b"POST /webhooks/b HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
                  b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")  # fmt: skip
        answers = [read_answer(f) for _ in range(3)]
        s.sendall(b"POST /webhooks/c HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz")  # the connection is open
        answers.append(read_answer(f))
    assert [(st, body) for st, _, body in answers] == [
        (202, b'{"name":"a","n":3}'), (202, b'{"name":"b","n":0}'), (200, b'{"status":"alive"}'),
        (202, b'{"name":"c","n":1}'),
    ]  # fmt: skip
    assert all(h["content-type"].startswith("application/json") and "date" in h for _, h, _ in answers)
    first = health.requests[0]
    assert (first.method, first.subpath, dict(first.query), first.body) == ("POST", "sub", {"x": "1"}, b"abc")
    assert first.headers["x-hub-signature"] == "sha256=ab" and first.headers["host"] == "h"


def test_answers_are_one_write_with_nodelay(server) -> None:
    """A keep-alive client gets many answers a second (Nagle held every second write for ~40 ms)."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        for _ in range(3):
            s.sendall(b"POST /webhooks/a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}")
            assert read_answer(f)[0] == 202
        # the answer's bytes arrive in one segment: status line, headers and body read at once
        s.sendall(b"POST /webhooks/a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}")
        chunk = s.recv(65536)
        assert chunk.startswith(b"HTTP/1.1 202 Accepted\r\n") and chunk.endswith(b'{"name":"a","n":2}')


def test_expect_continue_http10_close_and_bad_requests(server) -> None:
    port, health = server
    r = httpx.post(
        f"http://127.0.0.1:{port}/webhooks/x", content=b"12345", headers={"Expect": "100-continue"}
    )
    assert r.status_code == 202 and r.json() == {"name": "x", "n": 5}
    for request in (b"GET /healthz HTTP/1.0\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):  # the server closes: recv returns b"" instead of blocking
                data += chunk
        assert data.startswith((b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK")) and data.endswith(b'{"status":"alive"}')
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/2.0\r\nHost: h\r\n\r\n")
        assert s.makefile("rb").readline().split()[1] in (b"400", b"505")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /webhooks/x HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n")
        assert s.makefile("rb").readline().split()[1] == b"400"
    n = len(health.requests)
    assert httpx.get(f"http://127.0.0.1:{port}/nope").status_code == 404
    admin = f"http://127.0.0.1:{health.admin}"
    assert httpx.post(f"{admin}/connectors/a/pause", headers=AUTH).json() == {"component": "a", "requested": "pause"}
    assert httpx.get(f"{admin}/metrics").text == "# metrics\n"
    assert len(health.requests) == n


class AsyncHealth(FakeHealth):
    """Also has ``webhook_async``: the server must call it on its loop, and never the blocking ``webhook``."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def webhook(self, name: str, request: HttpRequest) -> HttpResponse:
        raise AssertionError("the blocking entry must not be used when webhook_async exists")

    async def webhook_async(self, name: str, request: HttpRequest) -> HttpResponse:
        self.threads.append(threading.current_thread().name)
        if name == "boom":
            raise RuntimeError("a bug in a connector")
        return HttpResponse(202, b'{"name":"%s","body":"%s"}' % (name.encode(), request.body))

    def metrics(self) -> bytes:
        self.threads.append(threading.current_thread().name)
        return b"# metrics\n"


@pytest.fixture
def async_server() -> Iterator[tuple[int, AsyncHealth]]:
    yield from serving(AsyncHealth())


def test_webhooks_are_answered_on_the_loop_and_blocking_work_in_the_pool(async_server) -> None:
    port, health = async_server
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        assert client.post("/webhooks/a", content=b"x").json() == {"name": "a", "body": "x"}
        assert httpx.get(f"http://127.0.0.1:{health.admin}/metrics").text == "# metrics\n"
        boom = client.post("/webhooks/boom", content=b"x")  # a failing handler: 500, the connection lives on
        assert boom.status_code == 500 and boom.json() == {"error": "internal error, retry later"}
        assert client.post("/webhooks/b", content=b"y").json() == {"name": "b", "body": "y"}
        assert client.delete("/connectors/a").status_code == 404  # not on the public listener
    assert health.threads[0] == "http" and health.threads[2:] == ["http", "http"]
    assert health.threads[1].startswith("http-blocking")


def test_a_chunked_body_is_read_whole(async_server) -> None:
    port, _ = async_server
    first, second = exchange(port, b"POST /webhooks/c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
                             b"POST /webhooks/d HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz", 2)  # fmt: skip
    assert (first[0], first[2]) == (202, b'{"name":"c","body":"abcde"}')
    assert (second[0], second[2]) == (202, b'{"name":"d","body":"z"}')


H = b"Host: h\r\n"


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST /webhooks/x HTTP/1.1\r\n" + H + b"Content-Length: 99999999999\r\n\r\n", 413),
    (b"POST /webhooks/x HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nabcde", 400),
    (b"POST /webhooks/x HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST /webhooks/x HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST /webhooks/x HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n", 400),
    (b"POST /webhooks/x HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400),  # ambiguous framing (request smuggling)
    (b"POST /webhooks/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 400),  # HTTP/1.1 without Host
    (b"GET /healthz HTTP/1.1\r\n" + H + b"X-A: b\r\n" * 200 + b"\r\n", 400),  # too many headers
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 400),  # request line too long
])  # fmt: skip
def test_broken_requests_get_their_status_and_the_connection_closes(async_server, request_bytes, status,
                                                                     caplog) -> None:  # fmt: skip
    port, health = async_server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request_bytes)
        data = b""
        while chunk := s.recv(65536):  # the server closes after the answer
            data += chunk
    assert data.split(b" ", 2)[1] == b"%d" % status
    assert b'"error"' in data
    assert health.threads == []  # nothing reached a handler
    assert not [r for r in caplog.records if r.exc_info], "a broken request is a log line, not a traceback"


def test_shutdown_closes_idle_keep_alive_connections() -> None:
    srv = serve_http("127.0.0.1", 0, AsyncHealth())  # type: ignore[arg-type]
    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_answer(s.makefile("rb"))[0] == 200
        srv.shutdown()
        srv.server_close()
        assert s.recv(100) == b""  # closed by the server, not left hanging
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=2).close()
