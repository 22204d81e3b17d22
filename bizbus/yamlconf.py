"""Load a YAML file into a frozen pydantic model; errors name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bizbus.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (deepest node found along the path)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if nxt is None:  # an unknown key: point at the key itself
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


def validation_lines(exc: ValidationError, path: Path, root: yaml.Node | None, base: tuple[Any, ...] = ()) -> list[str]:
    """One ``file:line: field: message`` line per pydantic error."""
    lines = []
    for err in exc.errors():
        loc = base + tuple(err.get("loc", ()))
        line = line_of(root, loc)
        where = f"{path}:{line}" if line else str(path)
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key (check the spelling; see the component's reference docs)"
        lines.append(f"{where}: {_loc_text(loc)}: {msg}")
    return lines


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file; returns (data, node tree for line lookups)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return ({} if data is None else data), root


def load_model(path: Path, model: type[M]) -> tuple[M, yaml.Node | None]:
    """Validate a whole YAML file as ``model``; returns the model and the node tree."""
    data, root = read_yaml(path)
    try:
        return model.model_validate(data), root
    except ValidationError as exc:
        raise ConfigError("\n".join([f"invalid {path}:"] + validation_lines(exc, path, root))) from None
