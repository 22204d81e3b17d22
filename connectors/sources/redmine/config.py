"""Configuration of the ``redmine`` source (the API key only as the name of an environment variable)."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bizbus.connectors.runtime.inbox import InboxConfig
from pydantic import Field, field_validator

from bizbus.secrets import EnvSecret


class RedmineConfig(InboxConfig):
    """Configuration of the ``redmine`` source (the API key only as the name of an environment variable)."""

    base_url: str = Field(pattern=r"^https?://", description="Redmine root URL",
                          examples=["https://redmine.example.com"])  # fmt: skip
    api_key_env: EnvSecret = Field(examples=["REDMINE_API_KEY"],
                                   description="environment variable holding the REST API key "
                                   "(My account > API access key)")  # fmt: skip
    company: str = Field(min_length=1, description="company code the Redmine projects belong to", examples=["C01"])
    timezone: str = Field(default="Asia/Shanghai", examples=["Asia/Shanghai"],
                          description="IANA time zone of the business dates (actual_end, the reconcile window)")  # fmt: skip
    start: date | None = Field(default=None, examples=["2026-11-01"],
                               description="the first poll reads changes since this day (00:00 in timezone) and time "
                               "entries booked since then; none: everything")  # fmt: skip
    overlap_seconds: float = Field(default=120, ge=0, le=86_400, examples=[120],
                                   description="each poll re-reads this much before the watermark (clock skew, "
                                   "transactions committing late); repeats are dropped by entity key")  # fmt: skip
    reconcile_days: int = Field(default=31, ge=1, le=3660, examples=[31],
                                description="time entries spent in the last N days are listed every poll to find "
                                "deleted ones (and edits, where Redmine cannot filter them by updated_on)")  # fmt: skip
    page_size: int = Field(default=100, ge=1, le=100, examples=[100],
                           description="rows per page (Redmine caps at 100)")  # fmt: skip
    timeout_seconds: float = Field(default=30, gt=0, le=300, examples=[30], description="timeout of each API call")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Asia/Shanghai)") from None
        return value
