"""Configuration of the ``feishu`` source (secrets only as names of environment variables)."""

from __future__ import annotations

from bizbus.connectors.runtime.inbox import InboxConfig
from pydantic import Field

from bizbus.secrets import EnvSecret


class FeishuConfig(InboxConfig):
    """Configuration of the ``feishu`` source (secrets only as names of environment variables)."""

    app_id: str = Field(
        min_length=1, description="App ID of the Feishu custom app", examples=["cli_a5f2c3d4e5f60123"]
    )
    app_secret_env: EnvSecret = Field(
        description="environment variable holding the app secret",
        examples=["FEISHU_APP_SECRET"],
    )
    verification_token_env: EnvSecret = Field(
        description="environment variable holding the event Verification Token",
        examples=["FEISHU_VERIFICATION_TOKEN"],
    )
    encrypt_key_env: EnvSecret | None = Field(
        default=None,
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
