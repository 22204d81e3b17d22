"""Embedded, Confluent-compatible Avro schema registry (aiohttp REST API over one SQLite file).

* :func:`create_app` -- the aiohttp application (``app.py``)
* :class:`RegistryStore` -- durable state (``store.py``)
* :func:`run` / :class:`EmbeddedRegistry` -- serve in the foreground or on a background thread (``server.py``)
* ``python -m bizbus.schemas.registry --host H --port P --db PATH`` -- the command line
"""

from bizbus.schemas.registry.app import create_app
from bizbus.schemas.registry.server import EmbeddedRegistry, RegistryPortInUse, run
from bizbus.schemas.registry.store import RegistryStore

__all__ = ["EmbeddedRegistry", "RegistryPortInUse", "RegistryStore", "create_app", "run"]
