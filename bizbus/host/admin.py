"""The admin side of a bizbus process: its bearer token, both HTTP listeners, the stored connector pauses.

Token: ``BIZBUS_ADMIN_TOKEN`` or ``BIZBUS_ADMIN_TOKEN_FILE``. ``bizbus up`` (a bus on one machine) writes a
random one into ``<BIZBUS_DATA_DIR>/admin.token`` (mode 0600) when none is configured and says where;
``bizbus worker`` and ``bizbus flows run`` (production) do not: without a token their control routes answer
403 with how to set one, while /metrics, /readyz and /healthz keep working for Prometheus and probes.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bizbus.host.httpserver import HttpServer, Limits, serve_http
from bizbus.host.pauses import PauseStore, PauseWatcher
from bizbus.settings import Settings

log = logging.getLogger("bizbus.host.admin")

TOKEN_FILE = "admin.token"


def admin_token(settings: Settings, generate: bool = False, echo: Callable[[str], None] | None = None) -> str | None:
    """The configured token; with ``generate`` and none configured, the one in ``data_dir/admin.token``
    (written with mode 0600 when missing)."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value() or None
    if not generate:
        return None
    path = Path(settings.data_dir) / TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    os.chmod(path, 0o600)
    if echo is not None:
        echo(f"admin token (for /connectors and pause/resume/restart): {path.resolve()}")
    return path.read_text(encoding="utf-8").strip() or None


def serve(settings: Settings, app: Any, token: str | None) -> HttpServer:
    """Both listeners of a bizbus process, with the limits from the settings."""
    return serve_http(settings.http_host, settings.http_port, app, admin=(settings.admin_host, settings.admin_port),
                      limits=Limits.from_settings(settings), admin_token=token)  # fmt: skip


def watch_pauses(settings: Settings, threads: Sequence[Any], health: Any) -> PauseWatcher | None:
    """Apply the stored pauses to the connectors among ``threads`` (``ComponentThread``s, not started yet)
    now, then keep polling; ``health`` reports and changes them. None when nothing can be paused."""
    comps = {t.name: t.component for t in threads if callable(getattr(t.component, "pause", None))}
    if not comps:
        return None

    def apply_to(name: str, paused: bool) -> None:
        (comps[name].pause if paused else comps[name].resume)()

    watcher = PauseWatcher(PauseStore(settings.state_dsn), comps, apply_to)
    watcher.apply()
    for name, pause in watcher.paused.items():
        log.warning("connector %s is %s (POST /connectors/%s/resume on the admin listener)", name, pause.describe(),
                    name)  # fmt: skip
    health.pause_watcher = watcher
    return watcher.start()


__all__ = ["admin_token", "serve", "watch_pauses"]
