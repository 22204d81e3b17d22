"""A contract fake of the Feishu (飞书 / Lark) Open Platform parts an approval integration uses, and a sender
of Feishu's event callbacks, both built from Feishu's published documentation (open.feishu.cn):

* ``POST /open-apis/auth/v3/tenant_access_token/internal`` {app_id, app_secret} -> {code: 0, msg: "ok",
  tenant_access_token: "t-...", expire}; the same token again while it has >= 30 min left, a new one after
  (both stay valid). Wrong app_id -> 10003, wrong secret -> 10014.
* Every other call needs ``Authorization: Bearer <tenant_access_token>``: none -> 99991661 "Missing access
  token", unknown / expired -> 99991663 "Invalid access token for authorization".
* ``GET /open-apis/approval/v4/instances/{instance_code}`` -> {code: 0, msg: "success", data: {approval_code,
  approval_name, start_time, end_time, user_id, open_id, serial_number, department_id, status, uuid,
  form (a JSON *string*), task_list, comment_list, timeline, instance_code, reverted}}; 1390003 "instance
  code not found".
* ``POST /open-apis/approval/v4/approvals/{approval_code}/subscribe`` -> {code: 0, data: {}}; again ->
  1390007 "subscription existed"; unknown code -> 1390002 "approval code not found".
* Business errors answer HTTP 400 with their code. Rate limit: HTTP 429, headers ``x-ogw-ratelimit-limit`` /
  ``x-ogw-ratelimit-reset`` (seconds), body {code: 99991400, msg: "request trigger frequency limit"}.

``FeishuEventSender`` posts callbacks as Feishu does: ``url_verification`` {challenge, token, type}, the
approval_instance event in the v2 envelope (schema 2.0 + header) or the v1 one (uuid, token, ts,
type event_callback); with an Encrypt Key the body is ``{"encrypt": base64(iv ‖ AES-256-CBC(json))}``
(key SHA256(encrypt_key), PKCS#7) and signed: X-Lark-Signature = hex SHA256(X-Lark-Request-Timestamp +
X-Lark-Request-Nonce + encrypt_key + body). A redelivery repeats the event id with a fresh signature.

    with FeishuApi() as api:
        api.add_approval("7C468A54-...", "采购申请")
        api.put_instance("81D31358-...", "7C468A54-...", form=[{"id": "w1", "name": "金额", ...}])
        sender = FeishuEventSender(rig.url, "vtoken", "encrypt key")
        sender.instance_status("81D31358-...", "7C468A54-...", "APPROVED")
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["FeishuApi", "FeishuEventSender", "feishu_encrypt", "feishu_signature"]

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
INSTANCE_PREFIX = "/open-apis/approval/v4/instances/"
APPROVAL_PREFIX = "/open-apis/approval/v4/approvals/"


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expires at (monotonic)
    approvals: dict[str, str] = field(default_factory=dict)  # approval_code -> name
    subscribed: set[str] = field(default_factory=set)
    subscribe_answers: list[tuple[str, int]] = field(default_factory=list)  # (approval_code, code answered)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    throttle_left: int = 0
    throttle_reset: int = 1
    fail_left: int = 0
    fail_status: int = 500
    calls: Counter[str] = field(default_factory=Counter)  # "GET instance" -> n


class FeishuApi:
    """The fake Open Platform on a free loopback port (``url``); knobs may change at any time."""

    def __init__(self, app_id: str = "cli_a5f2c3d4e5f60123", app_secret: str = "dskLLdkasdjlasdKK",
                 token_ttl: int = 7200) -> None:  # fmt: skip
        self.app_id, self.app_secret, self.token_ttl = app_id, app_secret, token_ttl
        self.state = _State()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> FeishuApi:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-feishu", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "use FeishuApi as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- data and knobs --------------------------------------------------------------------------------

    def add_approval(self, approval_code: str, name: str = "Payment") -> None:
        with self.state.lock:
            self.state.approvals[approval_code] = name

    def put_instance(self, instance_code: str, approval_code: str, *, status: str = "PENDING",
                     form: list[dict[str, Any]] | None = None, user_id: str = "f3ta757q",
                     open_id: str = "ou_3cda9c969f737aaa05e6915dce306cb9", start_time: int = 1564590532967,
                     end_time: int = 0, serial_number: str = "202102060002", uuid_: str = "",
                     approval_name: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Store an instance as GET returns it (``form`` given as widgets, served as a JSON string)."""
        name = approval_name or self.state.approvals.get(approval_code, "Payment")
        data = {
            "approval_code": approval_code, "approval_name": name, "start_time": str(start_time),
            "end_time": str(end_time), "user_id": user_id, "open_id": open_id, "serial_number": serial_number,
            "department_id": "od-8ec33ffec336c3a39a278bc25e931676", "status": status, "uuid": uuid_,
            "form": json.dumps(form or [], ensure_ascii=False), "task_list": [], "comment_list": [],
            "timeline": [{"type": "START", "create_time": str(start_time), "user_id": user_id, "open_id": open_id}],
            "instance_code": instance_code, "reverted": status == "REVERTED",
        }  # fmt: skip
        self.put_instance_data(instance_code, data)
        return data

    def put_instance_data(self, instance_code: str, data: dict[str, Any]) -> None:
        """Store the ``data`` object GET answers for ``instance_code`` as is (e.g. a documented sample)."""
        with self.state.lock:
            self.state.instances[instance_code] = dict(data)

    def throttle(self, n: int = 1, reset_seconds: int = 1) -> None:
        """The next ``n`` approval API calls answer HTTP 429 / 99991400 with x-ogw-ratelimit-reset."""
        with self.state.lock:
            self.state.throttle_left, self.state.throttle_reset = n, reset_seconds

    def fail_next(self, status: int = 500, n: int = 1) -> None:
        """The next ``n`` approval API calls answer HTTP ``status`` (a gateway error page, not JSON)."""
        with self.state.lock:
            self.state.fail_left, self.state.fail_status = n, status

    def expire_tokens(self) -> None:
        """Every issued tenant_access_token stops working (as after their 2 hours)."""
        with self.state.lock:
            self.state.tokens.clear()

    @property
    def subscriptions(self) -> set[str]:
        with self.state.lock:
            return set(self.state.subscribed)

    @property
    def subscribe_answers(self) -> list[tuple[str, int]]:
        with self.state.lock:
            return list(self.state.subscribe_answers)

    def calls(self, what: str) -> int:
        """How many requests of a kind were answered: "token", "GET instance", "POST subscribe", "throttled"."""
        with self.state.lock:
            return self.state.calls[what]

    # -- behaviour (called from the handler threads) ----------------------------------------------------

    def _token(self, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or body.get("app_id") != self.app_id:
            return 400, {"code": 10003, "msg": "invalid param"}
        if body.get("app_secret") != self.app_secret:
            return 400, {"code": 10014, "msg": "app secret invalid"}
        now = time.monotonic()
        with self.state.lock:
            self.state.calls["token"] += 1
            live = [(t, exp) for t, exp in self.state.tokens.items() if exp - now >= min(1800, self.token_ttl / 2)]
            if live:
                token, expires = live[0]
            else:
                token, expires = "t-" + secrets.token_hex(20), now + self.token_ttl
                self.state.tokens[token] = expires
        return 200, {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": int(expires - now)}

    def _authorized(self, header: str | None) -> dict[str, Any] | None:
        if not header or not header.startswith("Bearer ") or not header[7:].strip():
            return {"code": 99991661, "msg": "Missing access token for authorization. Please make a request "
                    "with token attached."}  # fmt: skip
        with self.state.lock:
            expires = self.state.tokens.get(header[7:].strip())
        if expires is None or expires < time.monotonic():
            return {"code": 99991663, "msg": "Invalid access token for authorization. Please make a request "
                    "with token attached."}  # fmt: skip
        return None

    def _api(self, method: str, path: str, auth: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.state.lock:
            if self.state.throttle_left > 0:
                self.state.throttle_left -= 1
                self.state.calls["throttled"] += 1
                headers = {"x-ogw-ratelimit-limit": "100", "x-ogw-ratelimit-reset": str(self.state.throttle_reset)}
                return 429, {"code": 99991400, "msg": "request trigger frequency limit"}, headers
            if self.state.fail_left > 0:
                self.state.fail_left -= 1
                return self.state.fail_status, {}, {}
        refused = self._authorized(auth)
        if refused is not None:
            return 400, refused, {}
        if method == "GET" and path.startswith(INSTANCE_PREFIX):
            code = path[len(INSTANCE_PREFIX):]
            with self.state.lock:
                self.state.calls["GET instance"] += 1
                data = self.state.instances.get(code)
            if data is None:
                return 400, {"code": 1390003, "msg": "instance code not found"}, {}
            return 200, {"code": 0, "msg": "success", "data": data}, {}
        if method == "POST" and path.startswith(APPROVAL_PREFIX) and path.endswith("/subscribe"):
            code = path[len(APPROVAL_PREFIX):-len("/subscribe")]
            with self.state.lock:
                self.state.calls["POST subscribe"] += 1
                if code not in self.state.approvals:
                    answer = 1390002
                elif code in self.state.subscribed:
                    answer = 1390007
                else:
                    answer = 0
                    self.state.subscribed.add(code)
                self.state.subscribe_answers.append((code, answer))
            msg = {0: "success", 1390002: "approval code not found", 1390007: "subscription existed"}[answer]
            return (200 if answer == 0 else 400), {"code": answer, "msg": msg, "data": {}}, {}
        return 404, {"code": 404, "msg": "404 page not found"}, {}


def _handler(api: FeishuApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any] | None, headers: dict[str, str]) -> None:
            raw = json.dumps(body, ensure_ascii=False).encode() if body else b"<html>502 Bad Gateway</html>"
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8" if body else "text/html")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _route(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if method == "POST" and path == TOKEN_PATH:
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = None
                status, answer = api._token(body)
                self._answer(status, answer, {})
                return
            status, answer, headers = api._api(method, path, self.headers.get("Authorization"))
            self._answer(status, answer, headers)

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def log_message(self, fmt: str, *args: Any) -> None:
            pass

    return Handler


# -- the push side -------------------------------------------------------------------------------------


def feishu_encrypt(encrypt_key: str, plaintext: bytes, iv: bytes | None = None) -> str:
    """``encrypt`` as Feishu builds it: base64(iv ‖ AES-256-CBC(SHA256(key), PKCS#7(plaintext)))."""
    iv = iv or os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(hashlib.sha256(encrypt_key.encode()).digest()), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + encryptor.update(padded) + encryptor.finalize()).decode()


def feishu_signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256(timestamp.encode() + nonce.encode() + encrypt_key.encode() + body).hexdigest()


class FeishuEventSender:
    """Posts event callbacks to ``url`` the way Feishu's event push does; every method returns the answer."""

    def __init__(self, url: str, verification_token: str, encrypt_key: str | None = None,
                 app_id: str = "cli_a5f2c3d4e5f60123", tenant_key: str = "736588c9260f175d") -> None:  # fmt: skip
        self.url, self.verification_token, self.encrypt_key = url, verification_token, encrypt_key
        self.app_id, self.tenant_key = app_id, tenant_key
        self.last: dict[str, Any] | None = None

    def url_verification(self, challenge: str | None = None, token: str | None = None) -> httpx.Response:
        """The request-URL check Feishu sends when the callback URL is saved (not signed)."""
        message = {"challenge": challenge or uuid.uuid4().hex, "token": token or self.verification_token,
                   "type": "url_verification"}  # fmt: skip
        return self.post_message(message, sign=False)

    def instance_status(self, instance_code: str, approval_code: str, status: str, operate_time: int | None = None,
                        *, envelope: str = "v2", event_id: str | None = None, instance_uuid: str = "",
                        token: str | None = None) -> httpx.Response:  # fmt: skip
        """An ``approval_instance`` status change (审批实例状态变更) in the v2 or the v1 envelope."""
        ms = operate_time if operate_time is not None else int(time.time() * 1000)
        eid = event_id or uuid.uuid4().hex
        event: dict[str, Any] = {
            "app_id": self.app_id, "tenant_key": self.tenant_key, "type": "approval_instance",
            "approval_code": approval_code, "instance_code": instance_code, "status": status,
            "operate_time": str(ms), "instance_operate_time": str(ms), "uuid": instance_uuid,
        }  # fmt: skip
        if envelope == "v1":
            if status == "REVERTED":
                event["operate_time"] = ms  # documented: an int64 for REVERTED, a string otherwise
            message = {"ts": f"{time.time():.7f}", "uuid": eid, "token": token or self.verification_token,
                       "type": "event_callback", "event": event}  # fmt: skip
        else:
            header = {"event_id": eid, "token": token or self.verification_token, "create_time": str(ms),
                      "event_type": "approval_instance", "tenant_key": self.tenant_key, "app_id": self.app_id}  # fmt: skip
            message = {"schema": "2.0", "header": header, "event": event}
        return self.post_message(message)

    def redeliver(self) -> httpx.Response:
        """The last message again (same event id), freshly encrypted and signed, as Feishu's retry does."""
        assert self.last is not None, "nothing sent yet"
        return self.post_message(self.last)

    def post_message(self, message: dict[str, Any], *, sign: bool = True, tamper: bool = False,
                     timestamp: int | None = None) -> httpx.Response:  # fmt: skip
        """Post one callback: encrypted and signed when the sender has an Encrypt Key."""
        self.last = message
        body = json.dumps(message, ensure_ascii=False).encode()
        if self.encrypt_key:
            body = json.dumps({"encrypt": feishu_encrypt(self.encrypt_key, body)}).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.encrypt_key and sign:
            ts, nonce = str(timestamp if timestamp is not None else int(time.time())), secrets.token_hex(8)
            sig = feishu_signature(ts, nonce, self.encrypt_key, body)
            if tamper:
                sig = feishu_signature(ts, nonce, "not the key", body)
            headers.update({"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce, "X-Lark-Signature": sig})
        return self.post_raw(body, headers)

    def post_raw(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(self.url, content=body, headers=headers or {"Content-Type": "application/json"}, timeout=10)
