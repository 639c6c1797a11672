"""Scopes: what an authenticated API client may do (``[[http.clients]] scopes``).

Every route needs one scope: ``metrics`` for ``GET /metrics``, ``originate`` for
click-to-call (``/api/v1/originate``), ``read`` for every other ``GET`` (and ``HEAD``), and
``write`` for everything that changes the journal or its directory. The rule is by method
unless :data:`OVERRIDES` names the route, so a new route is never left open: a ``GET`` needs
``read`` and anything else ``write`` until it is given its own scope. ``/healthz`` needs no
credentials at all (:data:`httpd.auth.OPEN_PATHS`).

``read`` also lets a client read ``/metrics``: a client configured before scopes existed
(``read,write`` by default) keeps every endpoint it had, while a monitoring client given
``scopes = ["metrics"]`` can read the metrics and nothing else.

A person signed in to the web journal has :data:`SESSION_SCOPES`: what the page does (read,
edit, call back), not the metrics. A request outside the client's scopes is answered 403
``missing_scope``, naming the scope, after the credentials were checked (an anonymous caller
still gets 401 and learns nothing about scopes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web

from config import SCOPES
from httpd.errors import ApiError

__all__ = [
    "GRANTED",
    "IMPLIED_BY",
    "OVERRIDES",
    "SCOPES",
    "SESSION_SCOPES",
    "check_scope",
    "required_scope",
    "scope_of",
]

#: Routes whose scope is not the one their method implies: (method, route template) → scope.
OVERRIDES: Final[Mapping[tuple[str, str], str]] = {
    ("GET", "/metrics"): "metrics",
    ("POST", "/api/v1/originate"): "originate",
    ("GET", "/api/v1/originate/{originate_id}"): "originate",
}
SESSION_SCOPES: Final = frozenset({"read", "write", "originate"})
#: Scopes that also grant another: scope → the scopes that satisfy it besides itself.
IMPLIED_BY: Final[Mapping[str, frozenset[str]]] = {"metrics": frozenset({"read"})}
#: The scopes the request's client holds (set by the authentication middlewares).
GRANTED = web.RequestKey("scopes", frozenset)

_READING = frozenset({"GET", "HEAD", "OPTIONS"})


def scope_of(method: str, template: str) -> str:
    """The scope a route needs."""
    method = "GET" if method in ("HEAD", "OPTIONS") else method
    override = OVERRIDES.get((method, template))
    if override is not None:
        return override
    return "read" if method in _READING else "write"


def required_scope(request: web.Request) -> str | None:
    """The scope this request needs; None for an unmatched path or method (a 404 or 405
    tells an authenticated client no more than the OpenAPI document does)."""
    route = request.match_info.route
    resource = route.resource
    if resource is None or isinstance(request.match_info.http_exception, web.HTTPException):
        return None
    return scope_of(request.method, resource.canonical)


def check_scope(request: web.Request, granted: frozenset[str]) -> None:
    """Remember ``granted`` on the request; 403 when the route needs a scope not in it."""
    request[GRANTED] = granted
    needed = required_scope(request)
    if needed is not None and not (needed in granted or granted & IMPLIED_BY.get(needed, set())):
        have = ", ".join(scope for scope in SCOPES if scope in granted) or "none"
        raise ApiError(
            403,
            "missing_scope",
            f"this client lacks the '{needed}' scope needed here (it has: {have}); "
            "add it to the client's scopes in [[http.clients]]",
        )
