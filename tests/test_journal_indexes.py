"""Migration 0007 (issue 18): ``ix_calls_class`` added to a filled journal on both engines,
and the combined filters it serves.

A journal filled at revision 0005 (every capture replayed through the real pipeline, 1C's
directory binding two numbers) is upgraded; every page of the combined filters read before
the upgrade is read again after it, unchanged, and now from the new index. Downgrading drops
the index and leaves the rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from config import load_settings
from pbxjournal.dbtools import replay_events
from pbxjournal.pipeline import build_pipeline
from pbxjournal.replay import capture_events
from storage.engine import Database
from storage.migrate import current_revision, downgrade, upgrade
from storage.queries import (
    InternalCalls,
    JournalFilter,
    explain,
    journal_classes,
    journal_statement,
    list_calls,
)
from tests.calls import at
from tests.db import index_names, make_journal
from tests.test_replay import write_config
from tests.test_storage_queries import CAPTURES, ROMASHKA

#: The revision this file is about, and the one before it.
JOURNAL_INDEXES = "0007"
BEFORE = "0006"


def combined_filters() -> Iterator[JournalFilter]:
    """Filters that combine two or more conditions (the ones ``ix_calls_class`` serves), in
    each internal mode. Not "my calls": since migration 0011 those read ``extension_calls``
    (``tests/test_extension_calls.py``), which a journal at this revision does not have."""
    for kinds, internal, first, unregistered, attention, employee in itertools.product(
        [(), ("incoming",), ("missed",), ("lost",), ("missed", "outgoing")],
        list(InternalCalls),
        (None, True, False),
        (None, True),
        (None, True),
        (None,),
    ):
        where = JournalFilter(
            kinds=frozenset(kinds),
            internal=internal,
            first_contact=first,
            unregistered=unregistered,
            attention=attention,
            employee=employee,
        )
        if journal_classes(where) is not None:
            yield where


async def _pages(database: Database) -> list[list[int]]:
    pages = []
    async with database.sessions() as session:
        for where in combined_filters():
            page = await list_calls(session, where, limit=500)
            pages.append([entry.id for entry in page.entries])
    return pages


async def _fill(database: Database, tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    journal = await make_journal(database)
    await replay_events(build_pipeline(settings), journal, capture_events(CAPTURES))
    await journal.upsert_customer(ROMASHKA, now=at("11-28 12:00"))


async def test_0007_adds_the_class_index_to_a_filled_journal(
    empty_database: Database, tmp_path: Path
) -> None:
    await upgrade(empty_database, BEFORE)
    await _fill(empty_database, tmp_path)
    before = await _pages(empty_database)
    assert "ix_calls_class" not in await index_names(empty_database, "calls")
    assert sum(map(bool, before)) > 50  # not all trivially empty

    await upgrade(empty_database, JOURNAL_INDEXES)

    assert await current_revision(empty_database) == JOURNAL_INDEXES
    assert "ix_calls_class" in await index_names(empty_database, "calls")
    assert await _pages(empty_database) == before
    where = JournalFilter(kinds=frozenset({"missed"}), first_contact=True)
    async with empty_database.sessions() as session:
        statement = journal_statement(empty_database.dialect, where, limit=50)
        plan = "\n".join(await explain(session, statement))
    if empty_database.is_sqlite:
        # The ranges merged in journal order, each read from the new index.
        assert "MERGE (UNION ALL)" in plan and "USE TEMP B-TREE" not in plan, plan
        assert "USING COVERING INDEX ix_calls_class" in plan, plan
    else:
        # The classes as rows (unnest of their columns' arrays), each a page of one scan (at
        # 70 rows the planner may read a class through another index; at ten million it
        # reads ix_calls_class: bench/).
        assert "Function Scan on classes" in plan and "Limit" in plan, plan

    await downgrade(empty_database, BEFORE)
    assert "ix_calls_class" not in await index_names(empty_database, "calls")
    assert await _pages(empty_database) == before


async def test_a_page_of_combined_filters_is_one_range_per_class() -> None:
    # "Outgoing calls needing attention": 2 * 2 * 2 * 5 classes, none of which can hold a row
    # by the rules, each still asked (the classes cover every value the columns can hold).
    outgoing_attention = journal_classes(
        JournalFilter(kinds=frozenset({"outgoing"}), attention=True)
    )
    assert outgoing_attention is not None and len(outgoing_attention) == 40
    assert all(c["direction"] == "outgoing" and c["attention"] for c in outgoing_attention)
    # A contradiction is no class at all: the page is empty without reading anything.
    assert (
        journal_classes(JournalFilter(kinds=frozenset({"incoming"}), internal=InternalCalls.ONLY))
        == []
    )
    # A single filter walks its own index; a search walks the trigram index.
    assert journal_classes(JournalFilter(attention=True)) is None
    assert journal_classes(JournalFilter(attention=True, first_contact=True, query="ромаш")) is None
