"""``GET /calls`` and ``GET /calls/{id}`` over HTTP, on the journal of every real capture.

Each filter and search of DESIGN section 1 is checked against an oracle: the same captures
replayed into the in-memory journal (an independent implementation of the rules), with
1C's customer "ООО Ромашка" bound to two of the numbers, one through a contact person.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from connector.assembly import Direction
from storage.search import fold, number_forms
from tests.db import ENGINES
from tests.http_support import BOUND, Maker, api_settings, memory_entries

MSK = "+03:00"


@dataclass(frozen=True)
class Row:
    linkedid: str
    started_at: float
    direction: str
    status: str
    first_contact: bool
    unregistered: bool
    attention: bool
    extensions: frozenset[str]
    names: frozenset[str]
    number_digits: str


_EMPLOYEE_NAMES = {
    "101": "Ivanova Anna",
    "102": "Petrov Ivan",
    "103": "Sidorova Maria",
    "104": "Kuznetsov Dmitry",
    "105": "Smirnova Olga",
}
_OWNERS = {
    "+79265550011": ("ООО Ромашка",),
    "+79161234567": ("ООО Ромашка", "Иванов Пётр"),
}


def oracle(tmp_path: Any) -> list[Row]:
    settings = api_settings(tmp_path)
    rows = []
    for e in memory_entries(settings):
        call = e.call
        internal = call.direction is Direction.INTERNAL
        extensions = frozenset(p.extension for p in call.participants)
        names = {_EMPLOYEE_NAMES[x] for x in extensions}
        names |= set(_OWNERS.get(e.number or "", ()))
        forms = " ".join(number_forms(e.number, "RU")) if e.number else ""
        rows.append(
            Row(
                linkedid=call.conversation_id,
                started_at=call.started_at,
                direction=call.direction.value,
                status=e.status.value,
                first_contact=e.first_contact,
                unregistered=not internal and e.number not in BOUND,
                attention=e.attention,
                extensions=extensions,
                names=frozenset(fold(n) for n in names),
                number_digits=forms,
            )
        )
    return rows


def _local(text: str) -> float:
    return datetime.fromisoformat(text + MSK).timestamp()


def _visible(row: Row) -> bool:
    return row.direction != "internal"


Case = tuple[dict[str, Any], Callable[[Row], bool]]

CASES: list[Case] = [
    ({}, _visible),
    ({"internal": "show"}, lambda r: True),
    ({"internal": "only"}, lambda r: r.direction == "internal"),
    ({"kind": "incoming"}, lambda r: r.direction == "incoming"),
    ({"kind": "outgoing"}, lambda r: r.direction == "outgoing"),
    ({"kind": "missed"}, lambda r: r.status in ("no_answer", "lost")),
    ({"kind": "lost"}, lambda r: r.status == "lost"),
    (
        {"kind": "missed,outgoing"},
        lambda r: r.status in ("no_answer", "lost") or r.direction == "outgoing",
    ),
    ({"kind": ["lost", "outgoing"]}, lambda r: r.status == "lost" or r.direction == "outgoing"),
    ({"first_contact": "true"}, lambda r: _visible(r) and r.first_contact),
    ({"first_contact": "false", "internal": "show"}, lambda r: not r.first_contact),
    ({"unregistered": "true"}, lambda r: _visible(r) and r.unregistered),
    ({"unregistered": "false"}, lambda r: _visible(r) and not r.unregistered),
    ({"attention": "true"}, lambda r: _visible(r) and r.attention),
    ({"employee": "103"}, lambda r: _visible(r) and "103" in r.extensions),
    ({"employee": "105", "internal": "show"}, lambda r: "105" in r.extensions),
    (
        {"from": "2026-11-28T06:44", "to": "2026-11-28T06:47"},
        lambda r: (
            _visible(r) and _local("2026-11-28T06:44") <= r.started_at < _local("2026-11-28T06:47")
        ),
    ),
    (
        {"from": "2026-11-28T03:45:00Z"},
        lambda r: _visible(r) and r.started_at >= _local("2026-11-28T06:45"),
    ),
    ({"from": "2026-11-28", "to": "2026-11-28"}, _visible),
    ({"from": "2026-11-29"}, lambda r: False),
    ({"to": "2026-11-27"}, lambda r: False),
    (
        {"kind": "incoming", "unregistered": "true", "employee": "101"},
        lambda r: r.direction == "incoming" and r.unregistered and "101" in r.extensions,
    ),
    (
        {"kind": "missed", "attention": "true", "first_contact": "true"},
        lambda r: r.status in ("no_answer", "lost") and r.attention and r.first_contact,
    ),
    # Search: customer, contact person (ё written as е), employee, extension, numbers.
    ({"q": "ромашка"}, lambda r: _visible(r) and "ооо ромашка" in r.names),
    ({"q": "Петр"}, lambda r: _visible(r) and "иванов петр" in r.names),
    ({"q": "Иванов Пётр"}, lambda r: _visible(r) and "иванов петр" in r.names),
    ({"q": "sidorova"}, lambda r: _visible(r) and "sidorova maria" in r.names),
    ({"q": "sidorova", "internal": "only"}, lambda r: not _visible(r) and "103" in r.extensions),
    # Internal calls alone: through the extensions' keys, whatever the numbers hold.
    ({"q": "104", "internal": "only"}, lambda r: not _visible(r) and "104" in r.extensions),
    ({"q": "Petrov Ivan", "internal": "only"}, lambda r: not _visible(r) and "102" in r.extensions),
    ({"q": "8 916 123-45-67", "internal": "only"}, lambda r: False),
    # Unregistered calls alone: numbers' and extensions' keys, never a customer's.
    ({"q": "ромашка", "unregistered": "true"}, lambda r: False),
    (
        {"q": "104", "unregistered": "true"},
        lambda r: r.unregistered and ("104" in r.extensions or "104" in r.number_digits),
    ),
    (
        {"q": "ромашка", "unregistered": "false"},
        lambda r: _visible(r) and not r.unregistered and "ооо ромашка" in r.names,
    ),
    ({"q": "8 916 123-45-67"}, lambda r: _visible(r) and "79161234567" in r.number_digits),
    ({"q": "+7 (926) 555-00-11"}, lambda r: _visible(r) and "79265550011" in r.number_digits),
    ({"q": "1234567"}, lambda r: _visible(r) and "1234567" in r.number_digits),
    ({"q": "104"}, lambda r: _visible(r) and ("104" in r.extensions or "104" in r.number_digits)),
    (
        {"q": "ромашка", "kind": "outgoing"},
        lambda r: r.direction == "outgoing" and "ооо ромашка" in r.names,
    ),
    ({"q": "нет-такого-клиента"}, lambda r: False),
]


@pytest.mark.parametrize("engine", ENGINES)
async def test_every_filter_and_search_of_the_journal(
    engine: str, make_api: Maker, tmp_path: Any
) -> None:
    api = await make_api(engine)
    rows = oracle(tmp_path)
    assert len(rows) == 70
    for params, wanted in CASES:
        got = await api.calls(**params)
        expected = {r.linkedid for r in rows if wanted(r)}
        assert [c["linkedid"] for c in got if c["linkedid"] not in expected] == [], params
        assert {c["linkedid"] for c in got} == expected, params
        assert len(got) == len(expected), f"duplicates for {params}"
        keys = [(c["started_at"], c["id"]) for c in got]
        assert keys == sorted(keys, reverse=True), f"not newest first for {params}"


async def test_journal_rows_show_what_1c_displays(make_api: Maker) -> None:
    api = await make_api()
    (bound,) = await api.calls(q="Пётр", kind="incoming")
    assert bound["customer"] == {
        "id": "c-1",
        "name": "ООО Ромашка",
        "contact": {"id": "p-1", "name": "Иванов Пётр"},
    }
    assert bound["unregistered"] is False
    assert bound["status"] == "answered" and bound["status_label"] == "Принят"
    assert bound["started_at"].endswith("+03:00")
    assert [e["name"] for e in bound["employees"]] == ["Ivanova Anna"]
    lost = await api.calls(kind="lost")
    assert lost and all(c["status_label"] == "Потерян" and c["attention"] for c in lost)
    assert all(c["customer"] is None and c["unregistered"] for c in lost)


async def test_one_call_with_its_timeline_of_legs_transfers_and_parts(make_api: Maker) -> None:
    api = await make_api()
    (listed,) = await api.calls(q="79057778899")  # capture 11: blind transfer 101 → 103
    call = await api.get(f"/api/v1/calls/{listed['id']}")
    assert {k: v for k, v in call.items() if k not in ("timeline", "recording_url")} == listed
    timeline = call["timeline"]
    assert [(p["extension"], p["role"]) for p in timeline["participants"]] == [
        ("101", "answered"),
        ("103", "answered"),
    ]
    assert [leg["extension"] for leg in timeline["legs"]] == ["101", "103"]
    assert [t["kind"] for t in timeline["transfers"]] == ["blind"]
    parts = timeline["recordings"]
    assert [(p["part"], p["available"]) for p in parts] == [(1, True), (2, True)]
    assert parts[1]["offset_seconds"] == pytest.approx(12.6, abs=0.2)
    assert call["recording_url"] == f"/api/v1/calls/{listed['id']}/recording"


async def test_unknown_call_and_bad_parameters_are_named_4xx(make_api: Maker) -> None:
    api = await make_api()
    missing = await api.get("/api/v1/calls/999999", status=404)
    assert missing["error"]["code"] == "call_not_found"
    for query, needle in [
        ("kind=sideways", "kind"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("first_contact=maybe", "first_contact"),
        ("internal=all", "internal"),
        ("from=yesterday", "from"),
        ("from=2026-11-30&to=2026-11-28", "from"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=WyIxZTMwMCIsIDEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwXQ", "cursor"),
        ("q=%00", "q"),
        ("kinds=incoming", "kinds"),
        ("limit=1&limit=2", "limit"),
    ]:
        error = await api.get(f"/api/v1/calls?{query}", status=400)
        assert needle in error["error"]["message"], (query, error)
    bad_id = await api.get("/api/v1/calls/99999999999999999999", status=400)
    assert bad_id["error"]["code"] == "invalid_parameter"
    nowhere = await api.get("/api/v1/nowhere", status=404)
    assert nowhere["error"]["code"] == "not_found"
    wrong = await api.call("DELETE", "/api/v1/calls", status=405)
    assert wrong["error"]["code"] == "method_not_allowed"
