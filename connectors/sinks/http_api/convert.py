"""JSON both ways for the ``http-api`` sink: a decoded record as a request body (money stays exact), and
what a target answers (the created object's id, its error message)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx

from bizbus.failures import Permanent

ID_FIELDS = ("id", "number", "bill_no")  # where a created object's id is looked for, in this order
LIST_FIELDS = ("items", "data", "results")  # where a lookup response's list is looked for


def jsonable(value: Any, where: str) -> Any:
    """A decoded Avro value as JSON: money stays exact (Decimal -> string), dates become ISO-8601."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")  # never a float, never exponent notation
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise Permanent(f"{where}: a {type(value).__name__} cannot be sent as JSON", reason="mapping")


def first_id(obj: Any) -> str | None:
    """The created object's id: the first of ID_FIELDS present (``{"data": {...}}`` wrappers allowed)."""
    if isinstance(obj, Mapping):
        for key in ID_FIELDS:
            if obj.get(key) is not None:
                return str(obj[key])
        if isinstance(obj.get("data"), Mapping):
            return first_id(obj["data"])
    return None


def listed(doc: Any) -> list[Any] | None:
    """The list of a lookup answer: the answer itself, or its first of LIST_FIELDS that is a list."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, Mapping):
        return next((doc[k] for k in LIST_FIELDS if isinstance(doc.get(k), list)), None)
    return None


def error_text(resp: httpx.Response) -> str:
    """A target's error message: ``error.message``, ``message`` or ``error``, else the raw body."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if isinstance(doc, Mapping):
        err = doc.get("error")
        if isinstance(err, Mapping) and err.get("message"):
            return str(err["message"])
        for key in ("message", "error", "detail"):
            if isinstance(doc.get(key), str) and doc[key]:
                return str(doc[key])
    return resp.text
