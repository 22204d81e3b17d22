"""Schema references: inline the named types a schema borrows from other subjects.

A schema registered with ``references`` (``[{"name": "com.acme.Address", "subject": "address",
"version": 1}]``) may use ``com.acme.Address`` by name. The registry keeps the schema text as sent and
additionally a *resolved* form in which the first use of each referenced name is replaced by its
definition; that self-contained JSON is what gets validated, compared for compatibility and used for
identity. Referenced schemas are themselves stored resolved, so nested references need no recursion here.
"""

from __future__ import annotations

import copy
import json
from typing import Any

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})


def _full_name(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _definition_name(node: dict[str, Any], namespace: str | None) -> str:
    name = str(node["name"])
    own = node.get("namespace", namespace)
    return _full_name(name, own if isinstance(own, str) else namespace)


def _pinned(definition: Any) -> Any:
    """Make a top-level named definition carry its absolute name, so it means the same anywhere."""
    if isinstance(definition, dict) and definition.get("type") in _NAMED and "name" in definition:
        pinned = dict(definition)
        full = _definition_name(definition, None)
        pinned.pop("namespace", None)
        pinned["name"] = full
        if "." not in full:
            pinned["namespace"] = ""  # the null namespace, whatever the context it is inlined into
        return pinned
    return definition


def top_level_name(schema: Any) -> str | None:
    """The full name of a schema whose top level is a named type, else None."""
    if isinstance(schema, dict) and schema.get("type") in _NAMED and isinstance(schema.get("name"), str):
        return _definition_name(schema, None)
    return None


class _Inliner:
    def __init__(self, available: dict[str, Any]) -> None:
        self.available = available
        self.defined: set[str] = set()

    def walk(self, node: Any, namespace: str | None) -> Any:
        if isinstance(node, str):
            return self._name(node, namespace)
        if isinstance(node, list):
            return [self.walk(branch, namespace) for branch in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        out = dict(node)
        if kind in _NAMED and isinstance(node.get("name"), str):
            full = _definition_name(node, namespace)
            if full in self.defined:  # a second copy of a type reached through two references
                return full
            self.defined.add(full)
            inner = full.rpartition(".")[0] or None
            if kind in ("record", "error") and isinstance(node.get("fields"), list):
                out["fields"] = [
                    {**f, "type": self.walk(f["type"], inner)} if isinstance(f, dict) and "type" in f else f
                    for f in node["fields"]
                ]
            return out
        if kind == "array" and "items" in node:
            out["items"] = self.walk(node["items"], namespace)
        elif kind == "map" and "values" in node:
            out["values"] = self.walk(node["values"], namespace)
        elif "type" in node:
            out["type"] = self.walk(kind, namespace)
        return out

    def _name(self, name: str, namespace: str | None) -> Any:
        if name in _PRIMITIVES:
            return name
        for candidate in (_full_name(name, namespace), name):
            if candidate in self.defined:
                return name
            if candidate in self.available:
                return self.walk(copy.deepcopy(self.available[candidate]), namespace)
        return name


def inline_references(schema: Any, referenced: list[tuple[str, str]]) -> str:
    """Return ``schema`` (parsed JSON) as self-contained JSON text.

    ``referenced`` pairs each reference's ``name`` with the referenced schema's resolved text.
    """
    available: dict[str, Any] = {}
    for ref_name, resolved_text in referenced:
        definition = _pinned(json.loads(resolved_text))
        available[ref_name] = definition
        full = top_level_name(definition)
        if full is not None:
            available.setdefault(full, definition)
    return json.dumps(_Inliner(available).walk(schema, None), separators=(",", ":"))
