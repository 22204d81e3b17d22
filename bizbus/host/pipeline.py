"""The pipeline file: which connectors and flows run, each with its own typed configuration.

```yaml
version: 1
name: default
connectors:
  - name: demo-timesheets          # unique, used in metrics, logs, dead letters
    type: sample-events            # a name from bizbus.host.components.COMPONENT_TYPES
    config: {topic: bizbus.pm.timesheet.v1, rate_per_second: 2}
flows: []
```

Each component type declares a frozen pydantic model for its ``config``; an unknown key, a wrong type
or a missing field is reported with the file, the line and the field path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from bizbus.errors import ConfigError
from bizbus.host.components import COMPONENT_TYPES, ComponentType, Kind
from bizbus.yamlconf import line_of, read_yaml, validation_lines

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]


class ComponentEntry(BaseModel):
    """One connector or flow in the pipeline file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name = Field(description="unique name: lowercase letters, digits and dashes")
    type: str = Field(description="component type, see `bizbus components`")
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


class PipelineFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    name: Name = "default"
    connectors: tuple[ComponentEntry, ...] = ()
    flows: tuple[ComponentEntry, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineFile:
        names = [c.name for c in (*self.connectors, *self.flows)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"component names must be unique; repeated: {', '.join(dupes)}")
        return self


@dataclass(frozen=True)
class ConfiguredComponent:
    """A pipeline entry with its config validated against its type's model."""

    name: str
    type: ComponentType
    config: BaseModel
    enabled: bool


@dataclass(frozen=True)
class Pipeline:
    name: str
    path: Path
    components: tuple[ConfiguredComponent, ...]

    def enabled(self) -> list[ConfiguredComponent]:
        return [c for c in self.components if c.enabled]


def load_pipeline(path: Path) -> Pipeline:
    """Read and validate the pipeline file; ``ConfigError`` lists every problem with file:line."""
    data, root = read_yaml(path)
    try:
        pf = PipelineFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join([f"invalid pipeline {path}:"] + validation_lines(exc, path, root))) from None
    problems: list[str] = []
    out: list[ConfiguredComponent] = []
    sections: list[tuple[str, tuple[Kind, ...], tuple[ComponentEntry, ...]]] = [
        ("connectors", ("source", "sink", "monitor"), pf.connectors),
        ("flows", ("flow",), pf.flows),
    ]
    for section, kinds, entries in sections:
        for i, entry in enumerate(entries):
            ctype = COMPONENT_TYPES.get(entry.type)
            if ctype is None or ctype.kind not in kinds:
                allowed = sorted(n for n, t in COMPONENT_TYPES.items() if t.kind in kinds)
                loc = (section, i, "type")
                problems += [f"{path}:{line_of(root, loc)}: {section}[{i}].type: unknown {section[:-1]} type "
                             f"{entry.type!r}; known: {', '.join(allowed) or '(none yet)'}"]
                continue
            try:
                config = ctype.config_model().model_validate(entry.config)
            except ValidationError as exc:
                problems += validation_lines(exc, path, root, base=(section, i, "config"))
                continue
            out.append(ConfiguredComponent(entry.name, ctype, config, entry.enabled))
    if problems:
        raise ConfigError("\n".join([f"invalid pipeline {path}:"] + problems))
    return Pipeline(pf.name, Path(path), tuple(out))
