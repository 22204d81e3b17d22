"""HTTP API sink: each record becomes one ``POST`` to a REST API, applied exactly once.

A REST target cannot join our database transaction; the intent protocol of
:mod:`bizbus.connectors.runtime.intents` closes the window between "the target accepted the create" and
"our ledger recorded it" (crash point ``http-api.after-create``): an id whose intent already existed is
in doubt and is looked up with ``GET lookup_path?<ref_param>=<effect_id>`` before it is created again.
With ``dedupe="idempotency-key"`` the target dedupes by itself: every POST carries the effect id in an
idempotency header, and a retried POST returns the original object instead of creating another one.

Throttling (429), 5xx and network errors fail the whole batch (the runner retries it, honouring
Retry-After); other 4xx fail only their record (dead-lettered); 401/403 stop the connector (Fatal).
The bearer token comes from the environment variable named by ``token_env`` and never appears in the
config, in log lines or in error messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx
from bizbus.connectors.runtime import probes
from bizbus.connectors.runtime.intents import IntentSinkWriter
from bizbus.connectors.runtime.sink import SinkConnector, SinkRecord, field_at

from bizbus.errors import ConfigError
from bizbus.failures import ConnectorError, Fatal, Permanent, classify, classify_http_status

from .config import HttpApiSinkConfig
from .convert import ID_FIELDS, LIST_FIELDS, error_text, first_id, jsonable, listed

log = logging.getLogger(__name__)

__all__ = ["HttpApiSink", "HttpApiSinkConfig", "HttpApiWriter"]

MAX_ERROR_MESSAGE = 500  # characters of a target's error message kept in a dead letter


class HttpApiWriter(IntentSinkWriter):
    """POSTs each record to a REST API exactly once, with a PostgreSQL ledger and intents."""

    crashpoint_name = "http-api.after-create"

    def __init__(self, connector: str, config: HttpApiSinkConfig) -> None:
        """Store the settings only; ``setup()`` connects."""
        super().__init__(connector, config.state_dsn, config.ledger_schema)
        self.config = config
        self.lookup_in_doubt = config.dedupe == "lookup"
        self._client: httpx.Client | None = None
        self._token: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Read the token, open the HTTP client, the ledger and the intent table (created if missing)."""
        headers = {"Accept": "application/json"}
        if self.config.token_env is not None:
            try:
                token = self.config.token_env.read("the API's bearer token", f"sink {self.connector}")
            except ConfigError as exc:
                raise Fatal(str(exc), reason="auth") from None
            self._token = token
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=self.config.base_url, timeout=self.config.timeout_seconds, headers=headers
        )
        super().setup()

    def close(self) -> None:
        """Close the HTTP client, the ledger and the intent connection."""
        if self._client is not None:
            self._client.close()
            self._client = None
        super().close()

    # -- HTTP --------------------------------------------------------------------------------------

    def body_of(self, record: SinkRecord) -> dict[str, Any]:
        """The JSON body of the create request for ``record`` (Permanent 'mapping' on a missing path)."""
        out = {field: jsonable(field_at(record.value, path), field) for field, path in self.config.body.items()}
        out[self.config.ref_field] = record.effect_id
        return out

    def describe(self, record: SinkRecord, body: Any) -> str:
        detail = f"POST {self.config.create_path} {json.dumps(body, ensure_ascii=False)}"
        if self.config.dedupe == "idempotency-key":
            detail += f" ({self.config.idempotency_header}: {record.effect_id})"
        return detail

    def _redact(self, text: str) -> str:
        """Belt and braces: a target that echoes our token back must not put it into a dead letter."""
        return text.replace(self._token, "***") if self._token else text

    def _http(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; transport failures (refused, timeout, reset) become classified errors."""
        if self._client is None:
            raise RuntimeError("HttpApiWriter.setup() was not called")
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise classify(exc) from exc

    def _refused(self, what: str, resp: httpx.Response) -> ConnectorError:
        """The classified error of a non-2xx response; 4xx other than 401/403/408/429 is per record."""
        status = resp.status_code
        if status in (401, 403):
            where = (
                f"check the bearer token in the environment variable {self.config.token_env}"
                if self.config.token_env
                else "no token is configured: set token_env to the name of an environment variable holding one"
            )
            return Fatal(f"{what} refused our credentials (HTTP {status}): {where}", reason="auth")
        message = self._redact(error_text(resp))[:MAX_ERROR_MESSAGE]
        err = classify_http_status(status, resp.headers, message)
        if isinstance(err, Permanent):
            return Permanent(f"{what} refused with HTTP {status}: {message}", reason=f"http_{status}")
        return err or Permanent(f"{what}: unexpected HTTP {status}", reason="unexpected")

    def lookup(self, effect_id: str) -> str | None:
        """The target's id of the object carrying ``effect_id`` as external reference, or None.

        Results are matched on ``ref_field`` too, so an API that ignores the filter parameter cannot make
        an unrelated object look like ours.
        """
        path = self.config.lookup_path
        resp = self._http("GET", path, params={self.config.ref_param: effect_id})
        if resp.status_code >= 300:
            raise self._refused(f"GET {path}", resp)
        try:
            doc = resp.json()
        except ValueError:
            raise Permanent(f"GET {path}: the response is not JSON", reason="lookup") from None
        items = listed(doc)
        if items is None:
            raise Permanent(
                f"GET {path}: no list in the response (looked for {', '.join(LIST_FIELDS)})", reason="lookup"
            )
        found = [i for i in items if isinstance(i, Mapping) and i.get(self.config.ref_field) == effect_id]
        if len(found) > 1:
            log.warning("sink %s: the target holds %d objects with %s=%s", self.connector, len(found),
                        self.config.ref_field, effect_id)  # fmt: skip
        if not found:
            return None
        return first_id(found[0]) or ""

    def create(self, effect_id: str, body: dict[str, Any]) -> tuple[str | None, bool]:
        """POST the create; returns (the new object's id, whether the target replayed an earlier create)."""
        headers: dict[str, str] = {}
        if self.config.dedupe == "idempotency-key":
            headers[self.config.idempotency_header] = effect_id
        path = self.config.create_path
        resp = self._http("POST", path, json=body, headers=headers)
        if resp.status_code >= 300:
            raise self._refused(f"POST {path}", resp)
        replayed = resp.headers.get("Idempotent-Replayed", "").lower() == "true"
        try:
            ref = first_id(resp.json())
        except ValueError:
            ref = None
        if ref is None:
            log.warning("sink %s: %s accepted %s but returned no id (looked for %s)", self.connector, path,
                        effect_id, ", ".join(ID_FIELDS))  # fmt: skip
        return ref, replayed


class HttpApiSink(SinkConnector):
    """Sink connector writing each record as one create at a REST API, exactly once."""

    Config = HttpApiSinkConfig
    config: HttpApiSinkConfig

    def probe(self) -> str | None:
        return probes.http(self.config.base_url) or probes.pg(self.config.state_dsn)

    def validate(self) -> None:
        super().validate()
        if self.config.token_env:
            self.config.token_env.read("the API token", f"connector {self.name}")

    def writer(self) -> HttpApiWriter:
        return HttpApiWriter(self.name, self.config)
