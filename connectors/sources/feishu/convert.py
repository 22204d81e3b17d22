"""Inbox rows (approval_instance events) -> ApprovalChanged, reading the instance from the Feishu API."""

from __future__ import annotations

from collections.abc import Mapping

from bizbus.connectors.runtime.inbox import Converter, Event, InboxRow

from bizbus.failures import Permanent

from .api import FeishuClient
from .mapping import FormMapping, approval_changed
from .webhook import EVENT_TYPE


class FeishuConverter(Converter):
    """Inbox rows (approval_instance events) -> ApprovalChanged, reading the instance from the API."""

    def __init__(self, client: FeishuClient, mapping: FormMapping) -> None:
        self.client, self.mapping = client, mapping

    def setup(self) -> None:
        self.client.setup()

    def convert(self, row: InboxRow) -> list[Event]:
        if row.kind != EVENT_TYPE:
            return []
        event = row.payload.get("event")
        if not isinstance(event, Mapping) or not event.get("instance_code"):
            raise Permanent(f"inbox row {row.id} holds no approval_instance event", reason="validation")
        instance = self.client.get_instance(str(event["instance_code"]))
        try:
            return [approval_changed(event, instance, self.mapping)]
        except ValueError as exc:  # a JSONDecodeError of the form too
            raise Permanent(
                f"approval instance {event['instance_code']}: {exc}", reason="validation"
            ) from exc

    def close(self) -> None:
        self.client.close()
