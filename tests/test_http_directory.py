"""The edges of 1C's directory over HTTP: an extension moving between employees, removing an
employee, a number taken from another customer, a comment that changes nothing, the
download's ASCII file name, ``last_version`` never null, and the API's index at ``/api/v1/``.

The real app on a real port over the journal seeded from the captures (tests/http_support.py);
employees 101–104 come from the test configuration's ``[employees]``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest

from httpd.recordings import attachment_header, transliterate
from tests.db import ENGINES
from tests.http_support import Api, Maker


async def staff(api: Api) -> dict[str, Any]:
    return {e["id"]: e for e in (await api.get("/api/v1/employees"))["items"]}


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_extension_moves_and_the_employee_it_left_is_kept_and_named(
    engine: str, make_api: Maker
) -> None:
    api = await make_api(engine)
    moved = await api.put(
        "/api/v1/employees/ivanova", {"name": "Иванова Анна", "extensions": ["101", "201"]}
    )
    assert moved == {
        "id": "ivanova",
        "name": "Иванова Анна",
        "extensions": ["101", "201"],
        "mobile": [],
        "moved_from": [{"id": "101", "extensions": ["101"], "extensions_left": []}],
    }
    employees = await staff(api)
    assert employees["ivanova"]["extensions"] == ["101", "201"]
    assert employees["101"] == {"id": "101", "name": "Ivanova Anna", "extensions": [], "mobile": []}
    # The calls of extension 101 now name its new owner.
    mine = await api.calls(employee="ivanova")
    assert mine
    assert {e["id"] for c in mine for e in c["employees"] if e["extension"] == "101"} == {"ivanova"}
    # Saving the same again moves nothing.
    again = await api.put(
        "/api/v1/employees/ivanova", {"name": "Иванова Анна", "extensions": ["101", "201"]}
    )
    assert again["moved_from"] == []
    # Taking one of two extensions: the other stays with its employee, and the answer says so.
    await api.put("/api/v1/employees/102", {"name": "Petrov Ivan", "extensions": ["102", "112"]})
    partly = await api.put("/api/v1/employees/petrov", {"name": "Петров", "extensions": ["112"]})
    assert partly["moved_from"] == [
        {"id": "102", "extensions": ["112"], "extensions_left": ["102"]}
    ]


@pytest.mark.parametrize("engine", ENGINES)
async def test_deleting_an_employee_frees_the_extensions_and_a_second_delete_says_so(
    engine: str, make_api: Maker
) -> None:
    api = await make_api(engine)
    await api.put("/api/v1/employees/101", {"name": "Иванова Анна", "extensions": ["101"]})
    assert await api.calls(q="иванова")
    gone = await api.call("DELETE", "/api/v1/employees/101")
    assert gone == {"id": "101", "deleted": True}
    assert "101" not in await staff(api)
    # Search no longer finds the calls by the name; the extension still finds them.
    assert await api.calls(q="иванова") == []
    assert await api.calls(q="101")
    again = await api.call("DELETE", "/api/v1/employees/101")
    assert again == {"id": "101", "deleted": False}
    # The freed extension can be given to someone else; nobody is reported as its old owner.
    taken = await api.put("/api/v1/employees/anna", {"name": "Анна", "extensions": ["101"]})
    assert taken["moved_from"] == []


async def test_binding_a_number_of_another_customer_says_whose_it_was(make_api: Maker) -> None:
    api = await make_api()
    await api.put("/api/v1/customers/c-2", {"name": "ООО Лютик"})
    fresh = await api.put("/api/v1/numbers/79031234567", {"customer_id": "c-1"})
    assert fresh["moved_from"] is None
    taken = await api.put("/api/v1/numbers/8 903 123-45-67", {"customer_id": "c-2"})
    assert taken["moved_from"] == {"customer_id": "c-1", "contact_id": None}
    assert taken["customer"]["id"] == "c-2"
    same = await api.put("/api/v1/numbers/+79031234567", {"customer_id": "c-2"})
    assert same["moved_from"] is None
    # From a contact person of c-1 (the seeded Иванов Пётр) to c-1 itself is a move too.
    contact = await api.put("/api/v1/numbers/89161234567", {"customer_id": "c-1"})
    assert contact["moved_from"] == {"customer_id": "c-1", "contact_id": "p-1"}


async def test_a_comment_that_changes_nothing_keeps_the_version(make_api: Maker) -> None:
    api = await make_api()
    (call,) = await api.calls(q="79057778899")
    assert call["comment"] is None
    path = f"/api/v1/calls/{call['id']}/comment"
    last = await api.journal.last_version()
    cleared = await api.put(path, {"text": ""})
    assert cleared == {"id": call["id"], "comment": None, "version": call["version"]}
    assert (await api.put(path, {"text": None}))["version"] == call["version"]
    assert await api.journal.last_version() == last
    changes = await api.get("/api/v1/changes", params={"since": last})
    assert changes["items"] == []
    saved = await api.put(path, {"text": "перезвонить"})
    assert saved["version"] > call["version"]
    same = await api.put(path, {"text": "перезвонить"})
    assert same["version"] == saved["version"]
    removed = await api.put(path, {"text": ""})
    assert removed["version"] > saved["version"]
    assert (await api.put(path, {"text": ""}))["version"] == removed["version"]


@pytest.mark.parametrize("engine", ENGINES)
async def test_last_version_is_the_journals_when_nothing_changed(
    engine: str, make_api: Maker
) -> None:
    api = await make_api(engine)
    body = {"name": "ООО Ромашка", "numbers": ["+7 926 555-00-11"]}
    first = await api.put("/api/v1/customers/c-1", body)
    assert isinstance(first["last_version"], int)
    repeated = await api.put("/api/v1/customers/c-1", body)
    current = await api.journal.last_version()
    assert repeated == {"id": "c-1", "changed_calls": 0, "last_version": current}
    imported = await api.call("POST", "/api/v1/customers:import", json=[{"id": "c-1", **body}])
    assert imported == {"imported": 1, "changed_calls": 0, "last_version": current}
    await api.call("DELETE", "/api/v1/customers/c-1")
    current = await api.journal.last_version()
    second = await api.call("DELETE", "/api/v1/customers/c-1")
    assert second == {"id": "c-1", "deleted": False, "changed_calls": 0, "last_version": current}
    unbound = await api.call("DELETE", "/api/v1/numbers/79031234567")
    assert unbound["last_version"] == current


def test_the_ascii_file_name_is_transliterated_and_filename_star_keeps_the_utf8() -> None:
    name = "2026-11-28_06-44_+79057778899_Иванова-Анна.mp3"
    header = attachment_header(name)
    assert header == (
        'attachment; filename="2026-11-28_06-44_+79057778899_Ivanova-Anna.mp3"; '
        "filename*=UTF-8''2026-11-28_06-44_%2B79057778899_"
        "%D0%98%D0%B2%D0%B0%D0%BD%D0%BE%D0%B2%D0%B0-%D0%90%D0%BD%D0%BD%D0%B0.mp3"
    )
    assert unquote(header.split("filename*=UTF-8''", 1)[1]) == name
    # The passport scheme (ICAO Doc 9303) for the letters that differ between schemes.
    assert transliterate("Щукин Жорж Юлия Хрущёв Цой Ясный Подъячев") == (
        "Shchukin Zhorzh Iuliia Khrushchev Tsoi Iasnyi Podieiachev"
    )
    assert transliterate("ЩУКА") == "SHCHUKA"
    assert transliterate('Café "中" ё') == 'Cafe "_" e'
    quoted = attachment_header('a"b\\c中.mp3')
    assert quoted.startswith('attachment; filename="ab_c_.mp3"; ')


async def test_the_merged_download_is_named_in_latin_letters(make_api: Maker) -> None:
    api = await make_api()
    await api.put("/api/v1/employees/101", {"name": "Иванова Анна", "extensions": ["101"]})
    (listed,) = await api.calls(q="79057778899")
    async with api.client.get(
        f"/api/v1/calls/{listed['id']}/recording", headers=api.auth
    ) as response:
        await response.read()
        assert response.status == 200
        disposition = response.headers["Content-Disposition"]
    assert 'filename="2026-11-28_06-44_+79057778899_Ivanova-Anna.mp3"' in disposition


@pytest.mark.parametrize("path", ["/api/v1/", "/api/v1"])
async def test_the_api_root_is_an_index_behind_the_same_credentials(
    path: str, make_api: Maker
) -> None:
    api = await make_api()
    index = await api.get(path)
    assert index["name"] == "pbxjournal"
    assert isinstance(index["version"], str) and index["version"]
    assert index["openapi"] == "/openapi.json"
    assert index["docs"] == {"api": "docs/api.md", "1c": "docs/1c.md"}
    assert "GET /api/v1/calls" in index["endpoints"]
    assert "GET /api/v1/changes" in index["endpoints"]
    assert "DELETE /api/v1/employees/{employee_id}" in index["endpoints"]
    assert not any(e.startswith("HEAD ") for e in index["endpoints"])
    openapi = await api.get(index["openapi"])
    assert openapi["openapi"] == "3.1.0"
    refused = await api.get(path, headers={}, status=401)
    assert refused["error"]["code"] == "unauthorized"
