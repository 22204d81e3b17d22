"""A real Tryton 8.2 ERP for tests: one seeded SQLite template database per session, a copy per test.

``tests/conftest.py`` imports the fixtures, so every test module sees the same ones (a module importing them
again would define a fixture of its own, and its session-scoped template would be built once more).

* ``tryton_template`` (session): builds the template once (``trytond-admin`` + :func:`seed`, progress printed;
  measured 2026-12-07 on 2 shared cores: 20.5 s with stock, purchase_request and sale activated too, against
  18.5 s without them -- activating the three modules adds ~2-3 s, the seed ~0.5 s); skipped with the reason
  when trytond is not installed. To iterate faster, build one with
  ``python -m tests.tryton_env build FOLDER`` and point ``BIZBUS_TRYTON_TEMPLATE`` at the printed file
  (rebuild it after changing the seed or the bizbus_ref module).
* ``tryton`` (function): copies the template into a fresh folder, starts ``trytond`` on a free port and
  yields a :class:`TrytonServer` (``url``, ``database``, ``user``, ``password_env``, ``rpc``,
  ``restart()``); the admin password is put into the environment variable ``PASSWORD_ENV``.
* :func:`start_tryton_server` does the same outside fixtures.

The seed (company "Bizbus Demo Co" in CNY, chart of accounts, fiscal year 2026 with monthly periods, accounts
6601 / 2211 / 1403 / 5401.01 (material cost, F6's default), the analytic root ``CC``, suppliers SUP-001 /
SUP-002, customer CUST-001, products MAT-STEEL-10 / MAT-CABLE-4 (goods, salable) / SVC-INSTALL; the stock
module's warehouse ``WH``) runs through trytond's own API in a child process (``python -m tests.tryton_env seed DB``), so trytond's
global configuration never leaks into the test process.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bizbus.devstack.tryton_demo import (  # noqa: F401  (re-exported for the tests)
    ACCOUNTS,
    ADMIN_PASSWORD,
    ADMIN_USER,
    COMPANY,
    MODULES,
    PASSWORD_ENV,
    SUPPLIERS,
    TEMPLATE_DB,
    TEMPLATE_ENV,
    TrytonServer,
    build_template,
    start_tryton_server,
    trytond_missing,
)

# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tryton_template(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Path of the seeded template ``.sqlite`` (built once per test session; progress shown even under capture)."""
    reason = trytond_missing()
    if reason:
        pytest.skip(reason)
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def log(line: str) -> None:
        if capture is None:
            print(line)
            return
        with capture.global_and_fixture_disabled():
            print(line, flush=True)

    prebuilt = os.environ.get(TEMPLATE_ENV)
    if prebuilt:
        log(f"\n[tryton] using the prebuilt template {prebuilt} ({TEMPLATE_ENV})")
        return Path(prebuilt)
    log("")
    started = time.monotonic()
    path = build_template(tmp_path_factory.mktemp("tryton-template"), log=log)
    log(f"[tryton] template build took {time.monotonic() - started:.1f} s")
    return path


@pytest.fixture
def tryton(tryton_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrytonServer]:
    """A fresh copy of the template served by its own trytond; stopped afterwards."""
    folder = tmp_path / "tryton"
    folder.mkdir()
    name = "bizbus"
    shutil.copyfile(tryton_template, folder / f"{name}.sqlite")
    monkeypatch.setenv(PASSWORD_ENV, ADMIN_PASSWORD)
    server = start_tryton_server(folder, name)
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "build":
        print(build_template(Path(sys.argv[2]).resolve()))
    else:
        sys.exit("usage: python -m tests.tryton_env build FOLDER")
