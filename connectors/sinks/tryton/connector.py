"""The ``tryton`` sink: cost centers, vouchers, purchase orders, and (opt in) requisitions as purchase requests,
material cost entries as analytic moves and F5 decisions on sales, applied to a real Tryton 8.2 exactly once.

* ``config``     -- ``TrytonSinkConfig``; ``connector`` -- ``TrytonSink``; ``spec`` -- the component type
* ``api``        -- a small JSON-RPC client (login, session renewal, Tryton's typed JSON, error mapping)
* ``mapping``    -- pure rules: canonical record -> Tryton values, checks before a write
* ``accounting`` / ``purchases`` / ``requests`` / ``sales`` -- per-kind reads, decisions and batched writes
* ``writer``     -- ``TrytonWriter`` (the ``SinkWriter``)
* ``module/``    -- the Tryton module ``bizbus_ref`` (a unique ``bizbus_ref`` field on the records we write),
  found by trytond through the ``trytond.modules`` entry point; activate it in the Tryton database.
"""

from __future__ import annotations

from bizbus.connectors.runtime import probes
from bizbus.connectors.runtime.sink import SinkConnector
from bizbus.connectors.sinks.tryton.api import rpc_endpoint
from bizbus.connectors.sinks.tryton.config import DEFAULT_TOPICS, TrytonSinkConfig
from bizbus.connectors.sinks.tryton.writer import TrytonWriter

__all__ = ["DEFAULT_TOPICS", "TrytonSink", "TrytonSinkConfig"]


class TrytonSink(SinkConnector):
    """Applies cost centers, vouchers, cost entries, purchase orders, requisitions and order decisions to a
    Tryton ERP exactly once (by bizbus_ref)."""

    Config = TrytonSinkConfig
    config: TrytonSinkConfig

    def validate(self) -> None:
        super().validate()
        self.config.password_env.read(f"the Tryton password of user {self.config.user!r}", f"connector {self.name}")

    def writer(self) -> TrytonWriter:
        return TrytonWriter(self.name, self.config)

    def probe(self) -> str | None:
        """The Tryton server answers JSON-RPC (``common.server.version`` needs no login)."""
        endpoint, _db = rpc_endpoint(self.config.url)
        root = endpoint.split("/", 3)
        return probes.http("/".join(root[:3]) + "/", "POST", {"method": "common.server.version", "params": []})
