"""A contract fake of DingTalk (钉钉): the new server API for approvals, and the event callbacks DingTalk pushes.

Built from DingTalk's published documentation (open.dingtalk.com: 获取企业内部应用的accessToken, 获取单个审批实例
详情, 调用频次与限流, 配置事件推送方式 / HTTP 推送 + 加解密, 审批实例开始、结束、终止、删除), not from bizbus::

    with DingTalkApi(app_key="dingapp", app_secret="s3cret") as api:
        api.add_instance("PI-1", process_code="PROC-PR", originator="E0042", form={"项目编号": "P-1"})
        sender = DingTalkCallbackSender(rig.url, token, aes_key, "dingapp", api=api)
        assert sender.reply_is_success(sender.instance_started("PI-1", "PROC-PR"))
        sender.instance_finished("PI-1", "PROC-PR", "agree")   # the fake's instance is COMPLETED/agree too

API (``api.url`` is the base URL, i.e. what https://api.dingtalk.com is in production):
* ``POST /v1.0/oauth2/accessToken`` ``{"appKey", "appSecret"}`` -> ``{"accessToken", "expireIn"}``; wrong
  credentials -> 400 ``invalidClientIdOrSecret``.
* ``GET /v1.0/workflow/processInstances?processInstanceId=`` with header ``x-acs-dingtalk-access-token`` ->
  ``{"result": {...}, "success": true}``; no header -> 400 ``AuthenticationFailed.MissingParameter``; an
  unknown or expired token -> 400 ``InvalidAuthentication`` ("不合法的access_token"); an unknown instance ->
  400 ``processInstanceNotExist``; throttled -> 403 ``Forbidden.AccessDenied.QpsLimitForAppkeyAndApi`` (the
  new API's code for the per-app QPS limit; ``throttle(status=429)`` answers 429 instead); errors carry
  ``{"requestid", "code", "message"}``. Times in answers look like ``2022-08-31T11:52Z`` (UTC, minutes).

Callbacks (``DingTalkCallbackSender``): ``POST <url>?msg_signature=&timestamp=&nonce=`` with body
``{"encrypt": ...}``; signature = hex SHA1 of token, timestamp (ms), nonce and encrypt sorted and joined;
encrypt = base64(AES-256-CBC(16 random bytes + 4-byte big-endian length + event JSON + corp id / app key,
PKCS#7-padded to a multiple of 32)) with key = base64(aes_key + "=") and IV = its first 16 bytes. Events use
the HTTP-push shape (``EventType``, ``EventTime``, ``CorpId``, ``BizId``, ``eventId`` + the fields at top
level); a redelivery repeats the event (same ``eventId``) freshly encrypted and signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["DingTalkApi", "DingTalkCallbackSender", "iso_minutes"]

THROTTLE_CODE = "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"


def iso_minutes(ms: int) -> str:
    """DingTalk's time format in API answers: ``2022-08-31T11:52Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _error(code: str, message: str) -> dict[str, str]:
    return {"requestid": uuid.uuid4().hex[:32].upper(), "code": code, "message": message}


def _components(form: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Form values as DingTalk's formComponentValues (tables as JSON text, numbers as text)."""
    out = []
    for i, (name, value) in enumerate(form.items()):
        if isinstance(value, list | dict):
            ctype, text = "TableField", json.dumps(value, ensure_ascii=False)
        elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            ctype, text = "NumberField", str(value)
        else:
            ctype, text = "TextField", str(value)
        cid = f"{ctype}-{hashlib.md5(f'{i}{name}'.encode()).hexdigest()[:8].upper()}"
        out.append({"id": cid, "name": name, "value": text, "componentType": ctype, "bizAlias": ""})
    return out


class DingTalkApi:
    """The fake API server; instances live in memory and tests set them (``add_instance``, ``finish`` ...)."""

    def __init__(self, app_key: str = "dingfakeappkey", app_secret: str = "fake-app-secret",
                 expire_in: int = 7200) -> None:  # fmt: skip
        self.app_key, self.app_secret, self.expire_in = app_key, app_secret, expire_in
        self.lock = threading.Lock()
        self.instances: dict[str, dict[str, Any]] = {}  # id -> state (see add_instance)
        self.raw: dict[str, dict[str, Any]] = {}  # id -> a verbatim answer (e.g. the documented sample)
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.token_requests = 0
        self.instance_requests: list[tuple[str, int]] = []  # (instance id, HTTP status answered)
        self._throttle: list[Any] = []  # [left, status, code]
        self._failures: list[Any] = []  # [left, status]
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> DingTalkApi:
        api = self

        class Handler(_Handler):
            owner = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="dingtalk-fake", daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "DingTalkApi is not started (use it as a context manager)"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- data the tests set --------------------------------------------------------------------------

    def add_instance(self, instance_id: str, *, process_code: str, originator: str = "manager1",
                     title: str | None = None, form: Mapping[str, Any] | None = None,
                     components: list[dict[str, Any]] | None = None, business_id: str | None = None,
                     create_ms: int | None = None, approvers: tuple[str, ...] = ("manager2",)) -> dict[str, Any]:  # fmt: skip
        """A RUNNING instance (as right after it was submitted); ``form`` maps component names to values."""
        now = create_ms if create_ms is not None else int(time.time() * 1000)
        state = {"id": instance_id, "process_code": process_code, "originator": originator,
                 "title": title or f"{originator}提交的审批", "status": "RUNNING", "result": "",
                 "components": components if components is not None else _components(form or {}),
                 "business_id": business_id or datetime.now(UTC).strftime("%Y%m%d%H%M%S") + f"{len(self.instances):06d}",
                 "create_ms": now, "finish_ms": None, "approvers": list(approvers),
                 "records": [{"userId": originator, "date": iso_minutes(now), "type": "START_PROCESS_INSTANCE",
                              "result": "NONE", "showName": "发起"}]}  # fmt: skip
        with self.lock:
            self.instances[instance_id] = state
        return state

    def put_raw(self, instance_id: str, result: Mapping[str, Any], success: Any = True) -> None:
        """Serve ``{"result": result, "success": success}`` verbatim (e.g. the documentation's sample)."""
        with self.lock:
            self.raw[instance_id] = {"result": dict(result), "success": success}

    def finish(self, instance_id: str, result: str = "agree", at_ms: int | None = None) -> dict[str, Any]:
        """The approvers decided: COMPLETED with ``agree`` / ``refuse``."""
        at = at_ms if at_ms is not None else int(time.time() * 1000)
        with self.lock:
            st = self.instances[instance_id]
            st.update(status="COMPLETED", result=result, finish_ms=at)
            st["records"].append({"userId": st["approvers"][0], "date": iso_minutes(at), "type": "EXECUTE_TASK_NORMAL",
                                  "result": result.upper(), "showName": "审批人"})  # fmt: skip
            return st

    def terminate(self, instance_id: str, at_ms: int | None = None) -> dict[str, Any]:
        """The originator revoked (撤销) the instance: TERMINATED, result kept as it was."""
        at = at_ms if at_ms is not None else int(time.time() * 1000)
        with self.lock:
            st = self.instances[instance_id]
            st.update(status="TERMINATED", finish_ms=at)
            st["records"].append({"userId": st["originator"], "date": iso_minutes(at),
                                  "type": "TERMINATE_PROCESS_INSTANCE", "result": "NONE", "showName": "撤销"})  # fmt: skip
            return st

    def remove(self, instance_id: str) -> None:
        with self.lock:
            self.instances.pop(instance_id, None)
            self.raw.pop(instance_id, None)

    # -- failure switches ----------------------------------------------------------------------------

    def throttle(self, n: int = 1, status: int = 403, code: str = THROTTLE_CODE) -> None:
        """The next ``n`` instance reads are refused by the QPS limit (403 + code, or e.g. 429)."""
        with self.lock:
            self._throttle.append([n, status, code])

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next ``n`` instance reads fail with ``status`` (``systemError``)."""
        with self.lock:
            self._failures.append([n, status])

    def expire_tokens(self) -> None:
        """Every access token handed out so far becomes invalid (as after its expireIn)."""
        with self.lock:
            self.tokens.clear()

    # -- behaviour (handler threads) ------------------------------------------------------------------

    def _token(self, body: Any) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.token_requests += 1
            if (
                not isinstance(body, dict)
                or body.get("appKey") != self.app_key
                or body.get("appSecret") != self.app_secret
            ):
                return 400, _error("invalidClientIdOrSecret", "无效的clientId或者clientSecret")
            token = secrets.token_hex(16)
            self.tokens[token] = time.monotonic() + self.expire_in
            return 200, {"accessToken": token, "expireIn": self.expire_in}

    def _instance(self, token: str | None, instance_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            status, body = self._answer(token, instance_id)
            self.instance_requests.append((instance_id, status))
            return status, body

    def _answer(self, token: str | None, instance_id: str) -> tuple[int, dict[str, Any]]:
        if not token:
            return 400, _error(
                "AuthenticationFailed.MissingParameter", "缺少参数：x-acs-dingtalk-access-token"
            )
        if self.tokens.get(token, 0.0) <= time.monotonic():
            return 400, _error("InvalidAuthentication", "不合法的access_token")
        for queue in (self._throttle, self._failures):
            if queue:
                queue[0][0] -= 1
                entry = queue.pop(0) if queue[0][0] <= 0 else queue[0]
                if queue is self._throttle:
                    return entry[1], _error(entry[2], "当前应用调用该接口的QPS超过限制")
                return entry[1], _error("systemError", "系统异常")
        if not instance_id:
            return 400, _error("invalidParameter", "获取单个审批实例详情参数错误")
        if instance_id in self.raw:
            return 200, self.raw[instance_id]
        st = self.instances.get(instance_id)
        if st is None:
            return 400, _error("processInstanceNotExist", "审批实例不存在")
        return 200, {"result": self._render(st), "success": True}

    @staticmethod
    def _render(st: dict[str, Any]) -> dict[str, Any]:
        done = st["status"] in ("COMPLETED", "TERMINATED")
        tasks = [{"taskId": 60000 + i, "userId": u, "status": "COMPLETED" if done else "RUNNING",
                  "result": st["result"].upper() if st["result"] else "NONE", "createTime": iso_minutes(st["create_ms"]),
                  "processInstanceId": st["id"], "activityId": f"act-{i}", "pcUrl": "https://aflow.dingtalk.com/",
                  "mobileUrl": "https://aflow.dingtalk.com/"} for i, u in enumerate(st["approvers"])]  # fmt: skip
        out = {"title": st["title"], "originatorUserId": st["originator"], "originatorDeptId": "-1",
               "originatorDeptName": "总部", "status": st["status"], "approverUserIds": list(st["approvers"]),
               "ccUserIds": [], "result": st["result"], "businessId": st["business_id"],
               "operationRecords": [dict(r) for r in st["records"]], "tasks": tasks, "bizAction": "NONE",
               "attachedProcessInstanceIds": [], "formComponentValues": [dict(c) for c in st["components"]],
               "createTime": iso_minutes(st["create_ms"])}  # fmt: skip
        if st["finish_ms"] is not None:
            out["finishTime"] = iso_minutes(st["finish_ms"])
        return out


class _Handler(BaseHTTPRequestHandler):
    owner: DingTalkApi
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if urlsplit(self.path).path != "/v1.0/oauth2/accessToken":
            return self._send(404, _error("unknownPath", "请求的URI地址不存在"))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        self._send(*self.owner._token(body))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/v1.0/workflow/processInstances":
            return self._send(404, _error("unknownPath", "请求的URI地址不存在"))
        instance_id = (parse_qs(parts.query).get("processInstanceId") or [""])[0]
        self._send(*self.owner._instance(self.headers.get("x-acs-dingtalk-access-token"), instance_id))

    def log_message(self, fmt: str, *args: Any) -> None:
        pass


class DingTalkCallbackSender:
    """Pushes event callbacks to ``url`` as DingTalk does, and checks the answers (encrypted "success").

    ``corp_id`` is the owner key DingTalk appends (the app key for developer-console subscriptions). With
    ``api``, the convenience methods read the instance from the fake and move it along (finish, terminate)."""

    def __init__(self, url: str, token: str, aes_key: str, corp_id: str, api: DingTalkApi | None = None,
                 timeout: float = 10.0, signature_param: str = "msg_signature") -> None:  # fmt: skip
        assert len(aes_key) == 43, "a DingTalk aes_key has 43 characters"
        self.url, self.token, self.corp_id, self.api = url, token, corp_id, api
        self.key = base64.b64decode(aes_key + "=")
        self.timeout, self.signature_param = timeout, signature_param
        self.last_event: dict[str, Any] | None = None
        self.last_request: tuple[dict[str, str], bytes] | None = None
        self._last_ms = 0

    # -- crypto as DingTalk does it ----------------------------------------------------------------

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return hashlib.sha1("".join(sorted([self.token, timestamp, nonce, encrypt])).encode()).hexdigest()

    def encrypt(self, plaintext: str, owner: str | None = None) -> str:
        msg = plaintext.encode()
        data = os.urandom(16) + struct.pack(">I", len(msg)) + msg + (owner or self.corp_id).encode()
        pad = 32 - len(data) % 32
        data += bytes([pad]) * pad
        enc = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        return base64.b64encode(enc.update(data) + enc.finalize()).decode()

    def decrypt(self, encrypt: str) -> tuple[str, str]:
        dec = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).decryptor()
        data = dec.update(base64.b64decode(encrypt)) + dec.finalize()
        data = data[: -data[-1]]
        (n,) = struct.unpack(">I", data[16:20])
        return data[20 : 20 + n].decode(), data[20 + n :].decode()

    def now_ms(self) -> int:
        """Wall clock in ms, strictly growing between calls (so start < finish < terminate)."""
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    # -- sending ------------------------------------------------------------------------------------

    def request_for(self, event: Mapping[str, Any] | str, *, timestamp: str | None = None, nonce: str | None = None,
                    owner: str | None = None) -> tuple[dict[str, str], bytes]:  # fmt: skip
        """Query and body of a callback carrying ``event`` (a dict, or the exact plaintext)."""
        plaintext = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
        ts = timestamp or str(int(time.time() * 1000))
        nonce = nonce or secrets.token_urlsafe(6)[:8]
        enc = self.encrypt(plaintext, owner)
        query = {self.signature_param: self.sign(ts, nonce, enc), "timestamp": ts, "nonce": nonce}
        return query, json.dumps({"encrypt": enc}).encode()

    def post(self, query: Mapping[str, str], body: bytes) -> httpx.Response:
        self.last_request = (dict(query), body)
        return httpx.post(self.url, params=dict(query), content=body, timeout=self.timeout,
                          headers={"Content-Type": "application/json"})  # fmt: skip

    def send(self, event: Mapping[str, Any] | str, **kw: Any) -> httpx.Response:
        """Push one event (freshly encrypted and signed)."""
        self.last_event = event if isinstance(event, str) else dict(event)  # type: ignore[assignment]
        return self.post(*self.request_for(event, **kw))

    def redeliver(self) -> httpx.Response:
        """DingTalk's retry of the last event: the same event (same eventId), new nonce, timestamp, cipher."""
        assert self.last_event is not None, "nothing sent yet"
        return self.post(*self.request_for(self.last_event))

    def replay(self) -> httpx.Response:
        """The identical last HTTP request again (same signature, timestamp, nonce and ciphertext)."""
        assert self.last_request is not None, "nothing sent yet"
        return self.post(*self.last_request)

    # -- the answer -------------------------------------------------------------------------------------

    def decrypt_reply(self, response: httpx.Response) -> str:
        """The plaintext of an answer ``{"msg_signature","timeStamp","nonce","encrypt"}``; ValueError if its
        signature or owner key is wrong (DingTalk would then treat the push as failed and retry)."""
        body = response.json()
        if set(body) != {"msg_signature", "timeStamp", "nonce", "encrypt"}:
            raise ValueError(f"answer has the fields {sorted(body)}")
        if self.sign(str(body["timeStamp"]), str(body["nonce"]), body["encrypt"]) != body["msg_signature"]:
            raise ValueError("answer msg_signature does not match")
        plaintext, owner = self.decrypt(body["encrypt"])
        if owner != self.corp_id:
            raise ValueError(f"answer encrypted for {owner!r}, not {self.corp_id!r}")
        return plaintext

    def reply_is_success(self, response: httpx.Response) -> bool:
        try:
            return response.status_code == 200 and self.decrypt_reply(response) == "success"
        except (ValueError, KeyError, TypeError):
            return False

    # -- DingTalk's events ----------------------------------------------------------------------------

    def check_url(self) -> httpx.Response:
        """The "验证回调URL有效性" event DingTalk sends when the callback URL is saved."""
        return self.send({"EventType": "check_url"})

    def instance_event(self, instance_id: str, process_code: str, kind: str, result: str | None = None,
                       **fields: Any) -> dict[str, Any]:  # fmt: skip
        """A ``bpms_instance_change`` event (HTTP push shape); the instance's data from ``api`` if it has it."""
        now = self.now_ms()
        st = self.api.instances.get(instance_id) if self.api is not None else None
        event: dict[str, Any] = {
            "EventType": "bpms_instance_change", "EventTime": now, "CorpId": self.corp_id,
            "BizId": str(now), "eventId": uuid.uuid4().hex, "processInstanceId": instance_id,
            "createTime": st["create_ms"] if st else now, "processCode": process_code, "bizCategoryId": "",
            "businessId": st["business_id"] if st else "", "type": kind,
            "title": st["title"] if st else "自测审批", "businessType": "",
            "url": f"https://aflow.dingtalk.com/dingtalk/mobile/homepage.htm?corpid={self.corp_id}&dd_share=false",
            "staffId": st["originator"] if st else "manager1",
        }  # fmt: skip
        if kind in ("finish", "terminate"):
            event["finishTime"] = now
        if result is not None:
            event["result"] = result
        event.update(fields)
        return event

    def _move(self, instance_id: str, action: str, *args: Any) -> None:
        if self.api is not None:
            if instance_id not in self.api.instances:
                raise KeyError(f"instance {instance_id} is not in the fake API: api.add_instance() it first")
            getattr(self.api, action)(instance_id, *args)

    def instance_started(self, instance_id: str, process_code: str, **fields: Any) -> httpx.Response:
        if self.api is not None and instance_id not in self.api.instances:
            raise KeyError(f"instance {instance_id} is not in the fake API: api.add_instance() it first")
        return self.send(self.instance_event(instance_id, process_code, "start", **fields))

    def instance_finished(self, instance_id: str, process_code: str, result: str = "agree",
                          **fields: Any) -> httpx.Response:  # fmt: skip
        event = self.instance_event(instance_id, process_code, "finish", result, **fields)
        self._move(instance_id, "finish", result, event["finishTime"])
        return self.send(event)

    def instance_terminated(self, instance_id: str, process_code: str, **fields: Any) -> httpx.Response:
        event = self.instance_event(instance_id, process_code, "terminate", **fields)
        self._move(instance_id, "terminate", event["finishTime"])
        return self.send(event)

    def task_finished(self, instance_id: str, process_code: str, result: str = "agree",
                      staff_id: str = "manager2") -> httpx.Response:  # fmt: skip
        """A ``bpms_task_change`` (one approver acted), HTTP push shape."""
        now = self.now_ms()
        return self.send({"EventType": "bpms_task_change", "EventTime": now, "CorpId": self.corp_id,
                          "BizId": str(now), "eventId": uuid.uuid4().hex, "result": result,
                          "processInstanceId": instance_id, "finishTime": now, "createTime": now - 1000,
                          "processCode": process_code, "bizCategoryId": "", "businessId": "", "remark": "同意",
                          "type": "finish", "title": "自测审批", "taskId": 811165, "staffId": staff_id})  # fmt: skip
