"""Real databases for the storage tests: a SQLite file in tmp_path and the PostgreSQL of
``PBXJOURNAL_TEST_PG_URL`` (``scripts/test-postgres`` starts one and prints the URL).

Without that variable the PostgreSQL cases skip, saying why, except under ``CI=true``, where a
missing PostgreSQL fails the run: CI must test both engines. Each PostgreSQL test starts from
an empty ``public`` schema, so tests do not see each other's rows.

tests/conftest.py offers the fixtures to every test module.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import make_url

from connector.assembly import FinishedCall
from storage.directory import EmployeeRecord
from storage.engine import Database, open_database
from storage.migrate import upgrade
from storage.rules import AttentionWindow
from storage.store import SqlJournal
from tests.scenarios import EMPLOYEES

PG_ENV = "PBXJOURNAL_TEST_PG_URL"
MOSCOW = ZoneInfo("Europe/Moscow")
ENGINES = ["sqlite", "postgresql"]


def postgres_url() -> str:
    """The test PostgreSQL URL, or skip (fail under CI) when there is none."""
    url = os.environ.get(PG_ENV)
    if url:
        return url
    message = f"PostgreSQL tests need {PG_ENV} (run: export {PG_ENV}=$(scripts/test-postgres))"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but no PostgreSQL: {message}")
    pytest.skip(message)


async def reset_postgres(url: str) -> None:
    """Drop everything in the test database: a fresh ``public`` schema."""
    import asyncpg

    parsed = make_url(url)
    connection = await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    try:
        await connection.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()


async def fresh_url(engine: str, tmp_path: Path) -> str:
    if engine == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'journal.sqlite3'}"
    url = postgres_url()
    await reset_postgres(url)
    return url


@pytest.fixture(params=ENGINES)
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An engine on an empty database (no schema), SQLite or PostgreSQL."""
    database = open_database(await fresh_url(request.param, tmp_path))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def database(empty_database: Database) -> Database:
    await upgrade(empty_database)
    return empty_database


def employee_records() -> list[EmployeeRecord]:
    return [EmployeeRecord(ext, name, (ext,)) for ext, name in EMPLOYEES.items()]


async def make_journal(
    database: Database, window: AttentionWindow | None = None, *, pbx: str = "main"
) -> SqlJournal:
    journal = SqlJournal(
        database,
        pbx=pbx,
        window=window or AttentionWindow.fixed(86400.0, MOSCOW),
        region="RU",
    )
    await journal.seed_employees(employee_records())
    return journal


@pytest.fixture
async def journal(database: Database) -> SqlJournal:
    return await make_journal(database)


async def write_all(journal: SqlJournal, calls: Iterable[FinishedCall]) -> None:
    """Write calls in the order they ended, each at its own end time, as the daemon would."""
    for call in sorted(calls, key=lambda c: (c.ended_at, c.started_at)):
        await journal.write(call, [], call.ended_at)
