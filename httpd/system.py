"""``/healthz``, ``/metrics``, ``/live`` and ``/openapi.json``."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from aiohttp import web

from connector.live import LiveConversation
from httpd.errors import json_response
from httpd.keys import HEALTH, JOURNAL, LIVE, METRICS, ORIGINATOR, SETTINGS
from httpd.metrics import CONTENT_TYPE
from httpd.openapi import document
from httpd.params import Query
from storage.journal import EmployeeDirectory, format_time
from storage.numbers import normalize_number

__all__ = ["routes"]

routes = web.RouteTableDef()

#: Where the API is described for people, in pbxjournal's source tree.
DOCS = {"api": "docs/api.md", "1c": "docs/1c.md"}


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    healthy, body = await request.app[HEALTH].check()
    return json_response(body, status=200 if healthy else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    Query(request).done()
    response = web.Response(body=request.app[METRICS].render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    Query(request).done()
    return json_response(document())


def _version() -> str:
    try:
        return metadata.version("pbxjournal")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


@routes.get("/api/v1")
@routes.get("/api/v1/")
async def index(request: web.Request) -> web.Response:
    """What the API is and where its parts are: the address the demo prints, opened as is."""
    Query(request).done()
    endpoints = sorted(
        {
            f"{route.method} {route.resource.canonical}"
            for route in request.app.router.routes()
            if route.resource is not None and route.method not in ("HEAD", "OPTIONS")
        }
    )
    return json_response(
        {
            "name": "pbxjournal",
            "version": _version(),
            "openapi": "/openapi.json",
            "docs": DOCS,
            "endpoints": endpoints,
        }
    )


async def _live_item(
    request: web.Request, live: LiveConversation, employees: EmployeeDirectory
) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    journal = request.app[JOURNAL]
    tz = settings.pbx.tz
    number = normalize_number(live.number, journal.region) if live.number else None
    customer = None
    if number is not None:
        owner = await journal.lookup_number(number)
        if owner is not None:
            contact = None
            if owner.contact_id is not None:
                contact = {"id": owner.contact_id, "name": owner.contact_name}
            customer = {"id": owner.customer_id, "name": owner.customer_name, "contact": contact}
    originator = request.app[ORIGINATOR]
    placed = originator.for_conversation(live.id) if originator is not None else None
    originate = None
    if placed is not None:
        originate = {
            "id": placed.id,
            "state": placed.state.value,
            "state_label": placed.state.label,
            "callback_of": placed.order.callback_of,
        }
    return {
        "linkedid": live.id,
        "started_at": format_time(live.started_at, tz),
        "answered_at": format_time(live.answered_at, tz),
        "direction": live.direction.value,
        "state": live.state,
        "number": number,
        "number_raw": live.number,
        "customer": customer,
        "originate": originate,
        "employees": [
            {
                "id": employees.get(p.extension).id,
                "extension": p.extension,
                "name": employees.get(p.extension).name,
                "state": p.state,
                "since": format_time(p.since, tz),
            }
            for p in live.participants
        ],
    }


@routes.get("/api/v1/live")
async def live_calls(request: web.Request) -> web.Response:
    Query(request).done()
    source = request.app[LIVE]
    if source is None:
        return json_response({"available": False, "items": []})
    conversations = list(source())
    journal = request.app[JOURNAL]
    employees = await journal.employee_directory()
    items = [await _live_item(request, c, employees) for c in conversations]
    return json_response({"available": True, "items": items})
