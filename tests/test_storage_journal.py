"""The SQL journal's writes beyond the rules: binding, the directory, comments, the attention
window's settlement, rewrites, and versions under concurrent writers. Both engines."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from connector.assembly import Direction
from connector.recordings import FoundRecording
from storage.directory import ContactRecord, CustomerRecord, DirectoryError, EmployeeRecord
from storage.engine import Database, open_database
from storage.journal import EmployeeDirectory, JournalEntry, to_call_detail, to_call_object
from storage.queries import JournalFilter, changes, list_calls, load_employee_directory
from storage.store import Change, SqlJournal, UnknownCall
from tests.calls import at, make_call
from tests.db import MOSCOW, make_journal
from tests.scenarios import assemble_capture

IN, OUT = Direction.INCOMING, Direction.OUTGOING
ROMASHKA = CustomerRecord(
    "c-1",
    "ООО Ромашка",
    ("+7 495 111-22-33",),
    (ContactRecord("p-1", "Иванов Пётр", ("8 916 123-45-67",)),),
)


async def write(
    journal: SqlJournal, direction: Direction, number: str, when: str, **kw: bool
) -> int:
    call = make_call(direction, number, at(when), answered=kw.get("answered", False))
    await journal.write(call, [], call.ended_at)
    call_id = await journal.id_of(call.conversation_id)
    assert call_id is not None
    return call_id


async def test_binding_a_number_later_shows_the_customer_and_keeps_the_status(
    journal: SqlJournal,
) -> None:
    missed = await write(journal, IN, "89161234567", "11-27 10:00")
    before = await journal.get(missed)
    assert before is not None and before.status.value == "lost" and before.customer is None
    await journal.upsert_customer(CustomerRecord("c-1", "ООО Ромашка"), now=at("11-27 11:00"))
    bound = await journal.bind_number("+7 (916) 123-45-67", "c-1")
    assert [c.id for c in bound] == [missed]
    after = await journal.get(missed)
    assert after is not None and after.version == bound[0].version > before.version
    shown = to_call_object(after, MOSCOW, EmployeeDirectory())
    assert shown["customer"] == {"id": "c-1", "name": "ООО Ромашка", "contact": None}
    assert shown["unregistered"] is False
    # Registered *when the call ended* decides the status: binding later does not rewrite it.
    assert (after.status.value, after.attention, after.first_contact) == ("lost", True, True)
    again = await write(journal, IN, "79161234567", "11-28 10:00")
    second = await journal.get(again)
    assert second is not None
    assert (second.status.value, second.first_contact) == ("no_answer", False)
    unbound = await journal.unbind_number("8 916 123 45 67")
    assert sorted(c.id for c in unbound) == sorted([missed, again])
    gone = await journal.get(missed)
    assert gone is not None and gone.customer is None


async def test_a_contact_persons_number_shows_customer_and_contact(journal: SqlJournal) -> None:
    await journal.upsert_customer(ROMASHKA, now=at("11-27 09:00"))
    owner = await journal.lookup_number("+79161234567")
    assert owner is not None
    assert (owner.customer_name, owner.contact_id, owner.contact_name) == (
        "ООО Ромашка",
        "p-1",
        "Иванов Пётр",
    )
    call_id = await write(journal, IN, "79161234567", "11-27 10:00", answered=True)
    entry = await journal.get(call_id)
    assert entry is not None and entry.customer is not None
    assert (entry.customer.name, entry.customer.contact_name) == ("ООО Ромашка", "Иванов Пётр")
    assert entry.first_contact is False


async def test_customer_import_is_idempotent_and_rename_and_delete_reach_the_rows(
    journal: SqlJournal,
) -> None:
    call_id = await write(journal, IN, "84951112233", "11-27 10:00", answered=True)
    other = CustomerRecord("c-2", "ИП Сидоров", ("+7 903 000-00-01",))
    first = await journal.import_customers([ROMASHKA, other], now=at("11-27 11:00"))
    assert [c.id for c in first] == [call_id]
    assert await journal.import_customers([ROMASHKA, other], now=at("11-27 12:00")) == []
    renamed = CustomerRecord(ROMASHKA.id, "АО Ромашка", ROMASHKA.numbers, ROMASHKA.contacts)
    bumped = await journal.upsert_customer(renamed, now=at("11-27 13:00"))
    assert [c.id for c in bumped] == [call_id]
    entry = await journal.get(call_id)
    assert entry is not None and entry.customer is not None
    assert entry.customer.name == "АО Ромашка"
    deleted = await journal.delete_customer(ROMASHKA.id)
    assert [c.id for c in deleted] == [call_id]
    entry = await journal.get(call_id)
    assert entry is not None and entry.customer is None
    assert await journal.lookup_number("+7 495 111-22-33") is None
    assert await journal.lookup_number("89030000001") is not None


async def test_binding_needs_a_known_customer_and_its_own_contact(journal: SqlJournal) -> None:
    with pytest.raises(DirectoryError, match="unknown customer"):
        await journal.bind_number("+79161234567", "nobody")
    await journal.upsert_customer(ROMASHKA, now=at("11-27 09:00"))
    await journal.upsert_customer(CustomerRecord("c-2", "ИП Сидоров"), now=at("11-27 09:00"))
    with pytest.raises(DirectoryError, match="no contact"):
        await journal.bind_number("+79161234567", "c-2", "p-1")
    with pytest.raises(DirectoryError, match="not a phone number"):
        await journal.bind_number("anonymous", "c-2")


async def test_employees_seeded_once_then_edited(database: Database) -> None:
    journal = await make_journal(database)
    call_id = await write(journal, IN, "79161234567", "11-27 10:00", answered=True)
    await journal.upsert_employee(EmployeeRecord("101", "Ivanova-Petrova Anna", ("101", "111")))
    # A restart seeds from the config again: what was edited stays.
    await make_journal(database)
    employees = {e.id: e for e in await journal.employees()}
    # Read back, "no mobiles" is an empty list (None, "keep what is stored", is for writes).
    assert employees["101"] == EmployeeRecord("101", "Ivanova-Petrova Anna", ("101", "111"), ())
    async with database.sessions() as session:
        page = await list_calls(session, JournalFilter(query="petrova"))
    assert [e.id for e in page.entries] == [call_id]


async def test_a_comment_bumps_the_version_and_empty_text_removes_it(journal: SqlJournal) -> None:
    call_id = await write(journal, IN, "79161234567", "11-27 10:00")
    before = await journal.get(call_id)
    assert before is not None
    change = await journal.set_comment(call_id, "перезвонить после обеда", now=at("11-27 11:00"))
    assert change == Change(before.version + 1, call_id)
    entry = await journal.get(call_id)
    assert entry is not None and entry.comment == "перезвонить после обеда"
    cleared = await journal.set_comment(call_id, "", now=at("11-27 12:00"))
    assert cleared.version > change.version
    entry = await journal.get(call_id)
    assert entry is not None and entry.comment is None
    with pytest.raises(UnknownCall):
        await journal.set_comment(999_999, "x", now=at("11-27 12:00"))


async def test_the_window_closes_on_a_timer_and_settles_without_a_new_version(
    journal: SqlJournal,
) -> None:
    call_id = await write(journal, IN, "79161234567", "11-27 10:00")
    entry = await journal.get(call_id)
    assert entry is not None and entry.window_closes_at is not None
    assert await journal.next_window_close() == entry.window_closes_at
    assert await journal.settle(entry.window_closes_at - 1) == 0
    assert await journal.settle(entry.window_closes_at) == 1
    assert await journal.next_window_close() is None
    settled = await journal.get(call_id)
    assert settled is not None and settled.settled
    assert (settled.status.value, settled.attention, settled.version) == (
        "lost",
        True,
        entry.version,
    )


async def test_a_long_call_back_that_started_in_the_window_counts_after_settling(
    journal: SqlJournal,
) -> None:
    missed = await write(journal, IN, "79161234567", "11-27 10:00")
    await journal.settle(at("11-28 10:01"))
    # Started 23h50m after the missed call, ended (and was written) after the window closed.
    callback = make_call(OUT, "79161234567", at("11-28 09:50"), answered=True, seconds=1800)
    await journal.write(callback, [], callback.ended_at)
    entry = await journal.get(missed)
    assert entry is not None and (entry.status.value, entry.attention) == ("no_answer", False)


async def test_writing_the_same_call_again_changes_nothing_but_a_found_recording_does(
    journal: SqlJournal, tmp_path: Path
) -> None:
    call = make_call(IN, "79161234567", at("11-27 10:00"), answered=True)
    first = await journal.write(call, [], call.ended_at)
    assert await journal.write(call, [], call.ended_at + 5) == []
    part = FoundRecording(1, "/spool/a.wav", tmp_path / "a.wav", call.started_at, 0.0, 9.5, 1000)
    found = await journal.write(call, [part], call.ended_at + 10)
    assert [c.id for c in found] == [first[0].id] and found[0].version > first[0].version
    entry = await journal.get(first[0].id)
    assert entry is not None and len(entry.recordings) == 1
    recording_id = entry.recordings[0].id
    assert await journal.recording(recording_id) == (first[0].id, entry.recordings[0])
    assert await journal.write(call, [part], call.ended_at + 15) == []
    entry = await journal.get(first[0].id)
    assert entry is not None and entry.recordings[0].id == recording_id


async def test_optimize_refreshes_statistics_without_changing_anything(
    journal: SqlJournal,
) -> None:
    call_id = await write(journal, IN, "79161234567", "11-27 10:00")
    before = await journal.get(call_id)
    await journal.optimize()
    assert await journal.get(call_id) == before


async def test_open_conversation_state_survives_in_the_database(journal: SqlJournal) -> None:
    await journal.save_open("main/1795836191.3", {"channels": ["PJSIP/101-1"]}, now=1.0)
    await journal.save_open("main/1795836191.3", {"channels": ["PJSIP/101-2"]}, now=2.0)
    assert await journal.load_open() == {"main/1795836191.3": {"channels": ["PJSIP/101-2"]}}
    await journal.drop_open("main/1795836191.3")
    assert await journal.load_open() == {}


async def test_concurrent_writers_hand_out_gap_free_versions_in_commit_order(
    database: Database,
) -> None:
    """Four daemons (own engines, own pools) write at once while 1C polls the feed.

    With versions from a sequence, a poll could see version 8 committed before 7 and move
    past 7 for good; the locked counter makes every poll see a prefix of the versions.
    """
    writers = 4
    per_writer = 15
    databases = [open_database(database.url) for _ in range(writers)]
    journals = [
        SqlJournal(d, pbx=f"pbx{n}", window=(await make_journal(database)).window, region="RU")
        for n, d in enumerate(databases)
    ]
    written: list[Change] = []
    writer_of: dict[int, int] = {}
    done = asyncio.Event()

    # Each round starts the writers together, so their transactions really contend.
    rounds = asyncio.Barrier(writers)

    async def write_calls(n: int, journal: SqlJournal) -> None:
        for k in range(per_writer):
            await rounds.wait()
            number = f"+7916{n:03d}{k:04d}"
            call = make_call(IN, number, at("11-27 10:00") + k, answered=bool(k % 2))
            for change in await journal.write(call, [], call.ended_at):
                written.append(change)
                writer_of[change.id] = n

    seen: dict[int, int] = {}

    async def poll() -> None:
        since = 0
        while True:
            finished = done.is_set()
            async with database.sessions() as session:
                items, last = await changes(session, since, limit=7)
            versions = [item.version for item in items]
            assert versions == sorted(versions) and all(v > since for v in versions)
            seen.update((item.id, item.version) for item in items)
            assert last >= since
            since = last
            if finished and not items:
                return
            await asyncio.sleep(0)

    try:
        poller = asyncio.create_task(poll())
        await asyncio.gather(*(write_calls(n, j) for n, j in enumerate(journals)))
        done.set()
        await poller
    finally:
        for d in databases:
            await d.dispose()
    assert sorted(c.version for c in written) == list(range(1, writers * per_writer + 1))
    # The writers really overlapped: versions alternate between them.
    order = [writer_of[c.id] for c in sorted(written)]
    assert sum(a != b for a, b in itertools.pairwise(order)) > writers
    # Every version a writer handed out was seen by the poller: none was skipped.
    assert {c.id: c.version for c in written} == seen


async def test_pages_neither_repeat_nor_skip_while_calls_arrive(journal: SqlJournal) -> None:
    base = at("11-27 09:00")
    for k in range(30):
        call = make_call(IN, f"+7916000{k:04d}", base + 60 * k, answered=True)
        await journal.write(call, [], call.ended_at)
    async with journal.database.sessions() as session:
        before = [e.id for e in (await list_calls(session, JournalFilter(), limit=500)).entries]
    seen: list[int] = []
    cursor = None
    for arrival in itertools.count():
        async with journal.database.sessions() as session:
            page = await list_calls(session, JournalFilter(), limit=7, cursor=cursor)
        seen.extend(e.id for e in page.entries)
        # Between pages, a new call arrives (before the first page) and so does one that
        # started long ago but ended only now (it lands among the pages not yet read).
        newer = make_call(IN, f"+7926{arrival:07d}", base + 7200 + arrival, answered=True)
        late = make_call(IN, f"+7903{arrival:07d}", base + 60 * arrival + 30, answered=True)
        for call in (newer, late):
            await journal.write(call, [], call.ended_at + 3600)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)), "a row came twice"
    assert [i for i in seen if i in set(before)] == before, "a row was skipped"
    async with journal.database.sessions() as session:
        started = {e.id: e.call.started_at for e in await list_calls_all(session)}
    assert [started[i] for i in seen] == sorted((started[i] for i in seen), reverse=True)


async def list_calls_all(session: AsyncSession) -> list[JournalEntry]:
    return (await list_calls(session, JournalFilter(), limit=500)).entries


async def test_call_detail_has_the_timeline_of_a_blind_transfer(journal: SqlJournal) -> None:
    (call,) = assemble_capture("11-incoming-blind-transfer").calls
    await journal.write(call, [], call.ended_at)
    call_id = await journal.id_of(call.conversation_id)
    assert call_id is not None
    entry = await journal.get(call_id)
    assert entry is not None and entry.call == call
    async with journal.database.sessions() as session:
        employees = await load_employee_directory(session)
    detail = to_call_detail(entry, MOSCOW, employees)
    timeline = detail["timeline"]
    assert [p["extension"] for p in timeline["participants"]] == ["101", "103"]
    assert [leg["extension"] for leg in timeline["legs"]] == ["101", "103"]
    assert [t["kind"] for t in timeline["transfers"]] == ["blind"]
    assert detail["employees"][1]["name"] == "Sidorova Maria"


async def test_the_same_conversation_twice_in_one_batch_is_one_row_as_last_written(
    journal: SqlJournal,
) -> None:
    """A batch may hold a conversation twice (written again after a late merge): one row,
    with the last call's fields and parts only, one change."""
    first = make_call(IN, "+79161110000", at("11-28 10:00"), answered=False, extension="101")
    again = make_call(
        IN,
        "+79161110000",
        at("11-28 10:00"),
        answered=True,
        extension="102",
        conversation_id=first.conversation_id,
    )
    written = await journal.write_many([(first, []), (again, [])], again.ended_at)
    assert len(written) == 1
    (entry,) = await journal.entries([written[0].id])
    assert entry.version == written[0].version
    assert entry.call == again
    # Written again on its own, the row is as it was: nothing to change.
    assert await journal.write_many([(again, [])], again.ended_at) == []


async def test_a_call_back_keeps_the_call_it_returns_as_the_memory_journal_does(
    journal: SqlJournal,
) -> None:
    """``callback_of`` (issue 17's click-to-call) is stored, read back and rendered; the
    returned lost call loses its attention through the rules, on both journals alike."""
    from dataclasses import replace

    from storage.memory import MemoryJournal
    from storage.rules import AttentionWindow

    memory = MemoryJournal(pbx="main", window=AttentionWindow.fixed(86400.0, MOSCOW), region="RU")
    lost = make_call(IN, "89267001122", at("11-28 10:00"), answered=False)
    await journal.write(lost, [], lost.ended_at)
    memory.write(lost, [], lost.ended_at)
    lost_id = await journal.id_of(lost.conversation_id)
    assert lost_id is not None
    back = replace(
        make_call(OUT, "+7 926 700-11-22", at("11-28 10:30"), answered=True, extension="102"),
        callback_of=lost_id,
    )
    await journal.write(back, [], back.ended_at)
    memory.write(back, [], back.ended_at)
    employees = EmployeeDirectory()
    back_id = await journal.id_of(back.conversation_id)
    assert back_id is not None
    stored = {e.call.conversation_id: e for e in await journal.entries([lost_id, back_id])}
    sql = {k: to_call_object(e, MOSCOW, employees) for k, e in stored.items()}
    mem = {e.call.conversation_id: to_call_object(e, MOSCOW, employees) for e in memory.entries()}
    for objects in (sql, mem):
        assert objects[back.conversation_id]["callback_of"] == lost_id
        assert objects[lost.conversation_id]["callback_of"] is None
        assert objects[lost.conversation_id]["attention"] is False
        assert objects[lost.conversation_id]["status"] == "no_answer"

    def comparable(call: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in call.items() if k not in ("id", "version")}

    assert {k: comparable(v) for k, v in sql.items()} == {k: comparable(v) for k, v in mem.items()}
    # Written again (a resync, a restart): the link stays, nothing changes.
    last = await journal.last_version()
    await journal.write(back, [], back.ended_at + 60)
    assert await journal.last_version() == last


async def test_a_pages_call_objects_equal_those_of_fully_loaded_entries(
    journal: SqlJournal, tmp_path: Path
) -> None:
    """``GET /calls`` and ``/changes`` load their pages without the calls' legs and transfers
    (the call object does not show them): each call object, as JSON bytes, is the one rendered
    from the fully loaded entry, which ``GET /calls/{id}`` and the writer read."""
    await journal.upsert_customer(ROMASHKA, now=at("11-27 09:00"))
    await journal.upsert_employee(EmployeeRecord("101", "Иванова Анна", ("101",)))
    slugs = ("11-incoming-blind-transfer", "12-incoming-attended-transfer", "07-outgoing-answered")
    calls = [call for slug in slugs for call in assemble_capture(slug).calls]
    calls.append(make_call(IN, "+7 916 123-45-67", at("11-27 10:00"), answered=True))
    for index, call in enumerate(calls):
        part = FoundRecording(
            1, f"/spool/{index}.wav", tmp_path / f"{index}.wav", call.started_at, 0.5, 9.5, 1000
        )
        await journal.write(call, [part] if index % 2 == 0 else [], call.ended_at)
    ids = [await journal.id_of(call.conversation_id) for call in calls]
    assert None not in ids
    await journal.set_comment(ids[0] or 0, "перезвонить", now=at("11-28 11:00"))
    full = {entry.id: entry for entry in await journal.entries([i for i in ids if i])}
    assert any(e.call.legs for e in full.values()) and any(e.call.transfers for e in full.values())
    async with journal.database.sessions() as session:
        employees = await load_employee_directory(session)
        page = (await list_calls(session, JournalFilter(), limit=500)).entries
        fed, _ = await changes(session, 0, limit=500)

    def shown(entry: JournalEntry) -> bytes:
        body = to_call_object(entry, MOSCOW, employees)
        return json.dumps(body, ensure_ascii=False).encode()

    for loaded in (page, fed):
        assert sorted(e.id for e in loaded) == sorted(full)
        for entry in loaded:
            assert shown(entry) == shown(full[entry.id]), entry.id
            assert entry.call.legs == () and entry.call.transfers == ()
