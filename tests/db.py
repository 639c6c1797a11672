"""Real databases for the storage tests: a SQLite file in tmp_path and the PostgreSQL of
``PBXJOURNAL_TEST_PG_URL`` (``scripts/test-postgres`` starts one and prints the URL).

Without that variable the PostgreSQL cases skip, saying why, except under ``CI=true``, where a
missing PostgreSQL fails the run: CI must test both engines. A test run creates a database of
its own next to the one in the URL (the role may create databases) and drops it at exit, so
two runs on one machine do not wipe each other's tables; each PostgreSQL test then starts from
an empty ``public`` schema, so tests do not see each other's rows.

tests/conftest.py offers the fixtures to every test module.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url

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


_run_databases: dict[str, str] = {}


async def _admin(url: str) -> Any:
    import asyncpg

    parsed = make_url(url)
    return await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )


async def postgres_url() -> str:
    """This run's PostgreSQL URL, or skip (fail under CI) when there is none."""
    base = os.environ.get(PG_ENV)
    if not base:
        message = f"PostgreSQL tests need {PG_ENV} (run: export {PG_ENV}=$(scripts/test-postgres))"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but no PostgreSQL: {message}")
        pytest.skip(message)
    if base not in _run_databases:
        name = f"{make_url(base).database}_run_{os.getpid()}_{secrets.token_hex(3)}"
        connection = await _admin(base)
        try:
            collate, ctype = await connection.fetchrow(
                "SELECT datcollate, datctype FROM pg_database WHERE datname = current_database()"
            )
            await connection.execute(
                f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                f"LC_COLLATE '{collate}' LC_CTYPE '{ctype}'"
            )
        finally:
            await connection.close()
        _run_databases[base] = make_url(base).set(database=name).render_as_string(False)
        atexit.register(_drop_database, base, name)
    return _run_databases[base]


def _drop_database(base: str, name: str) -> None:
    async def drop() -> None:
        connection = await _admin(base)
        try:
            await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await connection.close()

    asyncio.run(drop())


async def reset_postgres(url: str) -> None:
    """Drop everything in the test database: a fresh ``public`` schema."""
    connection = await _admin(url)
    try:
        await connection.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()


async def fresh_url(engine: str, tmp_path: Path) -> str:
    if engine == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'journal.sqlite3'}"
    url = await postgres_url()
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


async def index_names(database: Database, *tables: str) -> set[str]:
    """The names of the indexes of ``tables``, as the database reports them."""

    def names(connection: Connection) -> set[str]:
        found = inspect(connection)
        return {str(index["name"]) for table in tables for index in found.get_indexes(table)}

    async with database.engine.connect() as connection:
        return await connection.run_sync(names)
