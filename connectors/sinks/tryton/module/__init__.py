"""``bizbus_ref``: a tiny Tryton module of bizbus's own (registered through the ``trytond.modules`` entry point).

It adds a unique, writable ``bizbus_ref`` Char field (SQL unique constraint) to the records the Tryton sink
writes -- analytic accounts (cost centers), account moves (vouchers, cost entries), purchases (orders),
purchase requests (requisition lines), sales (F5 decisions) and project works -- so the sink finds "already
written" by searching that field, and a second create of the same effect fails in the database instead of
doubling it. Analytic accounts, purchases, purchase requests and sales also keep ``bizbus_version``, the
source version last applied, so a stale re-delivery never overwrites a newer change.

Purchase requests cannot be created by a client in Tryton; ``purchase.request.bizbus_create`` and
``bizbus_cancel`` (RPC) are bizbus's door for them (see ref.py).

The classes are listed in ``tryton.cfg`` (``[register]``); this file must not import trytond, because
bizbus imports the package path without a Tryton server.
"""
