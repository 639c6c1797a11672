"""The HTTP conversation of docs/1c.md's BSL, replayed against the real server.

1C cannot run here, so this sends exactly what the BSL sends — methods, paths and query
strings as ``КодироватьСтроку(..., КодировкаURL)`` writes them, the headers of
``ЖурналЗвонков.НовыйЗапрос`` and ``Отправить``, bodies as ``ЗаписатьJSON`` writes a
``Структура`` — in the order of the guide, and checks that each answer is what the BSL then
reads: status codes it branches on, ``Content-Type`` it checks before parsing, the fields and
their JSON types.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from yarl import URL

from tests.http_support import TOKEN, Api, Maker, originating_api

#: ЖурналЗвонков.НовыйЗапрос: the token in the header, no user and password.
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
#: Отправить: a JSON body in UTF-8 without a BOM.
JSON_HEADERS = {**HEADERS, "Content-Type": "application/json; charset=utf-8"}


def url_encoded(value: str) -> str:
    """КодироватьСтроку(Значение, СпособКодированияСтроки.КодировкаURL)."""
    return quote(value, safe="")


def bsl_json(value: Any) -> bytes:
    """ЗаписатьJSON of a Структура / Массив, in UTF-8 (УстановитьТелоИзСтроки, no BOM)."""
    return json.dumps(value, ensure_ascii=False, indent="\t").encode("utf-8")


class Bsl:
    """What ЖурналЗвонков's helpers send and how ПрочитатьОтвет reads the answer."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.base = str(api.client.make_url("/")).rstrip("/")

    async def request(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, str, dict[str, str], bytes]:
        url = URL(self.base + path, encoded=True)  # as written, never re-encoded
        headers = JSON_HEADERS if body is not None else HEADERS
        data = bsl_json(body) if body is not None else None
        session: aiohttp.ClientSession = self.api.client.session
        async with session.request(method, url, headers=headers, data=data) as response:
            raw = await response.read()
            return response.status, response.content_type, dict(response.headers), raw

    async def read(self, method: str, path: str, body: Any = None, *, status: int = 200) -> Any:
        """Отправить / Получить: ПрочитатьОтвет checks the type before parsing."""
        code, content_type, _headers, raw = await self.request(method, path, body)
        assert content_type == "application/json", (code, content_type, raw[:200])
        data = json.loads(raw.decode("utf-8"))
        assert code == status, (code, data)
        if code >= 400:
            assert isinstance(data["error"]["code"], str)
            assert isinstance(data["error"]["message"], str)
        return data


def date_from_json(text: str) -> datetime:
    """ДатаИзJSON: XMLЗначение(Тип("Дата"), Лев(Строка, 19))."""
    return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")


def write_call(call: dict[str, Any]) -> dict[str, Any]:
    """ЗаписатьЗвонок: every field it reads, with the type it expects."""
    assert isinstance(call["id"], int)
    date_from_json(call["started_at"])
    assert call["direction"] in ("incoming", "outgoing", "internal")
    assert call["status"] in ("answered", "reached", "no_answer", "lost", "cancelled")
    assert isinstance(call["status_label"], str)
    assert call["number"] is None or isinstance(call["number"], str)
    customer = call["customer"]
    assert customer is None or (
        isinstance(customer["id"], str) and isinstance(customer["name"], str)
    )
    codes = []
    for employee in call["employees"]:
        assert isinstance(employee["id"], str) and employee["role"] in (
            "placed",
            "answered",
            "rang",
        )
        if employee["role"] != "rang":
            codes.append(employee["id"])
    assert isinstance(call["talk_seconds"], int | float)
    assert isinstance(call["first_contact"], bool) and isinstance(call["attention"], bool)
    assert call["comment"] is None or isinstance(call["comment"], str)
    assert isinstance(call["recordings"], list)
    assert isinstance(call["version"], int)
    return {"id": call["id"], "employees": ",".join(codes), "version": call["version"]}


async def test_the_bsl_conversation_of_the_1c_guide(make_api: Maker) -> None:
    api = await make_api()
    bsl = Bsl(api)

    # ВыгрузитьКлиентов: the catalog (no groups, none marked for deletion) in one import...
    vector = str(uuid.UUID(int=10))
    exported = [
        {
            "id": vector,
            "name": "АО Вектор",
            "numbers": ["+7 903 555-66-77"],
            "contacts": [
                {"id": str(uuid.UUID(int=11)), "name": "Сидоров Олег", "numbers": ["89057778899"]}
            ],
        }
    ]
    imported = await bsl.read("POST", "/api/v1/customers:import", exported)
    assert imported["imported"] == 1 and isinstance(imported["changed_calls"], int)
    # ...then a DELETE for each customer sent before and gone from 1C now (the seeded c-1).
    deleted = await bsl.read("DELETE", "/api/v1/customers/c-1")
    assert deleted["deleted"] is True
    repeated = await bsl.read("DELETE", "/api/v1/customers/c-1")
    assert repeated["deleted"] is False and isinstance(repeated["last_version"], int)

    # ОбновитьЖурналЗвонков: from version 0 and no journal_id, pages of 500, wait=25.
    version, journal = 0, ""
    register: dict[int, dict[str, Any]] = {}
    while True:
        path = f"/api/v1/changes?since={version}&limit=500&wait=25"
        if journal:
            path += f"&journal_id={url_encoded(journal)}"
        page = await bsl.read("GET", path)
        for call in page["items"]:
            register[call["id"]] = write_call(call)
        assert isinstance(page["last_version"], int) and isinstance(page["journal_id"], str)
        version, journal = page["last_version"], page["journal_id"]
        if len(page["items"]) < 500:  # the next request would wait for a change
            break
    assert register and version == await api.journal.last_version()
    assert any(row["employees"] for row in register.values())

    # The next poll waits; a comment saved meanwhile wakes it with that row.
    some = next(iter(register))
    path = f"/api/v1/changes?since={version}&limit=500&wait=25&journal_id={url_encoded(journal)}"
    waiting = asyncio.create_task(bsl.read("GET", path))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    saved = await bsl.read("PUT", f"/api/v1/calls/{some}/comment", {"text": "перезвонить"})
    page = await asyncio.wait_for(waiting, 10)
    assert [c["id"] for c in page["items"]] == [some]
    assert write_call(page["items"][0])["version"] == saved["version"] == page["last_version"]

    # 409 before any parsing: a saved version ahead of the journal, or another journal_id.
    for ahead in (
        f"/api/v1/changes?since={version + 1000}&limit=500&wait=25"
        f"&journal_id={url_encoded(journal)}",
        f"/api/v1/changes?since={version}&limit=500&wait=25"
        f"&journal_id={url_encoded(str(uuid.uuid4()))}",
    ):
        changed = await bsl.read("GET", ahead, status=409)
        assert changed["error"]["code"] == "journal_changed"

    # ПолучитьЧастьЗаписи: the whole part, a wav the player opens.
    # (The journal form's search finds the call: q as КодироватьСтроку writes it.)
    found = await bsl.read(
        "GET", "/api/v1/calls?q=" + url_encoded("+7 905 777-88-99") + "&limit=50"
    )
    (listed,) = found["items"]
    blind = await bsl.read("GET", f"/api/v1/calls/{listed['id']}")
    part = blind["recordings"][0]
    status, content_type, _headers, body = await bsl.request("GET", part["url"])
    assert (status, content_type) == (200, "audio/wav") and body[:4] == b"RIFF"
    # A 404 is JSON with its code (КодОшибки tells recording_missing from the others).
    missing = await bsl.read("GET", "/api/v1/recordings/999999", status=404)
    assert missing["error"]["code"] == "recording_not_found"

    # СкачатьЗаписьНаСервере: the merged mp3, its name from filename*.
    await bsl.read("PUT", "/api/v1/employees/101", {"name": "Иванова Анна", "extensions": ["101"]})
    status, content_type, headers, body = await bsl.request(
        "GET", f"/api/v1/calls/{blind['id']}/recording?format=mp3"
    )
    assert (status, content_type) == (200, "audio/mpeg") and body
    disposition = headers["Content-Disposition"]
    position = disposition.find("filename*=UTF-8''")
    assert position >= 0
    name = unquote(disposition[position + 17 :])
    assert name.startswith(blind["started_at"][:10]) and name.endswith("_Иванова-Анна.mp3")

    # ЗарегистрироватьКлиентаНаСервере: the catalog's numbers plus НомерИзЗвонка.
    romashka = str(uuid.UUID(int=1))
    number_from_call = "79161234567"
    registered = await bsl.read(
        "PUT",
        f"/api/v1/customers/{romashka}",
        {"name": "ООО Ромашка", "numbers": ["+7 926 555-00-11", number_from_call], "contacts": []},
    )
    assert registered["changed_calls"] >= 1
    owner = await bsl.read("GET", f"/api/v1/numbers/{url_encoded(number_from_call)}")
    assert owner["registered"] is True and owner["customer"]["id"] == romashka

    # ПрисвоитьНомерНаСервере: "+7 (916) 123-45-67" in the path; taken from Ромашка.
    bound = await bsl.read(
        "PUT",
        f"/api/v1/numbers/{url_encoded('+7 (916) 123-45-67')}",
        {"customer_id": vector},
    )
    assert bound["moved_from"] == {"customer_id": romashka, "contact_id": None}
    assert isinstance(bound["changed_calls"], int) and bound["customer"]["name"] == "АО Вектор"

    # A wrong parameter: a JSON 400 naming it, which ПрочитатьОтвет raises with.
    wrong = await bsl.read("GET", "/api/v1/calls?" + "kind=" + url_encoded("входящие"), status=400)
    assert "kind" in wrong["error"]["message"]


async def test_the_bsl_call_back_command(make_api: Maker) -> None:
    """Section 8's «Перезвонить»: ПерезвонитьНаСервере posts the employee's Код and the
    call's id; ПроверитьПерезвон reads the url it was given until the state is final."""
    async with contextlib.AsyncExitStack() as stack:
        api = await originating_api(make_api, stack)
        bsl = Bsl(api)
        (lost,) = [c for c in await api.calls(kind="lost") if c["number"] == "+79267001122"]
        state = await bsl.read(
            "POST", "/api/v1/originate", {"employee": "101", "call_id": lost["id"]}, status=202
        )
        assert state["state"] == "ringing_employee"
        assert isinstance(state["state_label"], str) and state["state_label"]
        assert state["callback_of"] == lost["id"]
        assert state["url"] == f"/api/v1/originate/{state['id']}"
        again = await bsl.read("GET", state["url"])
        assert again["state"] in ("ringing_employee", "dialling_customer", "talking", "finished")
        # A number that is not one: Отправить raises with the message naming it.
        refused = await bsl.read(
            "POST", "/api/v1/originate", {"employee": "101", "number": "нет"}, status=422
        )
        assert refused["error"]["code"] == "invalid_number"
