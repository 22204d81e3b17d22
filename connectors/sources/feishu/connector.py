"""``feishu``: Feishu / Lark (飞书) approvals as ``bizbus.oa.ApprovalChanged`` events (flow F4).

    Feishu ──POST /webhooks/<name>──► FeishuWebhook: X-Lark-Signature, decrypt {"encrypt"}, token,
                                       url_verification echo; approval_instance -> inbox row
    inbox row ──► FeishuConverter: GET /open-apis/approval/v4/instances/{code} (form, applicant, times)
                                   -> ApprovalChanged on bizbus.oa.approval.v1 (key = instance code)

Published contract followed (open.feishu.cn, "接收事件" / "审批实例状态变更" / approval v4):
* encrypted body ``{"encrypt": base64(iv(16) ‖ AES-256-CBC(json))}``, key = SHA256(encrypt_key), PKCS#7;
  ``X-Lark-Signature`` = hex SHA256(X-Lark-Request-Timestamp + X-Lark-Request-Nonce + encrypt_key + raw
  body). ``url_verification`` ({challenge, token, type}) is not signed: the token is checked, the
  challenge echoed as plain JSON (also when the request was encrypted).
* v2 envelope ``{schema: "2.0", header: {event_id, event_type, create_time, token, app_id, tenant_key},
  event}``; the approval events also still come as v1 ``{uuid, token, ts, type: "event_callback", event}``
  with ``event.type`` = ``approval_instance``. ``operate_time`` is a string or an int64 (REVERTED).
  Delivery id = header.event_id (v1: uuid); entity key ``instance:<code>@<status>/<operate_time ms>``, so
  a redelivery and the same change in the other envelope are stored once.
* events arrive only for approval definitions the app subscribed (``POST /open-apis/approval/v4/approvals/
  {code}/subscribe``; code 1390007 "subscription existed" is success) — done at setup.
* tenant_access_token (``POST /open-apis/auth/v3/tenant_access_token/internal``) is cached until shortly
  before ``expire`` and fetched again when an API answers 99991661/99991663/99991671 (missing, invalid,
  malformed token). Rate limit: HTTP 429 (older APIs 400) with code 99991400 and ``x-ogw-ratelimit-reset``.

No backfill: Feishu's instance list filters by creation time only and the instance detail does not carry
the ``operate_time`` of its last change, so a poll could not name a change by the webhook's entity key.
"""

from __future__ import annotations

import logging

from bizbus.connectors.runtime.inbox import Converter, InboxConnector, WebhookHandler

from bizbus.errors import ConfigError
from bizbus.failures import ConnectorError, RetryPolicy, call_with_retry

from .api import FeishuClient
from .config import FeishuConfig
from .convert import FeishuConverter
from .mapping import TOPIC, FormMapping
from .webhook import FeishuWebhook

log = logging.getLogger(__name__)


class FeishuSource(InboxConnector):
    """Feishu approval events (webhook) -> inbox -> ApprovalChanged."""

    Config = FeishuConfig
    config: FeishuConfig

    def topics(self) -> tuple[str, ...]:
        return (TOPIC,)

    def setup(self) -> None:
        c = self.config
        who = f"feishu connector {self.name}"
        self._app_secret = c.app_secret_env.read("app secret", who)
        self._token = c.verification_token_env.read("verification token", who)
        self._encrypt_key = c.encrypt_key_env.read("encrypt key", who) if c.encrypt_key_env else None
        self.subscribe()
        super().setup()

    def subscribe(self) -> None:
        """Subscribe every configured approval definition (idempotent: "subscription existed" is fine)."""
        codes = list(dict.fromkeys(self.config.approval_codes))
        if not codes:
            return
        client = self._client()
        policy = RetryPolicy(initial_delay=0.5, max_delay=5, max_attempts=4, max_elapsed=30)
        try:
            for code in codes:
                new = call_with_retry(lambda code=code: client.subscribe(code), policy)
                log.info(
                    "feishu %s: approval %s %s",
                    self.name,
                    code,
                    "subscribed" if new else "already subscribed",
                )
        except ConnectorError as exc:  # call_with_retry classified httpx errors too
            where = self.config.api_base_url
            raise ConfigError(
                f"feishu connector {self.name}: cannot subscribe approval events at {where}: {exc}"
            ) from exc
        finally:
            client.close()

    def _client(self) -> FeishuClient:
        c = self.config
        return FeishuClient(c.api_base_url, c.app_id, self._app_secret, c.app_secret_env, c.timeout_seconds)

    def handler(self) -> WebhookHandler:
        return FeishuWebhook(self._token, self._encrypt_key, self.config.max_clock_skew_seconds)

    def converter(self) -> Converter:
        c = self.config
        mapping = FormMapping(c.amount_field, c.project_field, c.business_ref_field, c.default_currency)
        return FeishuConverter(self._client(), mapping)
