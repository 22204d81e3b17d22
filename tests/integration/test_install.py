"""A non-editable install works from any folder and writes nothing into site-packages.

The repository's wheel is built (offline, without build isolation) and installed with ``--no-deps`` into a
fresh venv whose site-packages gets a ``.pth`` line pointing at this venv's site-packages for the
dependencies. From an empty folder: ``bizbus --version``, ``bizbus check`` (the default pipeline and
catalogue come from the package), ``bizbus docs --out`` and a short ``bizbus up`` with the embedded broker,
stopped with SIGTERM. Then no file in the install's site-packages is new or changed (Python's own bytecode
caches aside) and the state went to ``./.bizbus``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from bizbus.catalogue import load_catalogue
from bizbus.devstack.procs import free_port
from bizbus.settings import PROJECT_ROOT
from tests.bus_harness import read_banner

SOURCES = ("bizbus", "connectors", "streams", "schemas", "pyproject.toml", "setup.py", "README.md")


def _run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 180) -> subprocess.CompletedProcess:  # fmt: skip
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _snapshot(site: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(site)): (p.stat().st_size, p.stat().st_mtime_ns) for p in site.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(bin folder, site-packages) of a venv with the wheel of this checkout installed, not editable."""
    root = tmp_path_factory.mktemp("install")
    src, dist, venv = root / "src", root / "dist", root / "venv"
    src.mkdir()
    for name in SOURCES:  # a copy: the build's egg-info and build/ must not land in the checkout
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", dist, src)  # fmt: skip
    wheel = next(dist.glob("bizbus-*.whl"))
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "zz_bizbus_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    _run(sys.executable, "-m", "pip", "--python", py, "install", "--quiet", "--no-deps", "--no-index", wheel)
    assert (site / "bizbus" / "defaults" / "pipeline.yaml").is_file()
    assert not (site / "bizbus" / "__editable__").exists() and (site / "bizbus" / "connectors").is_dir()
    return venv / "bin", site


def test_wheel_holds_every_package_and_data_file(installed: tuple[Path, Path]) -> None:
    """Every folder with an ``__init__.py`` and every data file (YAML, Avro schema, Tryton module file) of the
    four source roots is in the install: a new connector or flow folder needs no packaging edit."""
    _, site = installed
    roots = {"bizbus": "bizbus", "connectors": "bizbus/connectors", "streams": "bizbus/streams", "schemas": "bizbus/schemas"}
    missing = []
    for folder, installed_as in roots.items():
        for path in (PROJECT_ROOT / folder).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in (".py", ".yaml", ".avsc", ".cfg", ".xml"):
                rel = path.relative_to(PROJECT_ROOT / folder)
                if not (site / installed_as / rel).is_file():
                    missing.append(f"{folder}/{rel}")
    assert not missing, f"not in the installed wheel: {missing}"


def test_installed_bizbus_runs_from_another_folder(installed: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, site = installed
    before = _snapshot(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIZBUS_", "KAFKA_", "SCHEMA_REGISTRY"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH="", BIZBUS_LOG_FORMAT="text",
               BIZBUS_BROKER_PORT=str(free_port()), BIZBUS_REGISTRY_PORT=str(free_port()),
               BIZBUS_HTTP_PORT=str(free_port()), BIZBUS_ADMIN_PORT=str(free_port()))  # fmt: skip
    bizbus = bin_dir / "bizbus"

    version = _run(bizbus, "--version", cwd=work, env=env).stdout
    assert version.startswith("bizbus ") and version.split()[1][0].isdigit(), version
    where = _run(bin_dir / "python", "-c", "import bizbus, sys; print(bizbus.__file__)", cwd=work, env=env).stdout
    assert where.strip() == str(site / "bizbus" / "__init__.py")  # the install, not the checkout
    check = _run(bizbus, "check", cwd=work, env=env).stdout
    n = len(load_catalogue(Path(__file__).resolve().parents[2] / "deploy" / "topics.yaml").names())
    assert f"ok: pipeline 'default' (1 components) and {n} catalogue topics are valid" in check, check
    docs = _run(bizbus, "docs", "--out", "generated", cwd=work, env=env).stdout
    assert (work / "generated" / "docs" / "reference.md").is_file() and "wrote generated/docs/reference.md" in docs

    proc = subprocess.Popen([bizbus, "up"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    lines: list[str] = []
    try:
        lines = read_banner(proc, 60)
        assert "bizbus is up — pipeline 'default' from " + str(site / "bizbus" / "defaults" / "pipeline.yaml") in "".join(
            lines), "".join(lines)  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "every child process has exited" in rest
    assert (work / ".bizbus").is_dir()  # the data dir is relative to the current folder
    after = _snapshot(site)
    changed = sorted(k for k in after if before.get(k) != after[k]) + sorted(set(before) - set(after))
    assert not changed, f"files written into site-packages: {changed}"
