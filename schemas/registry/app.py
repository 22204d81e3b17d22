"""The Confluent-compatible REST API of the embedded schema registry (aiohttp).

Routes follow Confluent Schema Registry's API as used by ``confluent_kafka.schema_registry`` 2.x;
errors are ``{"error_code": int, "message": str}`` with Confluent's codes. Responses are
``application/vnd.schemaregistry.v1+json`` (plain ``application/json`` when the client accepts only
that); request bodies are read as JSON whatever their declared content type.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from bizbus.schemas.registry import errors
from bizbus.schemas.registry.service import SCHEMA_TYPES, Registry, parse_version, schema_body
from bizbus.schemas.registry.store import RegistryStore

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_BODY_BYTES = 16 * 1024 * 1024
REGISTRY_KEY: web.AppKey[Registry] = web.AppKey("registry", Registry)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _content_type(request: web.Request) -> str:
    accept = request.headers.get("Accept", "")
    if "application/json" in accept and "schemaregistry" not in accept and "*/*" not in accept:
        return "application/json"
    return CONTENT_TYPE


def _reply(request: web.Request, data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type=_content_type(request))


def _raw(request: web.Request, text: str) -> web.Response:
    return web.Response(text=text, content_type=_content_type(request))


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").strip().lower() == "true"


def _page(request: web.Request, items: list[Any]) -> list[Any]:
    try:
        offset = max(int(request.query.get("offset", "0")), 0)
        limit = int(request.query.get("limit", "-1"))
    except ValueError:
        raise errors.ApiError(400, 400, "offset and limit must be integers") from None
    items = items[offset:]
    return items[:limit] if limit >= 0 else items


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise errors.ApiError(400, 400, f"Unrecognized request body (not JSON): {exc}") from None


def _schema_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise errors.schema_not_found(f"Schema {request.match_info['id']} not found") from None


def _registry(request: web.Request) -> Registry:
    return request.app[REGISTRY_KEY]


@web.middleware
async def _errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Render every failure as a Confluent error body."""
    try:
        return await handler(request)
    except errors.ApiError as exc:
        return _reply(request, exc.body(), exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _reply(
            request, {"error_code": exc.status, "message": f"HTTP {exc.status} {exc.reason}"}, exc.status
        )
    except sqlite3.Error as exc:
        log.exception("schema registry store error on %s %s", request.method, request.path)
        err = errors.store_error(str(exc))
        return _reply(request, err.body(), err.status)
    except Exception as exc:  # a request must never kill the server
        log.exception("schema registry internal error on %s %s", request.method, request.path)
        return _reply(request, {"error_code": 500, "message": f"Internal server error: {exc}"}, 500)


# -- root, schemas ------------------------------------------------------------------------------------


async def root(request: web.Request) -> web.Response:
    return _reply(request, {})


async def schema_types(request: web.Request) -> web.Response:
    return _reply(request, SCHEMA_TYPES)


async def contexts(request: web.Request) -> web.Response:
    return _reply(request, _page(request, ["."]))


async def schema_by_id(request: web.Request) -> web.Response:
    stored = _registry(request).schema(_schema_id(request))
    return _reply(request, schema_body(stored))


async def schema_text_by_id(request: web.Request) -> web.Response:
    return _raw(request, _registry(request).schema(_schema_id(request)).text)


async def schema_by_guid(request: web.Request) -> web.Response:
    stored = _registry(request).schema_by_guid(request.match_info["guid"])
    return _reply(request, schema_body(stored))


async def schema_versions(request: web.Request) -> web.Response:
    found = _registry(request).schema_versions(_schema_id(request), _flag(request, "deleted"))
    subject = request.query.get("subject")
    pairs = [
        {"subject": v.subject, "version": v.version} for v in found if not subject or v.subject == subject
    ]
    return _reply(request, _page(request, pairs))


async def schema_subjects(request: web.Request) -> web.Response:
    found = _registry(request).schema_versions(_schema_id(request), _flag(request, "deleted"))
    subject = request.query.get("subject")
    names = sorted({v.subject for v in found if not subject or v.subject == subject})
    return _reply(request, _page(request, names))


# -- subjects ----------------------------------------------------------------------------------------


async def list_subjects(request: web.Request) -> web.Response:
    names = _registry(request).subjects(
        deleted=_flag(request, "deleted"),
        deleted_only=_flag(request, "deleted_only"),
        prefix=request.query.get("subjectPrefix", ""),
    )
    return _reply(request, _page(request, names))


async def list_versions(request: web.Request) -> web.Response:
    numbers = _registry(request).versions(
        request.match_info["subject"],
        deleted=_flag(request, "deleted"),
        deleted_only=_flag(request, "deleted_only"),
    )
    return _reply(request, _page(request, numbers))


async def get_version(request: web.Request) -> web.Response:
    body = _registry(request).version_body(
        request.match_info["subject"],
        parse_version(request.match_info["version"]),
        deleted=_flag(request, "deleted"),
    )
    return _reply(request, body)


async def get_version_schema(request: web.Request) -> web.Response:
    body = _registry(request).version_body(
        request.match_info["subject"],
        parse_version(request.match_info["version"]),
        deleted=_flag(request, "deleted"),
    )
    return _raw(request, body["schema"])


async def referenced_by(request: web.Request) -> web.Response:
    ids = _registry(request).referenced_by(
        request.match_info["subject"], parse_version(request.match_info["version"])
    )
    return _reply(request, _page(request, ids))


async def register(request: web.Request) -> web.Response:
    result = _registry(request).register(request.match_info["subject"], await _body(request))
    return _reply(request, result)


async def lookup(request: web.Request) -> web.Response:
    result = _registry(request).lookup(
        request.match_info["subject"], await _body(request), deleted=_flag(request, "deleted")
    )
    return _reply(request, result)


async def delete_subject(request: web.Request) -> web.Response:
    numbers = _registry(request).delete_subject(
        request.match_info["subject"], permanent=_flag(request, "permanent")
    )
    return _reply(request, numbers)


async def delete_version(request: web.Request) -> web.Response:
    number = _registry(request).delete_version(
        request.match_info["subject"],
        parse_version(request.match_info["version"]),
        permanent=_flag(request, "permanent"),
    )
    return _reply(request, number)


# -- compatibility, config, mode ---------------------------------------------------------------------


async def test_version(request: web.Request) -> web.Response:
    result = _registry(request).test_compatibility(
        request.match_info["subject"],
        parse_version(request.match_info["version"]),
        await _body(request),
        verbose=_flag(request, "verbose"),
    )
    return _reply(request, result)


async def test_all_versions(request: web.Request) -> web.Response:
    result = _registry(request).test_compatibility(
        request.match_info["subject"], None, await _body(request), verbose=_flag(request, "verbose")
    )
    return _reply(request, result)


async def get_config(request: web.Request) -> web.Response:
    subject = request.match_info.get("subject")
    body = _registry(request).get_config(subject, default_to_global=_flag(request, "defaultToGlobal"))
    return _reply(request, body)


async def put_config(request: web.Request) -> web.Response:
    body = _registry(request).set_config(request.match_info.get("subject"), await _body(request))
    return _reply(request, body)


async def delete_config(request: web.Request) -> web.Response:
    return _reply(request, _registry(request).delete_config(request.match_info.get("subject")))


async def get_mode(request: web.Request) -> web.Response:
    return _reply(request, {"mode": "READWRITE"})


async def put_mode(request: web.Request) -> web.Response:
    body = await _body(request)
    mode = body.get("mode") if isinstance(body, dict) else body
    if not isinstance(mode, str) or mode.upper() != "READWRITE":
        raise errors.invalid_mode(mode)
    return _reply(request, {"mode": "READWRITE"})


def create_app(store: RegistryStore) -> web.Application:
    """The registry's aiohttp application, serving the state held in ``store``."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app[REGISTRY_KEY] = Registry(store)
    subject = "/subjects/{subject}"
    version = subject + "/versions/{version}"
    app.router.add_routes(
        [
            web.get("/", root),
            web.get("/contexts", contexts),
            web.get("/schemas/types", schema_types),
            web.get("/schemas/ids/{id}", schema_by_id),
            web.get("/schemas/ids/{id}/schema", schema_text_by_id),
            web.get("/schemas/ids/{id}/versions", schema_versions),
            web.get("/schemas/ids/{id}/subjects", schema_subjects),
            web.get("/schemas/guids/{guid}", schema_by_guid),
            web.get("/subjects", list_subjects),
            web.post(subject, lookup),
            web.delete(subject, delete_subject),
            web.get(subject + "/versions", list_versions),
            web.post(subject + "/versions", register),
            web.get(version, get_version),
            web.delete(version, delete_version),
            web.get(version + "/schema", get_version_schema),
            web.get(version + "/referencedby", referenced_by),
            web.post("/compatibility" + subject + "/versions", test_all_versions),
            web.post("/compatibility" + version, test_version),
        ]
    )
    for prefix in ("/config", "/config/{subject}"):
        app.router.add_routes(
            [web.get(prefix, get_config), web.put(prefix, put_config), web.delete(prefix, delete_config)]
        )
    for prefix in ("/mode", "/mode/{subject}"):
        app.router.add_routes(
            [web.get(prefix, get_mode), web.put(prefix, put_mode), web.delete(prefix, get_mode)]
        )
    return app
