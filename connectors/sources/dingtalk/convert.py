"""Inbox rows of DingTalk instance changes -> ApprovalChanged (the instance's form read through the API)."""

from __future__ import annotations

import logging

from bizbus.connectors.runtime.inbox import Converter, Event, InboxRow

from .api import DingTalkApi
from .config import DingTalkConfig
from .mapping import approval_changed, approval_status
from .webhook import KIND_INSTANCE

log = logging.getLogger(__name__)


class DingTalkConverter(Converter):
    """Inbox rows of instance changes -> ApprovalChanged (reads the instance's form through the API)."""

    def __init__(self, config: DingTalkConfig, app_secret: str) -> None:
        self.config, self._secret = config, app_secret
        self.api: DingTalkApi | None = None

    def setup(self) -> None:
        c = self.config
        self.api = DingTalkApi(c.api_base_url, c.app_key, self._secret, c.timeout_seconds)

    def convert(self, row: InboxRow) -> list[Event]:
        if row.kind != KIND_INSTANCE:
            return []
        event = row.payload
        if approval_status(event) is None:
            log.info("dingtalk: %s is no approval status change; skipped", row.entity_key)
            return []
        assert self.api is not None, "setup() opens the API client"
        deleted = event.get("type") == "delete"  # a deleted instance cannot be read any more
        instance = None if deleted else self.api.get_instance(str(event["processInstanceId"]))
        return [approval_changed(event, instance, self.config)]

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None
