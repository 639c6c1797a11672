"""Scoped API clients (issue 17): each [[http.clients]] holds scopes, every route needs one.

A monitoring token given ``scopes = ["metrics"]`` reads /metrics and nothing else; a client
configured before scopes existed (no ``scopes`` key) keeps ``read`` and ``write`` and with
them every endpoint it had, /metrics included; 1C's client with ``originate`` may ring phones.
A request outside the client's scopes is a 403 naming the missing scope, after the
credentials were checked (a wrong token is still a 401).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from config import ConfigError, HttpClient, HttpSettings, load_settings
from httpd.scopes import OVERRIDES, scope_of
from tests.http_support import Api, Maker, basic

READER = "reader-token-0123456789"
MONITOR = "monitor-token-0123456789"
CALLER = "caller-token-0123456789"

SCOPED = (
    HttpClient(name="1c", username="1c", password="s3cret"),  # no scopes key: read, write
    HttpClient(name="reader", token=READER, scopes=("read",)),
    HttpClient(name="prometheus", token=MONITOR, scopes=("metrics",)),
    HttpClient(name="dialler", token=CALLER, scopes=("originate",)),
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def scoped_api(make_api: Maker) -> Api:
    api = await make_api()
    settings = dataclasses.replace(
        api.settings, http=HttpSettings(listen="127.0.0.1:0", clients=SCOPED)
    )
    return await make_api(settings=settings)


async def status_and_body(
    api: Api, method: str, path: str, headers: dict[str, str], **kwargs: Any
) -> tuple[int, Any]:
    async with api.client.request(method, path, headers=headers, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def test_a_metrics_token_reads_metrics_and_nothing_else(make_api: Maker) -> None:
    api = await scoped_api(make_api)
    status, _ = await status_and_body(api, "GET", "/metrics", bearer(MONITOR))
    assert status == 200
    status, body = await status_and_body(api, "GET", "/api/v1/calls", bearer(MONITOR))
    assert status == 403
    assert body["error"]["code"] == "missing_scope"
    assert "'read'" in body["error"]["message"]
    status, body = await status_and_body(
        api, "PUT", "/api/v1/calls/1/comment", bearer(MONITOR), json={"text": "x"}
    )
    assert status == 403
    assert "'write'" in body["error"]["message"]
    # Nothing was written.
    call = await api.get("/api/v1/calls/1")
    assert call["comment"] is None


async def test_a_reader_cannot_change_the_journal(make_api: Maker) -> None:
    api = await scoped_api(make_api)
    status, _ = await status_and_body(api, "GET", "/api/v1/calls", bearer(READER))
    assert status == 200
    for method, path, body in [
        ("PUT", "/api/v1/calls/1/comment", {"text": "x"}),
        ("DELETE", "/api/v1/calls/1/comment", None),
        ("PUT", "/api/v1/customers/c-9", {"name": "X", "numbers": []}),
        ("POST", "/api/v1/customers:import", []),
        ("DELETE", "/api/v1/numbers/+79161234567", None),
        ("PUT", "/api/v1/employees/101", {"name": "X", "extensions": ["101"]}),
    ]:
        status, answer = await status_and_body(api, method, path, bearer(READER), json=body)
        assert status == 403, (method, path, status)
        assert answer["error"]["code"] == "missing_scope"
        assert "'write'" in answer["error"]["message"]
    status, answer = await status_and_body(
        api, "POST", "/api/v1/originate", bearer(READER), json={"employee": "101", "number": "1"}
    )
    assert status == 403
    assert "'originate'" in answer["error"]["message"]


async def test_a_client_without_scopes_keeps_read_write_and_metrics(make_api: Maker) -> None:
    api = await scoped_api(make_api)
    headers = basic("1c", "s3cret")
    assert (await status_and_body(api, "GET", "/api/v1/calls", headers))[0] == 200
    assert (await status_and_body(api, "GET", "/metrics", headers))[0] == 200
    status, _ = await status_and_body(
        api, "PUT", "/api/v1/calls/1/comment", headers, json={"text": "перезвонить"}
    )
    assert status == 200
    status, body = await status_and_body(
        api, "POST", "/api/v1/originate", headers, json={"employee": "101", "number": "1"}
    )
    assert status == 403
    assert "'originate'" in body["error"]["message"]


async def test_wrong_credentials_are_401_before_any_scope(make_api: Maker) -> None:
    api = await scoped_api(make_api)
    status, body = await status_and_body(api, "GET", "/metrics", bearer("nobody-0123456789"))
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    # /healthz stays open.
    async with api.client.get("/healthz") as response:
        assert response.status in (200, 503)
        assert (await response.json())["database"]["writable"] is True


async def test_an_originate_client_cannot_read_the_journal(make_api: Maker) -> None:
    api = await scoped_api(make_api)
    status, body = await status_and_body(api, "GET", "/api/v1/calls/1", bearer(CALLER))
    assert status == 403
    assert "'read'" in body["error"]["message"]


async def test_every_route_has_the_scope_its_method_or_override_says(make_api: Maker) -> None:
    api = await make_api()
    seen = {}
    for route in api.app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "OPTIONS"):
            continue
        seen[(route.method, resource.canonical)] = scope_of(route.method, resource.canonical)
    assert seen[("GET", "/metrics")] == "metrics"
    assert seen[("GET", "/api/v1/calls")] == "read"
    assert seen[("PUT", "/api/v1/calls/{call_id}/comment")] == "write"
    assert seen[("POST", "/api/v1/customers:import")] == "write"
    assert seen[("POST", "/api/v1/originate")] == "originate"
    assert seen[("GET", "/api/v1/originate/{originate_id}")] == "originate"
    # Every override names a route that exists (a renamed route would silently lose it).
    assert set(OVERRIDES) <= set(seen)
    # Writes never need only read.
    assert all(scope != "read" for (method, _), scope in seen.items() if method != "GET")


def test_scopes_are_validated_naming_the_key(tmp_path: Any) -> None:
    config = tmp_path / "pbxjournal.toml"
    config.write_text(
        '[[http.clients]]\nname = "m"\ntoken = "abc"\nscopes = ["metrics", "admin"]\n'
        '[[http.clients]]\nname = "n"\ntoken = "abcd"\nscopes = []\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as failure:
        load_settings(config, environ={})
    text = str(failure.value)
    assert "http.clients[0].scopes[1]: expected one of read, write, originate, metrics" in text
    assert "http.clients[1].scopes: must name at least one of" in text


def test_scopes_default_to_read_and_write(tmp_path: Any) -> None:
    config = tmp_path / "pbxjournal.toml"
    config.write_text(
        '[[http.clients]]\nname = "old"\ntoken = "abc"\n'
        '[[http.clients]]\nname = "new"\ntoken = "abcd"\nscopes = ["originate", "read"]\n',
        encoding="utf-8",
    )
    settings = load_settings(config, environ={})
    assert [c.scopes for c in settings.http.clients] == [("read", "write"), ("originate", "read")]


def test_originate_settings_are_checked_naming_the_key(tmp_path: Any) -> None:
    config = tmp_path / "pbxjournal.toml"
    config.write_text(
        "[originate]\n"
        'channel = "PJSIP/{ext}"\n'
        'context = "from internal"\n'
        'exten = "{national}{country}"\n'
        'timeout = "0s"\n'
        "allow = '+7('\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as failure:
        load_settings(config, environ={})
    problems = failure.value.problems
    assert any(p.startswith("originate.channel: unknown field {ext}") for p in problems)
    assert any(p.startswith("originate.context: expected a context name") for p in problems)
    assert any(p.startswith("originate.exten: unknown field {country}") for p in problems)
    assert any(p.startswith("originate.timeout:") for p in problems)
    assert any(p.startswith("originate.allow: invalid regular expression") for p in problems)
    environ = {"PBXJOURNAL_ORIGINATE__CHANNEL": "Local/101@from-internal"}
    with pytest.raises(ConfigError) as missing:
        load_settings(None, environ=environ)
    (problem,) = missing.value.problems
    assert problem.startswith("PBXJOURNAL_ORIGINATE__CHANNEL (originate.channel): must contain")
