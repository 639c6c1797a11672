"""Migration 0011 (issue 18): ``extension_calls``, "Мои звонки" in journal order with each
call's class, kept by triggers; ``call_participants`` read in one B-tree.

The table must always equal ``call_participants`` joined to ``calls`` (one row per call and
extension): after every kind of write (a new call, a call written again with other
participants, a later call of the same number re-evaluating an earlier one, 1C binding the
number, a repaired attention window, a deleted call) its content is compared with what it
should be, on both engines. The pages of "my calls" are compared with the in-memory journal's
(``tests/test_storage_queries.py``'s oracle), for an employee with several extensions too, and
a filled 0009 journal is upgraded.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector.assembly import Direction, FinishedCall, Participant, Role
from storage.directory import CustomerRecord, EmployeeRecord
from storage.engine import Database, open_database
from storage.migrate import current_revision, downgrade, upgrade
from storage.queries import JournalFilter, employee_classes, explain, journal_statement, list_calls
from storage.rules import AttentionWindow
from storage.store import SqlJournal
from tests.calls import at, make_call
from tests.db import ENGINES, MOSCOW, fresh_url, make_journal
from tests.test_replay import write_config
from tests.test_storage_queries import Seeded, _seed, combinations, expected

MIGRATION = importlib.import_module("storage.migrations.versions.0011_extension_calls")
EXTENSION_CALLS = "0011"
BEFORE = "0009"
NUMBER = "+79161234567"

Key = tuple[Any, ...]


@pytest.fixture(scope="module", params=ENGINES)
def replayed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """``tests/test_storage_queries.py``'s seeded journal (every capture replayed, 1C binding
    two numbers) and its oracle rows."""
    tmp = tmp_path_factory.mktemp(f"replayed-{request.param}")
    url = asyncio.run(fresh_url(request.param, tmp))
    return Seeded(url, asyncio.run(_seed(url, write_config(tmp))))


@pytest.fixture
async def replayed_db(replayed: Seeded) -> AsyncIterator[Database]:
    database = open_database(replayed.url)
    try:
        yield database
    finally:
        await database.dispose()


def _row(row: Any) -> Key:
    extension, started, call_id, direction, answered, attention, first, unregistered, status = row
    return (
        extension,
        float(started),
        int(call_id),
        direction,
        bool(answered),
        bool(attention),
        bool(first),
        bool(unregistered),
        status,
    )


async def content(database: Database) -> tuple[list[Key], list[Key]]:
    """The table's rows, and the rows it should hold, both in key order."""
    columns = ", ".join(MIGRATION.COLUMNS)
    async with database.engine.connect() as connection:
        stored = await connection.execute(
            sa.text(f"SELECT {columns} FROM extension_calls ORDER BY 1, 2, 3")
        )
        wanted = await connection.execute(sa.text(f"{MIGRATION.EXPECTED} ORDER BY 1, 2, 3"))
        return [_row(r) for r in stored], [_row(r) for r in wanted]


async def assert_in_step(database: Database) -> list[Key]:
    stored, wanted = await content(database)
    assert stored == wanted
    return stored


def _participant(
    extension: str, role: Role, started: float, *, mobile: bool = False
) -> Participant:
    placed = role is Role.PLACED
    return Participant(
        extension, role, placed, not placed, None, None if placed else started, 0.0, mobile=mobile
    )


def _with(call: FinishedCall, *participants: Participant) -> FinishedCall:
    from dataclasses import replace

    return replace(call, participants=participants)


def _of(rows: list[Key], call_id: int) -> list[Key]:
    return [r for r in rows if r[2] == call_id]


async def test_extension_calls_follow_every_write(database: Database) -> None:
    journal = await make_journal(database)
    start = at("11-20 10:00")
    # A missed call rung at 101: lost, needing attention, the number's first contact.
    missed = make_call(Direction.INCOMING, NUMBER, start, answered=False, extension="101")
    await journal.write(missed, [], missed.ended_at)
    missed_id = await journal.id_of(missed.conversation_id)
    assert missed_id is not None
    rows = await assert_in_step(database)
    assert _of(rows, missed_id) == [
        ("101", start, missed_id, "incoming", False, True, True, True, "lost")
    ]

    # Written again (a resync): rung at 102 and 103, and at 102's mobile too (102 twice: one
    # row); 101 is gone.
    rewritten = _with(
        missed,
        _participant("102", Role.RANG, start),
        _participant("103", Role.RANG, start),
        _participant("102", Role.RANG, start, mobile=True),
    )
    await journal.write(rewritten, [], rewritten.ended_at + 1)
    rows = await assert_in_step(database)
    assert [r[0] for r in _of(rows, missed_id)] == ["102", "103"]

    # 103's participation goes, 102's mobile one stays: 102 keeps its row.
    again = _with(missed, _participant("102", Role.RANG, start, mobile=True))
    await journal.write(again, [], again.ended_at + 2)
    rows = await assert_in_step(database)
    assert [r[0] for r in _of(rows, missed_id)] == ["102"]

    # A later answered call of the same number (an hour later, by 104): the missed call is
    # re-evaluated (a later contact: no longer lost, no attention), and the later call is not
    # a first contact.
    back = make_call(Direction.OUTGOING, NUMBER, start + 3600, answered=True, extension="104")
    await journal.write(back, [], back.ended_at)
    back_id = await journal.id_of(back.conversation_id)
    assert back_id is not None
    rows = await assert_in_step(database)
    assert _of(rows, missed_id) == [
        ("102", start, missed_id, "incoming", False, False, True, True, "no_answer")
    ]
    assert _of(rows, back_id)[0][4:8] == (True, False, False, True)

    # An earlier call of the number arrives late: it is the first contact now.
    early = make_call(Direction.INCOMING, NUMBER, start - 7200, answered=True, extension="105")
    await journal.write(early, [], early.ended_at)
    rows = await assert_in_step(database)
    assert _of(rows, missed_id)[0][6] is False  # first_contact taken away

    # 1C binds the number: every call of it is registered now (unregistered false).
    await journal.upsert_customer(CustomerRecord("c-1", "ООО Ромашка", (NUMBER,)), now=start)
    rows = await assert_in_step(database)
    assert all(not r[7] for r in rows if r[2] in (missed_id, back_id))

    # Another missed call, and a repaired window (restarted with one hour): its verdict moves.
    later = start + 86400 * 2
    other = make_call(Direction.INCOMING, "+74951234567", later, answered=False, extension="101")
    reply = make_call(Direction.OUTGOING, "+74951234567", later + 7200, answered=True)
    for call in (other, reply):
        await journal.write(call, [], call.ended_at)
    other_id = await journal.id_of(other.conversation_id)
    assert other_id is not None
    before = _of(await assert_in_step(database), other_id)
    hour = SqlJournal(
        database, pbx="main", window=AttentionWindow.fixed(3600.0, MOSCOW), region="RU"
    )
    repair = await hour.repair_window(later + 86400 * 3, force=True)
    assert repair is not None and repair.changed
    after = _of(await assert_in_step(database), other_id)
    assert before != after and after[0][8] == "lost"

    # A deleted call takes its rows with it (nothing in the daemon deletes calls today).
    async with database.engine.begin() as connection:
        await connection.execute(sa.text("DELETE FROM calls WHERE id = :id"), {"id": missed_id})
    rows = await assert_in_step(database)
    assert _of(rows, missed_id) == []


async def test_an_employee_with_several_extensions_gets_a_call_of_both_once(
    database: Database,
) -> None:
    journal = await make_journal(database)
    await journal.upsert_employee(EmployeeRecord("e-1", "Иванова Анна", ("101", "102")))
    start = at("11-20 10:00")
    calls = []
    for n, extensions in enumerate([("101",), ("102",), ("101", "102"), ("103",)]):
        call = make_call(Direction.INCOMING, NUMBER, start + n * 600, answered=False)
        calls.append(
            _with(call, *(_participant(e, Role.RANG, call.started_at) for e in extensions))
        )
    for call in calls:
        await journal.write(call, [], call.ended_at)
    ids = [await journal.id_of(c.conversation_id) for c in calls]
    await assert_in_step(database)
    async with database.sessions() as session:
        for where in (
            JournalFilter(employee="e-1"),  # dense: walked
            JournalFilter(employee="e-1", kinds=frozenset({"missed"})),  # classes
            JournalFilter(employee="e-1", attention=True, first_contact=False),
        ):
            page = await list_calls(session, where, limit=50)
            wanted = [ids[2], ids[1], ids[0]]
            if where.first_contact is False:
                wanted = wanted[:2]  # the first call is the number's first contact
            assert [e.id for e in page.entries] == wanted, where
            # Two at a time: the cursor crosses the call both extensions took part in.
            first = await list_calls(session, where, limit=2)
            assert [e.id for e in first.entries] == wanted[:2]
            if len(wanted) > 2:
                assert first.next_cursor is not None
                rest = await list_calls(session, where, limit=2, cursor=first.next_cursor)
                assert [e.id for e in rest.entries] == wanted[2:]


async def test_my_calls_with_several_extensions_equal_the_memory_journal(
    replayed: Seeded, replayed_db: Database
) -> None:
    both = frozenset({"101", "105"})
    checked = 0
    async with replayed_db.sessions() as session:
        for where in combinations(replayed.rows):
            if where.employee != "101":
                continue
            statement = journal_statement(
                replayed_db.dialect, where, limit=500, extensions=sorted(both)
            )
            got = [call_id for call_id, _ in (await session.execute(statement)).all()]
            assert got == expected(replayed.rows, where, both), where
            checked += 1
    assert checked == 6 * 3 * 3 * 2 * 2 * 2


async def test_my_calls_read_extension_calls(replayed_db: Database) -> None:
    """The plans: a rare filter merges the class ranges (no sort on SQLite), a dense one walks
    the table's key; neither reads ``calls`` or probes the participants."""
    rare = JournalFilter(employee="105", attention=True)
    dense = JournalFilter(employee="105")
    assert employee_classes(rare) is not None and employee_classes(dense) is None
    async with replayed_db.sessions() as session:
        if not replayed_db.is_sqlite:
            await session.execute(sa.text("SET enable_seqscan = off"))
        for where, index in ((rare, "ix_extension_calls_class"), (dense, "extension_calls")):
            statement = journal_statement(replayed_db.dialect, where, limit=50, extensions=["105"])
            plan = "\n".join(await explain(session, statement))
            # (PostgreSQL may read a class through the key at 70 rows; at a million it reads
            # the class index: bench/.)
            assert (index if replayed_db.is_sqlite else "extension_calls") in plan, plan
            assert "call_participants" not in plan, plan
            assert " calls" not in plan.replace("extension_calls", ""), plan
            if replayed_db.is_sqlite:
                assert "USE TEMP B-TREE" not in plan, plan
                if where is rare:
                    assert "MERGE (UNION ALL)" in plan, plan


async def test_0011_builds_extension_calls_in_a_filled_journal(
    empty_database: Database, tmp_path: Path
) -> None:
    from tests.test_journal_indexes import _fill

    await upgrade(empty_database, BEFORE)
    await _fill(empty_database, tmp_path)
    journal = await make_journal(empty_database)
    entries_before = await journal.entries(range(1, 200))
    assert len(entries_before) > 50

    await upgrade(empty_database, EXTENSION_CALLS)

    assert await current_revision(empty_database) == EXTENSION_CALLS
    rows = await assert_in_step(empty_database)
    assert len(rows) >= len(entries_before)
    # The participants, rebuilt (SQLite) or re-keyed (PostgreSQL), read back the same.
    assert await journal.entries(range(1, 200)) == entries_before
    async with empty_database.engine.connect() as connection:
        if empty_database.is_sqlite:
            sql = await connection.scalar(
                sa.text("SELECT sql FROM sqlite_master WHERE name = 'call_participants'")
            )
            assert "WITHOUT ROWID" in str(sql)
        else:
            definition = await connection.scalar(
                sa.text("SELECT pg_get_indexdef('pk_call_participants'::regclass)")
            )
            assert "INCLUDE (extension, role" in str(definition)
    # Written after the upgrade: kept by the triggers.
    call = make_call(Direction.INCOMING, NUMBER, at("11-29 10:00"), answered=False)
    await journal.write(call, [], call.ended_at)
    await assert_in_step(empty_database)

    entries_after = await journal.entries(range(1, 200))
    assert len(entries_after) == len(entries_before) + 1

    await downgrade(empty_database, BEFORE)
    async with empty_database.engine.connect() as connection:
        tables = await connection.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert "extension_calls" not in tables
    assert await journal.entries(range(1, 200)) == entries_after


def test_every_single_flag_with_my_calls_is_merged() -> None:
    singles = [
        JournalFilter(employee="1", kinds=frozenset({kind}))
        for kind in ("incoming", "outgoing", "missed", "lost")
    ] + [
        JournalFilter(employee="1", **{flag: value})
        for flag, value in itertools.product(
            ("first_contact", "unregistered", "attention"), (True, False)
        )
    ]
    assert all(employee_classes(where) is not None for where in singles)
    assert employee_classes(JournalFilter(employee="1")) is None
    assert employee_classes(JournalFilter(employee="1", query="ромаш", attention=True)) is None
