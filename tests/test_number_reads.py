"""A number with many calls: a write reads only the calls it can change, and the journal ends
up as the in-memory journal (the reference, which re-evaluates every call of the number).

The rules' verdict of a call depends on its number's other calls only through "is there an
earlier call" and "is there an answered call starting within its window"; ``storage.store``
reads just the calls for which a write can change either (its "Bounded reads"). These tests
write one number's calls out of order, rewrite some (another start, answered or not, another
number), register the number half-way, and compare every write's changes and every row with
the in-memory journal on both engines; and they count the call rows a write loads when the
number already has hundreds (a handful, however many it has).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from connector.assembly import Direction, FinishedCall
from storage.directory import CustomerRecord
from storage.engine import Database
from storage.journal import CustomerRef
from storage.memory import MemoryJournal
from storage.models import Call
from storage.rules import AttentionWindow
from storage.store import SqlJournal
from tests.calls import at, make_call
from tests.db import MOSCOW, make_journal

IN, OUT = Direction.INCOMING, Direction.OUTGOING
NUMBER = "+79161234567"
OTHER = "+79031112233"
ROMASHKA = CustomerRecord("c1", "ООО Ромашка", (NUMBER,))
WINDOWS = {
    "24h": AttentionWindow.fixed(86400.0, MOSCOW),
    "end_of_day": AttentionWindow.until_end_of_day(MOSCOW),
}


@dataclass
class Pair:
    """The SQL journal and the in-memory one, written alike."""

    sql: SqlJournal
    memory: MemoryJournal
    bound: set[str]
    #: Versions the SQL journal handed out that the memory journal has no counterpart of
    #: (registration shows the customer on the number's rows; the memory journal has no
    #: directory).
    offset: int = 0

    async def write(self, call: FinishedCall, now: float) -> None:
        expected = [(e.id, e.version + self.offset) for e in self.memory.write(call, [], now)]
        got = [(c.id, c.version) for c in await self.sql.write(call, [], now)]
        assert got == expected, call.conversation_id

    async def register(self, now: float) -> None:
        self.offset += len(await self.sql.upsert_customer(ROMASHKA, now))
        self.bound.add(NUMBER)

    async def assert_equal(self) -> None:
        memory = self.memory.entries()
        sql = {e.id: e for e in await self.sql.entries([e.id for e in memory])}
        assert len(sql) == len(memory)
        for entry in memory:
            row = sql[entry.id]
            assert (row.status, row.attention, row.first_contact, row.window_closes_at) == (
                entry.status,
                entry.attention,
                entry.first_contact,
                entry.window_closes_at,
            ), entry.call.conversation_id


async def pair(database: Database, window: AttentionWindow) -> Pair:
    bound: set[str] = set()
    memory = MemoryJournal(
        pbx="main",
        window=window,
        region="RU",
        lookup_customer=lambda n: CustomerRef("c1", "ООО Ромашка") if n in bound else None,
    )
    return Pair(await make_journal(database, window), memory, bound)


def story(seed: int, count: int) -> Iterator[FinishedCall]:
    """``count`` writes of one number over ten days (some of another number), delivered out
    of order, with some conversations written again changed."""
    rng = random.Random(seed)
    start = at("11-20 08:00")
    calls: list[FinishedCall] = []
    for _ in range(count):
        direction = IN if rng.random() < 0.7 else OUT
        number = NUMBER if rng.random() < 0.9 else OTHER
        started = start + rng.uniform(0, 10 * 86400)
        calls.append(make_call(direction, number, started, answered=rng.random() < 0.45))
    calls.sort(key=lambda c: c.ended_at)
    written: list[FinishedCall] = []
    for call in calls:
        if written and rng.random() < 0.2:
            # A late arrival: a call that ended hours or days ago.
            yield make_call(
                IN if rng.random() < 0.6 else OUT,
                NUMBER,
                call.started_at - rng.uniform(600, 3 * 86400),
                answered=rng.random() < 0.5,
            )
        if written and rng.random() < 0.1:
            # A conversation written again: moved, answered or not, or to the other number.
            old = rng.choice(written)
            moved = old.started_at + rng.uniform(-7200, 7200)
            yield make_call(
                old.direction,
                OTHER if rng.random() < 0.3 else NUMBER,
                moved,
                answered=rng.random() < 0.5,
                conversation_id=old.conversation_id,
            )
        written.append(call)
        yield call


@pytest.mark.parametrize("window", list(WINDOWS), ids=list(WINDOWS))
@pytest.mark.parametrize("seed", [1, 2])
async def test_a_busy_number_written_out_of_order_is_the_memory_journal(
    database: Database, window: str, seed: int
) -> None:
    journal = await pair(database, WINDOWS[window])
    now = at("11-20 00:00")
    for index, call in enumerate(story(seed, 160)):
        now = max(now, call.ended_at)
        if index == 90:
            await journal.register(now)
        await journal.write(call, now)
    await journal.assert_equal()


@contextmanager
def loaded_calls() -> Iterator[list[int]]:
    """The ids of the call rows the ORM loads meanwhile (any session, either engine)."""
    seen: list[int] = []

    def loaded(_session: Session, instance: object) -> None:
        if isinstance(instance, Call):
            seen.append(instance.id)

    sa.event.listen(Session, "loaded_as_persistent", loaded)
    try:
        yield seen
    finally:
        sa.event.remove(Session, "loaded_as_persistent", loaded)


#: Calls of the number before each case: one every two hours for three weeks. The memory
#: journal re-evaluates every call of the number at each write (cubic in all); the store's
#: reads do not grow with it (bench/hot_number.py writes to a number with 50,000).
BUSY = 240


async def busy_number(database: Database) -> tuple[Pair, list[FinishedCall]]:
    """The number's history, written in batches as the daemon does (and one by one into the
    memory journal): alternately a missed incoming call and an outgoing call back that
    reached the customer an hour later."""
    journal = await pair(database, WINDOWS["24h"])
    start = at("10-01 00:00")
    calls = [
        make_call(IN, NUMBER, start + i * 7200, answered=False)
        if i % 2 == 0
        else make_call(OUT, NUMBER, start + i * 7200 - 3600, answered=True)
        for i in range(BUSY)
    ]
    for offset in range(0, len(calls), 250):
        chunk = calls[offset : offset + 250]
        now = chunk[-1].ended_at
        await journal.sql.write_many([(c, []) for c in chunk], now)
        for call in chunk:
            journal.memory.write(call, [], now)
    await journal.assert_equal()
    # One batch bumps a row once where one write after another bumps it each time.
    journal.offset = await journal.sql.last_version() - journal.memory.last_version
    return journal, calls


async def status_of(journal: SqlJournal, call: FinishedCall) -> tuple[str, bool, bool, int]:
    call_id = await journal.id_of(call.conversation_id)
    assert call_id is not None
    entry = await journal.get(call_id)
    assert entry is not None
    return entry.status.value, entry.attention, entry.first_contact, entry.version


async def test_a_call_back_clears_the_attention_of_the_missed_calls_it_answers(
    database: Database,
) -> None:
    journal, _ = await busy_number(database)
    now = at("11-10 09:00")
    missed = [make_call(IN, NUMBER, now + i * 600, answered=False) for i in range(3)]
    for call in missed:
        with loaded_calls() as seen:
            await journal.write(call, call.ended_at)
        assert len(seen) <= 3, seen  # itself, maybe the number's first call
    assert [(await status_of(journal.sql, c))[:3] for c in missed] == [("lost", True, False)] * 3
    back = make_call(OUT, NUMBER, now + 7200, answered=True)
    with loaded_calls() as seen:
        await journal.write(back, back.ended_at)
    # The call back, the three missed calls it answers, the number's first call at most.
    assert len(seen) <= 5, seen
    assert [(await status_of(journal.sql, c))[:3] for c in missed] == [
        ("no_answer", False, False)
    ] * 3
    await journal.assert_equal()


async def test_an_older_call_arriving_late_changes_only_the_calls_it_concerns(
    database: Database,
) -> None:
    journal, history = await busy_number(database)
    assert (await status_of(journal.sql, history[0]))[:3] == ("no_answer", False, True)
    now = at("11-10 09:00")
    # The oldest call of all, written months late: it is the number's first contact now.
    oldest = make_call(OUT, NUMBER, at("09-30 12:00"), answered=False)
    with loaded_calls() as seen:
        await journal.write(oldest, now)
    assert len(seen) <= 3, seen
    assert (await status_of(journal.sql, oldest))[:3] == ("cancelled", False, True)
    assert (await status_of(journal.sql, history[0]))[:3] == ("no_answer", False, False)
    # A missed call, and an answered call within its window arriving after the window
    # closed (a restarted daemon's backlog): the missed call was handled after all.
    lost = make_call(IN, NUMBER, at("11-12 10:10"), answered=False)
    await journal.write(lost, lost.ended_at)
    assert (await status_of(journal.sql, lost))[:3] == ("lost", True, False)
    later = at("11-14 12:00")
    assert await journal.sql.settle(later) == 1
    journal.memory.settle(later)
    late = make_call(IN, NUMBER, at("11-12 10:40"), answered=True)
    with loaded_calls() as seen:
        await journal.write(late, later)
    assert len(seen) <= 5, seen
    assert (await status_of(journal.sql, lost))[:3] == ("no_answer", False, False)
    await journal.assert_equal()


async def test_registering_the_busy_number_sets_the_status_of_its_next_calls(
    database: Database,
) -> None:
    journal, _ = await busy_number(database)
    now = at("11-10 09:00")
    before = make_call(IN, NUMBER, now, answered=False)
    await journal.write(before, before.ended_at)
    await journal.register(now + 600)
    after = make_call(IN, NUMBER, now + 3600, answered=False)
    with loaded_calls() as seen:
        await journal.write(after, after.ended_at)
    assert len(seen) <= 3, seen
    assert (await status_of(journal.sql, before))[:3] == ("lost", True, False)
    assert (await status_of(journal.sql, after))[:3] == ("no_answer", True, False)
    await journal.assert_equal()


@pytest.mark.parametrize("window", list(WINDOWS), ids=list(WINDOWS))
async def test_a_call_moved_to_another_number_leaves_its_old_number_re_evaluated(
    database: Database, window: str
) -> None:
    journal = await pair(database, WINDOWS[window])
    missed = make_call(IN, NUMBER, at("11-27 10:00"), answered=False)
    back = make_call(OUT, NUMBER, at("11-27 11:00"), answered=True)
    for call in (missed, back):
        await journal.write(call, call.ended_at)
    assert (await status_of(journal.sql, missed))[:3] == ("no_answer", False, True)
    # The call back is written again with the number it really dialled: the missed call
    # lost its later contact.
    moved = make_call(
        OUT, OTHER, back.started_at, answered=True, conversation_id=back.conversation_id
    )
    await journal.write(moved, moved.ended_at)
    assert (await status_of(journal.sql, missed))[:3] == ("lost", True, True)
    assert (await status_of(journal.sql, moved))[:3] == ("reached", False, True)
    await journal.assert_equal()
