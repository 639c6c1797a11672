"""Auth on every endpoint, health, metrics, live calls and the OpenAPI document."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from connector.live import snapshot
from httpd.keys import HEALTH
from httpd.openapi import document
from tests.http_support import (
    CYRILLIC_PASSWORD,
    CYRILLIC_USER,
    PASSWORD,
    TOKEN,
    USER,
    Maker,
    basic,
)
from tests.scenarios import capture, events_of, new_assembler


def documented() -> list[tuple[str, str]]:
    """(method, path with sample values) of every operation of the OpenAPI document."""
    samples = {
        "call_id": "1",
        "recording_id": "1",
        "customer_id": "c-1",
        "number": "79161234567",
        "employee_id": "101",
        "originate_id": "0123456789abcdef",
    }
    found = []
    for path, operations in document()["paths"].items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: samples[m.group(1)], path)
        found.extend((method.upper(), concrete) for method in operations)
    return found


@dataclass
class Status:
    ami_connected: bool = True
    events_received: int = 12345
    calls_written: int = 70


async def test_anonymous_and_wrong_credentials_get_401_everywhere_but_healthz(
    make_api: Maker,
) -> None:
    api = await make_api()
    wrong = [
        {},
        basic(USER, "wrong"),
        basic("someone", PASSWORD),
        basic(USER, PASSWORD + "x"),
        {"Authorization": "Bearer " + TOKEN[:-1]},
        {"Authorization": "Bearer " + TOKEN + "x"},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Digest username=1c"},
        {"Authorization": TOKEN},
    ]
    operations = documented()
    assert len(operations) == 26
    for method, path in [*operations, ("GET", "/api/v1/not-an-endpoint")]:
        for headers in wrong:
            async with api.client.request(method, path, headers=headers, json={}) as response:
                if path == "/healthz":
                    assert response.status == 200
                    continue
                assert response.status == 401, (method, path, headers)
                assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
                body = await response.json()
                assert body["error"]["code"] == "unauthorized"


async def test_basic_bearer_and_utf8_credentials_are_accepted(make_api: Maker) -> None:
    api = await make_api()
    for headers in (
        basic(USER, PASSWORD),
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": f"bearer   {TOKEN}"},
        basic(CYRILLIC_USER, CYRILLIC_PASSWORD),
    ):
        page = await api.get("/api/v1/calls", params={"limit": 1}, headers=headers)
        assert len(page["items"]) == 1


async def test_credentials_never_reach_the_log(make_api: Maker) -> None:
    api = await make_api()
    with structlog.testing.capture_logs() as logs:
        await api.get("/api/v1/calls", params={"limit": 1})
        await api.get("/api/v1/employees", headers={"Authorization": f"Bearer {TOKEN}"})
        await api.get("/api/v1/calls", headers=basic(USER, "guess"), status=401)
    text = repr(logs)
    for secret in (
        PASSWORD,
        TOKEN,
        "guess",
        base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    ):
        assert secret not in text
    access = [entry for entry in logs if entry["event"] == "http"]
    assert [(a["client"], a["status"]) for a in access] == [
        ("1c", 200),
        ("prometheus", 200),
        (None, 401),
    ]
    assert access[0]["route"] == "/api/v1/calls"


async def test_health_says_what_is_wrong_without_credentials(make_api: Maker) -> None:
    status = Status()
    api = await make_api(status=status)
    api.app[HEALTH].cache_seconds = 0  # no cached answer between the two probes
    healthy = await api.get("/healthz", headers={})
    assert healthy == {
        "status": "ok",
        "database": {"writable": True, "error": None},
        "ami": {"connected": True},
    }
    status.ami_connected = False
    down = await api.get("/healthz", headers={}, status=503)
    assert down["status"] == "unavailable" and down["ami"] == {"connected": False}

    front_end = await make_api()  # no daemon: database only
    alone = await front_end.get("/healthz", headers={})
    assert alone["ami"] is None and alone["status"] == "ok"


async def test_metrics_in_prometheus_text_format(make_api: Maker) -> None:
    api = await make_api(status=Status())
    await api.get("/api/v1/calls", params={"limit": 2})
    await api.get("/api/v1/calls/1")
    async with api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    assert "pbxjournal_ami_events_received_total 12345.0" in text
    assert "pbxjournal_calls_written_total 70.0" in text
    assert "pbxjournal_ami_connected 1.0" in text
    assert re.search(r"pbxjournal_journal_version \d+\.0", text)
    assert (
        'pbxjournal_http_request_duration_seconds_count{method="GET",'
        'route="/api/v1/calls",status="200"} 1.0' in text
    )
    assert 'route="/api/v1/calls/{call_id}"' in text  # templates, never ids or numbers
    assert "# TYPE pbxjournal_http_request_duration_seconds histogram" in text


async def test_live_calls_come_from_the_assembler(make_api: Maker) -> None:
    assembler = new_assembler()
    events = list(events_of(capture("11-incoming-blind-transfer").read_bytes()))
    start = next(e.time for e in events if e.name == "Newchannel")
    for event in events:
        if event.time > start + 8:  # 101 has answered; the transfer comes later
            break
        assembler.feed(event, event.time)
    api = await make_api(live=lambda: snapshot(assembler))
    (call,) = (await api.get("/api/v1/live"))["items"]
    assert call["direction"] == "incoming" and call["state"] == "talking"
    assert call["number"] == "+79057778899" and call["customer"] is None
    assert [(e["extension"], e["state"]) for e in call["employees"]] == [("101", "talking")]
    assert call["employees"][0]["name"] == "Ivanova Anna"
    assert call["started_at"].endswith("+03:00")

    front_end = await make_api()
    assert await front_end.get("/api/v1/live") == {"available": False, "items": []}


def _route_templates(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        routes.add((route.method, str(path)))
    return routes


async def test_openapi_document_matches_the_running_app(make_api: Maker) -> None:
    api = await make_api()
    served: dict[str, Any] = await api.get("/openapi.json")
    assert served == document()
    assert served["openapi"] == "3.1.0"
    paths = {
        (method.upper(), path)
        for path, operations in served["paths"].items()
        for method in operations
    }
    assert paths == _route_templates(api.app)
    for path, operations in served["paths"].items():
        for method, operation in operations.items():
            if path != "/healthz":
                assert "401" in operation["responses"], (method, path)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    assert "{" + parameter["name"] + "}" in path


async def test_an_unexpected_exception_is_a_logged_json_500(make_api: Maker) -> None:
    # The app is built unfrozen: a route that fails as a bug would stands in for one.
    async def broken(request: web.Request) -> web.Response:
        raise ZeroDivisionError("a bug")

    api = await make_api()
    api.app.router._frozen = False
    api.app.router.add_get("/api/v1/broken", broken)
    with structlog.testing.capture_logs() as logs:
        error = await api.get("/api/v1/broken", status=500)
    assert error == {
        "error": {
            "code": "internal_error",
            "message": "internal error; the server log has the details",
        }
    }
    (logged,) = [e for e in logs if e["event"] == "unhandled error"]
    assert logged["log_level"] == "error" and logged["route"] == "/api/v1/broken"


def _replace_with_a_directory(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    Path(path).mkdir()  # not a database file any more: connecting fails


async def test_a_database_that_is_gone_is_a_503_not_a_500(make_api: Maker) -> None:
    api = await make_api()
    path = api.journal.database.url.removeprefix("sqlite+aiosqlite:///")
    await api.journal.database.dispose()
    _replace_with_a_directory(path)
    error = await api.get("/api/v1/calls", status=503)
    assert error["error"]["code"] == "database_unavailable"
    health = await api.get("/healthz", headers={}, status=503)
    assert health["database"]["writable"] is False


async def test_bodies_over_their_limit_are_413(make_api: Maker) -> None:
    api = await make_api()
    big = {"text": "x" * (70 * 1024)}
    error = await api.put("/api/v1/calls/1/comment", big, status=413)
    assert error["error"]["code"] == "body_too_large"
    empty = await api.call("PUT", "/api/v1/employees/e", data=b"", status=400)
    assert empty["error"]["code"] == "invalid_body"


async def test_shutdown_releases_waiting_long_polls(make_api: Maker) -> None:
    api = await make_api()
    version = (await api.get("/api/v1/changes", params={"limit": 1000}))["last_version"]
    waiting = asyncio.create_task(api.get("/api/v1/changes", params={"since": version, "wait": 30}))
    await asyncio.sleep(0.3)
    began = time.perf_counter()
    await api.app.shutdown()
    page = await asyncio.wait_for(waiting, 5)
    assert page == {"items": [], "last_version": version, "journal_id": page["journal_id"]}
    assert time.perf_counter() - began < 1
