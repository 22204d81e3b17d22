"""DingTalk event callbacks: the callback crypto as DingTalk publishes it, and the webhook handler.

SHA1 of sorted (token, timestamp, nonce, encrypt); AES-256-CBC with key = base64(aes_key + "="), IV = first
16 key bytes, PKCS#7 padding to 32; plaintext = 16 random bytes + 4-byte big-endian length + message +
owner key (corp id for callbacks registered by API, app key for the developer console's subscription).
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
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bizbus.errors import ConfigError

log = logging.getLogger(__name__)

KIND_INSTANCE = "dingtalk:bpms_instance_change"
INSTANCE_TYPES = ("start", "finish", "terminate", "delete")
BLOCK = 32  # DingTalk pads to 32 bytes, not to the AES block size
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
