"""The errors bizbus raises on purpose.

Every error a user can cause (bad config, a port in use, a schema that does not parse, a record that
does not match its schema) is a ``BizbusError`` with a message that says what and where; the CLI prints
it without a traceback and exits non-zero.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class BizbusError(Exception):
    """Base of all expected errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class ConfigError(BizbusError):
    """Settings, pipeline or catalogue are invalid."""


class PortInUse(BizbusError):
    """A port an embedded service should listen on is taken."""

    def __init__(self, what: str, host: str, port: int, env_var: str) -> None:
        super().__init__(
            f"{what} cannot listen on {host}:{port}: the port is already in use. "
            f"Stop whatever holds it (e.g. `ss -ltnp 'sport = :{port}'`) or choose another port with {env_var}."
        )
        self.port = port


class BrokerError(BizbusError):
    """The Kafka broker cannot be started or reached."""


class RegistryError(BizbusError):
    """The schema registry cannot be started or reached, or refused a request."""


class SchemaError(BizbusError):
    """An Avro schema does not parse or breaks compatibility."""


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def format_validation_error(exc: ValidationError, source: str, prefix: str = "") -> str:
    """Render a pydantic error as one line per problem, each naming the field and the source."""
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        loc = _loc(tuple(err.get("loc", ())))
        if prefix and "." not in loc and "[" not in loc:
            loc = f"{loc} ({prefix}{loc.upper()})"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (not a setting of this component; check the spelling)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)
