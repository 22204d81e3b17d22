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
import os
from collections.abc import Mapping

from bizbus.connectors.runtime.inbox import (
    Converter,
    Event,
    InboxConfig,
    InboxConnector,
    InboxRow,
    WebhookHandler,
)
from pydantic import Field

from bizbus.errors import ConfigError
from bizbus.failures import ConnectorError, Permanent, RetryPolicy, call_with_retry
from bizbus.logs import register_secret

from .api import FeishuClient
from .mapping import STATUS, SYSTEM, TOPIC, FormMapping, approval_changed, parse_form
from .webhook import EVENT_TYPE, FeishuWebhook, change_key, decrypt, parse_envelope, signature

log = logging.getLogger(__name__)

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


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


# -- the connector ----------------------------------------------------------------------------------


class FeishuConfig(InboxConfig):
    """Configuration of the ``feishu`` source (secrets only as names of environment variables)."""

    app_id: str = Field(
        min_length=1, description="App ID of the Feishu custom app", examples=["cli_a5f2c3d4e5f60123"]
    )
    app_secret_env: str = Field(
        pattern=ENV_NAME,
        description="environment variable holding the app secret",
        examples=["FEISHU_APP_SECRET"],
    )
    verification_token_env: str = Field(
        pattern=ENV_NAME,
        description="environment variable holding the event Verification Token",
        examples=["FEISHU_VERIFICATION_TOKEN"],
    )
    encrypt_key_env: str | None = Field(
        default=None,
        pattern=ENV_NAME,
        description="environment variable holding the Encrypt Key; when set, events must be signed "
        "(X-Lark-Signature) and may be encrypted",
        examples=["FEISHU_ENCRYPT_KEY"],
    )
    api_base_url: str = Field(
        default="https://open.feishu.cn",
        pattern=r"^https?://",
        description="Feishu Open Platform base URL (Lark: https://open.larksuite.com)",
        examples=["https://open.feishu.cn"],
    )
    approval_codes: tuple[str, ...] = Field(
        default=(),
        description="approval definition codes subscribed at setup (events come only for subscribed ones)",
        examples=[["7C468A54-8745-2245-9675-08B7C63E7A85"]],
    )
    amount_field: str | None = Field(
        default=None, description="name of the form field holding the amount", examples=["金额"]
    )
    project_field: str | None = Field(
        default=None, description="name of the form field holding the project code", examples=["项目编号"]
    )
    business_ref_field: str | None = Field(
        default=None,
        description="name of the form field holding the business document number",
        examples=["申请单号"],
    )
    default_currency: str | None = Field(
        default="CNY",
        pattern=r"^[A-Z]{3}$",
        description="currency of an amount whose widget names none",
        examples=["CNY"],
    )
    max_clock_skew_seconds: float = Field(
        default=300,
        gt=0,
        le=86_400,
        description="signed requests whose X-Lark-Request-Timestamp is further from now are refused (stale)",
        examples=[300],
    )
    timeout_seconds: float = Field(
        default=10, gt=0, le=300, description="timeout of each Feishu API call", examples=[10]
    )


def _env(name: str, what: str, connector: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"feishu connector {connector}: environment variable {name} ({what}) is not set")
    register_secret(value)  # masked in every log line from now on, whatever the variable is called
    return value


class FeishuSource(InboxConnector):
    """Feishu approval events (webhook) -> inbox -> ApprovalChanged."""

    Config = FeishuConfig
    config: FeishuConfig

    def topics(self) -> tuple[str, ...]:
        return (TOPIC,)

    def setup(self) -> None:
        c = self.config
        self._app_secret = _env(c.app_secret_env, "app secret", self.name)
        self._token = _env(c.verification_token_env, "verification token", self.name)
        self._encrypt_key = _env(c.encrypt_key_env, "encrypt key", self.name) if c.encrypt_key_env else None
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


__all__ = [
    "EVENT_TYPE",
    "STATUS",
    "SYSTEM",
    "TOPIC",
    "FeishuClient",
    "FeishuConfig",
    "FeishuConverter",
    "FeishuSource",
    "FeishuWebhook",
    "FormMapping",
    "approval_changed",
    "change_key",
    "decrypt",
    "parse_envelope",
    "parse_form",
    "signature",
]
