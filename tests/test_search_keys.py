"""Search through keys (migration 0012, ``storage.searchkeys``) finds exactly the calls whose own
search text holds the query: after writes, after every kind of directory change, after the
migration built the keys of a filled journal, page by page.

The oracle is the definition itself, evaluated in Python on every call's ``search_text`` as
the writer stored it: a query of words matches a call whose text holds every word, a number
matches a call whose text holds one of its digit forms (``storage.search.parse_query``).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession

from connector.assembly import Direction
from storage import queries, searchkeys
from storage.directory import ContactRecord, CustomerRecord, EmployeeRecord
from storage.engine import Database, open_database
from storage.migrate import current_revision, downgrade, upgrade
from storage.models import Call, SearchKey, SearchSuffix
from storage.queries import (
    InternalCalls,
    JournalFilter,
    KeySearch,
    _arms_template,
    _ArmShape,
    _keys_statement,
    explain,
    key_search,
    page_ids,
)
from storage.search import fold, number_forms, parse_query
from storage.searchkeys import bucket
from storage.store import SqlJournal
from tests.calls import at, make_call
from tests.db import MOSCOW, index_names, make_journal
from tests.scenarios import TRACES
from tests.test_replay import run_cli, write_config

NUMBERS = [
    "+79161234567",
    "+79161234500",
    "+74957771000",
    "+79031234567",
    "+79265550011",
    "+78122345678",
    "+79991112233",
    "+74951234567",
]
CUSTOMERS = [
    CustomerRecord(
        "c-1",
        "ООО Ромашка",
        ("+7 926 555-00-11",),
        (ContactRecord("p-1", "Иванов Пётр", ("8 916 123-45-67",)),),
    ),
    CustomerRecord("c-2", "ИП Ёлкин Фёдор", ("+7 903 123-45-67", "+7 812 234-56-78"), ()),
    CustomerRecord(
        "c-3",
        "Ромашка-Трейд 2000",
        ("+7 999 111-22-33",),
        (ContactRecord("p-3", "Петрова Алёна", ("+7 495 777-10-00",)),),
    ),
]
START = at("11-20 08:00")


async def _write_calls(journal: SqlJournal, count: int = 60, *, first: int = 0) -> None:
    directions = [Direction.INCOMING, Direction.OUTGOING, Direction.INCOMING, Direction.INTERNAL]
    calls = []
    for i in range(first, first + count):
        direction = directions[i % len(directions)]
        number = None if direction is Direction.INTERNAL else NUMBERS[(i * 5) % len(NUMBERS)]
        calls.append(
            make_call(
                direction,
                number,
                # Every 25 minutes: the calls span many of the keys' hour buckets.
                START + i * 1500,
                answered=i % 3 != 0,
                extension=str(101 + i % 5),
                conversation_id=f"call-{i}",
            )
        )
    await journal.write_many([(call, []) for call in calls], START + (first + count) * 1500)


Row = tuple[int, float, str, str, tuple[str, ...]]


async def _texts(database: Database) -> list[Row]:
    """Each call: id, start, its own ``search_text``, direction, and the texts of its keys,
    made here from the tables (its number's forms, its customer's and contact's names, each
    extension with its employee's name)."""
    async with database.sessions() as session:
        customers = dict((await session.execute(sa.text("SELECT id, name FROM customers"))).all())
        contacts = dict((await session.execute(sa.text("SELECT id, name FROM contacts"))).all())
        staff = dict(
            (
                await session.execute(
                    sa.text(
                        "SELECT x.extension, e.name FROM employee_extensions x "
                        "JOIN employees e ON e.id = x.employee_id"
                    )
                )
            ).all()
        )
        parts: dict[int, list[str]] = {}
        for call_id, extension in await session.execute(
            sa.text("SELECT call_id, extension FROM call_participants")
        ):
            parts.setdefault(call_id, []).append(extension)
        rows = await session.execute(
            sa.select(
                Call.id,
                Call.started_at,
                Call.search_text,
                Call.direction,
                Call.number,
                Call.customer_id,
                Call.contact_id,
            )
        )
        found = []
        for i, started, text, direction, number, customer, contact in rows:
            keys = [" ".join(number_forms(number, "RU"))] if number else []
            keys += [fold(customers[customer])] if customer else []
            keys += [fold(contacts[contact])] if contact else []
            for extension in parts.get(i, []):
                name = staff.get(extension)
                keys.append(f"{extension} {fold(name)}" if name else extension)
            found.append((i, started, text, direction, tuple(keys)))
        return found


def _matches(query: str, text: str, keys: tuple[str, ...]) -> bool:
    """A number matches a call one of whose keys holds one of its forms; words, a call one of
    whose keys holds every word. A term under three characters is not looked up in keys but
    in the call's whole text (the calls' trigram index): there the words may be in several."""
    search = parse_query(query, "RU")
    if search.empty:
        return True  # nothing to search for ("-", "()"): no search, as an empty box
    terms = search.any_of or search.all_of
    if not all(3 <= len(term) <= 64 for term in terms):
        texts: tuple[str, ...] = (text,)
    else:
        texts = keys
    if search.any_of:
        return any(term in t for term in search.any_of for t in texts)
    return any(all(word in t for word in search.all_of) for t in texts)


def _oracle(rows: Iterable[Row], query: str) -> list[int]:
    found = [(s, i) for i, s, text, _, keys in rows if _matches(query, text, keys)]
    return [i for _, i in sorted(found, reverse=True)]


async def _pages(database: Database, where: JournalFilter, limit: int) -> list[int]:
    ids: list[int] = []
    cursor = None
    async with database.sessions() as session:
        for _ in range(200):
            page, cursor = await page_ids(session, where, limit=limit, cursor=cursor)
            ids += page
            if cursor is None:
                return ids
    raise AssertionError("no last page")


async def _keyed(database: Database, query: str) -> bool:
    async with database.sessions() as session:
        return await key_search(session, parse_query(query, "RU")) is not None


def _queries(rows: list[Row], seed: int = 18) -> list[str]:
    """Whole words, their beginnings, middles and ends, digit runs, two words of one call and
    of two calls, other cases and ``ё``, and words nobody has."""
    rnd = random.Random(seed)
    words = sorted({w for _, _, text, _, _ in rows for w in text.split(" ") if w != "|"})
    queries = {"nobody-by-this-name", "00000", "ромашка иванов", "Ромашка Иванов"}
    for word in words:
        queries.update({word, word[:3], word[:-1], word[1:4], word[-4:]})
        if word.isdigit():
            for size in (4, 5, 7):
                at_ = rnd.randrange(0, max(1, len(word) - size + 1))
                queries.add(word[at_ : at_ + size])
    for _, _, text, _, _ in rnd.sample(rows, min(12, len(rows))):
        parts = [w for w in text.split(" ") if w != "|"]
        queries.add(f"{parts[0]} {parts[-1]}")
        queries.add(" ".join(parts[-2:]).upper())
    queries.update({"Пётр", "ПЕТР", "алена", "Ёлкин", "елкин", "8 916 123-45-67", "(926) 555"})
    return sorted(q for q in queries if len(q.strip()) >= 3)


async def _check_every_query(
    database: Database,
    queries: Iterable[str],
    internal: InternalCalls = InternalCalls.SHOW,
    limit: int = 500,
    unregistered: bool | None = None,
) -> int:
    """Each query's pages against the oracle, with internal calls shown or (``ONLY``) alone,
    and with ``unregistered`` the calls of unregistered numbers (or the others) alone."""
    rows = await _texts(database)
    if internal is InternalCalls.ONLY:
        rows = [row for row in rows if row[3] == Direction.INTERNAL.value]
    if unregistered is not None:
        async with database.sessions() as session:
            kept = set(
                await session.scalars(sa.select(Call.id).where(Call.unregistered == unregistered))
            )
        rows = [row for row in rows if row[0] in kept]
    checked = 0
    for query in queries:
        if len(query.replace(" ", "")) < 3:
            continue
        where = JournalFilter(query=query, internal=internal, unregistered=unregistered)
        assert await _pages(database, where, limit) == _oracle(rows, query), (query, internal)
        checked += 1
    return checked


@pytest.fixture
async def filled(database: Database) -> SqlJournal:
    journal = await make_journal(database)
    for record in CUSTOMERS:
        await journal.upsert_customer(record, now=START)
    await _write_calls(journal)
    return journal


async def test_keys_find_exactly_the_calls_whose_text_holds_the_query(
    database: Database, filled: SqlJournal
) -> None:
    queries = _queries(await _texts(database))
    assert len(queries) > 100
    # Keys serve them (a query of three characters or more, whose words are not all common).
    assert all([await _keyed(database, q) for q in queries])
    assert await _check_every_query(database, queries) == len(queries)


async def test_pages_of_a_search_follow_each_other_without_gaps(
    database: Database, filled: SqlJournal
) -> None:
    """Pages of 3 and 7 rows (the keys opened a few per statement, the page's oldest call
    stopping the walk) give the whole result, in journal order, with filters."""
    rows = await _texts(database)
    cases = [
        (JournalFilter(query="1234", internal=InternalCalls.SHOW), lambda d: True),
        (JournalFilter(query="79"), lambda d: d != "internal"),
        (JournalFilter(query="10"), lambda d: d != "internal"),
        (JournalFilter(query="ромашка", kinds=frozenset({"incoming"})), lambda d: d == "incoming"),
        (JournalFilter(query="smirnova"), lambda d: d != "internal"),
    ]
    for where, keep in cases:
        assert where.query is not None
        wanted = [i for i in _oracle(rows, where.query) if keep(_direction(rows, i))]
        assert len(wanted) >= 5, where
        for limit in (3, 7):
            assert await _pages(database, where, limit) == wanted, (where, limit)


def _direction(rows: list[Row], call_id: int) -> str:
    return next(d for i, _, _, d, _ in rows if i == call_id)


async def test_a_search_of_my_calls_and_a_period(database: Database, filled: SqlJournal) -> None:
    rows = await _texts(database)
    async with database.sessions() as session:
        parts = await session.execute(sa.text("SELECT call_id, extension FROM call_participants"))
        by_call: dict[int, set[str]] = {}
        for call_id, extension in parts:
            by_call.setdefault(call_id, set()).add(extension)
    since, until = START + 3 * 3600, START + 15 * 3600
    starts = {i: s for i, s, _, _, _ in rows}
    where = JournalFilter(
        query="9161",
        employee="102",
        started_from=since,
        started_until=until,
        internal=InternalCalls.SHOW,
    )
    wanted = [
        i
        for i in _oracle(rows, "9161")
        if "102" in by_call.get(i, set()) and since <= starts[i] < until
    ]
    assert wanted
    assert await _pages(database, where, 2) == wanted


async def _check_searches_with(
    database: Database, rows: list[Row], filters: Sequence[JournalFilter], terms: Sequence[str]
) -> int:
    """Each term with each filter, in pages of 2 (each a cursor's bound) and of 500, against
    the filter's own pages (without the search: the journal's equivalence tests cover them)
    that the term's oracle on ``rows`` holds; how many calls were expected in all."""
    found = 0
    for where in filters:
        passing = set(await _pages(database, where, 1000))
        for term in terms:
            wanted = [i for i in _oracle(rows, term) if i in passing]
            found += len(wanted)
            searched = replace(where, query=term)
            for limit in (2, 500):
                assert await _pages(database, searched, limit) == wanted, (searched, limit)
    return found


def _window_statements(database: Database) -> list[str]:
    """The statements of the database's engine that read every key's starts at once
    (``storage.queries.window_page``), as they run."""
    ran: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "candidates" in statement:
            ran.append(statement)

    sa.event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
    return ran


async def test_a_search_with_a_filter_reads_every_keys_calls_at_once(
    database: Database, filled: SqlJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search with a filter besides it reads the starts of every key's calls from their
    indexes, newest first, and tests calls only at those starts until a page is full
    (``window_page``): at ten million calls the keys' merge read each key's calls far back
    before a filter's page was full. Here every search has enough keys for it
    (``WINDOW_KEYS`` 1); the oracle is the filter's own pages (without the search: the
    journal's equivalence tests cover them) that the search's definition holds, in pages of
    2 (each a cursor's bound) and of 500."""
    monkeypatch.setattr(queries, "WINDOW_KEYS", 1)
    # Calls that start when others do: of another number (the key is tested at a start, not
    # only the filter), missed or answered, and of the same number (a start's every call).
    twins = []
    for k, shift, answered in ((4, 3, False), (10, 1, True), (17, 0, False), (30, 5, False)):
        number = NUMBERS[(k * 5 + shift) % len(NUMBERS)]
        twins.append(
            make_call(
                Direction.INCOMING,
                number,
                START + k * 1500,
                answered=answered,
                extension="102",
                conversation_id=f"twin-{k}",
            )
        )
    # A number whose digits hold an extension ("102"): that search has an extension's key,
    # opened by itself, and a number's, read through the window; this call holds both.
    twins.append(
        make_call(
            Direction.INCOMING,
            "+74951020304",
            START + 7 * 1500 + 20,
            answered=False,
            extension="102",
            conversation_id="holds-102",
        )
    )
    await filled.write_many([(call, []) for call in twins], START + 61 * 1500)
    rows = await _texts(database)
    ran = _window_statements(database)
    since, until = START + 6 * 3600, START + 20 * 3600
    filters = [
        JournalFilter(kinds=frozenset({"missed"})),
        JournalFilter(kinds=frozenset({"lost"})),
        JournalFilter(kinds=frozenset({"missed", "outgoing"})),
        JournalFilter(first_contact=True),
        JournalFilter(first_contact=False, internal=InternalCalls.SHOW),
        JournalFilter(attention=True),
        JournalFilter(unregistered=False),
        JournalFilter(employee="102"),
        JournalFilter(employee="103", kinds=frozenset({"incoming"}), internal=InternalCalls.SHOW),
        JournalFilter(started_from=since, started_until=until),
        JournalFilter(started_from=since, kinds=frozenset({"missed"}), attention=True),
    ]
    terms = ["9161", "1234", "79", "ромашка", "иванов пётр", "елкин", "+7 926 555-00-11", "4567"]
    terms += ["102"]
    assert await _check_searches_with(database, rows, filters, terms) > 100
    assert len(ran) > 100
    # "102" with missed calls: the number's call through the window, the extension's calls
    # from its own key, one page in journal order (the check above compared it whole).
    ran.clear()
    page = await _pages(database, JournalFilter(query="102", kinds=frozenset({"missed"})), 500)
    async with database.sessions() as session:
        numbers = {i: n for i, n in await session.execute(sa.select(Call.id, Call.number))}
    assert ran
    assert any(numbers[i] == "+74951020304" for i in page), page
    assert any(numbers[i] != "+74951020304" for i in page), page
    # The starts come from the keys' index, never from walking the journal in its order and
    # testing each call (both engines could sort the journal's index for free otherwise).
    shape = queries._WindowShape(
        database.dialect, ("n",), JournalFilter(kinds=frozenset({"lost"})), False, False
    )
    statement = queries._window_template(shape).params(keys_n=NUMBERS[:3], page=51)
    async with database.sessions() as session:
        if not database.is_sqlite:
            await session.execute(sa.text("SET enable_seqscan = off"))
        plan = await explain(session, statement)
    assert any("ix_calls_number" in line for line in plan), plan
    assert not any("ix_calls_journal" in line and "Scan Backward" in line for line in plan), plan
    if database.is_sqlite:
        assert not any(line.startswith(("SCAN calls", "SCAN c2", "SCAN c3")) for line in plan), plan
    # Not a walk's terms, not with a filter of internal calls alone (the extensions' keys),
    # not without a filter; and an extension's key (a quarter of a million calls each at ten
    # million) or fewer keys than ``WINDOW_KEYS`` are opened one by one.
    ran.clear()
    monkeypatch.setattr(queries, "WINDOW_KEYS", 1000)
    for where in (
        JournalFilter(query="9161", kinds=frozenset({"missed"})),
        JournalFilter(query="ромашка"),
        JournalFilter(query="9161", kinds=frozenset({"incoming"})),
        JournalFilter(query="101", internal=InternalCalls.ONLY),
    ):
        assert await _pages(database, where, 500), where
    monkeypatch.setattr(queries, "WINDOW_KEYS", 1)
    assert await _pages(database, JournalFilter(query="101", kinds=frozenset({"missed"})), 500)
    assert ran == []


async def test_keys_follow_every_change_of_the_directory(
    database: Database, filled: SqlJournal
) -> None:
    journal = filled
    queries = ["ромашка", "ромаш", "иванов", "петр", "василек", "сидоров", "елкин", "фед"]
    queries += ["smirnova", "кузнецова", "алена", "трейд", "1000", "9161234567"]

    async def check() -> None:
        await _check_every_query(database, queries)
        # Internal calls alone are searched in the extensions' keys, whose texts the
        # employees' changes below rewrite; unregistered calls alone leave customers' and
        # contacts' keys out, and binding a number below registers its calls.
        await _check_every_query(database, queries, InternalCalls.ONLY)
        await _check_every_query(database, queries, unregistered=True)

    await check()
    # Renamed customer and contact person: the old names find nothing, the new ones their calls.
    await journal.upsert_customer(
        CustomerRecord(
            "c-1",
            "ООО Василёк",
            ("+7 926 555-00-11",),
            (ContactRecord("p-1", "Сидоров Пётр", ("8 916 123-45-67",)),),
        ),
        now=START,
    )
    await check()
    assert not await _pages(database, JournalFilter(query="иванов"), 50)
    # A number bound to another customer, one unbound, a customer deleted.
    await journal.bind_number("+7 495 123-45-67", customer_id="c-2", contact_id=None)
    await journal.unbind_number("+7 903 123-45-67")
    await check()
    await journal.delete_customer("c-3")
    await check()
    assert not await _pages(database, JournalFilter(query="трейд"), 50)
    # An employee renamed, and an extension given to another employee.
    await journal.upsert_employee(EmployeeRecord("101", "Кузнецова Алёна", ("101",)))
    await check()
    await journal.upsert_employee(EmployeeRecord("102", "Smirnova Olga", ("102", "103")))
    await check()
    # New calls after all of it.
    await _write_calls(journal, 20, first=60)
    await check()


async def test_the_writer_keeps_each_key_once_with_its_newest_call(
    database: Database, filled: SqlJournal
) -> None:
    async with database.sessions() as session:
        keys = {
            (k, key): last
            for k, key, last in await session.execute(
                sa.select(SearchKey.kind, SearchKey.key, SearchKey.last)
            )
        }
        newest = dict(
            (
                await session.execute(
                    sa.select(Call.number, sa.func.max(Call.started_at))
                    .where(Call.number.is_not(None))
                    .group_by(Call.number)
                )
            ).all()
        )
        suffix_lasts = await session.execute(
            sa.select(SearchSuffix.kind, SearchSuffix.key, SearchSuffix.last).distinct()
        )
        by_key: dict[tuple[str, str], set[float]] = {}
        for kind, key, last in suffix_lasts:
            by_key.setdefault((kind, key), set()).add(last)
    assert {key for (kind, key) in keys if kind == "n"} == set(newest)
    for number, started in newest.items():
        assert keys[("n", number)] == bucket(started) >= started
    assert {key for key, lasts in by_key.items()} == set(keys)
    assert all(lasts == {keys[key]} for key, lasts in by_key.items())
    assert {key for (kind, key) in keys if kind == "c"} == {"c-1", "c-2", "c-3"}
    assert {key for (kind, key) in keys if kind == "e"} == {"101", "102", "103", "104", "105"}


async def _key_tables(database: Database) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    async with database.sessions() as session:
        keys = {
            (k, key, text, repr(last))
            for k, key, text, last in await session.execute(
                sa.select(SearchKey.kind, SearchKey.key, SearchKey.text, SearchKey.last)
            )
        }
        suffixes = {
            (s, k, key, repr(last))
            for s, k, key, last in await session.execute(
                sa.select(
                    SearchSuffix.suffix, SearchSuffix.kind, SearchSuffix.key, SearchSuffix.last
                )
            )
        }
    return keys, suffixes


async def test_migration_0012_builds_the_keys_the_writer_would_have(
    empty_database: Database,
) -> None:
    """A journal filled at 0011 (no keys), upgraded: its keys are the ones the writer keeps
    (the same journal rewritten at 0012 gives the same tables), search finds the same calls;
    and it goes down to 0011 and up again."""
    database = empty_database
    await upgrade(database, "0011")
    journal = await make_journal(database)
    for record in CUSTOMERS:
        await journal.upsert_customer(record, now=START)
    await _write_calls(journal)
    await upgrade(database, "0012", region="RU")
    assert await current_revision(database) == "0012"
    built = await _key_tables(database)
    assert len(built[0]) > 10 and len(built[1]) > 100
    await _check_every_query(database, _queries(await _texts(database), seed=7))
    # The writer's own tables for the same journal: emptied, then every call written again
    # with a new fingerprint is rewritten with its keys.
    async with database.sessions() as session:
        await session.execute(sa.delete(SearchSuffix))
        await session.execute(sa.delete(SearchKey))
        await session.execute(sa.update(Call).values(fingerprint="stale"))
        await session.commit()
    await _write_calls(journal)
    assert await _key_tables(database) == built
    await downgrade(database, "0011")
    assert await current_revision(database) == "0011"
    await upgrade(database, "0012", region="RU")
    assert await _key_tables(database) == built


async def _clustered(database: Database) -> bool:
    """Whether ``search_keys`` is a SQLite table ``WITHOUT ROWID``."""
    async with database.sessions() as session:
        sql = await session.scalar(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'search_keys'")
        )
    return "WITHOUT ROWID" in str(sql).upper()


async def _filled_at(database: Database, revision: str) -> SqlJournal:
    """The test journal (``CUSTOMERS``, 60 calls) written at ``revision``."""
    await upgrade(database, revision, region="RU")
    journal = await make_journal(database)
    for record in CUSTOMERS:
        await journal.upsert_customer(record, now=START)
    await _write_calls(journal)
    return journal


async def test_migration_0013_clusters_the_keys_on_sqlite(empty_database: Database) -> None:
    """A journal filled at 0012, upgraded: the same keys, on SQLite in a table ``WITHOUT
    ROWID`` (PostgreSQL: nothing changes), search finds the same calls and the writer keeps
    the table; it goes down to 0012 (a rowid table again, the same rows) and up again."""
    database = empty_database
    journal = await _filled_at(database, "0012")
    before = await _key_tables(database)
    assert not database.is_sqlite or not await _clustered(database)
    await upgrade(database, "0013", region="RU")
    assert await current_revision(database) == "0013"
    assert await _key_tables(database) == before
    if database.is_sqlite:
        assert await _clustered(database)
    await _check_every_query(database, _queries(await _texts(database), seed=13))
    await _write_calls(journal, first=60)  # a day later: the keys' hours move on
    after = await _key_tables(database)
    assert after != before
    await _check_every_query(database, _queries(await _texts(database), seed=14))
    await downgrade(database, "0012")
    assert await _key_tables(database) == after
    if database.is_sqlite:
        assert not await _clustered(database)
    await upgrade(database, "0013", region="RU")
    assert await _key_tables(database) == after


async def test_migration_0014_reads_names_from_one_index_entry(
    empty_database: Database,
) -> None:
    """A journal filled at 0013, upgraded: ``customers`` and ``contacts`` gain an index of
    ``(id, name)`` and the call objects (names included) are the same; on SQLite the calls'
    join reads the names from those indexes alone. Down to 0013 they go, the objects stay."""
    database = empty_database
    await _filled_at(database, "0013")

    async def objects() -> list[dict[str, object]]:
        async with database.sessions() as session:
            employees = await queries.load_employee_directory(session)
            items, _ = await queries.change_objects(session, 0, MOSCOW, employees, 500)
        return items

    tables, added = ("customers", "contacts"), {"ix_customers_names", "ix_contacts_names"}
    before = await objects()
    assert len(before) == 60
    customers = [o["customer"] for o in before if o["customer"]]
    assert {c["name"] for c in customers} >= {"ООО Ромашка"}  # type: ignore[index]
    assert {c["contact"]["name"] for c in customers if c["contact"]} >= {"Иванов Пётр"}  # type: ignore[index]
    assert not added & await index_names(database, *tables)
    await upgrade(database, "0014", region="RU")
    assert await current_revision(database) == "0014"
    assert added <= await index_names(database, *tables)
    assert await objects() == before
    if database.is_sqlite:
        async with database.sessions() as session:
            plan = "\n".join(await explain(session, queries._OBJECT.params(ids=[1, 2])))
        assert "COVERING INDEX ix_customers_names" in plan, plan
        assert "COVERING INDEX ix_contacts_names" in plan, plan
    await downgrade(database, "0013")
    assert not added & await index_names(database, *tables)
    assert await objects() == before


async def _number_index(database: Database) -> list[str]:
    def columns(connection: sa.Connection) -> list[str]:
        found = sa.inspect(connection).get_indexes("calls")
        return next(list(i["column_names"]) for i in found if i["name"] == "ix_calls_number")

    async with database.engine.connect() as connection:
        return await connection.run_sync(columns)


async def test_migration_0015_orders_a_numbers_calls_by_id_too(empty_database: Database) -> None:
    """A journal filled at 0014, upgraded: ``ix_calls_number`` is ``(number, started_at,
    id)``, the order of a key's page (``bench.issue18-window`` has the plans at ten million
    calls: PostgreSQL sorted every call of the number before), and every search finds the
    same calls. Down to 0014 the index is as it was, the pages the same."""
    database = empty_database
    await _filled_at(database, "0014")
    assert await _number_index(database) == ["number", "started_at"]
    queries_ = _queries(await _texts(database), seed=15)
    await _check_every_query(database, queries_)
    await upgrade(database, "0015", region="RU")
    assert await current_revision(database) == "0015"
    assert await _number_index(database) == ["number", "started_at", "id"]
    assert await _check_every_query(database, queries_) == len(queries_)
    await downgrade(database, "0014")
    assert await _number_index(database) == ["number", "started_at"]
    assert await _check_every_query(database, queries_) == len(queries_)


async def test_any_string_finds_what_the_texts_hold(database: Database, filled: SqlJournal) -> None:
    """Whatever the string (short words, digits among letters, punctuation, case, ``ё``), the
    answer is the oracle's, through keys or the calls' own index."""
    drawn: list[str] = []

    @given(st.text(alphabet="аеёиопрштк АИЁРОШ0123456789-+()", min_size=1, max_size=9))
    @settings(
        max_examples=80,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def draw(query: str) -> None:
        drawn.append(query)

    draw()  # hypothesis draws the strings; the searches run on this test's loop below
    rows = await _texts(database)
    for query in drawn:
        where = JournalFilter(query=query, internal=InternalCalls.SHOW)
        assert await _pages(database, where, 500) == _oracle(rows, query), query


def test_reindex_search_rebuilds_keys_lost_from_the_journal(tmp_path: Path) -> None:
    """``pbxjournal reindex-search``: a journal whose keys were lost (edited by hand, restored
    in part) finds nothing by name; rebuilt, it finds what it found before, key for key."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'j.sqlite3'}"
    config = str(write_config(tmp_path))
    captures = [str(p) for p in sorted(TRACES.glob("*.ami"))]
    written = run_cli("replay", *captures, "--config", config, "--database", url)
    assert written.returncode == 0, written.stderr

    def found(query: str) -> list[int]:
        async def search() -> list[int]:
            database = open_database(url)
            try:
                return await _pages(database, JournalFilter(query=query), 500)
            finally:
                await database.dispose()

        return asyncio.run(search())

    def tables() -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
        with sqlite3.connect(tmp_path / "j.sqlite3") as db:
            keys = db.execute("SELECT kind, key, text, last FROM search_keys ORDER BY 1, 2")
            suffixes = db.execute("SELECT * FROM search_suffixes ORDER BY 1, 2, 3")
            return keys.fetchall(), suffixes.fetchall()

    before = {q: found(q) for q in ("smirnova", "105", "79161234567", "petrov ivan")}
    assert all(before.values())
    kept = tables()
    with sqlite3.connect(tmp_path / "j.sqlite3") as db:
        db.execute("DELETE FROM search_suffixes")
        db.execute("DELETE FROM search_keys")
    assert found("smirnova") == []
    result = run_cli("reindex-search", "--config", config, "--database", url)
    assert result.returncode == 0, result.stderr
    assert "search keys rebuilt:" in result.stderr
    assert tables() == kept
    assert {q: found(q) for q in before} == before
    missing = run_cli(
        "reindex-search", "--config", config, "--database", "postgresql+asyncpg://x@127.0.0.1:1/no"
    )
    assert missing.returncode == 3, missing.stderr


async def test_a_search_reads_index_ranges(database: Database, filled: SqlJournal) -> None:
    """A word's keys are a range of ``search_suffixes``' key; each key's calls a range of its
    index in journal order. On PostgreSQL (whose planner prefers scanning a few dozen rows)
    with sequential scans off: an index *can* serve it (the benchmark shows the plans at ten
    million calls)."""
    async with database.sessions() as session:
        if not database.is_sqlite:
            await session.execute(sa.text("SET enable_seqscan = off"))
        for search in (KeySearch(("ромашка",)), KeySearch(("9161", "8916"), any_of=True)):
            statement, values = _keys_statement(search, None, 0, database.dialect)
            plan = "\n".join(await explain(session, statement.params(values)))
            assert "search_suffixes USING PRIMARY KEY" in plan or "pk_search_suffixes" in plan
            assert "SCAN search_suffixes" not in plan and "Seq Scan" not in plan, plan
        for kind, key, index in (
            ("n", "+79161234567", "ix_calls_number"),
            ("c", "c-1", "ix_calls_customer"),
            ("p", "p-1", "ix_calls_contact"),
            ("e", "101", "extension_calls"),
        ):
            if database.is_sqlite:
                shape = _ArmShape("sqlite", kind, 2, JournalFilter(), 0, False, False)
                statement = _arms_template(shape).params(page=51, key0=key, key1="")
            else:
                shape = _ArmShape("postgresql", kind, 0, JournalFilter(), 0, False, False)
                statement = _arms_template(shape).params(page=51, keys=[key, ""])
            plan = "\n".join(await explain(session, statement))
            assert index in plan and "SCAN calls" not in plan and "Seq Scan" not in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # SQLite: no sort, the index's order


@pytest.mark.parametrize("empty_database", ["postgresql"], indirect=True)
async def test_postgresql_checks_few_keys_texts_key_by_key(
    database: Database, filled: SqlJournal
) -> None:
    """The keys of a rare range, of a range read whole or of a walk's window are few: their
    texts are checked for the common words one key at a time (a subquery that stays one),
    whatever the planner would prefer. Unmarked, the same check is a join, which the planner
    may make a hash of every text holding the word (it did at a million calls). The rows are
    the same. SQLite always checks key by key and gets the plain statement."""
    words = dict(ranges=("ромашка",), common=("трейд",))
    async with database.sessions() as session:
        plans, found = {}, {}
        for few in (True, False):
            statement, values = _keys_statement(KeySearch(**words, few=few), None, 0, "postgresql")
            plans[few] = "\n".join(await explain(session, statement.params(values)))
            found[few] = (await session.execute(statement, values)).all()
        assert "SubPlan" in plans[True] and "Join" not in plans[True], plans[True]
        assert "SubPlan" not in plans[False] and "Nested Loop" in plans[False], plans[False]
        assert found[True] == found[False] and found[True], found
        # Rare words (a few hundred entries at most) make such a search.
        rare = await key_search(session, parse_query("ромашка трейд", "RU"))
        assert rare is not None and rare.ranges and rare.few, rare
    sqlite_statement, _ = _keys_statement(KeySearch(**words, few=True), None, 0, "sqlite")
    assert "OFFSET" not in str(sqlite_statement)


@pytest.mark.parametrize("empty_database", ["sqlite"], indirect=True)
async def test_the_sqlite_union_of_arms_is_sqlalchemys_union_of_the_same_arm(
    database: Database, filled: SqlJournal
) -> None:
    """SQLite opens keys with one arm compiled once and repeated as text
    (``_union_of_arms``, run by the driver): the rows equal those of SQLAlchemy's own
    ``UNION ALL`` of the arm, for every kind, a few keys, filters, two of the employee's
    extensions, a page's floor and a cursor's bound."""
    assert database.is_sqlite  # PostgreSQL unnests one array of keys instead
    async with database.sessions() as session:
        found = await session.execute(
            sa.text("SELECT kind, key FROM search_keys ORDER BY last DESC, kind, key")
        )
        by_kind: dict[str, list[str]] = {}
        for kind, key in found:
            by_kind.setdefault(kind, []).append(key)
        extensions = ["101", "102"]
        compared = 0
        for kind, keys in sorted(by_kind.items()):
            for where, floor, bound in (
                (JournalFilter(), False, False),
                (JournalFilter(kinds=frozenset({"incoming", "missed"})), True, False),
                (JournalFilter(attention=False, internal=InternalCalls.SHOW), True, True),
            ):
                for mine in ([], extensions):
                    chosen = [*keys[:3], ""]  # a padded slot, as key_page leaves them
                    shape = _ArmShape("sqlite", kind, len(chosen), where, len(mine), bound, floor)
                    values: dict[str, object] = {"page": 5, "floor": START, "mine": mine}
                    values |= {"bound_started": START + 20 * 3600, "bound_id": 10**9}
                    values |= {f"key{i}": key for i, key in enumerate(chosen)}
                    values |= {f"mine{i}": extension for i, extension in enumerate(mine)}
                    driver = queries._arms_driver(shape)
                    connection = await session.connection()
                    rows = await connection.exec_driver_sql(driver.sql, driver.parameters(values))
                    arms = [
                        queries._key_arm(kind, sa.bindparam(f"key{i}"), shape).subquery()
                        for i in range(len(chosen))
                    ]
                    union = sa.union_all(*(sa.select(a.c.id, a.c.started_at) for a in arms))
                    wanted = await session.execute(union, values)
                    got = sorted(map(tuple, rows))
                    assert got == sorted(map(tuple, wanted)), (kind, where, mine, floor, bound)
                    compared += bool(got)
        assert compared >= 12  # most shapes find calls: the comparison is not of empty lists
    assert {f"key{i}" for i in range(shape.keys)} | {"mine0", "mine1"} <= set(driver.names)


def _every_term_frequent(monkeypatch: pytest.MonkeyPatch, keys_read: int | None = None) -> None:
    """Every term in more keys than a search opens (``MAX_SEARCH_KEYS`` and the others 0),
    and with ``keys_read`` that many keys read per statement (a test that sets it needs the
    ``fresh_templates`` fixture: the statements bake it in)."""
    monkeypatch.setattr(queries, "MAX_SEARCH_KEYS", 0)
    monkeypatch.setattr(queries, "FEW_KEYS", 0)
    monkeypatch.setattr(queries, "CROWDED_KEYS", 0)
    if keys_read is not None:
        monkeypatch.setattr(queries, "KEYS_READ", keys_read)


async def test_words_in_too_many_keys_walk_the_journal(
    database: Database, filled: SqlJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A term in more keys than ``MAX_SEARCH_KEYS`` (here: any) is looked for in each call's
    own text, where the words may be in different names, walking the journal: SQLite asks
    FTS5 nothing first, and PostgreSQL's statement is one its trigram index cannot serve (its
    planner's estimate of how many calls hold a term comes from ANALYZE's sample, and at ten
    million calls it chose the index for a term in 430,000 of them: 3 s). With sequential
    and index scans off, PostgreSQL still plans the term that is not frequent with its
    trigram index, and the frequent one without."""
    _every_term_frequent(monkeypatch)
    rows = await _texts(database)
    whole = [(i, s, text, d, (text,)) for i, s, text, d, _ in rows]
    for query in ("ромашка", "ромашка иванов", "9161", "101 smirnova", "елкин"):
        async with database.sessions() as session:
            found_by = await key_search(session, parse_query(query, "RU"))
        assert found_by is not None and found_by.frequent, query
        where = JournalFilter(query=query, internal=InternalCalls.SHOW)
        assert await _pages(database, where, 500) == _oracle(whole, query), query
    assert _oracle(whole, "ромашка иванов") != _oracle(rows, "ромашка иванов")
    async with database.sessions() as session:
        # A term is text, not a pattern, in the walk too.
        for query, held in (("ромашка", True), ("ром_шка", False), ("ромашк%", False)):
            statement = queries.journal_statement(
                database.dialect, JournalFilter(query=query), limit=51, frequent_search=True
            )
            assert bool((await session.execute(statement)).all()) is held, query
    plans = {}
    async with database.sessions() as session:
        if not database.is_sqlite:
            await session.execute(sa.text("SET enable_seqscan = off"))
            await session.execute(sa.text("SET enable_indexscan = off"))
        for frequent in (False, True):
            statement = queries.journal_statement(
                database.dialect, JournalFilter(query="ромашка"), limit=51, frequent_search=frequent
            )
            plans[frequent] = "\n".join(await explain(session, statement))
    if database.is_sqlite:
        assert "calls_search" in plans[False], plans[False]
        assert "calls_search" not in plans[True] and "ix_calls_journal" in plans[True], plans[True]
    else:
        assert "ix_calls_search_trgm" in plans[False], plans[False]
        assert "ix_calls_search_trgm" not in plans[True], plans[True]


async def test_a_frequent_term_with_one_flag_walks_the_flags_index(
    database: Database, filled: SqlJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A term in too many keys with one flag's filter (first contact, unregistered,
    attention; internal calls hidden or shown): the walk's pages are the flag's own pages
    whose texts hold the term. On PostgreSQL the walk goes through the flag's index: the
    flag is a range first in the order, which only that index gives unsorted (the planner
    put the term's test at a third of the rows and walked the journal instead: 248,000 rows
    for one page at ten million calls)."""
    _every_term_frequent(monkeypatch)
    rows = await _texts(database)
    whole = [(i, s, text, d, (text,)) for i, s, text, d, _ in rows]
    filters = [
        replace(JournalFilter(internal=internal), **{flag: value})
        for flag in ("first_contact", "unregistered", "attention")
        for value in (True, False)
        for internal in (InternalCalls.HIDE, InternalCalls.SHOW)
    ]
    terms = ["ромашка", "9161", "1234", "79"]
    assert await _check_searches_with(database, whole, filters, terms) > 100
    async with database.sessions() as session:
        if not database.is_sqlite:
            await session.execute(sa.text("SET enable_seqscan = off"))
        for flag in ("first_contact", "unregistered", "attention"):
            where = replace(JournalFilter(query="ромашка"), **{flag: True})
            statement = queries.journal_statement(
                database.dialect, where, limit=51, frequent_search=True
            )
            plan = "\n".join(await explain(session, statement))
            if not database.is_sqlite:
                assert f"ix_calls_{flag}" in plan and "Sort" not in plan, plan


async def test_a_frequent_search_of_my_calls_walks_the_employees_calls(
    database: Database, filled: SqlJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "My calls" with a term in too many keys walks the employee's calls (``extension_calls``)
    and tests each one's text, with every other filter: walking the journal and probing each
    call's participants read 46,000 calls for a page of "131" at ten million calls. An
    employee with two extensions has each call once."""
    await filled.upsert_employee(EmployeeRecord("102", "Smirnova Olga", ("102", "103")))
    # A call that both of her extensions took part in.
    both = make_call(
        Direction.INCOMING, NUMBERS[0], START + 61 * 1500, answered=True, extension="102"
    )
    (rang,) = both.participants
    both = replace(both, participants=(rang, replace(rang, extension="103")))
    await filled.write_many([(both, [])], START + 62 * 1500)
    _every_term_frequent(monkeypatch)
    rows = await _texts(database)
    whole = [(i, s, text, d, (text,)) for i, s, text, d, _ in rows]
    async with database.sessions() as session:
        mine: dict[int, set[str]] = {}
        for call_id, extension in await session.execute(
            sa.text("SELECT call_id, extension FROM call_participants")
        ):
            mine.setdefault(call_id, set()).add(extension)
        flags = {
            i: (answered, first)
            for i, answered, first in await session.execute(
                sa.select(Call.id, Call.answered, Call.first_contact)
            )
        }
    middle = START + 30 * 1500
    cases = [
        (JournalFilter(internal=InternalCalls.SHOW), lambda i, d: True),
        (JournalFilter(), lambda i, d: d != "internal"),
        (
            JournalFilter(kinds=frozenset({"missed"})),
            lambda i, d: d == "incoming" and not flags[i][0],
        ),
        (JournalFilter(first_contact=False), lambda i, d: d != "internal" and not flags[i][1]),
        (JournalFilter(started_from=middle), lambda i, d: d != "internal"),
    ]
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    compared = 0
    for query in ("9161", "ромашка", "smirnova", "8 916 123-45-67", "101 smirnova"):
        for employee, extensions in (("102", {"102", "103"}), ("101", {"101"})):
            for filters, keep in cases:
                where = replace(filters, query=query, employee=employee)
                wanted = [
                    i
                    for i in _oracle(whole, query)
                    if mine.get(i, set()) & extensions
                    and keep(i, _direction(rows, i))
                    and (where.started_from is None or _start(rows, i) >= where.started_from)
                ]
                sa.event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
                try:
                    assert await _pages(database, where, 2) == wanted, (query, employee, where)
                finally:
                    sa.event.remove(database.engine.sync_engine, "before_cursor_execute", seen)
                compared += bool(wanted)
    assert compared >= 20, compared
    assert any(len(mine[i] & {"102", "103"}) == 2 for i in _oracle(whole, "9161")), mine
    pages = [s for s in statements if "search_text" in s]
    assert pages and all("extension_calls" in s for s in pages), pages
    assert not any("call_participants" in s for s in pages), pages


def _start(rows: list[Row], call_id: int) -> float:
    return next(s for i, s, _, _, _ in rows if i == call_id)


@pytest.mark.usefixtures("fresh_templates")
async def test_unregistered_calls_alone_leave_customers_and_contacts_keys_out(
    database: Database, filled: SqlJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unregistered call has no customer or contact: with "unregistered" its keys are
    numbers' and extensions'. A word of customers' names ("ооо" at ten million calls) is
    then in none, where walking the journal for it read every unregistered call (15 s).
    Here every term is frequent among all keys, and the keys are read one per statement."""
    await filled.upsert_employee(EmployeeRecord("102", "Smirnova Olga", ("102", "103")))
    _every_term_frequent(monkeypatch, keys_read=1)
    rows = await _texts(database)
    async with database.sessions() as session:
        for query in ("ромашка", "иванов петр", "ромашка 2000"):
            everywhere = await key_search(session, parse_query(query, "RU"))
            assert everywhere is not None and everywhere.frequent, query
            alone = await key_search(session, parse_query(query, "RU"), unregistered_only=True)
            assert alone is not None and alone.owners_out and not alone.frequent, alone
            statement, values = _keys_statement(alone, None, 0, database.dialect)
            assert (await session.execute(statement, values)).all() == [], query
    tried = [*_queries(rows), "ромашка", "smirnova", "9161", "8 916 123-45-67"]
    checked = await _check_every_query(database, tried, unregistered=True, limit=3)
    assert checked > 100, checked
    # A customer's name finds nothing, and reads no call's text for it; a number's digits
    # are in numbers' keys (common here: the journal is walked) and find calls.
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sa.event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert await _pages(database, JournalFilter(query="ромашка", unregistered=True), 3) == []
    finally:
        sa.event.remove(database.engine.sync_engine, "before_cursor_execute", seen)
    assert statements and not [s for s in statements if "search_text" in s], statements
    assert await _pages(database, JournalFilter(query="9161", unregistered=True), 3)


@pytest.mark.usefixtures("fresh_templates")
async def test_internal_calls_alone_are_searched_in_the_extensions_keys(
    database: Database, filled: SqlJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With internal calls only, a search opens the extensions' keys whose texts hold it
    (an internal call's text is its extensions'), however many numbers hold it: "7928" in
    every number's key made the journal walk every internal call of ten million and find
    none. Here every term is frequent among the other keys, and the keys are read one per
    statement (``KEYS_READ``), so that pages of three go on after the last key read."""
    await filled.upsert_employee(EmployeeRecord("101", "Кузнецова Алёна", ("101",)))
    await filled.upsert_employee(EmployeeRecord("102", "Smirnova Olga", ("102", "103")))
    _every_term_frequent(monkeypatch, keys_read=1)
    rows = await _texts(database)
    tried = [*_queries(rows), "smirnova", "smirnova olga", "алена 101", "10", "7928", "9161"]
    internal = [row for row in rows if row[3] == Direction.INTERNAL.value]
    async with database.sessions() as session:
        for query in ("smirnova", "101", "9161", "алена кузнецова"):
            external = await key_search(session, parse_query(query, "RU"))
            assert external is not None and external.frequent, query
            found_by = await key_search(session, parse_query(query, "RU"), internal_only=True)
            assert found_by is not None and found_by.extensions and not found_by.ranges, query
            statement, _ = _keys_statement(found_by, None, 0, database.dialect)
            assert "search_suffixes" not in str(statement), statement
    assert _oracle(internal, "smirnova") and _oracle(internal, "алена 101")
    assert _oracle(internal, "smirnova") != _oracle(rows, "smirnova")
    assert not _oracle(internal, "9161") and _oracle(rows, "9161")
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sa.event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
    try:
        checked = await _check_every_query(database, tried, InternalCalls.ONLY, limit=3)
    finally:
        sa.event.remove(database.engine.sync_engine, "before_cursor_execute", seen)
    assert checked > 100, checked
    # No page looked in the calls' own texts (a LIKE on them, or FTS5).
    searched = [
        s for s in statements if "calls_search" in s or ("search_text" in s and "LIKE" in s)
    ]
    assert not searched, searched


@pytest.fixture
def fresh_templates() -> Iterator[None]:
    """The key statements built anew, before and after a test that patches the sizes they
    bake in (``WALKED``, ``KEYS_READ``, ``WALK_KEYS``): its templates must not outlive it."""
    queries._keys_template.cache_clear()
    yield
    queries._keys_template.cache_clear()


@pytest.mark.usefixtures("fresh_templates")
async def test_common_words_rare_together_are_intersected(
    database: Database, filled: SqlJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every word in many keys, but not too many: the smallest range is read, the next
    smallest intersected with it when it is not much larger, and the other words checked on
    the keys' texts (a surname and a first name no contact has together would otherwise walk
    the whole journal)."""
    monkeypatch.setattr(queries, "MAX_SEARCH_KEYS", 0)
    monkeypatch.setattr(queries, "FEW_KEYS", 0)
    monkeypatch.setattr(queries, "WALKED", (0,))  # the walk, below, gives nothing: exact at once
    rows = await _texts(database)
    tried = ("ромашка иванов", "иванов петр", "smirnova olga", "ромашка 2000", "ромашка трейд 2000")
    for paired in (4, 0):
        monkeypatch.setattr(queries, "PAIRED_RANGES", paired)
        for query in tried:
            async with database.sessions() as session:
                walk = await key_search(session, parse_query(query, "RU"))
                words = parse_query(query, "RU").all_of
                assert walk is not None and (walk.exact is not None) == (len(words) == 2), query
                found_by = walk.exact or walk
                sizes = await queries._range_sizes(
                    session, found_by.ranges, 10**6, names=found_by.names
                )
            assert sizes == sorted(sizes), query  # the smallest range is the one read
            assert walk is found_by or walk.ranges == found_by.ranges[:1], query
            assert len(found_by.ranges) == (1 if paired == 0 else min(2, len(words))), query
            # A walk's window is few keys; the exact search's one or two ranges may be many.
            assert walk.few == (walk.exact is not None) and not found_by.few, query
            assert set(found_by.ranges) | set(found_by.common) == set(words), query
            where = JournalFilter(query=query, internal=InternalCalls.SHOW)
            assert await _pages(database, where, 500) == _oracle(rows, query), query
    assert _oracle(rows, "ромашка трейд 2000")
    # The other range is probed, not sorted and merged with the first (INTERSECT).
    statement, values = _keys_statement(KeySearch(("трейд", "ромашка")), None, 0, database.dialect)
    async with database.sessions() as session:
        plan = "\n".join(await explain(session, statement.params(values)))
    assert "INTERSECT" not in plan.upper() and "HashSetOp" not in plan, plan


@pytest.mark.usefixtures("fresh_templates")
async def test_common_words_are_counted_only_as_far_as_the_choice_needs(
    database: Database, filled: SqlJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common words' ranges are counted up to each of ``COUNT_STEPS`` in turn and whole
    only when every one is larger: the count stops once the smallest range is known, without
    counting the others whole, and a range past the count is not paired with it. Whatever
    the counts, the pages are the oracle's."""
    monkeypatch.setattr(queries, "MAX_SEARCH_KEYS", 0)
    monkeypatch.setattr(queries, "FEW_KEYS", 0)
    monkeypatch.setattr(queries, "WALKED", (0,))
    rows = await _texts(database)
    counted: list[int] = []
    range_sizes = queries._range_sizes

    async def noted(
        session: AsyncSession,
        words: Sequence[str],
        most: int,
        *,
        names: bool = False,
        owners_out: bool = False,
    ) -> list[int]:
        counted.append(most)
        return await range_sizes(session, words, most, names=names, owners_out=owners_out)

    tried = ("ромашка иванов", "иванов петр", "smirnova olga", "ромашка 2000", "ромашка трейд 2000")
    for query in tried:
        words = parse_query(query, "RU").all_of
        async with database.sessions() as session:
            names = not all(word.isdigit() for word in words)
            counts = await range_sizes(session, words, 10**6, names=names)
            sizes = dict(zip(words, counts, strict=True))
        least, second = sorted(sizes.values())[:2]
        for steps in ((least,), (least - 1,), (second,), (least - 1, least), (1, second)):
            monkeypatch.setattr(queries, "COUNT_STEPS", steps)
            monkeypatch.setattr(queries, "_range_sizes", noted)
            counted.clear()
            async with database.sessions() as session:
                walk = await key_search(session, parse_query(query, "RU"))
            monkeypatch.setattr(queries, "_range_sizes", range_sizes)
            assert walk is not None, query
            found_by = walk.exact or walk
            assert sizes[found_by.ranges[0]] == least, (query, steps)  # the smallest is read
            # Counted up to each step until the smallest is within one; whole only when it is
            # past them all.
            within = [step for step in steps if step >= least]
            most = within[0] if within else queries.CROWDED_KEYS
            assert counted == [0, *(step for step in steps if step < most), most], steps
            paired = second <= min(4 * least, most)
            assert len(found_by.ranges) == (2 if paired else 1), (query, steps, sizes)
            where = JournalFilter(query=query, internal=InternalCalls.SHOW)
            assert await _pages(database, where, 500) == _oracle(rows, query), query


async def _write_numbers(
    journal: SqlJournal,
    numbers: Sequence[str],
    *,
    gap: int,
    extensions: int,
    tag: str,
    both_ways: bool = False,
) -> None:
    """A call of each of ``numbers`` in turn, ``gap`` seconds apart from ``START``, a third
    of them missed, answered by ``extensions`` extensions from 101 in turn."""
    calls = [
        make_call(
            Direction.OUTGOING if both_ways and i % 2 == 0 else Direction.INCOMING,
            number,
            START + i * gap,
            answered=i % 3 != 0,
            extension=str(101 + i % extensions),
            conversation_id=f"{tag}-{i}",
        )
        for i, number in enumerate(numbers)
    ]
    await journal.write_many([(call, []) for call in calls], START + len(numbers) * gap)


@pytest.fixture
async def crowded(database: Database) -> SqlJournal:
    """Contacts with a few surnames and first names, each pair several times, and calls of
    each: common words whose ranges hold more entries than a small walk reads."""
    journal = await make_journal(database)
    surnames, names = ("Иванов", "Петров", "Сидоров"), ("Пётр", "Анна")
    contacts = []
    for i in range(18):
        number = f"+7916555{i:04d}"
        name = f"{surnames[i % 3]} {names[i % 2]} {100 + i}"
        contacts.append(ContactRecord(f"p-{i}", name, (number,)))
    await journal.upsert_customer(CustomerRecord("c-9", "ООО Вектор", (), tuple(contacts)), START)
    numbers = [f"+7916555{(i * 7) % 18:04d}" for i in range(54)]
    await _write_numbers(journal, numbers, gap=1500, extensions=5, tag="crowd")
    return journal


def _check_windows(statements: list[tuple[bool, int]], windows: int) -> None:
    """The key statements of a search's pages, each a walk's or not with its window: each
    page's walk starts with the smallest window and never goes back to a smaller one, and
    the exact search follows a walk only after its last window."""
    before: tuple[bool, int] | None = None
    for walk, window in statements:
        if walk and (before is None or not before[0] or window < before[1]):
            assert window == 0, statements  # a page's first walk
        elif walk:
            assert window in (before[1], before[1] + 1), statements  # type: ignore[index]
        elif before is not None and before[0]:
            assert before[1] == windows - 1, statements
        before = (walk, window)


@pytest.mark.usefixtures("fresh_templates")
@pytest.mark.parametrize(
    "walked, read",
    [((10**6,), 256), ((1,), 256), ((2,), 1), ((4,), 2), ((1, 3), 1), ((1, 2, 4), 2)],
)
async def test_common_words_walk_their_smallest_range_newest_first(
    database: Database,
    crowded: SqlJournal,
    monkeypatch: pytest.MonkeyPatch,
    walked: tuple[int, ...],
    read: int,
) -> None:
    """Two common words first read windows of the newest entries of their smallest range
    (``WALKED``, smallest first) and check the other word on the keys' texts; when the last
    window gives fewer than ``WALK_KEYS`` keys, the search goes on intersecting the ranges
    (three words do so at once). Whatever the sizes, the pages are the oracle's: the walk's
    keys are the newest, none is opened twice, none is missed."""
    statements: list[tuple[bool, int]] = []  # a walk's or not, and its window
    keys_statement = queries._keys_statement

    def noted(found_by: KeySearch, after: object, window: int, dialect: str) -> object:
        statements.append((found_by.exact is not None, window))
        return keys_statement(found_by, after, window, dialect)  # type: ignore[arg-type]

    monkeypatch.setattr(queries, "_keys_statement", noted)
    monkeypatch.setattr(queries, "MAX_SEARCH_KEYS", 0)
    monkeypatch.setattr(queries, "FEW_KEYS", 0)
    monkeypatch.setattr(queries, "WALKED", walked)
    monkeypatch.setattr(queries, "KEYS_READ", read)
    monkeypatch.setattr(queries, "WALK_KEYS", read)
    monkeypatch.setattr(queries, "KEY_BATCHES", (1, 2))
    rows = await _texts(database)
    tried = ["иванов петр", "петр иванов", "петров анна", "сидоров петр 10", "анна 111"]
    tried += ["иванов анна", "вектор петр", "пет ива", "5550 анна", "nobody петр"]
    tried += ["иванов петр 106", "петр 55500 иванов"]  # three words: intersected at once
    walks, grown = 0, False
    for query in tried:
        async with database.sessions() as session:
            found_by = await key_search(session, parse_query(query, "RU"))
            assert found_by is not None and not found_by.frequent, query
            sizes = await queries._range_sizes(
                session, found_by.ranges, 10**6, names=found_by.names
            )
        if len(parse_query(query, "RU").all_of) > 2:
            assert found_by.exact is None and sizes == sorted(sizes), query
        else:
            assert len(found_by.ranges) == 1, query  # one range read, the rest on texts
            assert (found_by.exact is None) == (sizes[0] <= walked[-1]), query
        walks += found_by.exact is not None
        for limit in (1, 3, 500):
            where = JournalFilter(query=query, internal=InternalCalls.SHOW)
            statements.clear()
            assert await _pages(database, where, limit) == _oracle(rows, query), query
            _check_windows(statements, len(walked))
            grown |= any(walk and window > 0 for walk, window in statements)
    assert walks >= (6 if walked[-1] < 10**6 else 0)
    assert grown == (len(walked) > 1), walked  # a larger window was walked, when there is one
    assert _oracle(rows, "иванов петр") and _oracle(rows, "иванов петр 106")


@pytest.mark.usefixtures("fresh_templates")
async def test_a_digit_word_among_names_leaves_numbers_out(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A number's key holds digits only, so it cannot hold every word of a search with a
    letter in it: there a digit word's range is counted and read without numbers' keys
    ("Зайцев Сергей 450": 13,400 of the 16,700 entries of ``450`` at ten million calls are
    numbers), and it is often the rare word. A search of digits alone still finds numbers."""
    journal = await make_journal(database)
    contacts = tuple(
        ContactRecord(
            f"p-{i}", f"{('Иванов', 'Петров')[i % 2]} Пётр {450 + 1000 * i}", (f"+7916450{i:04d}",)
        )
        for i in range(6)
    )
    await journal.upsert_customer(CustomerRecord("c-1", "ООО Вектор 450", (), contacts), START)
    numbers = [f"+7916450{i % 40:04d}" for i in range(80)]
    await _write_numbers(journal, numbers, gap=900, extensions=3, tag="digits", both_ways=True)
    monkeypatch.setattr(queries, "FEW_KEYS", 16)
    rows = await _texts(database)
    async with database.sessions() as session:
        found_by = await key_search(session, parse_query("иванов 450", "RU"))
        assert found_by is not None and found_by.names, found_by
        with_numbers = await queries._range_sizes(session, ["450"], 10**6)
        without = await queries._range_sizes(session, ["450"], 10**6, names=True)
        # Forty numbers (a suffix their two written forms share is one entry), against six
        # contacts and one customer.
        assert with_numbers == [47] and without == [7]
        assert "450" in found_by.ranges, found_by  # rare once the numbers are out
        assert found_by.numbers_out() == tuple(w == "450" for w in found_by.ranges)
        number = await key_search(session, parse_query("450", "RU"))
        assert number is not None and not number.names and number.numbers_out() == (False,)
    tried = ["иванов 450", "петр 450", "вектор 450", "петр 1450", "450 петров 3450"]
    tried += ["петр 916", "пётр 4500001", "450", "916 450", "+7 916 450-00-07", "вектор"]
    for query in tried:
        assert _oracle(rows, query) or query in ("петр 916", "пётр 4500001"), query
        for limit in (1, 3, 500):
            where = JournalFilter(query=query, internal=InternalCalls.SHOW)
            assert await _pages(database, where, limit) == _oracle(rows, query), query


async def test_the_writer_reads_its_keys_by_their_index(database: Database) -> None:
    """The batch's keys are read by searches of the key, never a scan of ``search_keys``
    (two million rows at ten million calls: ``(kind, key) IN (VALUES …)`` scanned it on
    SQLite for every batch)."""
    statement = searchkeys._read_keys(("e", "n")).params(
        keys_e=["101", "102"], keys_n=["+79161234567"]
    )
    async with database.sessions() as session:
        connection = await session.connection()
        sql = statement.compile(
            dialect=connection.dialect,
            compile_kwargs={"render_postcompile": True, "literal_binds": True},
        )
        if not database.is_sqlite:
            await session.execute(sa.text("SET enable_seqscan = off"))
        prefix = "EXPLAIN QUERY PLAN " if database.is_sqlite else "EXPLAIN "
        rows = await connection.exec_driver_sql(prefix + str(sql))
        plan = "\n".join(str(row[-1] if database.is_sqlite else row[0]) for row in rows)
    assert "SCAN search_keys" not in plan and "Seq Scan" not in plan, plan
    # SQLite: the table's own key (``WITHOUT ROWID``, migration 0013).
    assert "USING PRIMARY KEY (kind=? AND key=?)" in plan or "pk_search_keys" in plan, plan
