"""``dingtalk``: DingTalk (钉钉) approvals (OA 审批) as ``bizbus.oa.ApprovalChanged`` events (flow F4).

    POST /webhooks/<name>?msg_signature=..&timestamp=..&nonce=..  {"encrypt": "..."}
      -> signature (401 bad_signature), timestamp skew (401 stale), AES decrypt + owner key (400 malformed)
      -> bpms_instance_change stored, the encrypted "success" answered at once (DingTalk retries after ~1.5 s);
         check_url and bpms_task_change answered, not stored (every approval status change is an instance event)
      -> converter: GET /v1.0/workflow/processInstances (cached access token) -> ApprovalChanged

Callback crypto as DingTalk publishes it: SHA1 of sorted (token, timestamp, nonce, encrypt); AES-256-CBC with
key = base64(aes_key + "="), IV = first 16 key bytes, PKCS#7 padding to 32; plaintext = 16 random bytes +
4-byte big-endian length + message + owner key (corp id for callbacks registered by API, app key for the
developer console's subscription). No backfill: the instance list API is per template and by start time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import struct
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import httpx
from bizbus.connectors.runtime.inbox import (
    Accepted,
    Converter,
    Delivery,
    Event,
    HttpRequest,
    HttpResponse,
    InboxConfig,
    InboxConnector,
    InboxRow,
    WebhookHandler,
    WebhookRejected,
    parse_json_body,
    reject_unless,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import Field

from bizbus import lineage
from bizbus.errors import ConfigError
from bizbus.failures import BackOff, ConnectorError, Fatal, Permanent, Retryable, parse_retry_after
from bizbus.logs import register_secret

log = logging.getLogger(__name__)

SYSTEM = "dingtalk"
TOPIC = "bizbus.oa.approval.v1"
KIND_INSTANCE = "dingtalk:bpms_instance_change"
INSTANCE_TYPES = ("start", "finish", "terminate", "delete")
BLOCK = 32  # DingTalk pads to 32 bytes, not to the AES block size
_ENV = r"^[A-Za-z_][A-Za-z0-9_]*$"
Json = Mapping[str, Any]


# -- callback crypto (pure) ------------------------------------------------------------------------


class CryptoError(ValueError):
    """A callback payload that cannot be decrypted or unpacked."""


def callback_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """DingTalk's msg_signature: hex SHA1 of the four strings sorted and joined."""
    return hashlib.sha1("".join(sorted((token, timestamp, nonce, encrypt))).encode()).hexdigest()


def aes_key_bytes(aes_key: str) -> bytes:
    """The 32-byte AES key from the 43-character ``aes_key`` of the callback settings."""
    if len(aes_key) != 43:
        raise ValueError(f"the DingTalk aes_key must have 43 characters, got {len(aes_key)}")
    try:
        return base64.b64decode(aes_key + "=", validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the DingTalk aes_key is not base64: {exc}") from None


def _cipher(key: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def encrypt_message(key: bytes, message: str, owner_key: str, random: bytes | None = None) -> str:
    """base64(AES-256-CBC(random(16) + len(4, big-endian) + message + owner_key, padded to 32 bytes))."""
    data = message.encode()
    plain = (random if random is not None else os.urandom(16)) + struct.pack(">I", len(data)) + data
    plain += owner_key.encode()
    pad = BLOCK - len(plain) % BLOCK
    plain += bytes([pad]) * pad
    enc = _cipher(key).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode()


def decrypt_message(key: bytes, encrypt: str) -> tuple[str, str]:
    """``(message, owner_key)`` from an ``encrypt`` value; ``CryptoError`` when it does not unpack."""
    try:
        raw = base64.b64decode("".join(encrypt.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("encrypt is not base64") from None
    if not raw or len(raw) % 16:
        raise CryptoError(f"ciphertext length {len(raw)} is not a multiple of the AES block size")
    dec = _cipher(key).decryptor()
    plain = dec.update(raw) + dec.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise CryptoError("bad padding (wrong aes_key?)")
    plain = plain[:-pad]
    n = int.from_bytes(plain[16:20], "big") if len(plain) >= 20 else -1
    if n < 0 or 20 + n > len(plain):
        raise CryptoError("the message length does not fit the plaintext")
    try:
        return plain[20 : 20 + n].decode(), plain[20 + n :].decode()
    except UnicodeDecodeError:
        raise CryptoError("plaintext is not UTF-8") from None


def encrypted_reply(token: str, key: bytes, owner_key: str, message: str = "success") -> dict[str, str]:
    """The answer DingTalk expects: ``{"msg_signature", "timeStamp", "nonce", "encrypt"}`` of ``message``."""
    ts, nonce = str(int(time.time() * 1000)), secrets.token_hex(8)
    enc = encrypt_message(key, message, owner_key)
    return {"msg_signature": callback_signature(token, ts, nonce, enc), "timeStamp": ts, "nonce": nonce,
            "encrypt": enc}  # fmt: skip


def timestamp_seconds(value: str) -> float:
    """A callback timestamp (DingTalk sends ms; seconds are accepted too) in seconds; ValueError if not one."""
    n = int(value)
    return n / 1000.0 if n > 100_000_000_000 else float(n)


# -- event -> inbox delivery (pure) ----------------------------------------------------------------


def _ms(value: Any) -> int | None:
    try:
        return None if isinstance(value, bool) or value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def delivery_id(event: Json) -> str:
    """The event's own id (``eventId``, else the idempotent ``BizId``), else SHA-256 of its canonical JSON."""
    own = event.get("eventId") or event.get("BizId")
    if own:
        return f"dingtalk:{own}"
    canonical = json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "dingtalk:sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def entity_key(event: Json) -> str:
    """``instance:<processInstanceId>@<type>/<result>``: one row per change of an instance."""
    return f"instance:{event['processInstanceId']}@{event.get('type') or ''}/{event.get('result') or ''}"


STATUS = {("finish", "agree"): "APPROVED", ("finish", "refuse"): "REJECTED", ("terminate", ""): "REVOKED",
          ("start", ""): "PENDING", ("delete", ""): "CANCELLED"}  # fmt: skip


def approval_status(event: Json) -> str | None:
    """Canonical status of an instance event; None for a change that is not one (e.g. an unknown result)."""
    kind = str(event.get("type") or "")
    result = str(event.get("result") or "") if kind == "finish" else ""
    return STATUS.get((kind, result))


def change_ms(event: Json) -> int | None:
    """When the change happened: the latest of createTime, finishTime and EventTime (ms)."""
    times = [_ms(event.get(k)) for k in ("createTime", "finishTime", "EventTime")]
    return max((t for t in times if t is not None), default=None)


def version(event: Json) -> int:
    """Change time in ms; a terminate / delete gets +1 so that it supersedes a finish with the same times."""
    at = change_ms(event)
    if at is None:
        raise Permanent("event has none of createTime, finishTime, EventTime", reason="no_version")
    return at + (1 if event.get("type") in ("terminate", "delete") else 0)


# -- instance + event -> ApprovalChanged (pure) -----------------------------------------------------


def form_fields(components: Any) -> dict[str, str]:
    """``formComponentValues`` as name -> string (tables / complex values as JSON text)."""
    out: dict[str, str] = {}
    for c in components if isinstance(components, list) else []:
        if not isinstance(c, Mapping) or c.get("value") is None:
            continue
        name = str(c.get("name") or c.get("id") or "")
        if not name:
            continue
        v = c["value"]
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
        out[name if name not in out else f"{name}#{c.get('id')}"] = text
    return out


def parse_amount(text: str, field_name: str) -> Decimal | None:
    """A money value as DingTalk forms show it ("58,650.00", "¥45.50") -> Decimal with 2 places."""
    cleaned = text.strip()
    for junk in (",", "，", "¥", "￥", "元", "CNY", " "):
        cleaned = cleaned.replace(junk, "")
    if not cleaned:
        return None
    try:
        value = Decimal(cleaned)
        cents = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        cents = None
    if cents is None or cents != value:
        raise Permanent(f"form field {field_name!r}: {text!r} is no amount with 2 decimals", reason="invalid_amount")  # fmt: skip
    return cents


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _iso(value: Any) -> datetime | None:
    """The instance API's times, e.g. "2022-08-31T11:52Z" (UTC when no offset is given)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def approval_changed(event: Json, instance: Json | None, m: DingTalkConfig) -> Event:
    """The canonical event for one instance change (``instance`` is the API's ``result``; None after delete)."""
    inst = instance or {}
    instance_id = str(event["processInstanceId"])
    status = approval_status(event)
    if status is None:
        raise Permanent(f"instance {instance_id}: no status for type={event.get('type')!r} "
                        f"result={event.get('result')!r}", reason="unknown_change")  # fmt: skip
    process_code = event.get("processCode") or inst.get("processCode")
    applicant = inst.get("originatorUserId") or event.get("staffId")
    if not process_code or not applicant:
        raise Permanent(f"instance {instance_id}: no processCode / originator", reason="incomplete_event")
    ver = version(event)
    occurred = _at(change_ms(event))
    submitted = _at(_ms(event.get("createTime"))) or _iso(inst.get("createTime")) or occurred
    finished = None
    if status != "PENDING":
        finished = _at(_ms(event.get("finishTime"))) or _iso(inst.get("finishTime")) or occurred
    fields = form_fields(inst.get("formComponentValues"))
    amount = parse_amount(fields[m.amount_field], m.amount_field) if m.amount_field in fields else None
    project = fields.get(m.project_field) if m.project_field else None
    business_ref = fields.get(m.business_ref_field) if m.business_ref_field else None
    eid = lineage.event_id(SYSTEM, "instance", instance_id, status, ver)
    value = {
        "meta": lineage.meta(eid, business_ref or project or instance_id, SYSTEM, occurred),
        "instance_id": instance_id, "template_code": str(process_code),
        "template_name": m.templates.get(str(process_code)), "status": status, "applicant": str(applicant),
        "title": inst.get("title") or event.get("title") or None, "amount": amount,
        "currency": m.currency if amount is not None else None, "project": project or None,
        "business_ref": business_ref or None, "form_fields": fields, "submitted_at": submitted,
        "finished_at": finished, "version": ver,
    }  # fmt: skip
    return Event(TOPIC, instance_id, value)


# -- the DingTalk API (token cache + instance read) -----------------------------------------------

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


# -- config, handler, converter, connector --------------------------------------------------------


class DingTalkConfig(InboxConfig):
    """Settings of the ``dingtalk`` source (secrets only as names of environment variables)."""

    token_env: str = Field(pattern=_ENV, description="env var holding the callback signature token (签名 token)",
                           examples=["DINGTALK_CALLBACK_TOKEN"])  # fmt: skip
    aes_key_env: str = Field(pattern=_ENV, description="env var holding the 43-character callback aes_key (加密 aes_key)",
                             examples=["DINGTALK_AES_KEY"])  # fmt: skip
    corp_id: str | None = Field(default=None, description="corp id a decrypted callback may end with (callbacks "
                                "registered by API); callbacks ending with app_key are accepted too",
                                examples=["ding2c015874d8175651"])  # fmt: skip
    app_key: str = Field(min_length=1, description="app key (Client ID) of the DingTalk app: the access token is "
                         "requested with it, and developer-console event subscriptions end with it",
                         examples=["dingsnotzck6pm5veliw"])  # fmt: skip
    app_secret_env: str = Field(pattern=_ENV, description="env var holding the app secret (Client Secret)",
                                examples=["DINGTALK_APP_SECRET"])  # fmt: skip
    api_base_url: str = Field(default="https://api.dingtalk.com", pattern=r"^https?://\S+$",
                              description="base URL of DingTalk's new API", examples=["https://api.dingtalk.com"])  # fmt: skip
    amount_field: str | None = Field(default=None, description="form field (component name) holding the amount",
                                     examples=["金额"])  # fmt: skip
    project_field: str | None = Field(default=None, description="form field holding the project code",
                                      examples=["项目编号"])  # fmt: skip
    business_ref_field: str | None = Field(default=None, description="form field holding the business document "
                                           "number", examples=["申请单号"])  # fmt: skip
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$", description="ISO 4217 currency of the amount",
                          examples=["CNY"])  # fmt: skip
    templates: dict[str, str] = Field(default={}, description="template names by processCode",
                                      examples=[{"PROC-PURCHASE-REQ": "采购申请"}])  # fmt: skip
    max_clock_skew_seconds: float = Field(default=3600, gt=0, le=7 * 86400, description="callbacks whose signed "
                                          "timestamp is further from now are refused (401 stale)",
                                          examples=[3600])  # fmt: skip
    timeout_seconds: float = Field(default=10, gt=0, le=300, description="timeout of each DingTalk API call",
                                   examples=[10])  # fmt: skip


def secret(env: str, what: str) -> str:
    value = os.environ.get(env, "")
    if not value:
        raise ConfigError(f"dingtalk: environment variable {env} ({what}) is not set")
    register_secret(value)  # masked in every log line from now on, whatever the variable is called
    return value


class DingTalkHandler(WebhookHandler):
    """Verifies, decrypts and stores DingTalk event callbacks; answers with the encrypted "success"."""

    def __init__(self, token: str, aes_key: str, owner_keys: tuple[str, ...], max_skew: float,
                 clock: Any = time.time) -> None:  # fmt: skip
        try:
            self.key = aes_key_bytes(aes_key)
        except ValueError as exc:
            raise ConfigError(f"dingtalk: {exc}") from None
        self.token, self.owner_keys, self.max_skew, self.clock = token, owner_keys, max_skew, clock

    def precheck(self, method: str, subpath: str, query: Mapping[str, str], headers: Mapping[str, str]) -> None:
        """Before the body is read: a POST with the query signature's parts and a fresh timestamp (the
        signature itself covers the body's ``encrypt`` and is checked in ``handle``)."""
        reject_unless(method == "POST", 405, "method", "DingTalk callbacks are POST requests")
        sig, nonce = query.get("msg_signature") or query.get("signature"), query.get("nonce")
        ts = query.get("timestamp") or query.get("timeStamp") or ""
        reject_unless(bool(sig and ts and nonce), 401, "bad_signature", "no msg_signature, timestamp, nonce")
        try:
            skew = abs(self.clock() - timestamp_seconds(ts))
        except ValueError:
            skew = float("inf")
        reject_unless(skew <= self.max_skew, 401, "stale", f"timestamp {ts[:20]} is too far from now (replayed?)")

    def handle(self, request: HttpRequest) -> Accepted | HttpResponse:
        reject_unless(request.method == "POST", 405, "method", "DingTalk callbacks are POST requests")
        body = parse_json_body(request.body)
        enc = body.get("encrypt") if isinstance(body, Mapping) else None
        reject_unless(isinstance(enc, str) and bool(enc), 400, "malformed", "body lacks 'encrypt'")
        q = request.query
        sig, nonce = q.get("msg_signature") or q.get("signature") or "", q.get("nonce") or ""
        ts = q.get("timestamp") or q.get("timeStamp") or ""
        reject_unless(bool(sig and ts and nonce), 401, "bad_signature", "no msg_signature, timestamp, nonce")
        ok = hmac.compare_digest(callback_signature(self.token, ts, nonce, enc), sig.lower())
        reject_unless(ok, 401, "bad_signature", "msg_signature does not match")
        try:
            skew = abs(self.clock() - timestamp_seconds(ts))
        except ValueError:
            skew = float("inf")
        reject_unless(skew <= self.max_skew, 401, "stale", f"timestamp {ts} is too far from now (replayed?)")
        try:
            message, owner = decrypt_message(self.key, enc)
        except CryptoError as exc:
            raise WebhookRejected(400, "malformed", f"cannot decrypt: {exc}") from None
        reject_unless(owner in self.owner_keys, 400, "malformed", "the payload is for another corp / app")
        event = parse_json_body(message.encode())
        reject_unless(isinstance(event, dict), 400, "malformed", "decrypted event is not a JSON object")
        reply = HttpResponse(200, json.dumps(encrypted_reply(self.token, self.key, owner)).encode())
        etype = str(event.get("EventType") or event.get("eventType") or "")
        if etype == "check_url":
            return reply
        if etype != "bpms_instance_change" or event.get("type") not in INSTANCE_TYPES:
            log.debug("dingtalk: %s (%s) answered, not stored", etype, event.get("type"))
            return Accepted((), reply)
        reject_unless(bool(event.get("processInstanceId")), 400, "malformed", "no processInstanceId")
        return Accepted((Delivery(delivery_id(event), KIND_INSTANCE, event, entity_key(event)),), reply)


class DingTalkConverter(Converter):
    """Inbox rows of instance changes -> ApprovalChanged (reads the instance's form through the API)."""

    def __init__(self, config: DingTalkConfig, app_secret: str) -> None:
        self.config, self._secret = config, app_secret
        self.api: DingTalkApi | None = None

    def setup(self) -> None:
        c = self.config
        self.api = DingTalkApi(c.api_base_url, c.app_key, self._secret, c.timeout_seconds)

    def convert(self, row: InboxRow) -> list[Event]:
        if row.kind != KIND_INSTANCE:
            return []
        event = row.payload
        if approval_status(event) is None:
            log.info("dingtalk: %s is no approval status change; skipped", row.entity_key)
            return []
        assert self.api is not None, "setup() opens the API client"
        deleted = event.get("type") == "delete"  # a deleted instance cannot be read any more
        instance = None if deleted else self.api.get_instance(str(event["processInstanceId"]))
        return [approval_changed(event, instance, self.config)]

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None


class DingTalkSource(InboxConnector):
    """DingTalk approvals: encrypted event callbacks -> inbox -> ApprovalChanged on bizbus.oa.approval.v1."""

    Config = DingTalkConfig
    config: DingTalkConfig

    def validate(self) -> None:
        super().validate()
        c = self.config
        for env, what in ((c.token_env, "callback token"), (c.aes_key_env, "aes_key"),
                          (c.app_secret_env, "app secret")):  # fmt: skip
            secret(env, what)

    def handler(self) -> WebhookHandler:
        c = self.config
        owners = tuple(k for k in (c.corp_id, c.app_key) if k)
        return DingTalkHandler(secret(c.token_env, "callback token"), secret(c.aes_key_env, "aes_key"), owners,
                               c.max_clock_skew_seconds)  # fmt: skip

    def converter(self) -> Converter:
        return DingTalkConverter(self.config, secret(self.config.app_secret_env, "app secret"))

    def topics(self) -> tuple[str, ...]:
        return (TOPIC,)
