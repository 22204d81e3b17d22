"""What the host's HTTP server hands a webhook component, and what the component answers.

The host owns these two types (``bizbus.host.httpserver`` builds the request, ``bizbus.host.runner`` routes
it by connector name); the connector runtime's inbox re-exports them for vendor code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class HttpRequest:
    """A request to ``/webhooks/<connector>[/<subpath>]``; header names are lower-case."""

    method: str
    subpath: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class HttpResponse:
    status: int = 200
    body: bytes = b'{"ok":true}'
    content_type: str = "application/json"
