"""The Tryton sink connector: its config and the connector class named ``tryton`` in COMPONENT_TYPES."""

from __future__ import annotations

import os
import re

from bizbus.connectors.runtime import probes
from bizbus.connectors.runtime.sink import SinkConnector
from bizbus.connectors.sinks.tryton.rpc import rpc_endpoint
from bizbus.connectors.sinks.tryton.writer import TrytonWriter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bizbus.errors import ConfigError
from bizbus.failures import RetryPolicy

__all__ = ["DEFAULT_TOPICS", "TrytonSink", "TrytonSinkConfig"]

DEFAULT_TOPICS = ("bizbus.md.cost-center.v1", "bizbus.finance.voucher.v1", "bizbus.purchase.order.v1")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TrytonSinkConfig(BaseModel):
    """Settings of one Tryton sink connector; the password is referenced by an environment variable name."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

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
    password_env: str = Field(
        description="NAME of the environment variable holding that user's password (never the password).",
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
    tasks_max: int = Field(default=1, ge=1, le=64, description="consumer-group members in this process")
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

    @field_validator("password_env")
    @classmethod
    def _check_env(cls, v: str) -> str:
        if not _ENV_NAME.match(v):
            # deliberately without the value: whoever got this wrong may have pasted the password itself
            raise ValueError(
                "password_env must be the NAME of an environment variable (letters, digits, '_')"
            )
        return v


class TrytonSink(SinkConnector):
    """Applies cost centers, vouchers and purchase orders to a Tryton ERP exactly once (by bizbus_ref)."""

    Config = TrytonSinkConfig
    config: TrytonSinkConfig

    def validate(self) -> None:
        super().validate()
        if not os.environ.get(self.config.password_env):
            raise ConfigError(
                f"connector {self.name}: environment variable {self.config.password_env} (the Tryton password of "
                f"user {self.config.user!r}) is not set"
            )

    def writer(self) -> TrytonWriter:
        return TrytonWriter(self.name, self.config)

    def probe(self) -> str | None:
        """The Tryton server answers JSON-RPC (``common.server.version`` needs no login)."""
        endpoint, _db = rpc_endpoint(self.config.url)
        root = endpoint.split("/", 3)
        return probes.http("/".join(root[:3]) + "/", "POST", {"method": "common.server.version", "params": []})
