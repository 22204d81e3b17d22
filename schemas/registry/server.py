"""Serving the embedded schema registry: blocking :func:`run` and the in-process :class:`EmbeddedRegistry`.

``run`` serves in the foreground until SIGTERM or SIGINT, then shuts down cleanly (in-flight requests are
finished, the SQLite store is closed). ``EmbeddedRegistry`` runs the same app on a background thread
with its own event loop, for tests and for tools that want a registry inside their own process::

    with EmbeddedRegistry(tmp_path / "registry.db") as registry:   # port 0: any free port
        client = SchemaRegistryClient({"url": registry.url})
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web
from bizbus.schemas.registry.app import create_app
from bizbus.schemas.registry.store import RegistryStore

from bizbus.errors import PortInUse

log = logging.getLogger(__name__)


class RegistryPortInUse(PortInUse):
    """The port the registry should listen on is already taken."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__("The schema registry", host, port, "--port (or BIZBUS_REGISTRY_PORT)")
        self.host = host


async def _start(store: RegistryStore, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner and the bound port (the real one when ``port`` is 0)."""
    runner = web.AppRunner(create_app(store), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise RegistryPortInUse(host, port) from exc
        raise
    bound = port
    server = site._server  # aiohttp exposes no public accessor for the bound socket
    if server is not None and getattr(server, "sockets", None):
        bound = server.sockets[0].getsockname()[1]
    return runner, bound


def _announce(host: str, port: int, db_path: str | os.PathLike[str]) -> None:
    log.info("schema registry listening on http://%s:%d (store: %s)", host, port, db_path)


async def _serve_until_signalled(store: RegistryStore, host: str, port: int, db_path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner, bound = await _start(store, host, port)
    _announce(host, bound, db_path)
    try:
        await stop.wait()
        log.info("schema registry stopping")
    finally:
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run(host: str, port: int, db_path: str) -> None:
    """Serve the registry on ``host``:``port`` with the store at ``db_path`` until SIGTERM/SIGINT.

    Raises :class:`RegistryPortInUse` when the port is taken.
    """
    store = RegistryStore(db_path)
    try:
        asyncio.run(_serve_until_signalled(store, host, port, db_path))
    finally:
        store.close()


class EmbeddedRegistry:
    """The registry on a background thread: ``start()``/``stop()`` or use as a context manager."""

    def __init__(self, db_path: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.db_path = Path(db_path)
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL of the running registry, e.g. ``http://127.0.0.1:40123``."""
        if not self._ready.is_set() or self._error is not None:
            raise RuntimeError("the embedded schema registry is not running")
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedRegistry:
        """Start serving; returns when the port is bound. Raises what prevented the start."""
        if self._thread is not None:
            raise RuntimeError("the embedded schema registry is already started")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._main, name="schema-registry", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the embedded schema registry did not start within {timeout}s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and close the store (idempotent)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"the embedded schema registry did not stop within {timeout}s")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that called start()
            self._error = exc
        finally:
            self._ready.set()
            loop.close()
            self._loop = None

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        store = RegistryStore(self.db_path)
        try:
            runner, self.port = await _start(store, self.host, self.port)
            _announce(self.host, self.port, self.db_path)
            self._ready.set()
            try:
                await self._stopping.wait()
            finally:
                await runner.cleanup()
        finally:
            store.close()
