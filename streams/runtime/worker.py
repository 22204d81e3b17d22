"""``bizbus flows run``: one Faust worker with the agents of the planned flows, in the foreground."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bizbus.streams.runtime.app import create_app, install_uvloop, tune_gc
from bizbus.streams.runtime.plan import plan_flows

from bizbus import logs

if TYPE_CHECKING:
    from bizbus.catalogue import Catalogue
    from bizbus.host.pipeline import Pipeline
    from bizbus.settings import Settings


def run_worker(settings: Settings, pipeline: Pipeline, catalogue: Catalogue, only: tuple[str, ...] = (),
               echo: Callable[[str], None] = print) -> int:  # fmt: skip
    """Run one Faust worker with the agents of the planned flows until SIGINT/SIGTERM; the exit code."""
    import faust
    from bizbus.streams.runtime.register import register
    from confluent_kafka.admin import AdminClient

    from bizbus.host.admin import admin_token, serve
    from bizbus.host.runner import Health, admin_port
    from bizbus.kafka import wait_for_metadata
    from bizbus.serde import AvroSerde

    plan = plan_flows(pipeline, only)
    install_uvloop()
    wait_for_metadata(settings.kafka_config(), timeout=15)
    brokers = len(AdminClient(settings.kafka_config()).list_topics(timeout=10).brokers)
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    partitions = max(t.partitions for t in catalogue.topics)
    app = create_app(settings, plan, replication_factor=min(3, max(brokers, 1)), partitions=partitions)
    register(app, plan, settings, catalogue, AvroSerde(settings.registry_config()))
    server = serve(settings, Health(settings, [], lambda: worker_check(app)), admin_token(settings))
    echo(f"bizbus flows: {', '.join(plan.names)} as Faust app {plan.app_id} against {settings.bootstrap_servers}; "
         f"http://{settings.http_host}:{server.server_address[1]}/healthz, admin "
         f"http://{settings.admin_host}:{admin_port(server)}/readyz /metrics")  # fmt: skip
    tune_gc(app)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), redirect_stdouts=False, quiet=True,
                          logging_config=logs.faust_logging_config(settings.log_level))  # fmt: skip
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1
    finally:
        server.shutdown()
        server.server_close()
    return 0


def worker_check(app: Any) -> dict[str, str]:
    """Readiness of the Faust worker: started and not stopping (a rebalance in progress is still ready)."""
    state = str(getattr(app, "state", "") or "")
    if getattr(app, "should_stop", False):
        return {"faust": f"stopping ({state})"}
    return {"faust": "ok" if getattr(app, "started", False) else f"starting ({state or 'init'})"}
