"""A new PostgreSQL backend pays its catalog reads in the warm-up, not in the first requests.

A backend plans its first statement on a table by reading the catalogs (the table's and its
indexes' descriptions, column statistics, operators, types): several hundred pages after a
server restart, in ``EXPLAIN (ANALYZE, BUFFERS)``'s "Planning: Buffers". The daemon's change
feed warms every connection of the reader pool (``storage.queries.warm_up``) when its LISTEN
connection is made — at start, and again after the server dropped it (a restart) — so that a
pooled connection's first journal page plans without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from httpd.app import init_app
from httpd.feed import ChangeFeed, FeedTiming
from httpd.keys import FEED
from storage.engine import Database, open_database
from storage.queries import JournalFilter, journal_statement, warm_up
from storage.store import SqlJournal
from tests.db import fresh_url, make_journal
from tests.http_support import api_settings, seed


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    url = await fresh_url("postgresql", tmp_path)
    await seed(url, api_settings(tmp_path))
    database = open_database(url)
    try:
        yield database
    finally:
        await database.dispose()


async def _planning_buffers(connection: AsyncConnection) -> int:
    """Catalog pages (hit or read) the plan of a journal page took on this connection."""
    page = journal_statement("postgresql", JournalFilter(kinds=frozenset({"lost"})), limit=51)
    sql = str(page.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    rows = (await connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql)).all()
    plan = "\n".join(str(row[0]) for row in rows)
    found = re.search(r"Planning:\n\s+Buffers: ([^\n]*)", plan)
    if found is None:
        return 0
    return sum(int(n) for n in re.findall(r"=(\d+)", found.group(1)))


async def _pooled_connections_buffers(database: Database, count: int) -> list[int]:
    """The planning buffers of ``count`` of the pool's connections, checked out at once."""
    async with contextlib.AsyncExitStack() as stack:
        connections = [
            await stack.enter_async_context(database.engine.connect()) for _ in range(count)
        ]
        return [await _planning_buffers(connection) for connection in connections]


async def test_a_new_backend_plans_from_the_catalogs_and_a_warmed_one_does_not(
    database: Database,
) -> None:
    (fresh,) = await _pooled_connections_buffers(database, 1)
    assert fresh > 100  # the catalogs of calls and its indexes, on this backend's first plan
    await database.engine.dispose()
    warmed = await database.warm_connections(warm_up)
    assert warmed == database.engine.pool.size()  # type: ignore[attr-defined]
    assert await _pooled_connections_buffers(database, warmed) == [0] * warmed


async def _wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within the time")


async def test_the_feed_warms_the_pool_at_start_and_after_the_server_dropped_it(
    database: Database, tmp_path: Path
) -> None:
    journal: SqlJournal = await make_journal(database)
    app = init_app(api_settings(tmp_path), journal, merged_cache=tmp_path / "merged")
    feed: ChangeFeed = app[FEED]
    feed.timing = FeedTiming(probe_min=0.5, probe_max=2.0, reconnect_min=0.05)
    async with feed.running():
        await _wait_for(lambda: feed.warmed)
        size = database.engine.pool.size()  # type: ignore[attr-defined]
        assert await _pooled_connections_buffers(database, size) == [0] * size
        # What a restart does to the daemon's connections: the server ends every backend.
        url = make_url(database.url)
        admin = await asyncpg.connect(
            user=url.username,
            password=url.password,
            host=url.host,
            port=url.port,
            database=url.database,
        )
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        await _wait_for(lambda: not feed.warmed or not feed.listening)
        await _wait_for(lambda: feed.warmed and feed.listening)
        assert await _pooled_connections_buffers(database, size) == [0] * size
