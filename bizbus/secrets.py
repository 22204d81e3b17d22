"""Secrets named by environment variable: the one type every component config uses for them.

A config never holds a secret, only the NAME of the environment variable that does (``token_env:
JIRA_API_TOKEN``). A field typed :class:`EnvSecret` accepts such a name (refusing anything that does not
look like one, without echoing it: whoever got it wrong may have pasted the secret itself) and reads the
value when the component needs it: from the variable, or, when that is unset or empty, from the file named
by ``<VAR>_FILE`` (how Kubernetes and Docker hand secrets to a process). A value read is registered with
:func:`bizbus.logs.register_secret`, so it is masked in every log line from then on; it never appears in
an error message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from bizbus.errors import ConfigError
from bizbus.logs import register_secret

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_NAME = re.compile(ENV_NAME)


def file_var(name: str) -> str:
    """The variable that may name a file holding the secret of variable ``name`` (``<name>_FILE``)."""
    return f"{name}_FILE"


def offline_problem(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why the secret variable ``name`` would give no value, as far as can be told without reading it (None:
    the variable is set, or its ``_FILE`` variable names a file): what ``bizbus check`` reports."""
    env = os.environ if environ is None else environ
    if env.get(name):
        return None
    path = env.get(file_var(name))
    if not path:
        return f"needs the secret variable {name} (or {file_var(name)}); it is not set"
    if not Path(path).is_file():
        return f"{file_var(name)}={path} is not a readable file"
    return None


class SecretNotSet(ConfigError):
    """The environment variable an :class:`EnvSecret` names is not set (nor its ``_FILE`` variant)."""


class EnvSecret(str):
    """The name of an environment variable holding a secret; ``read()`` gives the secret."""

    @classmethod
    def _check(cls, value: str) -> EnvSecret:
        if not _ENV_NAME.match(value):
            # deliberately without the value: it may be the secret itself
            raise ValueError("give the NAME of an environment variable (letters, digits, '_'; e.g. "
                             "ERP_API_TOKEN), not the secret")  # fmt: skip
        return cls(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls._check, core_schema.str_schema(), serialization=core_schema.to_string_ser_schema()
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": ENV_NAME}

    @property
    def file_var(self) -> str:
        return file_var(self)

    def is_set(self) -> bool:
        """Is a value there (the variable, or the ``_FILE`` variable naming a file)? Reads no file."""
        return bool(os.environ.get(self) or os.environ.get(self.file_var))

    def read(self, what: str = "a secret", owner: str = "") -> str:
        """The secret: the variable's value, else the content of the file ``<VAR>_FILE`` names (stripped).

        Raises :class:`SecretNotSet` (a ``ConfigError``) naming the variable and ``what`` it should hold,
        never a value. ``owner`` prefixes the message (``"connector jira-1"``).
        """
        prefix = f"{owner}: " if owner else ""
        value = os.environ.get(self, "")
        if not value:
            path = os.environ.get(self.file_var, "")
            if path:
                try:
                    value = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise SecretNotSet(f"{prefix}cannot read {what} from file {path} ({self.file_var}): "
                                       f"{exc.strerror}") from None  # fmt: skip
                if not value:
                    raise SecretNotSet(f"{prefix}the file {path} ({self.file_var}, {what}) is empty")
        if not value:
            raise SecretNotSet(f"{prefix}environment variable {self} ({what}) is not set "
                               f"(nor {self.file_var} naming a file that holds it)")  # fmt: skip
        register_secret(value)  # masked in every log line from now on, whatever the variable is called
        return value


def secret_vars(config: BaseModel) -> tuple[str, ...]:
    """The environment variables the ``EnvSecret`` fields of ``config`` name (unset optional ones left out),
    in field order: what ``ComponentSpec.secrets`` reports for ``bizbus check``."""
    out: list[str] = []
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, EnvSecret) and value not in out:
            out.append(str(value))
    return tuple(out)
