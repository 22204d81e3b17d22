"""Configuration of the ``tryton`` sink (the password only as the name of an environment variable)."""

from __future__ import annotations

from bizbus.connectors.runtime.sinkconfig import SinkRuntimeConfig
from bizbus.connectors.sinks.tryton.api import rpc_endpoint
from pydantic import Field, field_validator

from bizbus.failures import RetryPolicy
from bizbus.secrets import EnvSecret

DEFAULT_TOPICS = ("bizbus.md.cost-center.v1", "bizbus.finance.voucher.v1", "bizbus.purchase.order.v1")


class TrytonSinkConfig(SinkRuntimeConfig):
    """Settings of one Tryton sink connector; the password is referenced by an environment variable name."""

    topics: tuple[str, ...] = Field(
        DEFAULT_TOPICS,
        min_length=1,
        description="Topics with CostCenter, Voucher and PurchaseOrder records (recognized by their fields).",
    )
    url: str = Field(
        description="Tryton server URL ending with the database name; JSON-RPC is served at <url>rpc/.",
        examples=["http://127.0.0.1:8000/bizbus/"],
    )
    user: str = Field("admin", min_length=1, description="Tryton login the sink writes as.")
    password_env: EnvSecret = Field(
        description="NAME of the environment variable holding that user's password (never the password; or "
        "<NAME>_FILE naming a file holding it).",
        examples=["TRYTON_PASSWORD"],
    )
    company: str | None = Field(
        None, description="Name of the Tryton company to write into; None = the user's current company."
    )
    journal_code: str = Field(
        "MISC",
        min_length=1,
        description="Code of the account journal vouchers are posted in (MISC, EXP ...).",
    )
    analytic_root: str = Field(
        "CC",
        min_length=1,
        description="Code of the analytic root account cost centers without parent go under.",
    )
    timeout_seconds: float = Field(30, gt=0, le=600, description="Timeout of each JSON-RPC call, in seconds.")
    batch_size: int = Field(default=200, ge=1, le=10_000, description="records per batch at most")
    batch_timeout_seconds: float = Field(
        default=0.5, gt=0, le=60, description="wait at most this long to fill a batch"
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="backoff for retryable errors (unreachable Tryton, 5xx, a cost center not there yet)",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        rpc_endpoint(v)  # ValueError with the reason
        return v
