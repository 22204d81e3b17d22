"""``dingtalk``: DingTalk (钉钉) approvals (OA 审批) as ``bizbus.oa.ApprovalChanged`` events (flow F4).

    POST /webhooks/<name>?msg_signature=..&timestamp=..&nonce=..  {"encrypt": "..."}
      -> signature (401 bad_signature), timestamp skew (401 stale), AES decrypt + owner key (400 malformed)
      -> bpms_instance_change stored, the encrypted "success" answered at once (DingTalk retries after ~1.5 s);
         check_url and bpms_task_change answered, not stored (every approval status change is an instance event)
      -> converter: GET /v1.0/workflow/processInstances (cached access token) -> ApprovalChanged

Callback crypto as DingTalk publishes it: SHA1 of sorted (token, timestamp, nonce, encrypt); AES-256-CBC with
key = base64(aes_key + "="), IV = first 16 key bytes, PKCS#7 padding to 32; plaintext = 16 random bytes +
4-byte big-endian length + message + owner key (corp id for callbacks registered by API, app key for the
developer console's subscription). No backfill: the instance list API is per template and by start time.
"""

from __future__ import annotations

from bizbus.connectors.runtime.inbox import Converter, InboxConnector, WebhookHandler

from .config import DingTalkConfig
from .convert import DingTalkConverter
from .mapping import TOPIC
from .webhook import DingTalkHandler


class DingTalkSource(InboxConnector):
    """DingTalk approvals: encrypted event callbacks -> inbox -> ApprovalChanged on bizbus.oa.approval.v1."""

    Config = DingTalkConfig
    config: DingTalkConfig

    def validate(self) -> None:
        super().validate()
        c = self.config
        for env, what in ((c.token_env, "callback token"), (c.aes_key_env, "aes_key"),
                          (c.app_secret_env, "app secret")):  # fmt: skip
            env.read(what, f"dingtalk connector {self.name}")

    def handler(self) -> WebhookHandler:
        c = self.config
        owners = tuple(k for k in (c.corp_id, c.app_key) if k)
        who = f"dingtalk connector {self.name}"
        return DingTalkHandler(c.token_env.read("callback token", who), c.aes_key_env.read("aes_key", who), owners,
                               c.max_clock_skew_seconds)  # fmt: skip

    def converter(self) -> Converter:
        secret = self.config.app_secret_env.read("app secret", f"dingtalk connector {self.name}")
        return DingTalkConverter(self.config, secret)

    def topics(self) -> tuple[str, ...]:
        return (TOPIC,)
