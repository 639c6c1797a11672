"""``DELETE /api/v1/calls/{id}/comment``: removes the comment; a second delete is a no-op that
keeps the version; from a browser session only with its CSRF token (the panel's "Удалить")."""

from __future__ import annotations

import re

from httpd.web import ACCOUNTS
from tests.http_support import Maker
from tests.test_web_auth import sign_in


async def test_deleting_a_comment_then_deleting_again_changes_nothing(make_api: Maker) -> None:
    api = await make_api()
    (call,) = await api.calls(q="79057778899")
    path = f"/api/v1/calls/{call['id']}/comment"
    saved = await api.put(path, {"text": "Клиент просил КП"})
    last = (await api.get("/api/v1/changes?since=0&limit=500"))["last_version"]

    removed = await api.call("DELETE", path)
    assert removed == {"id": call["id"], "comment": None, "version": removed["version"]}
    assert removed["version"] > saved["version"]
    shown = await api.get(f"/api/v1/calls/{call['id']}")
    assert shown["comment"] is None and shown["version"] == removed["version"]
    changed = await api.get(f"/api/v1/changes?since={last}")
    assert [c["id"] for c in changed["items"]] == [call["id"]]

    again = await api.call("DELETE", path)
    assert again == removed  # the same version: nothing changed
    assert (await api.get(f"/api/v1/calls/{call['id']}"))["version"] == removed["version"]
    nothing = await api.get(f"/api/v1/changes?since={changed['last_version']}")
    assert nothing["items"] == []

    missing = await api.call("DELETE", "/api/v1/calls/424242/comment", status=404)
    assert missing["error"]["code"] == "call_not_found"
    bad = await api.call("DELETE", "/api/v1/calls/x/comment", status=400)
    assert bad["error"]["code"]


async def test_a_session_deletes_a_comment_only_with_its_csrf_token(make_api: Maker) -> None:
    api = await make_api()
    await api.app[ACCOUNTS].add("anna", "101", "correct horse", admin=False)
    (call,) = await api.calls(q="79057778899")
    path = f"/api/v1/calls/{call['id']}/comment"
    await api.put(path, {"text": "перезвонить"})
    assert (await sign_in(api, "anna", "correct horse")).status == 303
    page = await api.client.get("/")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', await page.text())
    assert csrf is not None

    refused = await api.client.delete(path)
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "csrf_failed"
    forged = await api.client.delete(path, headers={"X-CSRF-Token": "forged"})
    assert forged.status == 403
    assert (await api.get(f"/api/v1/calls/{call['id']}"))["comment"] == "перезвонить"

    accepted = await api.client.delete(path, headers={"X-CSRF-Token": csrf.group(1)})
    assert accepted.status == 200
    assert (await accepted.json())["comment"] is None
    assert (await api.get(f"/api/v1/calls/{call['id']}"))["comment"] is None
