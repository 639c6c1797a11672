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
That costs a hop between threads, a tenth of a millisecond or more on a quiet machine.
SQLAlchemy's adapter makes one for every cursor operation (open, execute, fetch, close);
the engines here use :mod:`storage.onehop`'s cursor instead, which does the four in one hop
(a search page of twelve statements: 48 hops → 12). Hops still dominated the daemon's batch
writes (a hundred statements). So SQLite also gets :attr:`Database.batch_sessions`: a synchronous
engine (pysqlite) on the same file, set up the same way (``BEGIN IMMEDIATE``, one
connection), used from one thread of its own (:attr:`Database.batch_thread`), where a whole
write transaction runs as one call: one hop per batch instead of a hundred. PostgreSQL has
no such hop (asyncpg speaks to the socket from the event loop) and gets neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from storage.onehop import one_hop_dbapi

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_MIN_VERSION",
    "Database",
    "DatabaseError",
    "open_database",
    "run_tool",
    "settle_sqlite_threads",
    "sqlite_supports_trigram",
]

#: FTS5's trigram tokenizer appeared in SQLite 3.34.0.
SQLITE_MIN_VERSION = (3, 34, 0)
SQLITE_BUSY_TIMEOUT_MS = 10_000

_T = TypeVar("_T")


def _json_text(value: Any) -> str:
    """JSON columns' serializer: orjson (the saved open conversations are most of what the
    daemon encodes), the standard library for what orjson refuses."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


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
    #: SQLite only: synchronous write sessions on the same file, for :attr:`batch_thread`.
    batch_sessions: sessionmaker[Session] | None = None
    #: SQLite only: the one thread :attr:`batch_sessions` are used from.
    batch_thread: ThreadPoolExecutor | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def in_batch_thread(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` (blocking, using :attr:`batch_sessions`) in :attr:`batch_thread`."""
        if self.batch_thread is None:
            raise RuntimeError("this database has no batch thread (SQLite only)")
        return await asyncio.get_running_loop().run_in_executor(self.batch_thread, work)

    async def warm_connections(self, work: Callable[[AsyncSession], Awaitable[None]]) -> int:
        """Run ``work`` (e.g. :func:`storage.queries.warm_up`) on as many of the reader
        pool's connections as it keeps, at once, so that each is a different connection:
        after the server restarted, each is a new one (``pool_pre_ping`` replaces the dead)
        and pays its first plans here rather than in a request. PostgreSQL only (a SQLite
        connection has no server-side caches to fill); returns the connections warmed."""
        if self.is_sqlite:
            return 0
        size = self.engine.pool.size() if isinstance(self.engine.pool, QueuePool) else 1

        async def one() -> None:
            async with self.sessions() as session:
                await work(session)

        await asyncio.gather(*(one() for _ in range(max(1, size))))
        return max(1, size)

    async def dispose(self) -> None:
        if self.batch_sessions is not None and self.batch_thread is not None:
            bind = self.batch_sessions.kw["bind"]
            with contextlib.suppress(RuntimeError):  # disposed before: the thread is gone
                await self.in_batch_thread(bind.dispose)
            self.batch_thread.shutdown(wait=True)
        if self.writer is not self.engine:
            await self.writer.dispose()
        await self.engine.dispose()


def _sqlite_setup(engine: sa.Engine, begin: str) -> None:
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

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)


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

        def through_aiosqlite(pool_size: int, max_overflow: int) -> AsyncEngine:
            # One hop to aiosqlite's thread per statement instead of four (storage.onehop).
            return create_async_engine(
                parsed,
                echo=echo,
                pool_size=pool_size,
                max_overflow=max_overflow,
                json_serializer=_json_text,
                module=one_hop_dbapi(),
            )

        engine = through_aiosqlite(4, 4)
        writer = through_aiosqlite(1, 0)
        _sqlite_setup(engine.sync_engine, "BEGIN")
        _sqlite_setup(writer.sync_engine, "BEGIN IMMEDIATE")
        # The batch writer's engine: the same file through the synchronous driver, used only
        # from its own thread (the connection is made there, hence check_same_thread off
        # only to let dispose() run from that thread too).
        batch = sa.create_engine(
            parsed.set(drivername="sqlite+pysqlite"),
            echo=echo,
            pool_size=1,
            max_overflow=0,
            connect_args={"check_same_thread": False},
            json_serializer=_json_text,
        )
        _sqlite_setup(batch, "BEGIN IMMEDIATE")
        batch_sessions = sessionmaker(batch, expire_on_commit=False)
        batch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-batch")
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
            json_serializer=_json_text,
        )
        writer = engine
        batch_sessions = None
        batch_thread = None
    else:
        raise DatabaseError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")
    return Database(
        url=url,
        dialect=backend,
        engine=engine,
        writer=writer,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        write_sessions=async_sessionmaker(writer, expire_on_commit=False),
        batch_sessions=batch_sessions,
        batch_thread=batch_thread,
    )


async def settle_sqlite_threads(within: float = 1.0) -> None:
    """Wait, with the event loop running, for aiosqlite's worker threads still alive to end.

    A connection that fails to open (a missing directory) stops its thread without waiting
    for it (aiosqlite 0.22, ``Connection._connect``): the thread then hands its last result
    to the loop, and when ``asyncio.run`` has closed the loop by then, it dies printing a
    traceback ("Event loop is closed") on a tool's stderr, after the tool's one-line error.
    Call it once every database is disposed: the threads of closed connections end at once,
    and a thread still in use is waited for at most ``within`` seconds in all."""
    import threading

    from aiosqlite import core

    worker = getattr(core, "_connection_worker_thread", None)
    if worker is None:
        return  # another aiosqlite: a thread's target of None is not its worker (MainThread)
    deadline = time.monotonic() + within
    for thread in threading.enumerate():
        if getattr(thread, "_target", None) is worker and thread.is_alive():
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))


def run_tool(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)`` for a command of ``pbxjournal``: aiosqlite's worker threads are
    let end before the loop closes (:func:`settle_sqlite_threads`), whether ``main`` returns
    or raises."""

    async def settled() -> _T:
        try:
            return await main
        finally:
            await settle_sqlite_threads()

    return asyncio.run(settled())
