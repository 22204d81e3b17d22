"""The Feishu Open Platform calls the connector makes: tenant_access_token, approval instance, subscribe.

* ``POST /open-apis/auth/v3/tenant_access_token/internal`` {app_id, app_secret} -> {code, tenant_access_token,
  expire}: cached until shortly before ``expire``, fetched again when an API answers 99991661 / 99991663 /
  99991671 (token missing / invalid / malformed); a refused app secret is Fatal.
* ``GET /open-apis/approval/v4/instances/{instance_code}``: 1390003 = no such instance (Permanent).
* ``POST /open-apis/approval/v4/approvals/{approval_code}/subscribe``: 1390007 "subscription existed" = done.
* Rate limit: HTTP 429 (older APIs: 400) with code 99991400 and ``x-ogw-ratelimit-reset`` seconds -> BackOff;
  HTTP 5xx and 1395001 ("try again later") -> Retryable. Every answer is ``{code, msg, data}``; code 0 = ok.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from bizbus.failures import BackOff, ConnectorError, Fatal, Permanent, Retryable, parse_retry_after

RATE_LIMITED = 99991400  # "request trigger frequency limit"
TOKEN_REFUSED = frozenset({99991661, 99991663, 99991671})  # token missing / invalid / malformed: fetch again
NO_PERMISSION = frozenset({99991672, 99991679})  # the app lacks the API scope
APPROVAL_NOT_FOUND = 1390002
INSTANCE_NOT_FOUND = 1390003
SUBSCRIPTION_EXISTED = 1390007
APPROVAL_BUSY = 1395001
JSON_UTF8 = {"Content-Type": "application/json; charset=utf-8"}


class FeishuClient:
    """tenant_access_token cache plus the approval calls the connector makes (thread-safe token cache)."""

    def __init__(
        self,
        base_url: str,
        app_id: str,
        app_secret: str,
        secret_env: str,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url, self.app_id, self.secret_env = base_url.rstrip("/"), app_id, secret_env
        self._secret = app_secret
        self.timeout, self.clock = timeout, clock
        self._token: tuple[str, float] | None = None  # (token, fetch a new one after)
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self.token_fetches = 0

    def setup(self) -> None:
        if self._http is None:
            self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def get_instance(self, instance_code: str) -> dict[str, Any]:
        """``data`` of GET /open-apis/approval/v4/instances/{instance_code}."""
        status, body = self._call("GET", f"/open-apis/approval/v4/instances/{quote(instance_code, safe='')}")
        if body.get("code") == 0:
            return dict(body.get("data") or {})
        if body.get("code") == INSTANCE_NOT_FOUND:
            msg = f"Feishu has no approval instance {instance_code!r} ({body.get('msg')})"
            raise Permanent(msg, reason="not_found")
        raise _failure(status, body, f"reading approval instance {instance_code}")

    def subscribe(self, approval_code: str) -> bool:
        """Subscribe the app to an approval definition's events; False when it already was."""
        path = f"/open-apis/approval/v4/approvals/{quote(approval_code, safe='')}/subscribe"
        status, body = self._call("POST", path)
        if body.get("code") == 0:
            return True
        if body.get("code") == SUBSCRIPTION_EXISTED:
            return False
        if body.get("code") == APPROVAL_NOT_FOUND:
            msg = f"Feishu has no approval definition {approval_code!r} ({body.get('msg')})"
            raise Fatal(msg, reason="not_found")
        raise _failure(status, body, f"subscribing approval {approval_code}")

    def token(self) -> str:
        """A valid tenant_access_token (cached; a new one shortly before ``expire``)."""
        with self._lock:
            if self._token is not None and self.clock() < self._token[1]:
                return self._token[0]
            body = {"app_id": self.app_id, "app_secret": self._secret}
            resp = self._client().post(
                "/open-apis/auth/v3/tenant_access_token/internal", json=body, headers=JSON_UTF8
            )
            answer = _body(resp)
            _raise_if_throttled(resp, answer)
            token = answer.get("tenant_access_token")
            if answer.get("code") != 0 or not token:
                raise Fatal(
                    f"Feishu refused the app credentials (code {answer.get('code')}: {answer.get('msg')}); "
                    f"check app_id {self.app_id!r} and the app secret in ${self.secret_env}",
                    reason="auth",
                )
            self.token_fetches += 1
            expire = float(answer.get("expire") or 7200)
            self._token = (str(token), self.clock() + expire - min(300.0, expire / 2))
            return self._token[0]

    def forget_token(self) -> None:
        with self._lock:
            self._token = None

    def _client(self) -> httpx.Client:
        self.setup()
        assert self._http is not None
        return self._http

    def _call(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        for _attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token()}", **JSON_UTF8}
            resp = self._client().request(method, path, headers=headers)
            body = _body(resp)
            _raise_if_throttled(resp, body)
            if body.get("code") not in TOKEN_REFUSED:
                return resp.status_code, body
            self.forget_token()  # expired early or revoked: fetch a new one, once
        msg = f"Feishu refuses even a fresh tenant_access_token for {path} ({body.get('msg')})"
        raise Fatal(msg, reason="auth")


def _body(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    if resp.status_code >= 500 or resp.status_code == 429:
        return {}
    raise Permanent(f"Feishu answered HTTP {resp.status_code} without a JSON object", reason="vendor_error")


def _raise_if_throttled(resp: httpx.Response, body: Mapping[str, Any]) -> None:
    if resp.status_code == 429 or body.get("code") == RATE_LIMITED:
        wait = parse_retry_after(resp.headers.get("x-ogw-ratelimit-reset") or resp.headers.get("retry-after"))
        msg = f"Feishu rate limit ({body.get('msg') or 'HTTP 429'})"
        raise BackOff(msg, retry_after=wait, reason="rate_limited")
    if resp.status_code >= 500:
        raise Retryable(f"Feishu answered HTTP {resp.status_code}: {body.get('msg')}", reason="http_5xx")


def _failure(status: int, body: Mapping[str, Any], doing: str) -> ConnectorError:
    code, msg = body.get("code"), body.get("msg")
    if code in NO_PERMISSION or status in (401, 403):
        return Fatal(
            f"{doing}: the Feishu app lacks the permission (code {code}: {msg}); "
            "grant it approval:approval (or approval:approval:readonly)",
            reason="auth",
        )
    if code == APPROVAL_BUSY:
        return Retryable(
            f"{doing}: Feishu asks to try again later (code {code}: {msg})", reason="vendor_busy"
        )
    return Permanent(f"{doing}: Feishu answered code {code}: {msg}", reason="vendor_error")
