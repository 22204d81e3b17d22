"""``redmine``: Redmine projects, issues and time entries, polled (flows F1, F2, F8).

    RedminePoller (every poll_interval_seconds, lease "backfill"):
      GET /projects.json?status=1|5|9                   every project (few): changes + id -> identifier
      GET /issues.json?status_id=*&updated_on=>=T&sort=updated_on,id           changed issues (also closed)
      GET /time_entries.json?updated_on=>=T&sort=updated_on,id   changed entries, where the server filters
      GET /time_entries.json?from=<today - reconcile_days>       the reconcile window: changes + deletions
      GET /time_entries/<id>.json                       a seen id missing from the window: 404 = deleted
    inbox row ──► RedmineConverter: ProjectChanged / TaskChanged / TimesheetEntry (GET /projects/<id>.json
                                    only when a project's identifier is not known yet)

Released Redmine (5, the Debian package) has no webhooks, so the connector only polls. It is tested
against a contract fake (tests/fakes/redmine_api.py) because Redmine cannot be installed here: the Debian
package's post-install step runs Bundler against the Ruby gem registry, which is unreachable.

Published contract followed (redmine.org wiki Rest_api, Rest_Projects, Rest_Issues, Rest_TimeEntries):
* key in the ``X-Redmine-API-Key`` header; 401 without / with a wrong key, 403 when the REST web service is
  disabled or the user may not read; 404 unknown; 422 ``{"errors": [...]}`` for a filter Redmine refuses.
* lists answer ``{<things>: [...], total_count, offset, limit}``, paged by ``offset``/``limit`` (at most
  100). Pages are read with a small overlap and deduplicated, so a row that moves up while we page (an
  update or delete before it) is not skipped.
* ``/issues.json`` without ``status_id=*`` returns open issues only; ``updated_on=>=2026-11-01T00:00:00Z``
  (URL-encoded) filters by change time. ``/projects.json`` returns active projects unless ``status`` asks
  for more (1 active, 5 closed, 9 archived). Times are ISO 8601 UTC, ``spent_on`` a date, ``hours`` a float.

What Redmine does not document, and how the connector copes:
* ``/time_entries.json`` has no ``updated_on`` filter in Redmine's own query (it filters by ``spent_on``,
  ``from``/``to``); unknown filters are ignored. The connector sends it anyway and checks the answer: the
  first entry older than asked shows the server ignores it, and the connector then relies on the reconcile
  window alone (edits of entries booked more than ``reconcile_days`` ago are then not seen).
* closing, reopening and unarchiving a project (``Project#close``, ``#reopen``, ``#unarchive``) use
  ``update_all``, which leaves ``updated_on`` alone: the poller keeps each project's last status and reports a status that changed
  without a new ``updated_on`` as a change of its own (version = when the poller saw it).
* deleted time entries simply vanish; ids seen in the window are kept in ``<state_schema>.redmine_entries_
  <connector>`` and a missing one is confirmed with ``GET /time_entries/<id>.json`` (404) before it is
  reported as ``time_entry:<id>@deleted``.

Entity keys: ``project:<id>@<updated_on>`` (plus ``#status<n>@<ms>`` for a status-only change),
``issue:<id>@<updated_on>``, ``time_entry:<id>@<updated_on>``, ``time_entry:<id>@deleted``. Op CREATED is
decided when the poller first sees an id (the state table keeps that first key, so a re-poll of the same
version says CREATED again) and travels in the inbox row.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from bizbus.connectors.runtime.inbox import Backfill, Converter, InboxConnector, WebhookHandler

from .api import RedmineClient
from .backfill import RedminePoller
from .config import RedmineConfig
from .convert import RedmineConverter
from .mapping import PROJECT_TOPIC, TASK_TOPIC, TIMESHEET_TOPIC
from .state import RedmineState


class RedmineSource(InboxConnector):
    """Redmine (poll only) -> inbox -> ProjectChanged, TaskChanged, TimesheetEntry."""

    Config = RedmineConfig
    config: RedmineConfig
    takes_webhooks = False

    def topics(self) -> tuple[str, ...]:
        return (PROJECT_TOPIC, TASK_TOPIC, TIMESHEET_TOPIC)

    def setup(self) -> None:
        self._api_key = self.config.api_key_env.read("the Redmine API key", f"redmine connector {self.name}")
        super().setup()

    def _client(self) -> RedmineClient:
        c = self.config
        return RedmineClient(c.base_url, self._api_key, c.api_key_env, c.timeout_seconds, f"redmine {self.name}")

    def handler(self) -> WebhookHandler | None:
        return None

    def converter(self) -> Converter:
        return RedmineConverter(self._client(), self.config.company, ZoneInfo(self.config.timezone))

    def backfill(self) -> Backfill:
        c = self.config
        return RedminePoller(self.name, self._client(), RedmineState(c.state_dsn, c.state_schema, self.name), c)
