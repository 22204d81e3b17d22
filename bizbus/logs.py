"""Process logging: one stderr handler, JSON lines or text, record ids on every line, nothing secret in it.

``configure(level, fmt)`` installs the handler on the root logger (``bizbus`` commands call it through the
CLI; ``BIZBUS_LOG_FORMAT`` = json | text | auto picks the format, auto = JSON unless stderr is a terminal).
A JSON line carries ``ts`` (RFC 3339, UTC, ms), ``level``, ``logger``, ``message``, the record's
``event_id`` / ``correlation_id`` / ``component`` when known, any ``extra=`` fields and ``exc_info``.

Record ids come from ``extra=record_fields(meta)`` on one call, or from ``with bound(event_id=...):`` for
everything logged inside (a context variable: per thread, per asyncio task).

The handler's ``Redactor`` filter sees every record of every logger (bizbus, Faust, confluent-kafka, httpx)
before it is written, and replaces with ``***``:

* secret values: registered ones (``register_secret``), the values of environment variables named like
  ``*PASSWORD*``, ``*SECRET*``, ``*TOKEN*``, ``*API_KEY*`` ... and the contents of the files their
  ``*_FILE`` variants name (read at ``configure``);
* pay data: the value of any key named like salary, wage, rate, bonus, allowance, 工资, 薪资, 时薪 ... in
  JSON (``"rate": "88.50"``), Python reprs (``'rate': Decimal('88.50')``) and ``key=value`` text, in
  ``extra`` dicts too, and hourly amounts written as ``88.50 CNY/h``;
* credentials in text: ``Authorization`` / ``Cookie`` / ``X-Hub-Signature`` header values, ``password=``
  and ``token=``-like pairs, and the password of ``scheme://user:password@host`` URLs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, TextIO
from urllib.parse import quote

__all__ = [
    "FORMATS",
    "JsonFormatter",
    "Redactor",
    "TextFormatter",
    "bound",
    "configure",
    "faust_logging_config",
    "faust_loghandlers",
    "make_handler",
    "record_fields",
    "redact",
    "register_secret",
]

FORMATS = ("auto", "json", "text")
MASK = "***"
MIN_SECRET_LENGTH = 6  # shorter values would mask ordinary words and numbers all over the log
MAX_SECRET_FILE = 64 * 1024
ID_FIELDS = ("event_id", "correlation_id", "component")

# -- record context ------------------------------------------------------------------------------------

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_BOUND: ContextVar[Mapping[str, Any]] = ContextVar("bizbus_log_fields", default=MappingProxyType({}))


def record_fields(
    meta: Mapping[str, Any] | None = None,
    *,
    headers: Iterable[tuple[str, bytes | str | None]] | None = None,
    component: str | None = None,
) -> dict[str, Any]:
    """``event_id`` / ``correlation_id`` / ``component`` of one record, for ``log.warning(..., extra=...)``.

    Taken from the event's ``meta`` dict, else from its Kafka headers; keys without a value are left out.
    """
    out: dict[str, Any] = {}
    for key in ("event_id", "correlation_id"):
        value = (meta or {}).get(key)
        if value is not None:
            out[key] = str(value)
    for key, raw in headers or ():
        if key in ("event_id", "correlation_id") and key not in out and raw is not None:
            out[key] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if component is not None:
        out["component"] = component
    return out


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Every line logged inside the block (in this thread / asyncio task) carries ``fields``."""
    clash = sorted(set(fields) & _RESERVED)
    if clash:
        raise ValueError(f"cannot bind {', '.join(clash)}: the name of a standard log record attribute")
    merged = {**_BOUND.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _BOUND.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _BOUND.reset(token)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra`` fields (bound fields under them), without the standard attributes."""
    out = dict(_BOUND.get())
    out.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")})
    return out


# -- redaction -----------------------------------------------------------------------------------------

_SALARY_KEY = re.compile(
    r"(?:^|_)(?:salary|salaries|wages?|rates?|bonus(?:es)?|allowances?|(?:base|net|gross)_?pay|pay_?rates?)(?:_|$)"
    r"|工资|薪资|薪酬|薪水|时薪|奖金|津贴"
)
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:password|passwd|pwd|secret|token|api_?key|access_?key|secret_?key|private_?key|aes_?key"
    r"|encrypt_?key|credentials?|signature|authorization|cookie|user_?info)(?:_\d+)?$"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[^0-9a-z\u4e00-\u9fff]+")


@lru_cache(maxsize=2048)
def sensitive_key(key: str) -> bool:
    """Whether the value of a field named ``key`` is pay data or a credential (``hourlyCostRate``: yes)."""
    norm = _NON_WORD.sub("_", _CAMEL.sub("_", key).lower()).strip("_")
    return bool(_SALARY_KEY.search(norm) or _SECRET_KEY.search(norm))


# cheap first look: none of these fragments in the text -> no key-based pattern can match
_HINT = re.compile(
    r"(?i)salar|wage|rate|pay|bonus|allowance|passw|pwd|secret|token|key|auth|cookie|signature|credential"
    r"|user_?info|://|bearer|/\s*h|工资|薪|奖金|津贴|时"
)
_CALL = r"[A-Za-z_][\w.]*\([^()\r\n]*\)"  # Decimal('88.50'), date(2026, 1, 1)
# key-based patterns: the value sits in a lookahead, so a key that is not sensitive only consumes itself
# and the scan goes on inside its value (a message string may quote a "rate": ... of its own)
_QUOTED_KEY = re.compile(
    r"""(?P<q>["'])(?P<key>[^"'\\\r\n]{1,64})(?P=q)\s*[:：]\s*"""
    r"""(?=(?P<val>"(?:[^"\\\r\n]|\\.)*"|'(?:[^'\\\r\n]|\\.)*'|""" + _CALL + r"""|\{[^{}]*\}|\[[^\[\]]*\]"""
    r"""|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[A-Za-z_]\w*))"""
)
_KEY_VALUE = re.compile(
    r"""(?<![\w.\-])(?P<key>[^\W\d][\w.\-]{0,63})\s*=(?!=)\s*"""
    r"""(?=(?P<val>(?:Bearer|bearer|Basic|basic|Token|token|Digest|digest)\s+[^\s,;&'")\]}]+"""
    r"""|"(?:[^"\\\r\n]|\\.)*"|'(?:[^'\\\r\n]|\\.)*'|""" + _CALL + r"""|[^\s,;&'")\]}]+))"""
)
_NUMBER_AFTER_KEY = re.compile(  # rate: 88.50 / 时薪：88.5 (YAML-ish, numbers only)
    r"""(?<![\w"'])(?P<key>[^\W\d][\w.\-]{0,63})\s*[:：]\s*(?=(?P<val>"""
    + _CALL
    + r"""|-?\d+(?:[.,]\d+)*))"""
)
# Authorization, Cookie and X-...-Signature / -Token / -Api-Key / -Secret headers (X-Hub-Signature-256,
# X-Lark-Signature, X-Redmine-API-Key, X-Auth-Token ...)
_HEADERS = r"authorization|proxy-authorization|cookie|set-cookie|x-[\w-]*?(?:signature|token|api-key|secret)(?:-256)?"
_HEADER_LINE = re.compile(r"""(?i)(?<![\w\-"'])(?:""" + _HEADERS + r""")\s*:\s*(?P<val>[^\r\n'"]+)""")
_HEADER_TUPLE = re.compile(  # ('authorization', 'Bearer x') / (b'cookie', b'a=b')
    r"""(?i)(?P<q>["'])(?:""" + _HEADERS + r""")(?P=q)\s*,\s*b?(?P<val>"[^"\r\n]*"|'[^'\r\n]*')"""
)
_URL_PASSWORD = re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"]*:)(?P<pw>[^\s@/'\"]+)(?=@)")
_BEARER = re.compile(r"\b(?P<scheme>[Bb]earer)\s+(?P<val>[A-Za-z0-9\-._~+/]{6,}=*)")
_PER_HOUR = re.compile(
    r"(?<![\w.])(?P<num>\d+(?:[.,]\d+)?)(?P<unit>\s*(?:[A-Z]{3}|元|¥|RMB)?\s*/\s*(?:(?:h|hrs?|hours?)\b|小时|时))"
)
_SCHEME = re.compile(r"^(?P<scheme>(?:Bearer|bearer|Basic|basic|Token|token|Digest|digest)\s+)")

_secret_lock = threading.Lock()
_secret_values: set[str] = set()
_secret_re: re.Pattern[str] | None = None


def register_secret(value: Any) -> None:
    """Mask ``value`` (a str, bytes or pydantic ``SecretStr``) wherever it appears in a log line from now on.

    Values shorter than MIN_SECRET_LENGTH characters are ignored: masking them would garble ordinary text.
    """
    global _secret_re
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH:
        return
    variants = {value, quote(value, safe="")}
    with _secret_lock:
        if variants <= _secret_values:
            return
        _secret_values.update(variants)
        alternatives = sorted(_secret_values, key=len, reverse=True)  # longest first: no partial masks
        _secret_re = re.compile("|".join(re.escape(v) for v in alternatives))


def _masked(val: str) -> str:
    """A masked value: quotes and an auth scheme (``Bearer``) are kept, the rest becomes ``***``."""
    quote_char = val[:1] if val[:1] in ("'", '"') else ""
    inner = val[1:-1] if quote_char else val
    scheme = _SCHEME.match(inner)
    return f"{quote_char}{scheme.group('scheme') if scheme else ''}{MASK}{quote_char}"


def _mask_keyed(pattern: re.Pattern[str], text: str) -> str:
    """Mask the values of sensitive keys found by ``pattern`` (groups ``key`` and ``val``, the value in a
    lookahead); the scan resumes right after a harmless key, inside its value."""
    parts: list[str] = []
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        if sensitive_key(m.group("key")):
            parts += [text[pos : m.start("val")], _masked(m.group("val"))]
            pos = m.end("val")
        else:
            parts.append(text[pos : m.end()])
            pos = m.end()
    if not parts:
        return text
    parts.append(text[pos:])
    return "".join(parts)


def _mask_header(m: re.Match[str]) -> str:
    return m.group(0)[: m.start("val") - m.start(0)] + _masked(m.group("val"))


def redact(text: str) -> str:
    """``text`` with secrets, pay data and credentials replaced by ``***`` (see the module docstring)."""
    if not text:
        return text
    pattern = _secret_re
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if not _HINT.search(text):
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + MASK, text)
    text = _HEADER_TUPLE.sub(_mask_header, text)
    text = _mask_keyed(_QUOTED_KEY, text)
    text = _mask_keyed(_KEY_VALUE, text)
    text = _HEADER_LINE.sub(_mask_header, text)
    text = _mask_keyed(_NUMBER_AFTER_KEY, text)
    text = _BEARER.sub(lambda m: f"{m.group('scheme')} {MASK}", text)
    return _PER_HOUR.sub(lambda m: MASK + m.group("unit"), text)


def _clean(key: str, value: Any, depth: int = 0) -> Any:
    """A field value safe to log and to serialise as JSON: sensitive keys masked, text redacted."""
    if sensitive_key(key):
        return MASK
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if depth < 6 and isinstance(value, Mapping):
        return {str(k): _clean(str(k), v, depth + 1) for k, v in value.items()}
    if depth < 6 and isinstance(value, list | tuple | set | frozenset):
        return [_clean(key, v, depth + 1) for v in value]
    return redact(str(value))


class Redactor(logging.Filter):
    """Handler filter: renders the message once, then masks it, the traceback and every extra field.

    It changes the record in place (later handlers and formatters see the masked text only) and attaches
    the fields bound with ``bound()`` in the logging thread / task.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get("_bizbus_redacted"):
            return True
        try:
            message = record.getMessage()
        except Exception as exc:  # wrong arguments for the format string: keep both, masked
            message = (
                f"{record.msg} (log arguments do not fit the format: {type(exc).__name__}) {record.args!r}"
            )
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in _extras(record).items():
            record.__dict__[key] = _clean(key, value)
        record._bizbus_redacted = True
        return True


_TRACEBACKS = logging.Formatter()


# -- formatters ----------------------------------------------------------------------------------------


def _timestamp(record: logging.LogRecord) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-03-01T08:15:02.417Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _exc_text(record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(_TRACEBACKS.formatException(record.exc_info))
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, ids, extra fields, exc_info, stack_info."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = _extras(record)
        for key in ID_FIELDS:
            if extras.get(key) is not None:
                doc[key] = str(extras.pop(key))
        for key, value in extras.items():
            if key not in doc and value is not None:
                doc[key] = value
        exc = _exc_text(record)
        if exc:
            doc["exc_info"] = exc
        if record.stack_info:
            doc["stack_info"] = record.stack_info
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``<time> LEVEL logger: message [event_id=... correlation_id=... component=...]`` plus the traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        line = self.formatMessage(record)
        extras = _extras(record)
        ids = " ".join(f"{k}={extras[k]}" for k in ID_FIELDS if extras.get(k) is not None)
        if ids:
            line = f"{line} {ids}"
        exc = _exc_text(record)
        if exc:
            line = f"{line}\n{exc}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


# -- configuration -------------------------------------------------------------------------------------

_SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|AES_KEY|ENCRYPT_KEY|CREDENTIAL|PRIVATE|BASIC_AUTH|USER_INFO"
)
_NOT_A_VALUE = ("_ENV", "_NAME", "_PATH", "_LOCATION", "_DIR")  # these name a secret, they do not hold one
_handler: logging.Handler | None = None


def _read_small(path: str) -> str | None:
    try:
        p = Path(path)
        if p.stat().st_size > MAX_SECRET_FILE:
            return None
        return p.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a ``.env`` file (pydantic-settings reads it too, so its secrets count)."""
    out: dict[str, str] = {}
    text = _read_small(str(path)) if path.is_file() else None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        out[key.strip()] = value.strip().strip("'\"")
    return out


def register_environment_secrets(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = None
) -> None:
    """Register the secrets of the environment (and of ``.env``): values of variables named like a
    secret, the contents of the files their ``*_FILE`` variants name, and the password-like entries of
    the librdkafka properties file ``BIZBUS_KAFKA_CLIENT_CONFIG_FILE``."""
    env = {**_dotenv(dotenv or Path(".env")), **(os.environ if environ is None else environ)}
    for name, value in env.items():
        upper = name.upper()
        if not value:
            continue
        if upper.endswith("_FILE"):
            if _SECRET_NAME.search(upper[:-5]):
                register_secret(_read_small(value))
            elif upper == "BIZBUS_KAFKA_CLIENT_CONFIG_FILE":
                for line in (_read_small(value) or "").splitlines():
                    key, sep, prop = line.strip().partition("=")
                    if sep and not key.startswith(("#", "!")) and sensitive_key(key.strip()):
                        register_secret(prop)
            continue
        if not _SECRET_NAME.search(upper) or upper.endswith(_NOT_A_VALUE):
            continue
        register_secret(value)
        user, sep, password = value.partition(":")  # user:password (registry basic auth)
        if sep and user and "://" not in value:
            register_secret(password)


def make_handler(fmt: str = "auto", stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with the JSON or text formatter and the ``Redactor``."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        try:
            fmt = "text" if stream.isatty() else "json"
        except (AttributeError, ValueError):
            fmt = "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(Redactor())
    handler.set_name(f"bizbus-{fmt}")
    return handler


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("bizbus.uncaught").critical(
        "uncaught %s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb)
    )


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("bizbus.uncaught").critical(
        "uncaught %s in thread %s: %s", args.exc_type.__name__, name, args.exc_value,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )  # fmt: skip


def configure(
    level: str | int = "INFO", fmt: str = "auto", *, stream: TextIO | None = None
) -> logging.Handler:
    """Log to stderr (or ``stream``) through one handler: ``fmt`` json, text or auto (json unless a TTY).

    Replaces the handler of an earlier call, registers the environment's secrets, routes ``warnings`` and
    uncaught exceptions (main thread and other threads) through logging so they are formatted and
    masked like every other line. Returns the handler (Faust gets the same one: ``faust_loghandlers``).
    """
    global _handler
    handler = make_handler(fmt, stream)
    register_environment_secrets()
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    _handler = handler
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught
    return handler


def faust_loghandlers() -> list[logging.Handler]:
    """For ``faust.App(loghandlers=...)``: the handler ``configure`` installed (format and ``Redactor``
    included); before any ``configure``, a new one in the format of ``BIZBUS_LOG_FORMAT`` (root untouched)."""
    if _handler is not None:
        return [_handler]
    register_environment_secrets()
    return [make_handler(os.environ.get("BIZBUS_LOG_FORMAT", "auto"))]


def faust_logging_config(level: str | int = "INFO") -> dict[str, Any]:
    """``faust.Worker(logging_config=...)``: the root level and NO handler of Faust's own, so that the
    worker's root logger ends up with exactly the handlers of ``faust_loghandlers``."""
    name = level if isinstance(level, str) else logging.getLevelName(level)
    return {"version": 1, "disable_existing_loggers": False, "root": {"level": name.upper(), "handlers": []}}
