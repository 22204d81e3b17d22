"""Configuration of the ``dingtalk`` source (secrets only as names of environment variables)."""

from __future__ import annotations

from bizbus.connectors.runtime.inbox import InboxConfig
from pydantic import Field

from bizbus.secrets import EnvSecret


class DingTalkConfig(InboxConfig):
    """Settings of the ``dingtalk`` source (secrets only as names of environment variables)."""

    token_env: EnvSecret = Field(description="env var holding the callback signature token (签名 token)",
                           examples=["DINGTALK_CALLBACK_TOKEN"])  # fmt: skip
    aes_key_env: EnvSecret = Field(description="env var holding the 43-character callback aes_key (加密 aes_key)",
                             examples=["DINGTALK_AES_KEY"])  # fmt: skip
    corp_id: str | None = Field(default=None, description="corp id a decrypted callback may end with (callbacks "
                                "registered by API); callbacks ending with app_key are accepted too",
                                examples=["ding2c015874d8175651"])  # fmt: skip
    app_key: str = Field(min_length=1, description="app key (Client ID) of the DingTalk app: the access token is "
                         "requested with it, and developer-console event subscriptions end with it",
                         examples=["dingsnotzck6pm5veliw"])  # fmt: skip
    app_secret_env: EnvSecret = Field(description="env var holding the app secret (Client Secret)",
                                examples=["DINGTALK_APP_SECRET"])  # fmt: skip
    api_base_url: str = Field(default="https://api.dingtalk.com", pattern=r"^https?://\S+$",
                              description="base URL of DingTalk's new API", examples=["https://api.dingtalk.com"])  # fmt: skip
    amount_field: str | None = Field(default=None, description="form field (component name) holding the amount",
                                     examples=["金额"])  # fmt: skip
    project_field: str | None = Field(default=None, description="form field holding the project code",
                                      examples=["项目编号"])  # fmt: skip
    business_ref_field: str | None = Field(default=None, description="form field holding the business document "
                                           "number", examples=["申请单号"])  # fmt: skip
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$", description="ISO 4217 currency of the amount",
                          examples=["CNY"])  # fmt: skip
    templates: dict[str, str] = Field(default={}, description="template names by processCode",
                                      examples=[{"PROC-PURCHASE-REQ": "采购申请"}])  # fmt: skip
    max_clock_skew_seconds: float = Field(default=3600, gt=0, le=7 * 86400, description="callbacks whose signed "
                                          "timestamp is further from now are refused (401 stale)",
                                          examples=[3600])  # fmt: skip
    timeout_seconds: float = Field(default=10, gt=0, le=300, description="timeout of each DingTalk API call",
                                   examples=[10])  # fmt: skip
