"""``jira``: Jira Cloud as a source of projects, tasks and timesheets.

    Jira ──signed webhook──► JiraWebhookHandler ──► inbox ──► JiraConverter ──► bizbus.pm.project.v1
      ▲                      (X-Hub-Signature,                 (issue map,        bizbus.pm.task.v1
      └──── JiraBackfill ───► X-Atlassian-Webhook-Identifier)   GET issue)        bizbus.pm.timesheet.v1
            (JQL search, worklog updated / deleted / list; what it finds that no webhook brought is a gap)

Canonical values keep Jira's raw account ids (manager, assignee, employee): flows map them.
"""

from __future__ import annotations

from bizbus.connectors.runtime.inbox import Backfill, Converter, InboxConnector, WebhookHandler

from bizbus.failures import RetryPolicy

from .api import JiraApi
from .backfill import JiraBackfill
from .config import JiraConfig
from .convert import JiraConverter
from .mapping import PROJECT_TOPIC, TASK_TOPIC, TIMESHEET_TOPIC
from .state import PgState
from .webhook import JiraWebhookHandler

# the backfill retries a throttled / failing call in place (a poll restarts from its watermark otherwise)
BACKFILL_RETRY = RetryPolicy(initial_delay=0.5, max_delay=30, max_attempts=5, max_elapsed=120)


class JiraSource(InboxConnector):
    """Webhook endpoint ``/webhooks/<name>`` + inbox source task + backfill task (``backfill: true``)."""

    Config = JiraConfig
    config: JiraConfig

    def validate(self) -> None:
        super().validate()
        self.config.token_env.read("Jira API token", f"connector {self.name}")

    def _api(self, retry: RetryPolicy | None) -> JiraApi:
        c = self.config
        return JiraApi(c.base_url, c.email, c.token_env.read("Jira API token", f"connector {self.name}"),
                       c.timeout_seconds, retry, self.name)  # fmt: skip

    def handler(self) -> WebhookHandler:
        secret = self.config.secret_env.read("Jira webhook secret", f"connector {self.name}")
        return JiraWebhookHandler(secret.encode(), self.config.completion_events)

    def converter(self) -> Converter:
        c = self.config
        return JiraConverter(c, self.name, PgState(c.state_dsn, c.state_schema, self.name), self._api(None))

    def backfill(self) -> Backfill | None:
        return (
            JiraBackfill(self.config, self.name, self._api(BACKFILL_RETRY)) if self.config.backfill else None
        )

    def topics(self) -> tuple[str, ...]:
        return (PROJECT_TOPIC, TASK_TOPIC, TIMESHEET_TOPIC)

