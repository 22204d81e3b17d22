"""Feishu event callbacks: signature, decryption, envelopes (v2 and v1) and the webhook handler (pure, fast).

Published contract (open.feishu.cn "接收事件", "审批实例状态变更"): an encrypted body is
``{"encrypt": base64(iv(16) ‖ AES-256-CBC(json))}`` with key SHA256(encrypt_key) and PKCS#7 padding;
``X-Lark-Signature`` = hex SHA256(X-Lark-Request-Timestamp + X-Lark-Request-Nonce + encrypt_key + raw body).
The ``url_verification`` handshake ({challenge, token, type}) is not signed: its token is checked and the
challenge echoed as plain JSON, also when the request was encrypted. Events come as v2
``{schema: "2.0", header: {event_id, event_type, create_time, token, app_id, tenant_key}, event}`` and, for
approvals, still as v1 ``{uuid, token, ts, type: "event_callback", event: {type: "approval_instance", ...}}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bizbus.connectors.runtime.inbox import (
    Accepted,
    Delivery,
    HttpRequest,
    HttpResponse,
    WebhookHandler,
    WebhookRejected,
    parse_json_body,
    reject_unless,
    require,
)
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

EVENT_TYPE = "approval_instance"
OK = HttpResponse(200, b'{"msg":"success"}')

# -- crypto ------------------------------------------------------------------------------------------


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    """``X-Lark-Signature``: hex SHA256 of timestamp + nonce + encrypt_key + the raw body."""
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def decrypt(encrypt_key: str, encrypted: str) -> bytes:
    """Plaintext of an ``encrypt`` field; ``ValueError`` when it is not base64 / not ours / badly padded."""
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"encrypt is not base64: {exc}") from None
    if len(raw) < 32 or len(raw) % 16:
        raise ValueError(f"encrypt holds {len(raw)} bytes, not IV + whole AES blocks")
    key = hashlib.sha256(encrypt_key.encode()).digest()
    decryptor = Cipher(algorithms.AES(key), modes.CBC(raw[:16])).decryptor()
    padded = decryptor.update(raw[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()  # raises ValueError on a wrong key's garbage


# -- envelopes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    schema: str  # "2.0" or "1.0"
    delivery_id: str
    event_type: str
    token: str
    header: dict[str, Any]  # without the token
    event: Mapping[str, Any]


def parse_envelope(msg: Mapping[str, Any]) -> Envelope:
    """A decrypted v2 or v1 event callback; ``WebhookRejected`` 400 when it is neither."""
    event = msg.get("event")
    if not isinstance(event, Mapping):
        raise WebhookRejected(400, "malformed", "event callback without an 'event' object")
    if msg.get("schema") == "2.0":
        header = msg.get("header")
        if not isinstance(header, Mapping):
            raise WebhookRejected(400, "malformed", "v2 event without a 'header' object")
        require(header, "event_id", "event_type", what="header")
        kept = {k: v for k, v in header.items() if k != "token"}
        token = str(header.get("token") or "")
        return Envelope("2.0", str(header["event_id"]), str(header["event_type"]), token, kept, event)
    if msg.get("type") == "event_callback" and msg.get("uuid"):
        require(event, "type", what="event")
        header = {
            "event_id": msg["uuid"],
            "event_type": event["type"],
            "create_time": msg.get("ts"),
            "app_id": event.get("app_id"),
            "tenant_key": event.get("tenant_key"),
        }
        token = str(msg.get("token") or "")
        return Envelope("1.0", str(msg["uuid"]), str(event["type"]), token, header, event)
    raise WebhookRejected(400, "malformed", "neither a v2 event (schema 2.0) nor a v1 event_callback")


def epoch_ms(value: Any, what: str) -> int:
    """Milliseconds from Feishu's ms timestamps, sent as strings ("1666079207003") or int64."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ValueError(f"{what} is not a millisecond timestamp: {value!r}")


def change_key(event: Mapping[str, Any]) -> str:
    """Entity key of one instance change: ``instance:<instance_code>@<status>/<operate_time ms>``."""
    operate = event.get("operate_time") or event.get("instance_operate_time")
    return f"instance:{event['instance_code']}@{event['status']}/{epoch_ms(operate, 'operate_time')}"


# -- the push side -----------------------------------------------------------------------------------


class FeishuWebhook(WebhookHandler):
    """Verifies and parses Feishu's event callbacks (fast, no API call)."""

    def __init__(
        self,
        verification_token: str,
        encrypt_key: str | None,
        max_skew: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token, self.encrypt_key = verification_token, encrypt_key
        self.max_skew, self.clock = max_skew, clock

    def handle(self, request: HttpRequest) -> Accepted | HttpResponse:
        reject_unless(request.method == "POST", 405, "method", "Feishu event callbacks are POST requests")
        signed = self._check_signature(request)
        try:
            msg = self._message(request.body)
        except WebhookRejected:
            if self.encrypt_key and not signed:  # unsigned garbage is a forgery, not a dead letter
                raise WebhookRejected(401, "bad_signature", "X-Lark-Signature missing") from None
            raise
        if msg.get("type") == "url_verification":  # the handshake is not signed; its token is checked
            self._check_token(str(msg.get("token") or ""))
            require(msg, "challenge")
            return HttpResponse(200, json.dumps({"challenge": msg["challenge"]}, ensure_ascii=False).encode())
        reject_unless(signed or not self.encrypt_key, 401, "bad_signature", "X-Lark-Signature missing")
        env = parse_envelope(msg)
        self._check_token(env.token)
        if env.event_type != EVENT_TYPE:
            return Accepted((), OK)  # another event type this app subscribed: answer, store nothing
        require(env.event, "instance_code", "status", what="event")
        try:
            key = change_key(env.event)
        except ValueError as exc:
            raise WebhookRejected(400, "malformed", str(exc)) from None
        payload = {"schema": env.schema, "header": env.header, "event": dict(env.event)}
        return Accepted((Delivery(env.delivery_id, EVENT_TYPE, payload, key),), OK)

    def _check_signature(self, request: HttpRequest) -> bool:
        """True when signed correctly, False when unsigned (only a handshake may be); 401 when wrong/stale."""
        given = request.headers.get("x-lark-signature")
        if not self.encrypt_key or given is None:
            return False
        ts = request.headers.get("x-lark-request-timestamp", "")
        nonce = request.headers.get("x-lark-request-nonce", "")
        expected = signature(ts, nonce, self.encrypt_key, request.body)
        matches = hmac.compare_digest(given.strip().lower().encode(), expected.encode())
        reject_unless(matches, 401, "bad_signature", "X-Lark-Signature does not match the body")
        try:
            skew = abs(self.clock() - float(ts))
        except ValueError:
            raise WebhookRejected(
                401, "stale", f"X-Lark-Request-Timestamp {ts!r} is not a unix time"
            ) from None
        reject_unless(skew <= self.max_skew, 401, "stale", f"request timestamp is {skew:.0f} s away from now")
        return True

    def _message(self, body: bytes) -> dict[str, Any]:
        outer = parse_json_body(body)
        if not isinstance(outer, dict):
            raise WebhookRejected(400, "malformed", "body is not a JSON object")
        if "encrypt" not in outer:
            return outer
        if not self.encrypt_key:
            raise WebhookRejected(400, "malformed", "encrypted body but no encrypt_key_env is configured")
        try:
            plain = decrypt(self.encrypt_key, str(outer["encrypt"]))
        except (ValueError, UnicodeDecodeError) as exc:
            raise WebhookRejected(400, "malformed", f"cannot decrypt the body: {exc}") from None
        msg = parse_json_body(plain)  # 400 for what is not JSON or what the inbox cannot store
        if not isinstance(msg, dict):
            raise WebhookRejected(400, "malformed", "decrypted body is not a JSON object")
        return msg

    def _check_token(self, token: str) -> None:
        matches = hmac.compare_digest(token.encode(), self.token.encode())
        reject_unless(matches, 401, "bad_token", "verification token does not match")
