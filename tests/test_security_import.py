"""``POST /customers:import`` at full size: set-based, in parts, calls written in between.

An import used to apply its customers one by one in one transaction (~30 ms each: ten minutes
of the write lock for the 20,000 a request may carry, every call waiting behind it). It now
checks every record first, then writes a part of the customers per transaction with a few
set-based statements. These tests hold it to what it promised before (the directory and the
calls end exactly as one ``upsert_customer`` per record, in order, leaves them; a bad number
anywhere changes nothing; the same import again changes nothing) and to what it promises now
(a call ends up written while an import is in progress, not after it). Both engines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector.assembly import Direction, FinishedCall
from storage.directory import ContactRecord, CustomerRecord, DirectoryError
from storage.engine import Database, open_database
from storage.migrate import upgrade
from storage.models import Call, Contact, Customer, PhoneNumber
from storage.store import Change, SqlJournal
from tests.calls import at, make_call
from tests.db import ENGINES, make_journal
from tests.http_support import Maker

IN = Direction.INCOMING


def number(i: int) -> str:
    return f"8916{i:07d}"


def many_customers(count: int, *, offset: int = 0) -> list[CustomerRecord]:
    """Customer ``i``: two numbers of its own, one contact person with one number."""
    return [
        CustomerRecord(
            f"c-{i}",
            f"ООО Клиент {i}",
            (f"+7 916 {3 * i:07d}", f"8 (916) {3 * i + 1:07d}"),
            (ContactRecord(f"p-{i}", f"Контакт {i}", (number(3 * i + 2),)),),
        )
        for i in range(offset, offset + count)
    ]


async def write_calls(journal: SqlJournal, calls: list[FinishedCall]) -> None:
    for first in range(0, len(calls), 500):
        part = calls[first : first + 500]
        await journal.write_many([(c, []) for c in part], part[-1].ended_at)


async def directory_rows(database: Database) -> dict[str, Any]:
    async with database.sessions() as session:
        customers = (await session.execute(sa.select(Customer.id, Customer.name))).all()
        contacts = (
            await session.execute(sa.select(Contact.id, Contact.customer_id, Contact.name))
        ).all()
        numbers = (
            await session.execute(
                sa.select(
                    PhoneNumber.number,
                    PhoneNumber.raw,
                    PhoneNumber.customer_id,
                    PhoneNumber.contact_id,
                )
            )
        ).all()
    return {
        "customers": sorted(map(tuple, customers)),
        "contacts": sorted(map(tuple, contacts)),
        "numbers": sorted(map(tuple, numbers)),
    }


async def shown_calls(database: Database) -> dict[str, tuple[Any, ...]]:
    """What each call (by conversation id) shows, versions left out."""
    async with database.sessions() as session:
        rows = await session.execute(
            sa.select(
                Call.conversation_id,
                Call.customer_id,
                Call.contact_id,
                Call.unregistered,
                Call.search_text,
                Call.status,
                Call.first_contact,
                Call.attention,
            )
        )
        return {row[0]: tuple(row[1:]) for row in rows}


async def versions(database: Database) -> dict[str, int]:
    async with database.sessions() as session:
        rows = await session.execute(sa.select(Call.conversation_id, Call.id, Call.version))
        return {conversation: version for conversation, _, version in rows}


async def conversation_ids(database: Database, changes: list[Change]) -> set[str]:
    ids = {c.id for c in changes}
    async with database.sessions() as session:
        rows = await session.execute(sa.select(Call.conversation_id, Call.id))
        return {conversation for conversation, call_id in rows if call_id in ids}


# The directory before the import, and an import that moves things between customers: a
# contact person taken from a customer the import does not name and renamed, a number taken
# from another customer, a contact person dropped by one customer and listed by the next, a
# customer listed twice (the second wins), a number listed twice (the contact's mention wins).
BEFORE = [
    CustomerRecord(
        "c-a",
        "Альфа",
        (number(1),),
        (
            ContactRecord("p-a1", "Пётр", (number(2),)),
            ContactRecord("p-a2", "Олег", (number(3),)),
        ),
    ),
    CustomerRecord("c-b", "Бета", (number(4), number(5))),
    CustomerRecord("c-d", "Дельта", (number(6),), (ContactRecord("p-d", "Анна", (number(7),)),)),
]
IMPORT = [
    CustomerRecord(
        "c-new",
        "Новый",
        ("+7 916 000-00-08",),
        (ContactRecord("p-d", "Анна Д.", (number(9),)),),
    ),
    CustomerRecord(
        "c-a", "Альфа-2", (number(1), number(4)), (ContactRecord("p-a1", "Пётр", (number(2),)),)
    ),
    CustomerRecord(
        "c-b", "Бета", (number(5), number(6)), (ContactRecord("p-a2", "Олег", (number(3),)),)
    ),
    CustomerRecord("c-new", "Новый!", (number(8),)),
    CustomerRecord(
        "c-e",
        "Эпсилон",
        (number(10), "+7 (916) 000-00-10"),
        (ContactRecord("p-e", "Ева", (number(10),)),),
    ),
]


async def prepared(database: Database) -> tuple[SqlJournal, list[FinishedCall]]:
    journal = await make_journal(database)
    for record in BEFORE:
        await journal.upsert_customer(record, now=at("11-26 09:00"))
    start = at("11-27 09:00")
    calls = [
        make_call(IN, number(i), start + 600.0 * i, answered=i % 3 == 0, conversation_id=f"x.{i}")
        for i in range(1, 12)
    ]
    await write_calls(journal, calls)
    return journal, calls


@pytest.mark.parametrize("chunk_size", [2, 500])
async def test_an_import_leaves_directory_and_calls_as_one_upsert_per_customer_does(
    database: Database, tmp_path: Path, chunk_size: int
) -> None:
    journal, _ = await prepared(database)
    shown_before = await shown_calls(database)
    # The reference: the same directory and calls in a SQLite file of their own, the import
    # applied the way it always was, one upsert_customer per record, in order.
    reference = open_database(f"sqlite+aiosqlite:///{tmp_path / 'reference.sqlite3'}")
    try:
        await upgrade(reference)
        expected_journal, _ = await prepared(reference)
        expected_changes: list[Change] = []
        for record in IMPORT:
            expected_changes += await expected_journal.upsert_customer(record, at("11-28 12:00"))
        expected_directory = await directory_rows(reference)
        expected_calls = await shown_calls(reference)
        expected_changed = await conversation_ids(reference, expected_changes)
    finally:
        await reference.dispose()

    changes = await journal.import_customers(IMPORT, at("11-28 12:00"), chunk_size=chunk_size)

    assert await directory_rows(database) == expected_directory
    shown = await shown_calls(database)
    assert shown == expected_calls
    # Every call whose customer, contact or search text changed has a new version, and no
    # call one upsert per customer would have left alone; the number-9 call went to c-new
    # and back to nobody: one transaction (chunk_size 500) leaves it alone.
    really_changed = {c for c, row in shown.items() if row != shown_before[c]}
    changed = await conversation_ids(database, changes)
    assert really_changed <= changed <= expected_changed
    assert expected_changed - changed <= {"x.9"}
    now = await versions(database)
    last_versions: dict[int, int] = {}
    for change in changes:
        last_versions[change.id] = max(change.version, last_versions.get(change.id, 0))
    assert {now[c] for c in changed} == set(last_versions.values())
    # The status is the one the call ended with (registered then or not): not rewritten.
    assert {c: row[4:] for c, row in shown.items()} == {
        c: row[4:] for c, row in shown_before.items()
    }


async def test_a_full_size_import_is_complete_and_importing_it_again_changes_nothing(
    database: Database,
) -> None:
    journal = await make_journal(database)
    count = 20_000
    start = at("11-20 09:00")
    # A missed call from every fourth customer's first number, before anyone is registered:
    # lost, first contact, attention. Registering the number later shows the customer on the
    # row (a new version) but keeps the verdict of when the call ended (DESIGN 1).
    calls = [
        make_call(IN, number(3 * i), start + 60.0 * i, answered=False, conversation_id=f"m.{i}")
        for i in range(0, count, 4)
    ]
    await write_calls(journal, calls)
    records = many_customers(count)

    changes = await journal.import_customers(records, at("11-28 12:00"))

    assert len({c.id for c in changes}) == len(calls)
    for i in (0, 4, count // 2, count - 4):
        owner = await journal.lookup_number(number(3 * i + 2))
        assert owner is not None
        assert (owner.customer_id, owner.contact_id) == (f"c-{i}", f"p-{i}")
        call_id = await journal.id_of(f"m.{i}")
        assert call_id is not None
        entry = await journal.get(call_id)
        assert entry is not None and entry.customer is not None
        assert entry.customer.name == f"ООО Клиент {i}"
        assert (entry.status.value, entry.first_contact, entry.attention) == ("lost", True, True)
    async with database.sessions() as session:
        bound = await session.scalar(sa.select(sa.func.count()).select_from(PhoneNumber))
        unregistered = await session.scalar(
            sa.select(sa.func.count()).select_from(Call).where(Call.unregistered == sa.true())
        )
    assert (bound, unregistered) == (3 * count, 0)
    assert await journal.import_customers(records, at("11-28 13:00")) == []


async def test_a_bad_number_anywhere_in_an_import_changes_nothing(journal: SqlJournal) -> None:
    records = many_customers(1_200)
    last = records[-1]
    records[-1] = CustomerRecord(last.id, last.name, ("anonymous",))
    with pytest.raises(DirectoryError, match="not a phone number"):
        await journal.import_customers(records, at("11-28 12:00"), chunk_size=100)
    assert await journal.lookup_number(number(0)) is None


async def test_a_call_is_written_while_a_large_import_is_in_progress(
    journal: SqlJournal,
) -> None:
    records = many_customers(3_000)
    importing = asyncio.create_task(journal.import_customers(records, at("11-28 12:00")))
    # As 1C would see it: the first customer's number becomes registered while the import
    # still runs (the old import showed nothing until it had written everything). Polled, as
    # 1C would: the journal offers no event for it.
    while await journal.lookup_number(number(2)) is None and not importing.done():  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    call = make_call(IN, "89031112233", at("11-28 12:00"), answered=True)
    await journal.write(call, [], call.ended_at)
    import_was_running = not importing.done()
    await importing
    assert import_was_running, "the call was written only after the whole import"
    assert await journal.id_of(call.conversation_id) is not None
    owner = await journal.lookup_number(number(3 * 2_999 + 2))
    assert owner is not None and owner.contact_id == "p-2999"


@pytest.mark.parametrize("engine", ENGINES)
async def test_the_import_endpoint_lets_calls_in_and_wakes_long_polls_part_by_part(
    engine: str, make_api: Maker
) -> None:
    api = await make_api(engine)
    records = many_customers(3_000, offset=100_000)
    body = [
        {
            "id": r.id,
            "name": r.name,
            "numbers": list(r.numbers),
            "contacts": [
                {"id": c.id, "name": c.name, "numbers": list(c.numbers)} for c in r.contacts
            ],
        }
        for r in records
    ]
    # A missed call from every tenth customer's first number: the import re-shows 300 calls.
    start = at("11-20 09:00")
    await write_calls(
        api.journal,
        [
            make_call(IN, number(3 * i), start + 60.0 * i, answered=False)
            for i in range(100_000, 103_000, 10)
        ],
    )
    since = await api.journal.last_version()
    posting = asyncio.create_task(api.call("POST", "/api/v1/customers:import", json=body))
    polled = await api.get("/api/v1/changes", params={"since": since, "wait": 30})
    woken_during_the_import = not posting.done()
    call = make_call(IN, "89031112234", at("11-28 12:00"), answered=True)
    await api.journal.write(call, [], call.ended_at)
    call_during_the_import = not posting.done()
    answer = await posting
    assert woken_during_the_import and polled["items"], "1C heard of the import only at its end"
    assert call_during_the_import, "the call was written only after the whole import"
    assert answer["imported"] == 3_000 and answer["changed_calls"] == 300
    rest = await api.get("/api/v1/changes", params={"since": since, "limit": 1000})
    assert len({item["id"] for item in rest["items"]}) == 301
    last = await api.get(f"/api/v1/numbers/{number(3 * 102_999 + 2)}")
    assert last["customer"]["contact"]["id"] == "p-102999"
