"""The DingTalk API: access token (cached) and instance reads, errors mapped onto the connector taxonomy."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from bizbus.failures import BackOff, ConnectorError, Fatal, Permanent, Retryable, parse_retry_after

log = logging.getLogger(__name__)

THROTTLED = ("Forbidden.AccessDenied.QpsLimitForApi", "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi")
NOT_FOUND = ("processInstanceNotExist", "processInstanceIdError")
AUTH = ("InvalidAuthentication", "invalidClientIdOrSecret", "AuthenticationFailed.MissingParameter")


def api_error(status: int, code: str, message: str, what: str, retry_after: str | None = None) -> ConnectorError:  # fmt: skip
    """Classify a DingTalk new-API error answer (HTTP status + ``code`` / ``message`` body)."""
    text = f"DingTalk {what}: HTTP {status} {code or '-'}: {message[:200]}"
    if code in NOT_FOUND or status == 404:
        return Permanent(text, reason="unknown_instance")
    if code in THROTTLED or status == 429:
        return BackOff(text, retry_after=parse_retry_after(retry_after) or 1.0, reason="throttled")
    if code == "Forbidden.AccessDenied.ApiCountLimitForOrg":  # monthly quota of the organisation used up
        return BackOff(text, retry_after=parse_retry_after(retry_after) or 600.0, reason="quota")
    if status >= 500:
        return Retryable(text, reason="http_5xx")
    if code in AUTH or code.startswith("Forbidden.AccessDenied") or status in (401, 403):
        return Fatal(text, reason="auth")
    return Permanent(text, reason="api_error")


def _error_of(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
    except ValueError:
        return "", resp.text[:200]
    if not isinstance(body, Mapping):
        return "", str(body)[:200]
    return str(body.get("code") or ""), str(body.get("message") or "")


class DingTalkApi:
    """Access token (``POST /v1.0/oauth2/accessToken``, cached until shortly before it expires or until the
    API calls it invalid) and instance reads (``GET /v1.0/workflow/processInstances``)."""

    def __init__(self, base_url: str, app_key: str, app_secret: str, timeout: float,
                 clock: Any = time.monotonic) -> None:  # fmt: skip
        self.base_url, self.app_key, self._secret = base_url.rstrip("/"), app_key, app_secret
        self.clock = clock
        self.http = httpx.Client(timeout=timeout)
        self._token: str | None = None
        self._expires = 0.0
        self.token_fetches = 0

    def token(self) -> str:
        if self._token is None or self.clock() >= self._expires:
            resp = self.http.post(f"{self.base_url}/v1.0/oauth2/accessToken",
                                  json={"appKey": self.app_key, "appSecret": self._secret})  # fmt: skip
            body = resp.json() if resp.status_code == 200 else None
            if not isinstance(body, Mapping) or not body.get("accessToken"):
                raise api_error(resp.status_code, *_error_of(resp), "access token",
                                resp.headers.get("retry-after"))  # fmt: skip
            expire_in = float(body.get("expireIn") or 7200)
            self._token = str(body["accessToken"])
            self._expires = self.clock() + expire_in - min(300.0, expire_in / 10)
            self.token_fetches += 1
        return self._token

    def get_instance(self, instance_id: str, renew: bool = True) -> dict[str, Any]:
        """The instance's ``result``; a refused token is renewed once, then the answer is an error."""
        resp = self.http.get(f"{self.base_url}/v1.0/workflow/processInstances",
                             params={"processInstanceId": instance_id},
                             headers={"x-acs-dingtalk-access-token": self.token()})  # fmt: skip
        if resp.status_code == 200:
            body = resp.json()
            result = body.get("result") if isinstance(body, Mapping) else None
            if isinstance(result, dict) and body.get("success") in (True, "true"):
                return result
            raise Retryable(f"DingTalk instance {instance_id}: answer {resp.text[:200]}", reason="unexpected")
        code, message = _error_of(resp)
        if code == "InvalidAuthentication" and renew:
            log.info("dingtalk: access token refused (%s); fetching a new one", message)
            self._token = None
            return self.get_instance(instance_id, renew=False)
        raise api_error(
            resp.status_code, code, message, f"instance {instance_id}", resp.headers.get("retry-after")
        )

    def close(self) -> None:
        self.http.close()
