"""A PostgreSQL server of one test alone, from the installed binaries, that the test may stop, restart and
terminate connections on (never do that to the machine's shared server).

    with private_postgres() as pg:
        dsn = pg.dsn()                      # postgresql://postgres@127.0.0.1:<port>/postgres
        pg.terminate("bizbus%")             # end every backend whose application_name matches
        pg.restart()                        # pg_ctl restart -m fast
    with private_postgres(logical=True) as pg: ...   # wal_level=logical (CDC: replication slots)
        with pg.down(seconds=3): ...        # stopped for a while, started again on leaving

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user (``runuser``), in a
directory of its own under the system temp dir (pytest's tmp_path is private to root). Set
``BIZBUS_PG_BIN`` to use another version's binaries. The test's own connections should use
:data:`TEST_APP` as application_name so they can be told from the bus's (``bizbus ...``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bizbus.devstack.procs import free_port

TEST_APP = "pgtest"
PG_BIN = Path(os.environ.get("BIZBUS_PG_BIN", "/usr/lib/postgresql/15/bin"))
# a test server: no durability work, small, quick to start and stop
SERVER_OPTIONS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB"
                  " -c max_connections=60 -c listen_addresses=127.0.0.1")  # fmt: skip
# logical decoding (CDC tests): slots and WAL senders for the connector, the benchmark's bare loop and a spare;
# synchronous_commit on, so that a commit the application saw survives ``stop -m immediate`` (the CDC tests
# compare what was committed with what reached Kafka)
LOGICAL_OPTIONS = " -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10 -c synchronous_commit=on"


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PrivatePostgres:
    port: int
    root: Path  # data directory, log and socket directory below it
    options: str = ""  # server options on top of SERVER_OPTIONS (e.g. LOGICAL_OPTIONS)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """An autocommit connection of the test (application_name ``TEST_APP``)."""
        return psycopg.connect(self.dsn(dbname), autocommit=True, application_name=TEST_APP, connect_timeout=5,
                               **kwargs)  # fmt: skip

    def _ctl(self, *args: str, timeout: float = 60) -> None:
        opts = f"{SERVER_OPTIONS}{self.options} -c port={self.port} -c unix_socket_directories={self.root}"
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                "-o", opts, *args]  # fmt: skip
        subprocess.run(_as_server_user(argv), check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: sessions are ended, a clean shutdown; ``immediate``: like a crash (recovery at start)."""
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    @contextmanager
    def down(self, seconds: float = 0.0, mode: str = "fast") -> Iterator[None]:
        """Stopped inside the block (at least ``seconds``), started again when it is left."""
        self.stop(mode)
        started = time.monotonic()
        try:
            yield
        finally:
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
            self.start()

    def backends(self, app_like: str = "%") -> list[tuple[int, str, str]]:
        """(pid, application_name, database) of the client backends whose name matches (not the caller's)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT pid, application_name, coalesce(datname, '') FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name LIKE %s",
                (app_like,),
            ).fetchall()
        return [(int(p), str(a), str(d)) for p, a, d in rows]

    def terminate(self, app_like: str = "bizbus%") -> int:
        """``pg_terminate_backend`` on every client backend whose application_name matches; how many."""
        pids = [pid for pid, _app, _db in self.backends(app_like)]
        with self.connect() as conn:
            rows = conn.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) AS p", (pids,)).fetchall()
        return sum(1 for (ok,) in rows if ok)


@contextmanager
def private_postgres(logical: bool = False) -> Iterator[PrivatePostgres]:
    """Initialise and start a server on a free port; stopped and deleted afterwards. Skips the test when
    the binaries are not installed. ``logical``: ``wal_level=logical`` with replication slots (CDC)."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (set BIZBUS_PG_BIN)")
    root = Path(tempfile.mkdtemp(prefix="bizbus-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pg = PrivatePostgres(free_port(), root, LOGICAL_OPTIONS if logical else "")
    try:
        subprocess.run(_as_server_user([str(PG_BIN / "initdb"), "-D", str(pg.datadir), "-U", "postgres", "-A", "trust",
                                        "--no-sync", "-E", "UTF8", "--locale", "C"]),
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        pg.start()
        yield pg
    finally:
        try:
            if (pg.datadir / "postmaster.pid").exists():
                pg.stop("immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)
