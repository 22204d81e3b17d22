"""An open-loop HTTP/1.1 sender for the latency benchmark: requests go out on their schedule, whatever the
answers take, over a pool of keep-alive connections (asyncio, uvloop when installed).

Why not threads + httpx: measured in one process, 8 threads with one httpx.Client each reached ~1,100
requests/s against a server answering at once (the GIL and httpx's per-request cost), so the sender, not
the endpoint, set the rate. Here one event loop builds, signs and writes each request at its due time; a
request waits for no earlier answer (a new connection is opened while all are busy, up to
``max_connections``), so a slow endpoint shows as answer time, not as a lower offered rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.bench.core import percentiles

# (seq, when it was due as epoch seconds) -> (body, headers); called right before the request is written
Build = Callable[[int, float], tuple[bytes, Mapping[str, str]]]


@dataclass
class _Tally:
    ok: int = 0
    failed: int = 0
    late: int = 0  # due, but no connection was free before the sending time was over
    opened: int = 0
    answer_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.failed += 1
        self.errors[what] = self.errors.get(what, 0) + 1


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """Write one request, read its answer: (status, whether the connection may be reused)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, keep = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
        if length:
            await self.reader.readexactly(length)
        return status, keep

    def close(self) -> None:
        self.writer.close()


class PacedSender:
    """Posts ``rate`` requests a second for ``seconds`` to ``url``; ``build(seq, due)`` makes each body and its
    headers right before it is written (so a send time in the body is the real one; ``due`` is when the
    schedule wanted it sent, for a latency that counts the sender's own lateness too)."""

    def __init__(self, url: str, build: Build, max_connections: int = 256, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.build, self.max_connections, self.timeout = build, max_connections, timeout

    def run(self, rate: int, seconds: float) -> dict[str, Any]:
        """Send on schedule (a request that could not go out by ``seconds`` + 1 s is not sent); returns
        offered / achieved figures, answer times and how late the sender was."""
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            return asyncio.run(self._run(rate, seconds))
        return uvloop.run(self._run(rate, seconds))

    def _request(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        head = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    async def _run(self, rate: int, seconds: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        total = int(rate * seconds)
        tally = _Tally()
        idle: list[_Conn] = []
        slots = asyncio.Semaphore(self.max_connections)

        async def one(seq: int, due: float) -> None:
            async with slots:
                if time.perf_counter() > stop_at:  # the endpoint fell this far behind: not offered
                    tally.late += 1
                    return
                conn = idle.pop() if idle else None
                try:
                    if conn is None:
                        conn = _Conn(*await asyncio.open_connection(self.host, self.port))
                        tally.opened += 1
                    started = time.perf_counter()  # the loop's clock may have ms resolution (uvloop)
                    body, headers = self.build(seq, time.time() - (started - due))
                    tally.lag_ms.append((started - due) * 1000)
                    status, keep = await asyncio.wait_for(
                        conn.exchange(self._request(body, headers)), self.timeout
                    )
                    tally.answer_ms.append((time.perf_counter() - started) * 1000)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                        ValueError) as exc:  # fmt: skip
                    tally.error(type(exc).__name__)
                    if conn is not None:
                        conn.close()
                    return
                if keep:
                    idle.append(conn)
                else:
                    conn.close()
                if status < 300:
                    tally.ok += 1
                else:
                    tally.error(f"HTTP {status}")

        t0 = time.perf_counter() + 0.2
        stop_at = t0 + seconds + 1.0
        tasks: set[asyncio.Task[None]] = set()
        sent = 0
        for seq in range(total):
            due = t0 + seq / rate
            now = time.perf_counter()
            if now > stop_at:
                break
            if due > now + 0.0005:  # the loop's timers have ~1 ms resolution: what is due now goes now
                await asyncio.sleep(due - now)
            task = loop.create_task(one(seq, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if tasks:
            await asyncio.wait(set(tasks))
        send_seconds = time.perf_counter() - t0
        for conn in idle:
            conn.close()
        return {"offered_rate": rate, "planned": total, "sent_ok": tally.ok, "failed": tally.failed,
                "achieved_rate": round(tally.ok / send_seconds, 1), "send_seconds": round(send_seconds, 2),
                "connections": tally.opened, "errors": tally.errors,
                "answer_ms": percentiles(tally.answer_ms), "schedule_lag_ms": percentiles(tally.lag_ms),
                "not_sent_in_time": total - sent + tally.late}  # fmt: skip
