"""Engines and sessions for the journal database, SQLite or PostgreSQL, from one URL.

Theory of operation
-------------------
:func:`open_database` returns a :class:`Database`: a reader engine and a writer engine with
their ``async_sessionmaker(expire_on_commit=False)``. Sessions are made per request or per
batch and never shared between tasks (STYLE 6).

SQLite (``sqlite+aiosqlite:///path``) is the embedded default. Each connection is set up on
connect, not once per file, because these pragmas are per connection: ``journal_mode=WAL``
(readers never wait for the writer), ``foreign_keys=ON`` (off by default in SQLite),
``busy_timeout`` (another process — ``pbxjournal calls``, a migration — may hold the lock for
a moment), ``synchronous=NORMAL`` (safe with WAL; a power cut loses at most the last
transactions, never the file). SQLite has one writer at a time anyway; rather than let
writers collide and retry on ``SQLITE_BUSY``, the writer engine holds a single connection and
starts every transaction with ``BEGIN IMMEDIATE``, so the write lock is taken up front and a
read-then-write transaction cannot deadlock against another process. Readers use their own
connections with plain ``BEGIN``. The pysqlite driver's own transaction handling is turned off
(``isolation_level = None``) so that these ``BEGIN`` statements are the only ones.

PostgreSQL (``postgresql+asyncpg://``) uses one pooled engine for both roles; writers
serialise on the ``journal_state`` row lock instead (see :mod:`storage.store`).

aiosqlite runs every SQLite call in its own thread, so nothing here blocks the event loop.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_MIN_VERSION",
    "Database",
    "DatabaseError",
    "open_database",
    "sqlite_supports_trigram",
]

#: FTS5's trigram tokenizer appeared in SQLite 3.34.0.
SQLITE_MIN_VERSION = (3, 34, 0)
SQLITE_BUSY_TIMEOUT_MS = 10_000


class DatabaseError(Exception):
    """The database URL or engine cannot serve the journal (message says why)."""


def sqlite_supports_trigram(version: str = sqlite3.sqlite_version) -> bool:
    parts = tuple(int(p) for p in version.split(".")[:3])
    return parts >= SQLITE_MIN_VERSION


@dataclass(frozen=True, slots=True)
class Database:
    """The engines of one journal database and their session factories."""

    url: str
    dialect: str
    engine: AsyncEngine
    writer: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    write_sessions: async_sessionmaker[AsyncSession]

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def dispose(self) -> None:
        if self.writer is not self.engine:
            await self.writer.dispose()
        await self.engine.dispose()


def _sqlite_setup(engine: AsyncEngine, begin: str) -> None:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    def on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(begin)

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)


def open_database(url: str, *, echo: bool = False) -> Database:
    """Engines for ``url`` (SQLAlchemy async URL). No connection is made until first use."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseError(f"not a database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.get_driver_name() != "aiosqlite":
            raise DatabaseError("SQLite needs the async driver: sqlite+aiosqlite:///path")
        if not sqlite_supports_trigram():
            raise DatabaseError(
                f"SQLite {sqlite3.sqlite_version} lacks FTS5 trigram search; "
                f"{'.'.join(map(str, SQLITE_MIN_VERSION))} or newer is needed"
            )
        if parsed.database in (None, "", ":memory:"):
            raise DatabaseError("SQLite journal needs a file path, not an in-memory database")
        engine = create_async_engine(parsed, echo=echo, pool_size=4, max_overflow=4)
        writer = create_async_engine(parsed, echo=echo, pool_size=1, max_overflow=0)
        _sqlite_setup(engine, "BEGIN")
        _sqlite_setup(writer, "BEGIN IMMEDIATE")
    elif backend == "postgresql":
        if parsed.get_driver_name() != "asyncpg":
            raise DatabaseError("PostgreSQL needs the async driver: postgresql+asyncpg://...")
        # Custom plans: a journal page's best plan depends on the values (how common a search
        # term or a flag is); a generic plan of a prepared statement guesses, and guesses badly.
        engine = create_async_engine(
            parsed,
            echo=echo,
            pool_pre_ping=True,
            connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}},
        )
        writer = engine
    else:
        raise DatabaseError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")
    return Database(
        url=url,
        dialect=backend,
        engine=engine,
        writer=writer,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        write_sessions=async_sessionmaker(writer, expire_on_commit=False),
    )
