"""The call objects of ``GET /calls`` and ``GET /changes``, rendered straight from the rows.

``storage.queries.load_call_objects`` (and ``list_call_objects``, ``change_objects``) turn a
page's rows into call objects without building entries first; ``to_call_object`` renders the
fully loaded entries, as ``GET /calls/{id}``, the daemon's own feed and ``pbxjournal calls``
do. Two checks, on both engines, over a journal of the real captures plus calls with what the
captures lack (a comment, recording parts, a withheld number, a call back, a customer reached
through a contact, an extension nobody configured):

- every call object of every page equals, as JSON bytes, ``to_call_object`` of the call's
  fully loaded entry, and the feed's pages end on the same versions as ``changes``;
- the answers' bytes over HTTP equal those recorded in ``tests/data/call-objects.json`` with
  the renderer before this one (commit 696ffe5). An intended change of the call object
  records them again: ``PBXJOURNAL_RECORD_CALL_OBJECTS=1 pytest tests/test_call_objects.py``
  (on SQLite), then review the file's diff.

And ``storage.journal.LocalTimes``, which formats the times of those objects, writes the
strings ``format_time`` writes, in zones whose offsets change in every way tzdata knows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiohttp.test_utils import TestClient

from config import Settings
from connector.assembly import Direction, FinishedCall
from connector.recordings import FoundRecording
from httpd.app import init_app
from pbxjournal.dbtools import replay_events
from pbxjournal.pipeline import build_pipeline
from pbxjournal.replay import capture_events
from storage.engine import open_database
from storage.journal import JournalEntry, LocalTimes, format_time, to_call_object
from storage.migrate import upgrade
from storage.queries import (
    InternalCalls,
    JournalFilter,
    change_objects,
    changes,
    list_call_objects,
    load_employee_directory,
)
from storage.store import SqlJournal
from tests.calls import at, make_call
from tests.db import ENGINES, MOSCOW, fresh_url, make_journal
from tests.http_support import PASSWORD, ROMASHKA, USER, api_settings, basic
from tests.scenarios import TRACES

GOLDEN = Path(__file__).parent / "data" / "call-objects.json"
#: The captures the answers were recorded on (a capture added later does not change them).
SLUGS = (
    "00-connect-and-reconnect",
    "01-incoming-answered-direct",
    "02-incoming-ringgroup-102-answers",
    "03-incoming-noanswer-timeout",
    "04-incoming-abandoned-while-ringing",
    "05-incoming-queue-101-answers",
    "06-incoming-queue-abandoned",
    "07-outgoing-answered",
    "08-outgoing-noanswer-cancelled",
    "09-outgoing-busy",
    "10-internal-101-to-102",
    "11-incoming-blind-transfer",
    "12-incoming-attended-transfer",
    "13-incoming-pickup-by-105",
    "14-two-overlapping-incoming",
    "15-missed-then-callback",
    "16-ivr-localchannel-to-102",
    "17-burst-50-mixed",
    "18-click-to-call-originate",
    "19-group-pickup-star8",
)
#: The answers recorded: ``/changes`` whole and in pages, ``/calls`` with and without
#: internal calls, a page with a cursor, a search, "my calls" with a kind, a flag.
REQUESTS = (
    "/api/v1/changes?since=0&limit=1000",
    "/api/v1/changes?since=9&limit=7",
    "/api/v1/calls?internal=show&limit=500",
    "/api/v1/calls?limit=5",
    "/api/v1/calls?q=%D1%80%D0%BE%D0%BC%D0%B0%D1%88%D0%BA%D0%B0",
    "/api/v1/calls?employee=101&kind=incoming,outgoing",
    "/api/v1/calls?unregistered=false&limit=500",
)


def _extra_calls() -> list[FinishedCall]:
    """What the captures lack, at fixed times and conversation ids."""
    contact = make_call(
        Direction.INCOMING,
        "8 916 123-45-67",
        at("11-28 14:00:00.4567"),
        answered=True,
        conversation_id="x-contact",
    )
    stranger = make_call(
        Direction.INCOMING,
        "+7 903 000-11-22",
        at("11-28 14:10:59.9996"),
        answered=True,
        extension="199",
        conversation_id="x-stranger",
    )
    withheld = dataclasses.replace(
        make_call(
            Direction.INCOMING,
            "+7 903 000-33-44",
            at("11-28 14:20"),
            answered=False,
            conversation_id="x-withheld",
        ),
        number_withheld=True,
    )
    return [contact, stranger, withheld]


async def _seed(url: str, settings: Settings, tmp_path: Path) -> None:
    database = open_database(url)
    try:
        await upgrade(database)
        journal = await make_journal(database)
        captures = [TRACES / f"{slug}.ami" for slug in SLUGS]
        await replay_events(build_pipeline(settings), journal, capture_events(captures))
        await journal.upsert_customer(ROMASHKA, now=at("11-28 12:00"))
        for index, call in enumerate(_extra_calls()):
            parts = [
                FoundRecording(
                    part,
                    f"/spool/x{index}-{part}.wav",
                    tmp_path / f"x{index}-{part}.wav",
                    call.started_at + 5.0 * part,
                    5.0 * (part - 1),
                    None if part == 2 else 4.25,
                    1000 * part,
                )
                for part in (1, 2)
            ]
            await journal.write(call, parts if index == 1 else [], call.ended_at)
        first = await journal.id_of("x-contact")
        assert first is not None
        await journal.set_comment(first, "перезвонить «завтра»", now=at("11-28 15:00"))
        back = make_call(
            Direction.OUTGOING,
            "+7 903 000-33-44",
            at("11-28 15:30"),
            answered=True,
            conversation_id="x-callback",
        )
        withheld = await journal.id_of("x-withheld")
        assert withheld is not None
        back = dataclasses.replace(back, callback_of=withheld)
        await journal.write(back, [], back.ended_at)
    finally:
        await database.dispose()


@pytest.fixture(params=ENGINES)
async def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlJournal]:
    settings = api_settings(tmp_path)
    url = await fresh_url(request.param, tmp_path)
    await _seed(url, settings, tmp_path)
    database = open_database(url)
    try:
        yield await make_journal(database)
    finally:
        await database.dispose()


def _bytes(item: dict[str, Any]) -> bytes:
    return orjson.dumps(item)


async def test_page_and_feed_call_objects_are_those_of_the_fully_loaded_entries(
    seeded: SqlJournal,
) -> None:
    journal = seeded
    async with journal.database.sessions() as session:
        employees = await load_employee_directory(session)
        every = (await changes(session, 0, limit=1000))[0]
    full: dict[int, JournalEntry] = {e.id: e for e in await journal.entries([e.id for e in every])}
    assert any(e.comment for e in full.values()) and any(e.recordings for e in full.values())
    assert any(e.customer and e.customer.contact_id for e in full.values())
    assert any(e.call.callback_of for e in full.values())
    assert any(e.call.number_withheld for e in full.values())

    def expected(call_id: int) -> bytes:
        return _bytes(to_call_object(full[call_id], MOSCOW, employees))

    filters = [
        JournalFilter(internal=InternalCalls.SHOW),
        JournalFilter(),
        JournalFilter(kinds=frozenset({"missed"})),
        JournalFilter(employee="101"),
        JournalFilter(query="ромашка"),
        JournalFilter(unregistered=False, first_contact=True),
    ]
    async with journal.database.sessions() as session:
        for where in filters:
            cursor: str | None = None
            seen = 0
            while True:
                items, cursor = await list_call_objects(
                    session, where, MOSCOW, employees, limit=4, cursor=cursor
                )
                for item in items:
                    assert _bytes(item) == expected(item["id"]), (where, item["id"])
                seen += len(items)
                if cursor is None:
                    break
            assert seen, where
        for since in range(0, len(full) + 1, 3):
            items, last = await change_objects(session, since, MOSCOW, employees, limit=5)
            entries, entries_last = await changes(session, since, limit=5)
            assert [item["version"] for item in items] == [e.version for e in entries]
            assert last == entries_last
            for item in items:
                assert _bytes(item) == expected(item["id"]), (since, item["id"])


async def _answers(journal: SqlJournal, tmp_path: Path, aiohttp_client: Any) -> dict[str, str]:
    """The bodies of ``REQUESTS``, the journal's id replaced by a placeholder."""
    app = init_app(api_settings(tmp_path), journal, merged_cache=tmp_path / "merged")
    client: TestClient[Any, Any] = await aiohttp_client(app)
    try:
        answers = {}
        for path in REQUESTS:
            async with client.get(path, headers=basic(USER, PASSWORD)) as response:
                body = await response.read()
                assert response.status == 200, body[:300]
            text = body.decode("utf-8")
            journal_id = json.loads(text).get("journal_id")
            answers[path] = text.replace(journal_id, "<journal_id>") if journal_id else text
        return answers
    finally:
        await client.close()


async def test_answers_are_the_bytes_recorded_with_the_renderer_before(
    seeded: SqlJournal, tmp_path: Path, aiohttp_client: Any
) -> None:
    answers = await _answers(seeded, tmp_path, aiohttp_client)
    if os.environ.get("PBXJOURNAL_RECORD_CALL_OBJECTS") and seeded.database.is_sqlite:
        GOLDEN.write_text(json.dumps(answers, ensure_ascii=False, indent=1) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    assert list(recorded) == list(REQUESTS)
    for path in REQUESTS:
        assert answers[path] == recorded[path], path


#: Zones with what a formatter could get wrong: half- and quarter-hour offsets, DST of half
#: an hour or negative, local mean time with seconds, a skipped day, transitions at odd
#: minutes, +14:00.
ZONES = (
    "Europe/Moscow",
    "UTC",
    "Europe/Amsterdam",
    "Europe/Paris",
    "Europe/Dublin",
    "Africa/Monrovia",
    "Africa/Casablanca",
    "America/New_York",
    "America/St_Johns",
    "America/Caracas",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tehran",
    "Asia/Pyongyang",
    "Australia/Lord_Howe",
    "Australia/Eucla",
    "Antarctica/Troll",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Pacific/Kiritimati",
)


def _transitions(timezone: ZoneInfo, first: int, last: int) -> list[int]:
    """The instants the zone's offset changes (bisected to the second from a 14-day scan)."""
    found = []
    step = 14 * 86400
    before = datetime.fromtimestamp(first, timezone).utcoffset()
    for low in range(first, last, step):
        after = datetime.fromtimestamp(low + step, timezone).utcoffset()
        if after == before:
            continue
        high, lo = low + step, low
        while high - lo > 1:
            middle = (lo + high) // 2
            if datetime.fromtimestamp(middle, timezone).utcoffset() == before:
                lo = middle
            else:
                high = middle
        found.append(high)
        before = after
    return found


@pytest.mark.parametrize("zone", ZONES)
def test_local_times_are_format_time_to_the_character(zone: str) -> None:
    """Around every offset change from 1900 to 2100 (and at random), at the edges of the
    rounding to microseconds and of the truncation to milliseconds."""
    timezone = ZoneInfo(zone)
    times = LocalTimes(timezone)
    rnd = random.Random(zone)
    epochs = [rnd.uniform(-2.2e9, 4.1e9) for _ in range(2000)]
    epochs += [rnd.randrange(-2_200_000_000, 4_100_000_000) + k / 2000 for k in range(1000)]
    transitions = _transitions(timezone, -2_208_988_800, 4_102_444_800)
    for moment in transitions:
        epochs += [
            moment + delta
            for delta in (-3601, -3600.5, -60, -1, -0.0005, -4e-7, 0, 4.999e-4, 0.9999996, 59.9995)
        ]
    epochs += [1767214800.0 + 0.0000005, 1767214800.9999995, 1767214800.0005]
    for epoch in epochs:
        assert times(epoch) == format_time(epoch, timezone), (zone, repr(epoch))
    assert times(None) is None
    if zone != "UTC":
        assert transitions, zone
