"""``GET /changes`` and what bumps versions: new calls, comments, binding, customers.

The long-poll tests write calls the way the daemon does (``journal.write`` then
``feed.committed``), from a second process's journal on the same SQLite file (no
notification: the version probe finds it), and from a second feed on the same PostgreSQL
(LISTEN/NOTIFY).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import aiohttp
import pytest

from connector.assembly import Direction
from httpd.app import change_feed, init_app
from httpd.feed import FeedTiming
from httpd.keys import WORKERS
from storage import queries
from storage.engine import open_database
from tests.calls import at, make_call
from tests.db import ENGINES, make_journal
from tests.http_support import Api, Maker

_numbers = itertools.count(1)
OUT = Direction.OUTGOING


def new_call(started: float | None = None, *, number: str | None = None) -> Any:
    """A fresh incoming answered call from a number the captures never used."""
    return make_call(
        Direction.INCOMING,
        number or f"+7999{next(_numbers):07d}",
        started if started is not None else at("11-28 09:00") + next(_numbers),
        answered=True,
    )


async def drain(api: Api, since: int = 0, limit: int = 7) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    while True:
        page = await api.get("/api/v1/changes", params={"since": since, "limit": limit})
        items.extend(page["items"])
        assert page["last_version"] >= since
        if not page["items"]:
            return items, page["last_version"]
        assert [i["version"] for i in page["items"]] == sorted(i["version"] for i in page["items"])
        assert page["items"][0]["version"] > since
        since = page["last_version"]


async def write(api: Api, call: Any) -> list[Any]:
    """What the daemon does for each finished call."""
    changes = await api.journal.write(call, [], call.ended_at)
    change_feed(api.app).committed(changes)
    return changes


@pytest.mark.parametrize("engine", ENGINES)
async def test_every_bumped_row_comes_exactly_once(engine: str, make_api: Maker) -> None:
    api = await make_api(engine)
    everything, last = await drain(api)
    ids = [i["id"] for i in everything]
    assert len(ids) == len(set(ids)) == 70
    assert await drain(api, last) == ([], last)

    # A comment, a binding of a number with two calls (15: missed then called back), a new call.
    commented = ids[3]
    await api.put(f"/api/v1/calls/{commented}/comment", {"text": "перезвонить"})
    bound = await api.put("/api/v1/numbers/+79265550011", {"customer_id": "c-1"})
    assert bound["changed_calls"] == 0  # ООО Ромашка already owns it: nothing to show anew
    moved = await api.put("/api/v1/numbers/8 (903) 123-45-67", {"customer_id": "c-1"})
    assert moved["changed_calls"] == 1
    (fresh,) = {c.id for c in await write(api, new_call())}

    bumped, newest = await drain(api, last)
    rows = {i["id"]: i for i in bumped}
    assert len(bumped) == len(rows) == 3, "each changed row exactly once"
    assert rows[commented]["comment"] == "перезвонить"
    assert fresh in rows
    (rebound,) = [i for i in bumped if i["number"] == "+79031234567"]
    assert rebound["customer"]["name"] == "ООО Ромашка"
    assert await drain(api, newest) == ([], newest)


@pytest.mark.parametrize("engine", ENGINES)
async def test_binding_a_number_changes_the_rows_customer_and_versions(
    engine: str, make_api: Maker
) -> None:
    api = await make_api(engine)
    before = {c["id"]: c for c in await api.calls(q="79265550011", internal="show")}
    assert len(before) == 2 and all(c["customer"]["id"] == "c-1" for c in before.values())
    await api.put(
        "/api/v1/customers/c-2",
        {"name": "ИП Лютикова", "contacts": [{"id": "p-2", "name": "Лютикова Анна"}]},
    )
    _, since = await drain(api)
    answer = await api.put(
        "/api/v1/numbers/89265550011", {"customer_id": "c-2", "contact_id": "p-2"}
    )
    assert answer["customer"] == {
        "id": "c-2",
        "name": "ИП Лютикова",
        "contact": {"id": "p-2", "name": "Лютикова Анна"},
    }
    assert answer["changed_calls"] == 2
    after = {c["id"]: c for c in await api.calls(q="Лютикова", internal="show")}
    assert after.keys() == before.keys()
    for call_id, row in after.items():
        assert row["customer"]["id"] == "c-2" and row["unregistered"] is False
        assert row["version"] > before[call_id]["version"] > 0
        # Registration does not rewrite history: the missed call stays "no answer" / "lost".
        assert row["status"] == before[call_id]["status"]
    changed, since = await drain(api, since)
    assert {c["id"] for c in changed} == after.keys()

    owner = await api.get("/api/v1/numbers/+7 926 555 00 11")
    assert owner["registered"] and owner["customer"]["contact"]["id"] == "p-2"
    gone = await api.call("DELETE", "/api/v1/numbers/79265550011")
    assert gone["unbound"] is True and gone["changed_calls"] == 2
    assert all(c["customer"] is None for c in await api.calls(q="79265550011"))
    again = await api.call("DELETE", "/api/v1/numbers/79265550011")
    assert again == {
        "number": "+79265550011",
        "unbound": False,
        "changed_calls": 0,
        "last_version": await api.journal.last_version(),  # never null
    }
    changed, _ = await drain(api, since)
    assert len(changed) == 2
    lookup = await api.get("/api/v1/numbers/79265550011")
    assert lookup == {"number": "+79265550011", "registered": False, "customer": None}


async def test_binding_errors_name_the_problem(make_api: Maker) -> None:
    api = await make_api()
    unknown = await api.put("/api/v1/numbers/79031234567", {"customer_id": "nobody"}, status=404)
    assert unknown["error"]["code"] == "customer_not_found"
    contact = await api.put(
        "/api/v1/numbers/79031234567", {"customer_id": "c-1", "contact_id": "p-9"}, status=404
    )
    assert contact["error"]["code"] == "contact_not_found"
    word = await api.put("/api/v1/numbers/anonymous", {"customer_id": "c-1"}, status=422)
    assert word["error"]["code"] == "invalid_number"
    extra = await api.put(
        "/api/v1/numbers/79031234567", {"customer_id": "c-1", "note": "x"}, status=400
    )
    assert "note" in extra["error"]["message"]
    not_json = await api.call("PUT", "/api/v1/numbers/79031234567", data=b"{nope", status=400)
    assert not_json["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("engine", ENGINES)
async def test_customers_upsert_delete_and_idempotent_import(engine: str, make_api: Maker) -> None:
    api = await make_api(engine)
    directory = [
        {
            "id": "c-10",
            "name": "АО Вектор",
            "numbers": ["+7 903 555-66-77"],
            "contacts": [{"id": "p-10", "name": "Сидоров Олег", "numbers": ["89057778899"]}],
        },
        {"id": "c-11", "name": "ООО Меридиан", "numbers": ["74993332211"]},
    ]
    first = await api.call("POST", "/api/v1/customers:import", json=directory)
    assert first["imported"] == 2 and first["changed_calls"] == 3
    second = await api.call("POST", "/api/v1/customers:import", json=directory)
    assert second == {
        "imported": 2,
        "changed_calls": 0,
        "last_version": await api.journal.last_version(),  # never null
    }
    (transfer,) = await api.calls(q="Сидоров Олег")
    assert transfer["customer"]["contact"]["name"] == "Сидоров Олег"
    renamed = await api.put(
        "/api/v1/customers/c-11", {"name": "ООО Меридиан-Плюс", "numbers": ["74993332211"]}
    )
    assert renamed["changed_calls"] == 1
    (meridian,) = await api.calls(q="Меридиан-Плюс")
    assert meridian["customer"]["name"] == "ООО Меридиан-Плюс"
    deleted = await api.call("DELETE", "/api/v1/customers/c-11")
    assert deleted["deleted"] is True and deleted["changed_calls"] == 1
    assert await api.calls(q="Меридиан") == []
    missing = await api.call("DELETE", "/api/v1/customers/c-11")
    assert missing["deleted"] is False
    bad = await api.call(
        "POST",
        "/api/v1/customers:import",
        json=[{"id": "c-12", "name": "X", "numbers": ["нет номера"]}],
        status=422,
    )
    assert "body[0].numbers[0]" in bad["error"]["message"]
    twice = await api.put(
        "/api/v1/customers/c-13",
        {"name": "Y", "contacts": [{"id": "p", "name": "a"}, {"id": "p", "name": "b"}]},
        status=400,
    )
    assert "appears twice" in twice["error"]["message"]


async def test_comments_set_and_removed(make_api: Maker) -> None:
    api = await make_api()
    (call,) = await api.calls(q="79057778899")
    saved = await api.put(f"/api/v1/calls/{call['id']}/comment", {"text": "Клиент просил КП"})
    assert saved["version"] > call["version"]
    shown = await api.get(f"/api/v1/calls/{call['id']}")
    assert shown["comment"] == "Клиент просил КП" and shown["version"] == saved["version"]
    removed = await api.put(f"/api/v1/calls/{call['id']}/comment", {"text": ""})
    assert removed["comment"] is None
    assert (await api.get(f"/api/v1/calls/{call['id']}"))["comment"] is None
    missing = await api.put("/api/v1/calls/424242/comment", {"text": "x"}, status=404)
    assert missing["error"]["code"] == "call_not_found"
    too_long = await api.put(
        f"/api/v1/calls/{call['id']}/comment", {"text": "я" * 4001}, status=400
    )
    assert "body.text" in too_long["error"]["message"]


async def test_employees_directory(make_api: Maker) -> None:
    api = await make_api()
    before = await api.calls(employee="101")  # the directory is read, and kept a while...
    assert before and not any(e["name"] == "Иванова Анна" for c in before for e in c["employees"])
    saved = await api.put("/api/v1/employees/anna", {"name": "Иванова Анна", "extensions": ["101"]})
    assert saved == {
        "id": "anna",
        "name": "Иванова Анна",
        "extensions": ["101"],
        "mobile": [],
        "moved_from": [{"id": "101", "extensions": ["101"], "extensions_left": []}],
    }
    staff = {e["id"]: e for e in (await api.get("/api/v1/employees"))["items"]}
    assert staff["anna"]["extensions"] == ["101"]
    assert staff["101"]["extensions"] == []  # the extension moved to its new owner
    mine = await api.calls(employee="anna")  # ...but a change made here shows at once
    assert mine and all("101" in [e["extension"] for e in c["employees"]] for c in mine)
    assert any(e["name"] == "Иванова Анна" for c in mine for e in c["employees"])
    found = await api.calls(q="иванова")
    assert {c["id"] for c in found} == {c["id"] for c in mine}


@pytest.mark.parametrize("engine", ENGINES)
async def test_cursor_pages_neither_repeat_nor_skip_while_calls_arrive(
    engine: str, make_api: Maker
) -> None:
    api = await make_api(engine)
    present = {c["id"] for c in await api.calls(internal="show")}
    seen: list[int] = []
    cursor = None
    page_number = 0
    while True:
        params: dict[str, Any] = {"limit": 9, "internal": "show"}
        if cursor:
            params["cursor"] = cursor
        page = await api.get("/api/v1/calls", params=params)
        seen.extend(c["id"] for c in page["items"])
        # Between pages: a call newer than everything, and a long call that started earlier.
        await write(api, new_call(at("11-28 10:00") + page_number))
        await write(api, new_call(at("11-28 06:00") + page_number))
        page_number += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a row came twice"
    assert present <= set(seen), "a row was skipped"


@pytest.mark.parametrize("engine", ENGINES)
async def test_long_poll_wakes_on_the_commit_of_a_new_call(engine: str, make_api: Maker) -> None:
    """The daemon's own commit wakes a waiting long-poll in the same loop iteration: with the
    version probe unable to run within the wait, the call still comes at once. (Judged by the
    path that woke it; how soon in milliseconds is a benchmark's question, not a bound that a
    loaded machine blurs.)"""
    api = await make_api(engine)
    _, last = await drain(api)
    feed = change_feed(api.app)
    feed.timing = FeedTiming(probe_min=60.0, probe_max=60.0)
    probes = feed.probes
    waiting = asyncio.create_task(api.get("/api/v1/changes", params={"since": last, "wait": 10}))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    call = new_call()
    changes = await write(api, call)
    page = await asyncio.wait_for(waiting, 5)  # well within the wait: woken, not timed out
    assert [i["version"] for i in page["items"]] == [c.version for c in changes]
    assert page["last_version"] == changes[-1].version
    assert feed.probes == probes


async def test_long_poll_times_out_empty_and_reports_the_version(make_api: Maker) -> None:
    api = await make_api()
    _, last = await drain(api)
    feed = change_feed(api.app)
    queried = feed.answers_from_database
    began = time.perf_counter()
    page = await api.get("/api/v1/changes", params={"since": last, "wait": 0.3})
    assert page == {"items": [], "last_version": last, "journal_id": page["journal_id"]}
    assert 0.29 <= time.perf_counter() - began < 2
    # At the feed's version a long-poll goes straight to its wait: no query...
    assert feed.answers_from_database == queried
    # ...but a plain poll asks the database (another process may have written).
    assert await api.get("/api/v1/changes", params={"since": last}) == page
    assert feed.answers_from_database == queried + 1


async def test_many_waiting_clients_cost_one_probe_not_one_each(make_api: Maker) -> None:
    api = await make_api()
    _, last = await drain(api)
    feed = change_feed(api.app)
    url = api.url(f"/api/v1/changes?since={last}&wait=10")

    async def poll(session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(url, headers=api.auth) as response:
            assert response.status == 200
            page: dict[str, Any] = await response.json()
            return page

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        polls = [asyncio.create_task(poll(session)) for _ in range(200)]
        async with asyncio.timeout(10):
            while feed.waiting < 200:  # noqa: ASYNC110 (a test watching a counter)
                await asyncio.sleep(0.01)
        probes = feed.probes
        await asyncio.sleep(1.0)
        spent = feed.probes - probes
        assert spent <= 20, f"{spent} probes in a second for 200 waiting clients"
        await write(api, new_call())
        pages = await asyncio.wait_for(asyncio.gather(*polls), 5)
    assert all(len(p["items"]) == 1 for p in pages)


async def test_a_writer_in_another_process_wakes_a_sqlite_long_poll(make_api: Maker) -> None:
    api = await make_api()
    _, last = await drain(api)
    other = open_database(api.journal.database.url)  # as a second process would
    try:
        journal = await make_journal(other)
        waiting = asyncio.create_task(
            api.get("/api/v1/changes", params={"since": last, "wait": 10})
        )
        await asyncio.sleep(0.5)
        changes = await journal.write(new_call(), [], at("11-28 12:00"))  # nobody notified
        committed = time.perf_counter()
        page = await waiting
        delay = time.perf_counter() - committed
        assert delay < 0.25, f"the version probe took {delay:.3f} s"
        assert [i["version"] for i in page["items"]] == [c.version for c in changes]
    finally:
        await other.dispose()


async def test_a_second_daemon_on_postgresql_wakes_long_polls_by_notify(
    make_api: Maker, tmp_path: Any
) -> None:
    api = await make_api("postgresql")
    _, last = await drain(api)
    other_db = open_database(api.journal.database.url)
    other_journal = await make_journal(other_db, pbx="second")
    other_app = init_app(api.settings, other_journal, merged_cache=tmp_path / "m2")
    other_feed = change_feed(other_app)
    try:
        async with other_feed.running():
            feed = change_feed(api.app)
            for _ in range(100):
                if feed.listening and other_feed.listening:
                    break
                await asyncio.sleep(0.05)
            assert feed.listening and other_feed.listening
            # The version probe (PostgreSQL's safety net) cannot run within the long-poll's
            # 10 s: only the other daemon's NOTIFY can answer it with the call. (Judged by the
            # path that woke it, not by a wall-clock bound that a loaded machine blurs.)
            feed.timing = FeedTiming(probe_min=60.0, probe_max=60.0)
            waiting = asyncio.create_task(
                api.get("/api/v1/changes", params={"since": last, "wait": 10})
            )
            await asyncio.sleep(0.3)
            changes = await other_journal.write(new_call(), [], at("11-28 12:00"))
            other_feed.committed(changes)
            page = await waiting
            assert [item["pbx"] for item in page["items"]] == ["second"]
            assert feed.notifications_received >= 1
            assert feed.probes == 0
    finally:
        other_app[WORKERS].shutdown()
        await other_db.dispose()


async def test_changes_parameters_are_checked(make_api: Maker) -> None:
    api = await make_api()
    for query in (
        "since=-1",
        "since=x",
        "limit=0",
        "limit=1001",
        "wait=61",
        "wait=nan",
        "since=99999999999999999999",
    ):
        error = await api.get(f"/api/v1/changes?{query}", status=400)
        assert query.split("=")[0] in error["error"]["message"]


@pytest.mark.parametrize("engine", ENGINES)
async def test_the_feeds_remembered_rows_answer_as_the_database_would(
    engine: str, make_api: Maker
) -> None:
    """The daemon reads back each batch it commits and the feed keeps those rows, so that the
    long-polls it wakes are answered without a query. Every page the feed answers from them
    is the page the database gives: the same rows at the same versions, a row changed again
    later shown once at its newest version, the same cursor."""
    api = await make_api(engine)
    journal, feed = api.journal, change_feed(api.app)
    start = await journal.last_version()
    feed.advance(start)
    missed = make_call(Direction.INCOMING, "+79990000001", at("11-28 10:00"), answered=False)
    batches = [
        [new_call(), new_call(), missed],
        [new_call()],
        # The call back turns the missed call from lost to no_answer: that row again.
        [make_call(OUT, "+79990000001", at("11-28 10:05"), answered=True), new_call()],
        [new_call(), new_call(), new_call()],
    ]
    for batch in batches:
        written = await journal.write_many([(c, []) for c in batch], batch[0].ended_at)
        feed.remember(await journal.entries([c.id for c in written]))
        feed.committed(written)
    last = feed.version
    assert last == start + 10  # 9 new rows, one of them bumped again

    async def from_database(since: int, limit: int) -> tuple[list[tuple[int, int]], int]:
        async with journal.database.sessions() as session:
            entries, cursor = await queries.changes(session, since, limit)
        return [(e.id, e.version) for e in entries], cursor

    for since in range(start, last + 1):
        for limit in (1, 2, 3, 500):
            remembered = feed.recent(since, limit)
            if since == last:
                assert remembered is None  # nothing newer: the database says how far it is
                continue
            assert remembered is not None, (since, limit)
            entries, cursor = remembered
            assert ([(e.id, e.version) for e in entries], cursor) == await from_database(
                since, limit
            ), (since, limit)
    assert feed.recent(start - 1, 500) is None  # older than what the feed remembers

    # A version committed by another path (a comment) is not among them: from the database.
    some = (await journal.entries([c.id for c in written]))[0]
    feed.committed([await journal.set_comment(some.id, "перезвонить", time.time())])
    assert feed.recent(start, 500) is None
    items, cursor = await drain(api, start)
    assert cursor == last + 1 and items[-1]["comment"] == "перезвонить"
