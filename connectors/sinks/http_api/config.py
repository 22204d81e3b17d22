"""Configuration of the ``http-api`` sink; secrets are referenced by name, never stored here."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from bizbus.connectors.runtime.sinkconfig import SinkRuntimeConfig
from pydantic import Field, field_validator, model_validator

from bizbus.secrets import EnvSecret
from bizbus.settings import no_password

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class HttpApiSinkConfig(SinkRuntimeConfig):
    """Settings of one HTTP API sink connector; secrets are referenced by name, never stored here."""

    topics: tuple[str, ...] = Field(
        min_length=1,
        description="Topics whose records are sent to the API.",
        examples=[["bizbus.pm.timesheet.v1"]],
    )
    base_url: str = Field(
        description="Root URL of the target API (http or https, no credentials in it).",
        examples=["https://erp.example.com", "http://127.0.0.1:8080/tenant-1"],
    )
    create_path: str = Field(
        description="Path the create request is POSTed to, relative to base_url.", examples=["/api/orders"]
    )
    lookup_path: str = Field(
        description="Path queried with GET ?<ref_param>=<external ref> to find an object created earlier.",
        examples=["/api/orders"],
    )
    ref_param: str = Field("external_ref", min_length=1, description="Query parameter of the lookup request.")
    ref_field: str = Field(
        "external_ref",
        min_length=1,
        description="JSON body field carrying our external reference (the record's effect id), sent on "
        "every create and matched in lookup results.",
    )
    dedupe: Literal["lookup", "idempotency-key"] = Field(
        "lookup",
        description="How an in-doubt create is resolved: 'lookup' asks the target by external reference "
        "before re-creating; 'idempotency-key' sends the effect id in a header so the target dedupes.",
    )
    idempotency_header: str = Field(
        "Idempotency-Key", description="Header carrying the effect id when dedupe is 'idempotency-key'."
    )
    body: dict[str, str] = Field(
        min_length=1,
        description="JSON body field -> dotted path into the decoded record; a missing path fails that "
        "record (dead-lettered, reason 'mapping'). Decimals are sent as strings, dates as ISO-8601.",
        examples=[{"employee": "employee", "hours": "hours", "project": "project", "day": "work_date"}],
    )
    token_env: EnvSecret | None = Field(
        None,
        description="NAME of the environment variable holding the bearer token (never the token itself; "
        "or <NAME>_FILE naming a file holding it); None sends no Authorization header.",
        examples=["ERP_API_TOKEN"],
    )
    timeout_seconds: float = Field(10, gt=0, description="Timeout of each HTTP request, in seconds.")
    state_dsn: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        description="PostgreSQL holding the ledger and the intents, without a password (use PGPASSWORD or "
        "~/.pgpass).",
    )
    ledger_schema: str = Field("bizbus_ledger", description="Schema of the ledger and intent tables.")

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError(
                "base_url must not contain credentials; name an environment variable in token_env"
            )
        return v

    @field_validator("create_path", "lookup_path")
    @classmethod
    def _check_path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("a path must start with '/', e.g. '/api/orders'")
        return v

    @field_validator("idempotency_header")
    @classmethod
    def _check_header(cls, v: str) -> str:
        if not _HEADER_NAME.match(v):
            raise ValueError("idempotency_header must be a valid HTTP header name")
        return v

    @field_validator("body")
    @classmethod
    def _check_body(cls, v: dict[str, str]) -> dict[str, str]:
        for field, path in v.items():
            if not path or any(not part for part in path.split(".")):
                raise ValueError(f"body field {field!r}: {path!r} is not a dotted path like 'employee.code'")
        return v

    _dsn = field_validator("state_dsn")(no_password)

    @field_validator("ledger_schema")
    @classmethod
    def _check_schema(cls, v: str) -> str:
        if not _SCHEMA_NAME.match(v):
            raise ValueError("ledger_schema must be a lower-case SQL identifier, e.g. 'bizbus_ledger'")
        return v

    @model_validator(mode="after")
    def _ref_not_mapped(self) -> HttpApiSinkConfig:
        if self.ref_field in self.body:
            raise ValueError(
                f"body must not map {self.ref_field!r}: the writer fills ref_field with the effect id"
            )
        return self
