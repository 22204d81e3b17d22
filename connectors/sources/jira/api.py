"""A small Jira Cloud REST v3 client (basic auth: e-mail + API token) with bizbus error classes.

401/403 -> Fatal (credentials), 429 -> BackOff(Retry-After), 5xx -> Retryable, other 4xx -> Permanent;
an issue that answers 404 -> Permanent(reason="unknown_issue"). With a ``RetryPolicy`` the retryable
ones are retried in place (the backfill does; the converter lets the inbox reader back off instead).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx

from bizbus import metrics
from bizbus.failures import (
    ConnectorError,
    Permanent,
    RetryPolicy,
    call_with_retry,
    classify_http_status,
)

log = logging.getLogger(__name__)

WORKLOG_LIST_MAX = 1000  # POST /worklog/list takes at most 1000 ids


def _hint(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict):
        msgs = list(body.get("errorMessages") or []) + [
            f"{k}: {v}" for k, v in (body.get("errors") or {}).items()
        ]
        if msgs:
            return "; ".join(str(m) for m in msgs)[:200]
    return resp.text[:200]


def api_error(resp: httpx.Response, what: str) -> ConnectorError:
    err = classify_http_status(resp.status_code, resp.headers, _hint(resp))
    assert err is not None
    err.args = (f"Jira {what}: {err}",)
    return err


class JiraApi:
    """``with``-less: ``open()`` makes the httpx client, ``close()`` ends it."""

    def __init__(self, base_url: str, email: str, token: str, timeout: float,
                 retry: RetryPolicy | None = None, component: str = "jira") -> None:  # fmt: skip
        self.base_url, self.retry, self.component = base_url, retry, component
        self._auth = (email, token)
        self._timeout = timeout
        self._client: httpx.Client | None = None

    def open(self) -> None:
        self._client = httpx.Client(base_url=self.base_url, auth=self._auth, timeout=self._timeout,
                                    headers={"Accept": "application/json"})  # fmt: skip

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _call(self, method: str, path: str, what: str, *, params: dict[str, Any] | None = None,
              body: Any = None, not_found: str | None = None) -> Any:  # fmt: skip
        assert self._client is not None, "open() first"
        client = self._client

        def once() -> Any:
            resp = client.request(method, path, params=params, json=body)
            if resp.status_code == 404 and not_found:
                raise Permanent(f"Jira {what}: 404 {_hint(resp)}", reason=not_found)
            if resp.status_code >= 400:
                raise api_error(resp, what)
            try:
                return resp.json()
            except ValueError:
                raise Permanent(f"Jira {what}: answer is not JSON", reason="bad_answer") from None

        if self.retry is None:
            return once()
        count = metrics.retry_counter(self.component)

        def on_retry(error: Any, attempt: int, delay: float) -> None:
            count(error, attempt, delay)
            log.warning("Jira %s failed (%s); attempt %d, retrying in %.1f s", what, error, attempt, delay)

        return call_with_retry(once, self.retry, on_retry=on_retry)

    def issue(self, issue_id: str, fields: str = "project") -> dict[str, Any]:
        """``GET /rest/api/3/issue/{id}?fields=...``; 404 -> Permanent unknown_issue."""
        return self._call("GET", f"/rest/api/3/issue/{issue_id}", f"issue {issue_id}", params={"fields": fields},
                          not_found="unknown_issue")  # fmt: skip

    def search_jql(self, jql: str, fields: Sequence[str], max_results: int,
                   next_page_token: str | None = None) -> dict[str, Any]:  # fmt: skip
        """``POST /rest/api/3/search/jql`` (token paging; the old /search answers 410)."""
        body: dict[str, Any] = {"jql": jql, "fields": list(fields), "maxResults": max_results}
        if next_page_token:
            body["nextPageToken"] = next_page_token
        return self._call("POST", "/rest/api/3/search/jql", "JQL search", body=body)

    def worklogs_updated(self, since_ms: int) -> dict[str, Any]:
        return self._call(
            "GET", "/rest/api/3/worklog/updated", "updated worklogs", params={"since": since_ms}
        )

    def worklogs_deleted(self, since_ms: int) -> dict[str, Any]:
        return self._call(
            "GET", "/rest/api/3/worklog/deleted", "deleted worklogs", params={"since": since_ms}
        )

    def worklogs(self, ids: Sequence[int | str]) -> list[dict[str, Any]]:
        """``POST /rest/api/3/worklog/list`` for at most 1000 ids."""
        if len(ids) > WORKLOG_LIST_MAX:
            raise ValueError(f"at most {WORKLOG_LIST_MAX} worklog ids per call, got {len(ids)}")
        answer = self._call(
            "POST", "/rest/api/3/worklog/list", "worklog list", body={"ids": [int(i) for i in ids]}
        )
        if not isinstance(answer, list):
            raise Permanent("Jira worklog list: answer is not a list", reason="bad_answer")
        return answer
