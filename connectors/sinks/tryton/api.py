"""A small client of Tryton's JSON-RPC (the protocol the Tryton desktop and web clients speak).

* ``POST <server>/<database>/rpc/`` with ``{"id", "method", "params"}``; the last parameter of every model
  call is the context (``company``, ``employee``, ``language`` ... from ``res.user.get_preferences``).
* ``common.db.login`` (user, ``{"password": ...}``, language) answers ``[user_id, session, bus_url]``;
  later calls carry ``Authorization: Session base64(login:user_id:session)``. Tryton answers HTTP 401 when
  the session expired (after ~5 minutes idle): the client logs in again once and repeats the call.
* Values that JSON lacks travel as ``{"__class__": "Decimal", "decimal": "12.50"}``, ``{"__class__":
  "date", "year", "month", "day"}``, ... in both directions: money stays ``Decimal`` end to end.

Errors map onto bizbus's taxonomy: connection failures, timeouts, 5xx and ``ConcurrencyException`` are
retryable; 429 is a ``BackOff``; a ``UserError`` / ``UserWarning`` answer is :class:`TrytonRejected`
(``Permanent``, reason ``erp_rejected``) carrying Tryton's own message; a refused login is ``Fatal``.
The password is held in memory only and never appears in messages.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import json
import logging
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bizbus.failures import BackOff, ConnectorError, Fatal, Permanent, Retryable, parse_retry_after

log = logging.getLogger(__name__)

MAX_MESSAGE = 500  # characters of a Tryton message kept in an error


class TrytonRejected(Permanent):
    """Tryton refused the call with a ``UserError`` or ``UserWarning``: its message, verbatim."""

    default_reason = "erp_rejected"

    def __init__(self, message: str, *, description: str = "", kind: str = "UserError") -> None:
        text = message if not description else f"{message} {description}"
        super().__init__(text[:MAX_MESSAGE])
        self.tryton_message = message
        self.description = description
        self.kind = kind


def rpc_endpoint(url: str) -> tuple[str, str]:
    """``(endpoint, database)`` of a Tryton URL ``http(s)://host[:port]/DATABASE/`` (``rpc/`` optional)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the Tryton url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("the Tryton url must not contain credentials; name an environment variable instead")
    segments = [s for s in parts.path.split("/") if s]
    if segments and segments[-1] == "rpc":
        segments.pop()
    if len(segments) != 1:
        raise ValueError(
            "the Tryton url must name the database as its only path segment, e.g. http://erp:8000/bizbus/"
        )
    endpoint = urlunsplit((parts.scheme, parts.netloc, f"/{segments[0]}/rpc/", "", ""))
    return endpoint, segments[0]


# -- JSON with Tryton's type markers ----------------------------------------------------------------------


def encode(value: Any) -> Any:
    """A Python value as Tryton JSON (Decimal, date, datetime, time, bytes carry ``__class__`` markers)."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": format(value, "f")}
    if isinstance(value, dt.datetime):
        return {"__class__": "datetime", "year": value.year, "month": value.month, "day": value.day,
                "hour": value.hour, "minute": value.minute, "second": value.second,
                "microsecond": value.microsecond}  # fmt: skip
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dt.time):
        return {"__class__": "time", "hour": value.hour, "minute": value.minute, "second": value.second,
                "microsecond": value.microsecond}  # fmt: skip
    if isinstance(value, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    return value


def decode_object(obj: dict[str, Any]) -> Any:
    """``json.loads`` object hook: Tryton's ``__class__`` markers back to Python values."""
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "datetime":
        return dt.datetime(obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"], obj["second"],
                           obj.get("microsecond", 0))  # fmt: skip
    if kind == "time":
        return dt.time(obj["hour"], obj["minute"], obj["second"], obj.get("microsecond", 0))
    if kind == "timedelta":
        return dt.timedelta(seconds=obj["seconds"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


def error_of(error: Any) -> ConnectorError:
    """The bizbus error for the ``error`` member of a Tryton JSON-RPC answer."""
    if isinstance(error, list | tuple) and len(error) == 2 and isinstance(error[0], str):
        kind, args = error
        if kind == "UserError" and isinstance(args, list | tuple) and args:
            return TrytonRejected(str(args[0]), description=str(args[1] or "") if len(args) > 1 else "")
        if kind == "UserWarning" and isinstance(args, list | tuple) and len(args) > 1:
            desc = str(args[2] or "") if len(args) > 2 else ""
            return TrytonRejected(str(args[1]), description=desc, kind="UserWarning")
        if kind == "ConcurrencyException":
            return Retryable(
                f"Tryton: concurrent modification: {str(args)[:MAX_MESSAGE]}", reason="erp_conflict"
            )
        if kind == "LoginException":
            return Fatal("Tryton asks for more login parameters (e.g. a second factor); not supported",
                         reason="auth")  # fmt: skip
        # an unexpected server exception: [str(exception), traceback]; the traceback stays in Tryton's log
        return Retryable(f"Tryton server error: {kind[:MAX_MESSAGE]}", reason="erp_error")
    return Retryable(f"Tryton answered an unreadable error: {str(error)[:200]}", reason="erp_error")


class TrytonRpc:
    """A logged-in JSON-RPC session to one Tryton database; ``call`` re-logs in when the session expired."""

    def __init__(self, url: str, user: str, password: str, *, timeout: float = 30, language: str = "en",
                 company: str | None = None) -> None:  # fmt: skip
        self.endpoint, self.database = rpc_endpoint(url)
        self.user = user
        self._password = password
        self.language = language
        self.company_name = company
        self.timeout = timeout
        self.context: dict[str, Any] = {}
        self.user_id: int | None = None
        self.logins = 0  # sessions opened so far (a renewal after expiry counts)
        self._auth: str | None = None
        self._ids = itertools.count(1)
        self._client = httpx.Client(timeout=timeout, headers={"Content-Type": "application/json"})

    def close(self) -> None:
        self._client.close()

    # -- transport --------------------------------------------------------------------------------------

    def _post(self, method: str, params: list[Any], auth: bool) -> httpx.Response:
        body = json.dumps({"id": next(self._ids), "method": method, "params": encode(params)})
        headers = {"Authorization": self._auth} if auth and self._auth else {}
        try:
            return self._client.post(self.endpoint, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise Retryable(f"Tryton at {self.endpoint} did not answer {method} within {self.timeout} s",
                            reason="timeout") from exc  # fmt: skip
        except httpx.TransportError as exc:
            raise Retryable(f"Tryton at {self.endpoint} is unreachable: {type(exc).__name__}: {exc}",
                            reason="connection") from exc  # fmt: skip

    def _result(self, method: str, resp: httpx.Response) -> Any:
        status = resp.status_code
        if status == 429:
            raise BackOff(f"Tryton throttles {method} (HTTP 429)",
                          retry_after=parse_retry_after(resp.headers.get("Retry-After")), reason="http_429")  # fmt: skip
        if status >= 500 or status == 408:
            raise Retryable(f"Tryton answered HTTP {status} to {method}", reason="http_5xx")
        if status == 403:
            raise Fatal(f"Tryton forbids {method} (HTTP 403) for user {self.user!r}", reason="forbidden")
        if status == 404:
            raise Fatal(f"Tryton has no database {self.database!r} at {self.endpoint} (HTTP 404)",
                        reason="config")  # fmt: skip
        if status >= 400:
            text = resp.text.strip()[:200]
            raise Permanent(f"Tryton answered HTTP {status} to {method}: {text}", reason="http_4xx")
        try:
            doc = json.loads(resp.content, object_hook=decode_object)
        except ValueError as exc:
            raise Retryable(f"Tryton answered {method} with invalid JSON", reason="erp_error") from exc
        if isinstance(doc, dict) and doc.get("error") is not None:
            raise error_of(doc["error"])
        return doc.get("result") if isinstance(doc, dict) else doc

    # -- session ------------------------------------------------------------------------------------------

    def login(self) -> None:
        """Open a session and load the user's context (company, employee, language); Fatal if refused."""
        params = [self.user, {"password": self._password}, self.language]
        resp = self._post("common.db.login", params, auth=False)
        if resp.status_code in (401, 403):
            raise Fatal(f"Tryton refused the login of user {self.user!r} on database {self.database!r} "
                        f"(HTTP {resp.status_code}): check the user and the password variable", reason="auth")  # fmt: skip
        result = self._result("common.db.login", resp)
        try:
            user_id, session = int(result[0]), str(result[1])
        except (TypeError, ValueError, IndexError) as exc:
            raise Retryable(
                "Tryton answered the login with an unexpected result", reason="erp_error"
            ) from exc
        self.user_id = user_id
        self.logins += 1
        token = base64.b64encode(f"{self.user}:{user_id}:{session}".encode()).decode("ascii")
        self._auth = f"Session {token}"
        prefs = self._call_once("model.res.user.get_preferences", [True, {}])
        context = {k: v for k, v in (prefs or {}).items() if k in ("company", "companies", "employee",
                   "employees", "language", "company_work_time", "date_format")}  # fmt: skip
        if self.company_name is not None:
            found = self._call_once("model.company.company.search",
                                    [[("party.name", "=", self.company_name)], 0, 2, None, context])  # fmt: skip
            if len(found) != 1:
                raise Fatal(f"Tryton has {len(found)} companies named {self.company_name!r} visible to user "
                            f"{self.user!r}", reason="config")  # fmt: skip
            context["company"] = found[0]
            context["companies"] = [found[0]]
        self.context = context
        log.info(
            "tryton: logged in to %s as %s (company %s)", self.database, self.user, context.get("company")
        )

    def _call_once(self, method: str, params: list[Any]) -> Any:
        resp = self._post(method, params, auth=True)
        if resp.status_code == 401:
            raise _SessionExpired()
        return self._result(method, resp)

    def call(self, model: str, method: str, *args: Any, context: dict[str, Any] | None = None) -> Any:
        """``<model>.<method>(*args, context)``, e.g. ``call("model.account.move", "search", [...])``."""
        if self._auth is None:
            self.login()
        name = f"{model}.{method}"
        params = [*args, {**self.context, **(context or {})}]
        try:
            return self._call_once(name, params)
        except _SessionExpired:
            log.info("tryton: session expired, logging in again")
            self.login()
            try:
                return self._call_once(name, [*args, {**self.context, **(context or {})}])
            except _SessionExpired:
                raise Fatal(
                    f"Tryton refused {name} right after a fresh login (HTTP 401)", reason="auth"
                ) from None

    def logout(self) -> None:
        """End the session on the server (the next ``call`` logs in again)."""
        if self._auth is not None:
            with contextlib.suppress(ConnectorError, _SessionExpired):
                self._call_once("common.db.logout", [])


class _SessionExpired(Exception):
    """HTTP 401 on a call with a session: log in again."""
