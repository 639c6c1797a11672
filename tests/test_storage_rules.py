"""The journal rules (DESIGN section 1) against a real database, with explicit times.

Each case is a short story told in Moscow time: calls with one number, written in the order
they end, each at its end time, as the daemon writes them. The rows must end up with the
statuses and flags of the user guide. Europe/Moscow is UTC+3 all year, so ``end_of_day``
closing at UTC midnight instead of local midnight would show in the cases across midnight.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from connector.assembly import Direction
from storage.directory import CustomerRecord
from storage.engine import Database
from storage.rules import AttentionWindow
from storage.store import SqlJournal
from tests.calls import at, make_call
from tests.db import MOSCOW, make_journal

IN, OUT = Direction.INCOMING, Direction.OUTGOING
NUMBER = "+79161234567"


@dataclass(frozen=True)
class Step:
    when: str
    direction: Direction
    answered: bool
    #: How the PBX wrote the number this time (any written form is the same number).
    number: str = NUMBER


@dataclass(frozen=True)
class Case:
    name: str
    window: str  # "24h" | "end_of_day"
    registered: bool
    steps: tuple[Step, ...]
    #: (status, attention, first_contact) of each call, in step order, at the end.
    expected: tuple[tuple[str, bool, bool], ...]


CASES = [
    Case(
        "new number, missed: lost, attention, first contact",
        "24h",
        False,
        (Step("11-27 10:00", IN, False),),
        (("lost", True, True),),
    ),
    Case(
        "registered number, missed: no_answer from the start, not a first contact",
        "24h",
        True,
        (Step("11-27 10:00", IN, False),),
        (("no_answer", True, False),),
    ),
    Case(
        "registered number, answered",
        "24h",
        True,
        (Step("11-27 10:00", IN, True),),
        (("answered", False, False),),
    ),
    Case(
        "call back reached within 24h: no_answer, attention cleared",
        "24h",
        False,
        (Step("11-27 10:00", IN, False), Step("11-28 09:59", OUT, True, "8 916 123-45-67")),
        (("no_answer", False, True), ("reached", False, False)),
    ),
    Case(
        "call back after 24h: stays lost with attention",
        "24h",
        False,
        (Step("11-27 10:00", IN, False), Step("11-28 10:01", OUT, True)),
        (("lost", True, True), ("reached", False, False)),
    ),
    Case(
        "call back not answered: no later contact",
        "24h",
        False,
        (Step("11-27 10:00", IN, False), Step("11-27 10:30", OUT, False)),
        (("lost", True, True), ("cancelled", False, False)),
    ),
    Case(
        "customer calls again and is answered: that is a later contact too",
        "24h",
        False,
        (Step("11-27 10:00", IN, False), Step("11-27 11:00", IN, True, "79161234567")),
        (("no_answer", False, True), ("answered", False, False)),
    ),
    Case(
        "24h window across midnight: call back at 00:10 counts",
        "24h",
        False,
        (Step("11-27 23:30", IN, False), Step("11-28 00:10", OUT, True)),
        (("no_answer", False, True), ("reached", False, False)),
    ),
    Case(
        "end_of_day: call back the same evening counts",
        "end_of_day",
        False,
        (Step("11-27 23:30", IN, False), Step("11-27 23:50", OUT, True)),
        (("no_answer", False, True), ("reached", False, False)),
    ),
    Case(
        "end_of_day: call back after local midnight does not (UTC would still be the 27th)",
        "end_of_day",
        False,
        (Step("11-27 23:30", IN, False), Step("11-28 00:10", OUT, True)),
        (("lost", True, True), ("reached", False, False)),
    ),
    Case(
        "end_of_day: a registered number stays no_answer with attention",
        "end_of_day",
        True,
        (Step("11-27 23:30", IN, False), Step("11-28 00:10", OUT, True)),
        (("no_answer", True, False), ("reached", False, False)),
    ),
    Case(
        "first contact only on the first call of a number",
        "24h",
        False,
        (
            Step("11-27 10:00", IN, True),
            Step("11-27 12:00", OUT, True),
            Step("11-29 09:00", IN, False),
        ),
        (("answered", False, True), ("reached", False, False), ("lost", True, False)),
    ),
]


def window_of(case: Case) -> AttentionWindow:
    if case.window == "end_of_day":
        return AttentionWindow.until_end_of_day(MOSCOW)
    return AttentionWindow.fixed(86400.0, MOSCOW)


async def states(journal: SqlJournal, ids: list[int]) -> list[tuple[str, bool, bool]]:
    entries = {e.id: e for e in await journal.entries(ids)}
    return [(entries[i].status.value, entries[i].attention, entries[i].first_contact) for i in ids]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_rules(database: Database, case: Case) -> None:
    journal = await make_journal(database, window_of(case))
    if case.registered:
        await journal.upsert_customer(
            CustomerRecord("c1", "ООО Ромашка", ("+7 (916) 123-45-67",)),
            now=at("11-01 09:00"),
        )
    ids = []
    for step in case.steps:
        call = make_call(step.direction, step.number, at(step.when), answered=step.answered)
        await journal.write(call, [], call.ended_at)
        call_id = await journal.id_of(call.conversation_id)
        assert call_id is not None
        ids.append(call_id)
    assert len(set(ids)) == len(ids)
    assert await states(journal, ids) == list(case.expected)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_rules_in_one_batch(database: Database, case: Case) -> None:
    """The daemon's writer hands calls over in batches: one transaction, in any order, read
    once for the batch. The rows end up as when written one by one."""
    journal = await make_journal(database, window_of(case))
    if case.registered:
        await journal.upsert_customer(
            CustomerRecord("c1", "ООО Ромашка", ("+7 (916) 123-45-67",)),
            now=at("11-01 09:00"),
        )
    calls = [
        make_call(step.direction, step.number, at(step.when), answered=step.answered)
        for step in case.steps
    ]
    # Newest first: the batch's own rows must count as calls of the number already.
    await journal.write_many([(call, []) for call in reversed(calls)], calls[-1].ended_at)
    ids = [await journal.id_of(call.conversation_id) for call in calls]
    assert None not in ids and len(set(ids)) == len(ids)
    assert await states(journal, [i for i in ids if i is not None]) == list(case.expected)
