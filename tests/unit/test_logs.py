"""bizbus.logs: JSON and text lines, record ids (extra= and bound()), and what the redaction filter masks
(secrets, pay data, credentials) and what it leaves alone."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bizbus import logs
from bizbus.errors import ConfigError
from bizbus.settings import load_settings

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Capture:
    """A private logger writing through a bizbus handler into a buffer."""

    def __init__(self, fmt: str) -> None:
        self.buf = io.StringIO()
        self.handler = logs.make_handler(fmt, self.buf)
        self.log = logging.getLogger(f"test.logs.{uuid.uuid4().hex[:8]}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        self.log.addHandler(self.handler)

    def text(self) -> str:
        return self.buf.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buf.getvalue().splitlines()]

    def close(self) -> None:
        self.log.removeHandler(self.handler)


@pytest.fixture
def cap() -> Iterator[Capture]:
    c = Capture("json")
    yield c
    c.close()


@pytest.fixture
def text_cap() -> Iterator[Capture]:
    c = Capture("text")
    yield c
    c.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure(): root handlers and level, exception hooks, warnings capture."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook, logs._handler)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    sys.excepthook, threading.excepthook, logs._handler = saved[2], saved[3], saved[4]
    logging.captureWarnings(False)


def _secret() -> str:
    return f"sek-{uuid.uuid4().hex}"


# -- format --------------------------------------------------------------------------------------------


def test_json_lines_carry_the_standard_keys(cap: Capture) -> None:
    cap.log.info("sent %d record(s) to %s", 3, "bizbus.pm.timesheet.v1")
    cap.log.warning("two\nlines and 中文")
    first, second = cap.lines()  # one JSON object per line, even for a message with a newline
    assert RFC3339_MS_UTC.match(first["ts"]), first["ts"]
    assert first["level"] == "INFO" and first["logger"] == cap.log.name
    assert first["message"] == "sent 3 record(s) to bizbus.pm.timesheet.v1"
    assert not {"event_id", "correlation_id", "component", "exc_info"} & set(first)
    assert second["level"] == "WARNING" and second["message"] == "two\nlines and 中文"
    assert "中文" in cap.text()  # not \u-escaped: readable with grep


def test_record_fields_from_meta_headers_and_component() -> None:
    meta = {"event_id": "ev-1", "correlation_id": "P-7", "source_system": "jira"}
    assert logs.record_fields(meta, component="f2") == {
        "event_id": "ev-1",
        "correlation_id": "P-7",
        "component": "f2",
    }
    headers = [("event_id", b"ev-2"), ("correlation_id", b"\xe9\xa1\xb9\xe7\x9b\xae-1"), ("other", b"x")]
    assert logs.record_fields(headers=headers) == {"event_id": "ev-2", "correlation_id": "项目-1"}
    assert logs.record_fields(meta, headers=headers)["event_id"] == "ev-1"  # meta wins
    assert logs.record_fields(None) == {}
    assert logs.record_fields({"event_id": "e", "correlation_id": None}) == {"event_id": "e"}


def test_extra_fields_and_record_ids_appear(cap: Capture) -> None:
    meta = {"event_id": "ev-9", "correlation_id": "P-1"}
    marker = object()
    cap.log.warning(
        "refused",
        extra={**logs.record_fields(meta, component="hr-push"), "attempt": 3, "day": date(2026, 1, 2),
               "ok": True, "obj": marker, "tags": ["a", "b"]},
    )  # fmt: skip
    (line,) = cap.lines()
    assert (line["event_id"], line["correlation_id"], line["component"]) == ("ev-9", "P-1", "hr-push")
    assert line["attempt"] == 3 and line["ok"] is True and line["tags"] == ["a", "b"]
    assert line["day"] == "2026-01-02" and line["obj"] == str(marker)  # not JSON: str()


def test_exception_is_formatted_and_masked(cap: Capture) -> None:
    secret = _secret()
    logs.register_secret(secret)
    try:
        raise ValueError(f"login to erp failed with {secret} for user bizbus")
    except ValueError:
        cap.log.exception("write failed")
    (line,) = cap.lines()
    assert line["level"] == "ERROR" and line["message"] == "write failed"
    assert (
        "Traceback" in line["exc_info"]
        and "ValueError: login to erp failed with *** for user bizbus" in line["exc_info"]
    )
    assert secret not in cap.text()


def test_text_format_appends_ids_and_traceback(text_cap: Capture) -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        text_cap.log.error("flow failed", exc_info=True, extra={"event_id": "ev-3", "correlation_id": "P-2"})
    text_cap.log.info("plain")
    out = text_cap.text().splitlines()
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR test\.logs\.\w+: flow failed "
                    r"event_id=ev-3 correlation_id=P-2$", out[0]), out[0]  # fmt: skip
    assert out[1] == "Traceback (most recent call last):" and "ZeroDivisionError" in "\n".join(out)
    assert out[-1].endswith("INFO " + text_cap.log.name + ": plain")


# -- bound() -----------------------------------------------------------------------------------------


def test_bound_fields_in_a_thread_only_there_and_only_inside(cap: Capture) -> None:
    inside, logged = threading.Event(), threading.Event()

    def work() -> None:
        with logs.bound(event_id="ev-thread", component="sink-a"):
            cap.log.info("in thread")
            inside.set()
            logged.wait(5)
        cap.log.info("thread after")

    t = threading.Thread(target=work)
    t.start()
    assert inside.wait(5)
    cap.log.info("main meanwhile")  # the thread's binding is not the main thread's
    logged.set()
    t.join(5)
    by_msg = {line["message"]: line for line in cap.lines()}
    assert by_msg["in thread"]["event_id"] == "ev-thread" and by_msg["in thread"]["component"] == "sink-a"
    assert "event_id" not in by_msg["main meanwhile"] and "event_id" not in by_msg["thread after"]


def test_bound_fields_per_asyncio_task_nest_and_vanish(cap: Capture) -> None:
    async def handle(event_id: str) -> None:
        with logs.bound(event_id=event_id, correlation_id=f"doc-{event_id}"):
            await asyncio.sleep(0)  # the other task runs in between
            cap.log.info("handling %s", event_id)
            with logs.bound(component="labor-cost"):
                await asyncio.sleep(0)
                cap.log.info("inner %s", event_id)
            cap.log.info("outer again %s", event_id)
        cap.log.info("done %s", event_id)

    async def main() -> None:
        with logs.bound(component="flows"):
            child = asyncio.create_task(asyncio.sleep(0, result=None))  # created inside: inherits
            cap.log.info("parent")
            await child
        await asyncio.gather(handle("a"), handle("b"))

    asyncio.run(main())
    by_msg = {line["message"]: line for line in cap.lines()}
    assert by_msg["parent"]["component"] == "flows"
    for ev in ("a", "b"):
        assert (
            by_msg[f"handling {ev}"]["event_id"] == ev
            and by_msg[f"handling {ev}"]["correlation_id"] == f"doc-{ev}"
        )
        assert by_msg[f"inner {ev}"]["event_id"] == ev and by_msg[f"inner {ev}"]["component"] == "labor-cost"
        assert (
            by_msg[f"outer again {ev}"]["event_id"] == ev and "component" not in by_msg[f"outer again {ev}"]
        )
        assert not {"event_id", "correlation_id", "component"} & set(by_msg[f"done {ev}"])


def test_extra_wins_over_bound_and_reserved_names_are_refused(cap: Capture) -> None:
    with logs.bound(event_id="ev-bound"):
        cap.log.info("x", extra={"event_id": "ev-extra"})
    assert cap.lines()[0]["event_id"] == "ev-extra"
    with pytest.raises(ValueError, match="message"), logs.bound(message="nope"):
        pass


# -- redaction ---------------------------------------------------------------------------------------


def test_environment_secrets_and_secret_files_are_masked(cap: Capture, monkeypatch, tmp_path: Path) -> None:
    token, password, from_file, in_dotenv = _secret(), _secret(), _secret(), _secret()
    monkeypatch.setenv("ERP_API_TOKEN", token)
    monkeypatch.setenv("TRYTON_PASSWORD", password)
    (tmp_path / "kafka-password").write_text(from_file + "\n")
    monkeypatch.setenv("BIZBUS_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "kafka-password"))
    monkeypatch.setenv("ERP_TOKEN_ENV", "ERP_API_TOKEN")  # names a variable: not a secret itself
    (tmp_path / ".env").write_text(f"# local\nexport BIZBUS_KAFKA_SASL_PASSWORD='{in_dotenv}'\n")
    logs.register_environment_secrets(dotenv=tmp_path / ".env")
    cap.log.warning(
        "calls with %s / %s / %s / %s to host erp-1 failed", token, password, from_file, in_dotenv
    )
    cap.log.warning("token from ERP_API_TOKEN")
    first, second = cap.lines()
    assert first["message"] == "calls with *** / *** / *** / *** to host erp-1 failed"
    assert second["message"] == "token from ERP_API_TOKEN"


def test_registered_secret_masked_in_message_args_extra_and_nested(cap: Capture) -> None:
    secret = _secret()
    logs.register_secret(secret)
    cap.log.info(
        f"literal {secret}, arg %s", secret, extra={"detail": f"x{secret}x", "nested": {"k": [secret, "ok"]}}
    )
    (line,) = cap.lines()
    assert line["message"] == "literal ***, arg ***"
    assert line["detail"] == "x***x" and line["nested"] == {"k": ["***", "ok"]}
    assert secret not in cap.text()


def test_salary_values_masked_in_json_repr_and_key_value_text(cap: Capture) -> None:
    cap.log.info('target said: {"employee": "E0042", "hourly_cost_rate": "613.47", "hours": "8.00"}')
    cap.log.info("state %r", {"code": "E0042", "rates": [{"rate": Decimal("613.47"), "currency": "CNY"}]})
    cap.log.info("row %r", {"employee": "E0042", "rate": Decimal("613.47"), "valid_from": date(2026, 1, 1)})
    cap.log.info("employee=E0042 salary=28000.00 bonus = 5000 hours=8.00 工资=9000 时薪：88.5")
    cap.log.info("Labor E0042 2026-01-01: 8.00 h x 613.47 CNY/h on P-7")
    cap.log.info("payload", extra={"body": {"employee": "E0042", "hourlyCostRate": Decimal("613.47")},
                                   "base_pay": 1, "project": "P-7"})  # fmt: skip
    lines = cap.lines()
    for value in ("613.47", "28000", "5000", "9000", "88.5"):
        assert value not in cap.text(), value
    assert (
        lines[0]["message"]
        == 'target said: {"employee": "E0042", "hourly_cost_rate": "***", "hours": "8.00"}'
    )
    assert lines[1]["message"] == "state {'code': 'E0042', 'rates': ***}"
    assert (
        lines[2]["message"]
        == "row {'employee': 'E0042', 'rate': ***, 'valid_from': datetime.date(2026, 1, 1)}"
    )
    assert lines[3]["message"] == "employee=E0042 salary=*** bonus = *** hours=8.00 工资=*** 时薪：***"
    assert lines[4]["message"] == "Labor E0042 2026-01-01: 8.00 h x *** CNY/h on P-7"
    assert lines[5]["body"] == {"employee": "E0042", "hourlyCostRate": "***"}
    assert lines[5]["base_pay"] == "***" and lines[5]["project"] == "P-7"


def test_a_salary_key_quoted_inside_another_value_is_masked(cap: Capture) -> None:
    cap.log.info("%s", {"message": "refused: {'rate': Decimal('613.47')} is above the band", "status": 422})
    assert "613.47" not in cap.text() and "is above the band" in cap.text()


def test_credentials_in_headers_urls_and_dsns_are_masked(cap: Capture) -> None:
    cap.log.info("Authorization: Bearer abc.def-123456")
    cap.log.info(
        "request headers %r", {"Authorization": "Basic dXNlcjpwYXNzd29yZA==", "Accept": "application/json"}
    )
    cap.log.info("raw %r", [(b"x-hub-signature", b"sha256=0123456789abcdef"), (b"content-type", b"json")])
    cap.log.info("Cookie: session=s3ss10n-value; theme=dark")
    cap.log.info("X-Lark-Signature: 9f8e7d6c5b4a and X-Request-Id: r-1")
    cap.log.info("state db postgresql://bizbus:pg-pass-77@db.internal:5432/ledger unreachable")
    cap.log.info("dsn host=db.internal port=5432 user=bizbus password=pg-pass-77 dbname=ledger")
    cap.log.info("GET https://oapi.dingtalk.com/topapi/processinstance/get?access_token=dt-tok-9981&x=1")
    text = cap.text()
    for leaked in (
        "abc.def-123456",
        "dXNlcjpwYXNzd29yZA",
        "0123456789abcdef",
        "s3ss10n",
        "pg-pass-77",
        "dt-tok-9981",
    ):
        assert leaked not in text, leaked
    msgs = [line["message"] for line in cap.lines()]
    assert msgs[0] == "Authorization: Bearer ***"
    assert msgs[1] == "request headers {'Authorization': 'Basic ***', 'Accept': 'application/json'}"
    assert msgs[2] == "raw [(b'x-hub-signature', b'***'), (b'content-type', b'json')]"
    assert msgs[3] == "Cookie: ***"
    assert msgs.pop(4) == "X-Lark-Signature: ***"  # to the end of the line: the header's value is all of it
    assert msgs[4] == "state db postgresql://bizbus:***@db.internal:5432/ledger unreachable"
    assert msgs[5] == "dsn host=db.internal port=5432 user=bizbus password=*** dbname=ledger"
    assert msgs[6] == "GET https://oapi.dingtalk.com/topapi/processinstance/get?access_token=***&x=1"


def test_no_over_redaction_of_short_values_and_ordinary_words(cap: Capture, monkeypatch) -> None:
    monkeypatch.setenv("SHORT_PASSWORD", "abc")
    monkeypatch.setenv("ALSO_SECRET", "12345")
    logs.register_environment_secrets(dotenv=Path("/nonexistent/.env"))
    logs.register_secret("abc")
    message = ("abc abcdef 12345: the rate limiter and the basic setup generate 3 records/h at "
               "http://127.0.0.1:8080/api; token_env=ERP_API_TOKEN; rate:E0042:2026-01-01 missing")  # fmt: skip
    cap.log.info(message)
    assert cap.lines()[0]["message"] == message


def test_unformattable_arguments_do_not_raise(cap: Capture) -> None:
    cap.log.info("two %s %s", "only-one")
    (line,) = cap.lines()
    assert line["message"].startswith("two %s %s (log arguments do not fit the format: TypeError)")


def test_sensitive_key_names() -> None:
    for key in (
        "rate",
        "hourly_cost_rate",
        "hourlyCostRate",
        "salary",
        "base_pay",
        "bonus",
        "工资",
        "月薪资",
        "password",
        "sasl.password",
        "X-Hub-Signature-256",
        "access_token",
        "api_key",
        "Authorization",
    ):
        assert logs.sensitive_key(key), key
    for key in ("token_env", "password_env", "hours", "employee", "generate", "accurate", "key", "event_id"):
        assert not logs.sensitive_key(key), key


# -- configure / settings / Faust --------------------------------------------------------------------


def test_configure_installs_one_handler_and_routes_warnings_and_thread_crashes(
    restore_logging, monkeypatch
) -> None:
    token = _secret()
    monkeypatch.setenv("SOME_API_TOKEN", token)
    first = logs.configure("info", "json", stream=io.StringIO())
    buf = io.StringIO()
    handler = logs.configure("DEBUG", "auto", stream=buf)  # StringIO is no terminal: json
    root = logging.getLogger()
    assert handler in root.handlers and first not in root.handlers and root.level == logging.DEBUG
    logging.getLogger("bizbus.test").info("with %s", token)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old option", DeprecationWarning, stacklevel=1)

    def crash() -> None:
        raise RuntimeError(f"lost {token}")

    t = threading.Thread(target=crash, name="crasher")
    t.start()
    t.join(5)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[0]["message"] == "with ***"
    assert lines[1]["logger"] == "py.warnings" and "old option" in lines[1]["message"]
    crash_line = lines[2]
    assert crash_line["level"] == "CRITICAL" and crash_line["logger"] == "bizbus.uncaught"
    assert "crasher" in crash_line["message"] and "RuntimeError: lost ***" in crash_line["exc_info"]
    assert token not in buf.getvalue()
    with pytest.raises(ValueError, match="auto, json, text"):
        logs.configure("INFO", "yaml", stream=io.StringIO())


def test_log_format_setting(monkeypatch) -> None:
    monkeypatch.setenv("BIZBUS_LOG_FORMAT", "json")
    assert load_settings().log_format == "json"
    monkeypatch.setenv("BIZBUS_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        load_settings()
    monkeypatch.delenv("BIZBUS_LOG_FORMAT")
    assert load_settings().log_format == "auto"


FAUST_SCRIPT = """
import io, json, logging, sys
from bizbus import logs
buf = io.StringIO()
logs.configure("INFO", "json", stream=buf)
import faust
app = faust.App("logs-test", broker="kafka://127.0.0.1:1", loghandlers=logs.faust_loghandlers())
worker = faust.Worker(app, loglevel="info", redirect_stdouts=False, quiet=True,
                      logging_config=logs.faust_logging_config("INFO"))
worker._setup_logging()   # what the worker does first when it starts
logging.getLogger("faust.test").info("agent got rate=613.47")
print(json.dumps({"handlers": [type(h).__name__ for h in logging.getLogger().handlers],
                  "ours": logging.getLogger().handlers == logs.faust_loghandlers(), "out": buf.getvalue()}))
"""


def test_faust_worker_keeps_only_the_bizbus_handler() -> None:
    proc = subprocess.run([sys.executable, "-c", FAUST_SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["ours"] is True and result["handlers"] == ["StreamHandler"]
    (line,) = [json.loads(x) for x in result["out"].splitlines() if "faust.test" in x]
    assert line["message"] == "agent got rate=***"
    assert proc.stderr == ""  # Faust's own colour handler was not installed


def test_faust_loghandlers_before_configure_leave_the_root_alone(restore_logging, monkeypatch) -> None:
    logs._handler = None
    monkeypatch.setenv("BIZBUS_LOG_FORMAT", "text")
    before = logging.getLogger().handlers[:]
    (handler,) = logs.faust_loghandlers()
    assert isinstance(handler.formatter, logs.TextFormatter)
    assert any(isinstance(f, logs.Redactor) for f in handler.filters)
    assert logging.getLogger().handlers == before
    assert logs.faust_logging_config(logging.WARNING)["root"] == {"level": "WARNING", "handlers": []}


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as tty:
            assert isinstance(logs.make_handler("auto", tty).formatter, logs.TextFormatter)
    finally:
        os.close(leader)
        os.close(follower)
    assert isinstance(logs.make_handler("auto", io.StringIO()).formatter, logs.JsonFormatter)
