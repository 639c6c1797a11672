"""``bench/journal_queries.py --schema``: a journal filled at an older revision and upgraded by
the migrations answers every benchmark case as one filled at the newest revision.

The benchmark fills a journal at revision 0005 to time the upgrade and to measure the code
before issue 18 on it (``docs/benchmarks.md``). The rows it generates carry the newest
revision's columns; at 0005 the tables lack the later ones (``callback_of``), and the fill must
leave them out rather than fail. Upgrading that journal runs every migration's backfill
(``extension_calls`` from the participants, the search keys from numbers and names): the pages
of all the benchmark's cases, each a different index path, must then be those of a journal
filled at head with the same rows.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench import journal_queries as bench
from storage.engine import open_database
from storage.migrate import current_revision, head_revision, upgrade
from tests.db import ENGINES, postgres_url

#: The cases that find nothing by construction.
EMPTY = {
    *(
        f"{flag}+internal=only"
        for flag in (
            "incoming",
            "outgoing",
            "missed",
            "lost",
            "first_contact",
            "unregistered",
            "attention",
        )
    ),
    "outgoing+attention",
    "search: 4 digits, internal calls only",
    "search: 'ооо' + unregistered (none)",
}
ROWS = 12_000  # the deepest case's cursor is 10,000 rows down


def _args(path: Path, url: str | None, schema: str) -> argparse.Namespace:
    return argparse.Namespace(
        schema=schema, sqlite_path=str(path), pg_url=url, reuse=False, from_sqlite=None
    )


async def _pages(url: str) -> dict[str, list[list[int]]]:
    """Every case's pages (ids), three draws each, as the benchmark makes them."""
    database = open_database(url)
    pages: dict[str, list[list[int]]] = {}
    try:
        for case in bench.query_cases(bench.Synth(ROWS)):
            if case.path.endswith("/changes"):
                continue
            rnd = random.Random(case.name)
            drawn = []
            for _ in range(3):
                where, cursor = bench.to_filter(case.make(rnd))
                async with database.sessions() as session:
                    page = await bench.list_calls(session, where, limit=50, cursor=cursor)
                drawn.append([entry.id for entry in page.entries])
            pages[case.name] = drawn
    finally:
        await database.dispose()
    return pages


async def _columns(url: str, table: str) -> set[str]:
    database = open_database(url)
    try:
        async with database.engine.connect() as connection:
            return await connection.run_sync(
                lambda c: {column["name"] for column in sa.inspect(c).get_columns(table)}
            )
    finally:
        await database.dispose()


async def _revision(url: str) -> str | None:
    database = open_database(url)
    try:
        return await current_revision(database)
    finally:
        await database.dispose()


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_journal_filled_at_0005_and_upgraded_answers_as_one_filled_at_head(
    engine: str, tmp_path: Path
) -> None:
    base = await postgres_url() if engine == "postgresql" else None
    old = await bench.prepare(
        engine, _args(tmp_path / "old.sqlite3", base, "0005"), bench.Synth(ROWS)
    )
    assert await _revision(old) == "0005"
    assert "callback_of" not in await _columns(old, "calls")  # added by 0006
    database = open_database(old)
    try:
        async with database.engine.connect() as connection:
            assert await connection.scalar(sa.text("SELECT count(*) FROM calls")) == ROWS
        await upgrade(database)
    finally:
        await database.dispose()
    assert await _revision(old) == head_revision()
    upgraded = await _pages(old)

    new = await bench.prepare(
        engine, _args(tmp_path / "new.sqlite3", base, "head"), bench.Synth(ROWS)
    )
    assert "callback_of" in await _columns(new, "calls")
    filled = await _pages(new)

    assert upgraded == filled
    # A comparison of empty pages would prove nothing: every case finds calls but those
    # that cannot by construction (an internal call is never incoming, missed, a first
    # contact...; an outgoing call never needs attention).
    empty = sorted(name for name, drawn in filled.items() if not any(drawn))
    assert empty == sorted(EMPTY), empty


def test_a_projection_keeps_the_columns_a_revision_has() -> None:
    projection = bench.Projection.of(["id", "callback_of", "number"], ["number", "id"])
    assert projection.columns == ["id", "number"]
    assert projection.rows([(1, None, "+7"), (2, 5, "+8")]) == [(1, "+7"), (2, "+8")]
    every = bench.Projection.of(["id", "number"], ["number", "id", "later"])
    rows = [(1, "+7")]
    assert every.keep is None and every.rows(rows) is rows
