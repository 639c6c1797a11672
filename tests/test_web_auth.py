"""Signing in to the web journal, over HTTP: sessions, CSRF, the failure slowdown.

The browser side is tests/test_web_journal.py; here the real app over a seeded journal and
aiohttp's client, which keeps cookies as a browser does.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import make_mocked_request

from httpd.web import ACCOUNTS
from httpd.web.accounts import FREE_FAILURES, hash_password, verify_password
from httpd.web.session import client_address, over_tls
from tests.http_support import Api, Maker


async def sign_in(api: Api, login: str, password: str, **headers: str) -> Any:
    page = await api.client.get("/login")
    form = re.search(r'name="form" value="([^"]+)"', await page.text())
    assert form is not None
    return await api.client.post(
        "/login",
        data={"login": login, "password": password, "form": form.group(1), "next": "/"},
        allow_redirects=False,
        headers=headers,
    )


async def with_user(make_api: Maker, **kwargs: Any) -> Api:
    api = await make_api(**kwargs)
    await api.app[ACCOUNTS].add("anna", "101", "correct horse", admin=False)
    return api


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", first)
    assert not verify_password("correct horsE", first)
    assert not verify_password("x", "garbage")


async def test_pages_need_a_session_but_the_sign_in_page(make_api: Maker) -> None:
    api = await with_user(make_api)
    response = await api.client.get("/?kind=lost", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login?next=%2F%3Fkind%3Dlost"
    login = await api.client.get("/login")
    assert login.status == 200
    assert "script-src 'self'" in login.headers["Content-Security-Policy"]
    assert (await api.client.get("/static/journal.js")).status == 200
    # The API without credentials is still a 401, and so is an unknown path.
    assert (await api.client.get("/api/v1/calls")).status == 401
    assert (await api.client.get("/static/nothing.js")).status == 404


async def test_a_session_reads_the_api_and_writes_only_with_its_csrf_token(
    make_api: Maker,
) -> None:
    api = await with_user(make_api)
    response = await sign_in(api, "anna", "correct horse")
    assert response.status == 303 and response.headers["Location"] == "/"
    cookie = response.cookies["pbxjournal_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]

    page = await api.client.get("/")
    assert page.status == 200
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', await page.text())
    assert csrf is not None
    calls = await api.client.get("/api/v1/calls")
    assert calls.status == 200
    call_id = (await calls.json())["items"][0]["id"]

    url = f"/api/v1/calls/{call_id}/comment"
    refused = await api.client.put(url, json={"text": "перезвонить"})
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "csrf_failed"
    wrong = await api.client.put(url, json={"text": "x"}, headers={"X-CSRF-Token": "forged"})
    assert wrong.status == 403
    accepted = await api.client.put(
        url, json={"text": "перезвонить"}, headers={"X-CSRF-Token": csrf.group(1)}
    )
    assert accepted.status == 200

    # Signing out ends the session on the server: the old cookie opens nothing.
    await api.client.post("/logout", data={"csrf": csrf.group(1)}, allow_redirects=False)
    async with ClientSession() as other:
        stale = await other.get(
            api.url("/api/v1/calls"), cookies={"pbxjournal_session": cookie.value}
        )
        assert stale.status == 401


async def test_a_wrong_password_answers_as_an_unknown_user_and_is_slowed_down(
    make_api: Maker,
) -> None:
    api = await with_user(make_api)
    wrong = await sign_in(api, "anna", "wrong password")
    nobody = await sign_in(api, "nobody", "wrong password")
    assert wrong.status == nobody.status == 401
    text = (await wrong.text()).replace("anna", "?")
    assert (
        text.split('name="form"')[0]
        == (await nobody.text()).replace("nobody", "?").split('name="form"')[0]
    )
    for _ in range(FREE_FAILURES - 1):
        await sign_in(api, "anna", "wrong password")
    # Now even the right password waits: the count is per login and per address.
    slowed = await sign_in(api, "anna", "correct horse")
    assert slowed.status == 429
    assert int(slowed.headers["Retry-After"]) >= 1
    assert "Слишком много неудачных попыток" in await slowed.text()


async def test_a_form_posted_from_elsewhere_signs_nobody_in(make_api: Maker) -> None:
    api = await with_user(make_api)
    response = await api.client.post(
        "/login",
        data={"login": "anna", "password": "correct horse", "form": "guess"},
        allow_redirects=False,
    )
    assert response.status == 400
    assert "pbxjournal_session" not in response.cookies


def test_tls_is_believed_only_from_a_trusted_proxy() -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.1.1.7"}
    request = make_mocked_request("POST", "/login", headers=forwarded).clone(remote="10.0.0.2")
    peer = "10.0.0.2"
    assert over_tls(request, (peer,))
    assert client_address(request, (peer,)) == "10.1.1.7"
    assert not over_tls(request, ())
    assert client_address(request, ()) == peer


async def test_the_page_preloads_its_modules_and_the_static_files_are_cached(
    make_api: Maker,
) -> None:
    """The modules come in one round (modulepreload), the versioned URLs are kept by the
    browser, the others are revalidated with a 304 (docs/benchmarks.md: the page's first
    rows waited ~150 ms for three rounds of module downloads)."""
    api = await with_user(make_api)
    await sign_in(api, "anna", "correct horse")
    html = await (await api.client.get("/")).text()
    version = re.search(r'/static/journal\.js\?v=([0-9a-f]+)"', html)
    assert version is not None
    preloaded = set(re.findall(r'<link rel="modulepreload" href="/static/([a-z]+\.js)">', html))
    assert {"api.js", "rows.js", "format.js", "panel.js"} <= preloaded
    assert "journal.js" not in preloaded
    kept = await api.client.get(f"/static/journal.js?v={version.group(1)}")
    assert "immutable" in kept.headers["Cache-Control"]
    module = await api.client.get("/static/api.js")
    assert module.headers["Cache-Control"] == "no-cache"
    again = await api.client.get(
        "/static/api.js", headers={"If-None-Match": module.headers["ETag"]}
    )
    assert again.status == 304 and await again.read() == b""
    stale = await api.client.get("/static/api.js", headers={"If-None-Match": '"old-api.js"'})
    assert stale.status == 200 and await stale.read()
