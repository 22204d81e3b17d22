"""A MariaDB server of one test alone, with the binary log on (ROW, full images), that the test may stop,
kill and restart (never do that to the machine's shared server, which runs with ``log_bin=OFF``).

    with private_mariadb() as db:
        db.dsn()                            # mysql://root@127.0.0.1:<port>/
        conn = db.connect("jxc")            # a PyMySQL connection (autocommit)
        db.restart()                        # clean shutdown (SIGTERM), then start
        db.kill(); db.start()               # SIGKILL: a crash, InnoDB + binlog recovery at start
        with db.down(seconds=3): ...        # stopped for a while, started again on leaving

The data directory is initialised once per test process (``mariadb-install-db`` takes seconds) and copied
for each server. ``--no-defaults`` keeps the machine's my.cnf out (it would move the datadir and socket).
Set ``BIZBUS_MARIADBD`` / ``BIZBUS_MARIADB_INSTALL_DB`` to use other binaries.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest

from bizbus.devstack.procs import free_port

MARIADBD = os.environ.get("BIZBUS_MARIADBD") or shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = os.environ.get("BIZBUS_MARIADB_INSTALL_DB") or shutil.which("mariadb-install-db") or ""
# binlog as a CDC source needs it (docs/connectors/mariadb_cdc.md); the rest keeps a test server small and quick.
# innodb_flush_log_at_trx_commit=2 writes the log at each commit (a killed *process* loses nothing; only an
# OS crash would), sync_binlog=0 leaves the binlog's fsync to the OS likewise.
SERVER_OPTIONS = ("--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL", "--server-id=1",
                  "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0",
                  "--skip-name-resolve", "--max-connections=100", "--character-set-server=utf8mb4",
                  "--collation-server=utf8mb4_general_ci", "--log-warnings=1")  # fmt: skip
_template: Path | None = None


def _template_datadir() -> Path:
    """A freshly installed data directory, made once per process and copied for each server."""
    global _template
    if _template is None:
        root = Path(tempfile.mkdtemp(prefix="bizbus-mariadb-template-"))
        atexit.register(shutil.rmtree, root, True)
        subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={root / 'data'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=180)  # fmt: skip
        _template = root / "data"
    return _template


@dataclass
class PrivateMariaDB:
    port: int
    root: Path  # data directory, binlog, socket and error log below it
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "error.log"

    def dsn(self, database: str = "") -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str | None = None, **kwargs: Any) -> pymysql.connections.Connection:
        """A connection of the test (autocommit) as root, over TCP."""
        kwargs.setdefault("autocommit", True)
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", database=database,
                               connect_timeout=5, charset="utf8mb4", **kwargs)  # fmt: skip

    def execute(self, sql: str, args: Any = None, database: str | None = None) -> list[tuple[Any, ...]]:
        with self.connect(database) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60) -> None:
        if self.running:
            return
        argv = [MARIADBD, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
                f"--socket={self.root / 'sock'}", f"--pid-file={self.root / 'pid'}", "--bind-address=127.0.0.1",
                "--user=root", f"--log-bin={self.root / 'binlog'}", f"--log-error={self.logfile}",
                *SERVER_OPTIONS, *self.extra]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                self.connect().close()
                return
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not accept connections: {self._log_tail()}") from None
                time.sleep(0.05)

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """``fast``: a clean shutdown (SIGTERM, as ``mariadb-admin shutdown``); ``kill``: SIGKILL, a crash."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM if mode == "fast" else signal.SIGKILL)
        self.proc.wait(timeout)

    def kill(self) -> None:
        self.stop("kill")

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

    def gtid_pos(self) -> str:
        """``@@gtid_binlog_pos``: the GTID of the last transaction written to the binlog (per domain)."""
        return str(self.execute("SELECT @@gtid_binlog_pos")[0][0])

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no error log)"


@contextmanager
def private_mariadb(*extra: str) -> Iterator[PrivateMariaDB]:
    """Start a server on a free port with a copy of the installed data directory; stopped and deleted
    afterwards. ``extra``: more mariadbd options. Skips the test when the binaries are not installed."""
    if not (INSTALL_DB and Path(MARIADBD).exists()):
        pytest.skip("no MariaDB server binaries (mariadbd, mariadb-install-db); set BIZBUS_MARIADBD")
    root = Path(tempfile.mkdtemp(prefix="bizbus-mariadb-"))
    shutil.copytree(_template_datadir(), root / "data")
    db = PrivateMariaDB(free_port(), root, tuple(extra))
    try:
        db.start()
        yield db
    finally:
        try:
            db.stop("kill")
        finally:
            shutil.rmtree(root, ignore_errors=True)


JXC_SQL = Path(__file__).parent / "fixtures" / "jxc" / "mariadb.sql"


def create_jxc(db: PrivateMariaDB, database: str = "jxc") -> None:
    """(Re)create ``database`` with the 进销存 test tables of tests/fixtures/jxc/mariadb.sql."""
    db.execute(f"DROP DATABASE IF EXISTS `{database}`")
    db.execute(f"CREATE DATABASE `{database}`")
    with db.connect(database, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS) as conn, conn.cursor() as cur:
        cur.execute(JXC_SQL.read_text(encoding="utf-8"))
        while cur.nextset():
            pass
