"""The webhook inbox: how a vendor's push (webhook, event callback) and pull (backfill poll) enter the bus.

    vendor ──POST /webhooks/<connector>──► WebhookHandler.handle()  verify signature, decrypt, parse
                                             │ 401 bad signature (metric)      │ 400 malformed (metric + dead letter)
                                             ▼
                                      inbox table (PostgreSQL)   INSERT .. ON CONFLICT DO NOTHING
                                             │                    (delivery id and entity version are unique:
                                             │                     a redelivery or a polled copy is dropped)
                                             ▼  answer the vendor now (fast: one local INSERT)
    Backfill.poll(watermark) ──► same inbox  (what no webhook delivered is counted as a gap)
                                             │
                     inbox source task ──────┘  reads rows in id order (cursor + lease as every source),
                                                Converter.convert(row) -> canonical events (may call the
                                                vendor's API, e.g. to read an approval's form) -> topic

Answering fast matters (DingTalk retries after ~1.5 s); the slow part (API reads, mapping) happens in the
source task, which keeps the usual rule: the cursor moves only after the broker acknowledged. A vendor
field never reaches a topic: rows keep the vendor payload, the converter emits canonical events only.

A vendor connector subclasses ``InboxConnector`` and provides ``handler()``, ``converter()`` and
optionally ``backfill()``.
"""

from bizbus.connectors.runtime.inbox.backfill import BackfillTask
from bizbus.connectors.runtime.inbox.connector import InboxConfig, InboxConnector
from bizbus.connectors.runtime.inbox.interface import (
    Accepted,
    Backfill,
    Converter,
    Delivery,
    Event,
    HttpRequest,
    HttpResponse,
    InboxRow,
    PollResult,
    WebhookHandler,
    WebhookRejected,
    parse_json_body,
    reject_unless,
    require,
)
from bizbus.connectors.runtime.inbox.reader import InboxReader
from bizbus.connectors.runtime.inbox.store import PgInbox, inbox_table

__all__ = ["Accepted", "Backfill", "BackfillTask", "Converter", "Delivery", "Event", "HttpRequest", "HttpResponse",
           "InboxConfig", "InboxConnector", "InboxReader", "InboxRow", "PgInbox", "PollResult", "WebhookHandler",
           "WebhookRejected", "inbox_table", "parse_json_body", "reject_unless", "require"]  # fmt: skip
