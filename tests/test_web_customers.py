"""The directory reads the web journal's registration needs, over HTTP: the customers'
type-ahead (``GET /api/v1/customers?q=``) and one customer with its contact persons
(``GET /api/v1/customers/{id}``), on SQLite and PostgreSQL; and that a full import from 1C
keeps the customers the web journal created (``web-`` ids).

The browser side is tests/test_web_journal.py::test_registering_a_number_from_the_journal.
"""

from __future__ import annotations

import pytest

from tests.db import ENGINES
from tests.http_support import Maker


@pytest.mark.parametrize("engine", ENGINES)
async def test_customers_are_found_as_one_types_and_read_with_their_contacts(
    engine: str, make_api: Maker
) -> None:
    api = await make_api(engine)
    await api.put(
        "/api/v1/customers/c-nezabudka",
        {
            "name": "ООО Незабудка",
            "numbers": ["8 (495) 111-22-33"],
            "contacts": [{"id": "p-1", "name": "Ёжиков Пётр", "numbers": ["89161112233"]}],
        },
    )
    await api.put("/api/v1/customers/c-kvazar", {"name": "АО Квазар"})

    def names(answer: dict[str, list[dict[str, str]]]) -> list[str]:
        return [item["id"] for item in answer["items"]]

    # Case- and ё-insensitive, in the name or a contact person's name; empty finds nothing.
    assert names(await api.get("/api/v1/customers", params={"q": "незабуд"})) == ["c-nezabudka"]
    assert names(await api.get("/api/v1/customers", params={"q": "ежиков"})) == ["c-nezabudka"]
    assert names(await api.get("/api/v1/customers", params={"q": "КВАЗ"})) == ["c-kvazar"]
    assert names(await api.get("/api/v1/customers", params={"q": ""})) == []
    assert (await api.get("/api/v1/customers", params={"q": "о", "limit": 1}))["items"] == [
        {"id": "c-kvazar", "name": "АО Квазар"}
    ]

    customer = await api.get("/api/v1/customers/c-nezabudka")
    assert customer == {
        "id": "c-nezabudka",
        "name": "ООО Незабудка",
        "numbers": ["+74951112233"],
        "contacts": [{"id": "p-1", "name": "Ёжиков Пётр", "numbers": ["+79161112233"]}],
    }
    missing = await api.get("/api/v1/customers/nobody", status=404)
    assert missing["error"]["code"] == "customer_not_found"


async def test_a_full_import_from_1c_keeps_the_customers_made_in_the_web_journal(
    make_api: Maker,
) -> None:
    api = await make_api()
    await api.put("/api/v1/customers/web-1b2c", {"name": "ИП Новиков", "numbers": ["89057778899"]})
    await api.call(
        "POST",
        "/api/v1/customers:import",
        json=[{"id": "c-10", "name": "АО Вектор", "numbers": ["+7 903 555-66-77"]}],
    )
    kept = await api.get("/api/v1/customers/web-1b2c")
    assert kept["numbers"] == ["+79057778899"]
    owner = await api.get("/api/v1/numbers/79057778899")
    assert owner["customer"]["id"] == "web-1b2c"
