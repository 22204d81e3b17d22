"""Flow configs and mapping files: what every flow's config has, and the validated YAML mapping it loads.

Mappings are YAML files in the flow's folder (package data); a pipeline can point a flow at its own file
with ``config.mapping``. Every problem in a mapping names the file and the line.
"""

from __future__ import annotations

import inspect
import zoneinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictStr,
    StringConstraints,
    model_validator,
)

from bizbus.errors import ConfigError
from bizbus.yamlconf import load_model

M = TypeVar("M", bound=BaseModel)


def _text_decimal(value: Any) -> Any:
    """Money and rates are written as strings in YAML ("186.50"): a float would not be exact."""
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise ValueError(f'write decimals as quoted strings, e.g. "186.50" (got {value!r})')
    try:
        d = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not d.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return d


def _time_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)") from None
    return name


DecimalText = Annotated[Decimal, BeforeValidator(_text_decimal)]
AccountCode = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]{0,39}$")]
TimeZoneName = Annotated[str, AfterValidator(_time_zone)]
Code = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]


class MappingModel(BaseModel):
    """Base of every mapping file model: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def check_pattern(pattern: str, allowed: tuple[str, ...]) -> str:
    """A ``str.format`` pattern that uses only ``allowed`` placeholders (ValueError naming the others)."""
    try:
        pattern.format(**{name: "x" for name in allowed})
    except KeyError as exc:
        raise ValueError(f"unknown placeholder {{{exc.args[0]}}}; allowed: "
                         + ", ".join(f"{{{a}}}" for a in allowed)) from None  # fmt: skip
    except (ValueError, IndexError) as exc:
        raise ValueError(f"not a valid pattern: {exc}") from None
    return pattern


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int, model: type[M]) -> M:
    return load_model(Path(path), model)[0]


def load_mapping(path: Path, model: type[M]) -> M:
    """Validate a mapping file; ``ConfigError`` lists every problem as ``file:line: field: message``."""
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read mapping: {exc.strerror}") from None
    return _load_cached(str(path), mtime, model)


class FlowConfig(BaseModel):
    """Settings every flow has; a flow adds its own and names its mapping model and its packaged mapping file
    (``MAPPING_FILE``, package data in the folder of the module that defines the config class)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    MAPPING_FILE: ClassVar[str] = ""
    MAPPING_MODEL: ClassVar[type[BaseModel]] = MappingModel

    mapping: Path | None = Field(
        default=None,
        description="mapping YAML to use instead of the packaged one (relative to the working directory)",
    )
    master_data_grace_seconds: float = Field(
        default=20.0, ge=0, le=3600,
        description="how long a record waits for missing master data (project, supplier, employee rate) "
                    "before it goes to the dead-letter topic as unknown_master_data",
    )  # fmt: skip

    stall_restart_seconds: float = Field(
        default=60.0, ge=5, le=86400,
        description="a worker whose input partition holds unhandled records this long while its agent is idle "
                    "stops itself (exit code 3) to be restarted; the largest value of the worker's flows applies",
    )  # fmt: skip

    _mapping: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_mapping(self) -> FlowConfig:
        try:
            self._mapping = load_mapping(self.mapping_path, self.MAPPING_MODEL)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @classmethod
    def packaged_mapping(cls) -> Path:
        """The mapping file shipped with the flow: ``MAPPING_FILE`` next to the module of the config class."""
        return Path(inspect.getfile(cls)).resolve().with_name(cls.MAPPING_FILE)

    @property
    def mapping_path(self) -> Path:
        return self.mapping if self.mapping is not None else self.packaged_mapping()

    def loaded_mapping(self) -> Any:
        """The validated mapping (loaded when the config was validated)."""
        return self._mapping
