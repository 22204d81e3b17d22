"""Configuration of the ``jira`` source (a frozen pydantic model; secrets only as env-var names)."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bizbus.connectors.runtime.inbox import InboxConfig
from pydantic import Field, field_validator

from bizbus.secrets import EnvSecret


class JiraConfig(InboxConfig):
    """Jira Cloud: signed admin webhooks plus a JQL / worklog backfill (basic auth: email + API token)."""

    base_url: str = Field(description="Jira Cloud site", examples=["https://your-domain.atlassian.net"])
    email: str = Field(description="Atlassian account e-mail the API token belongs to (basic auth user)",
                       examples=["bizbus-bot@example.com"])  # fmt: skip
    token_env: EnvSecret = Field(description="name of the environment variable holding the Atlassian API token",
                           examples=["JIRA_API_TOKEN"])  # fmt: skip
    secret_env: EnvSecret = Field(description="name of the environment variable holding the webhook secret "
                            "(X-Hub-Signature HMAC-SHA256 key)", examples=["JIRA_WEBHOOK_SECRET"])  # fmt: skip
    company: str = Field(description="company code written into ProjectChanged.company", examples=["C100"])
    timezone: str = Field(default="Asia/Shanghai", description="business time zone: the date a project was "
                          "archived (actual_end) and the backfill `start` are read in it", examples=["Asia/Shanghai"])  # fmt: skip
    jql_timezone: str | None = Field(default=None, description="time zone of the API user's Jira profile, in "
                                     "which Jira reads JQL dates (unset: `timezone`)", examples=["UTC"])  # fmt: skip
    completion_events: tuple[str, ...] = Field(default=("project_archived",), description="project webhook "
                                               "events that mean the project is completed (op COMPLETED)",
                                               examples=[["project_archived"]])  # fmt: skip
    settle_seconds: float = Field(default=60, ge=0, le=86_400, description="the backfill only takes changes older "
                                  "than this, so a webhook still in flight is not counted as a gap", examples=[60])  # fmt: skip
    overlap_minutes: int = Field(default=5, ge=0, le=1440, description="the backfill re-reads this much before "
                                 "its watermark (search index lag; JQL has minute precision)", examples=[5])  # fmt: skip
    backfill: bool = Field(
        default=True, description="poll Jira for changes no webhook delivered", examples=[True]
    )
    start: date | None = Field(default=None, description="first poll reads changes since this day (in "
                               "`timezone`); unset: since the first poll", examples=["2026-11-01"])  # fmt: skip
    page_size: int = Field(default=100, ge=1, le=5000, description="issues per JQL search page (maxResults)",
                           examples=[100])  # fmt: skip
    timeout_seconds: float = Field(default=20, gt=0, le=300, description="timeout of one Jira API call",
                                   examples=[20])  # fmt: skip

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("https://", "http://")):
            raise ValueError("base_url must start with https:// (e.g. https://your-domain.atlassian.net)")
        return v

    @field_validator("timezone", "jql_timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (use an IANA name like Asia/Shanghai)") from None
        return v

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def jql_zone(self) -> ZoneInfo:
        return ZoneInfo(self.jql_timezone or self.timezone)

