"""Tryton ERP sink: cost centers, vouchers and purchase orders applied to a real Tryton 8.2 exactly once.

* ``rpc``        -- a small JSON-RPC client (login, session renewal, Tryton's typed JSON, error mapping)
* ``mapping``    -- pure rules: canonical record -> Tryton values, checks before a write
* ``accounting`` / ``purchases`` -- per-kind reads, decisions and batched writes
* ``writer``     -- ``TrytonWriter`` (the ``SinkWriter``); ``sink`` -- ``TrytonSinkConfig`` and ``TrytonSink``
* ``module/``    -- the Tryton module ``bizbus_ref`` (a unique ``bizbus_ref`` field on the records we write),
  found by trytond through the ``trytond.modules`` entry point; activate it in the Tryton database.
"""
