"""The Redmine REST client: GETs with the ``X-Redmine-API-Key`` header, pages read with a small overlap,
answers mapped onto the connector error taxonomy (401/403/404/422 Fatal, 429 BackOff, 5xx Retryable)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from bizbus.failures import (
    BackOff,
    ConnectorError,
    Fatal,
    Retryable,
    classify_http_status,
    parse_retry_after,
)

log = logging.getLogger(__name__)


class RedmineClient:
    """GETs against the REST API with the key header; answers mapped onto the connector error taxonomy."""

    def __init__(self, base_url: str, api_key: str, api_key_env: str, timeout: float,
                 label: str = "redmine") -> None:  # fmt: skip
        self.base_url, self._key, self.api_key_env = base_url.rstrip("/"), api_key, api_key_env
        self.timeout, self.label = timeout, label
        self._http: httpx.Client | None = None

    def setup(self) -> None:
        if self._http is None:
            headers = {"X-Redmine-API-Key": self._key, "Accept": "application/json"}
            self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout, headers=headers)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def get(self, path: str, params: Mapping[str, Any] | None = None,
            allow: tuple[int, ...] = ()) -> tuple[int, Any]:  # fmt: skip
        """(status, JSON body) of a GET; statuses in ``allow`` come back as (status, None), others raise."""
        self.setup()
        assert self._http is not None
        resp = self._http.get(path, params=dict(params or {}))
        if resp.status_code in allow:
            return resp.status_code, None
        if resp.status_code != 200:
            raise self._failure(resp, path)
        try:
            return 200, resp.json()
        except ValueError:
            raise Retryable(f"Redmine answered GET {path} with a body that is not JSON",
                            reason="vendor_error") from None  # fmt: skip

    def pages(self, path: str, key: str, params: Mapping[str, Any],
              page_size: int) -> Iterator[list[dict[str, Any]]]:  # fmt: skip
        """Every page of a list. Steps overlap by a tenth of a page, so rows moving up are not skipped."""
        offset = 0
        while True:
            _, body = self.get(path, {**params, "offset": offset, "limit": page_size})
            items = body.get(key) if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise Retryable(f"Redmine answered GET {path} without a {key!r} list", reason="vendor_error")
            total = int(body.get("total_count", offset + len(items)))
            log.info("%s: GET %s offset %d: %d of %d", self.label, path, offset, len(items), total)
            yield [x for x in items if isinstance(x, dict)]
            if not items or offset + len(items) >= total:
                return
            offset += max(1, len(items) - len(items) // 10)

    def _failure(self, resp: httpx.Response, path: str) -> ConnectorError:
        status = resp.status_code
        where = f"Redmine {self.base_url} GET {path}"
        if status == 401:
            return Fatal(f"{where}: HTTP 401, the API key was refused; put a valid key of a Redmine user in "
                         f"environment variable {self.api_key_env}", reason="auth")  # fmt: skip
        if status == 403:
            return Fatal(f"{where}: HTTP 403; enable the REST web service (Administration > Settings > API) "
                         f"and let the user of the key in {self.api_key_env} view the data",
                         reason="forbidden")  # fmt: skip
        if status == 404:
            return Fatal(f"{where}: HTTP 404; is base_url the Redmine root?", reason="not_found")
        if status == 422:
            try:
                errors = resp.json().get("errors")
            except (ValueError, AttributeError):
                errors = resp.text[:200]
            return Fatal(f"{where}: HTTP 422, Redmine refused the query: {errors}", reason="bad_query")
        if status == 429:
            return BackOff(f"{where}: HTTP 429", retry_after=parse_retry_after(resp.headers.get("retry-after")),
                           reason="rate_limited")  # fmt: skip
        if status >= 500:
            return Retryable(f"{where}: HTTP {status}", reason="http_5xx")
        return classify_http_status(status, resp.headers, resp.text[:200]) or Retryable(f"{where}: HTTP {status}")
