"""One hop to aiosqlite's thread per statement, not four.

Theory of operation
-------------------
SQLAlchemy's aiosqlite adapter drives an aiosqlite cursor, and every cursor operation is a
hop to the connection's thread and back: open the cursor, execute, fetch the rows, close it.
A hop costs 0.1–0.15 ms on a quiet machine and more on a busy one (the thread must be woken,
then the event loop), so a statement costs about half a millisecond before SQLite does any
work, and a search page of twelve statements spends about 5 ms hopping (measured: one hop
instead of four saves 2–4 ms of such a page, ``bench/hops.py``).

:class:`OneHopCursor` does the four in one call on the thread (:func:`_run`): open a sqlite3
cursor, execute, note what SQLAlchemy asks of a cursor afterwards (``description``,
``rowcount``, ``lastrowid``), fetch every row, close. The rows come back as the adapter's
own cursor keeps them (a buffer that ``fetch*`` pops), so results are what they were.
Server-side cursors (``AsyncConnection.stream``) keep the adapter's own class.

The adapter's classes are SQLAlchemy's (``AsyncAdapt_aiosqlite_*``), and
``aiosqlite.Connection._execute`` (run a function on the connection's thread) is what
aiosqlite's own cursor calls: both private, so ``pyproject.toml`` bounds the two packages'
versions, and ``tests/test_onehop.py`` checks that the engine uses this cursor and that every
cursor attribute SQLAlchemy reads is right.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT

__all__ = ["OneHopCursor", "one_hop_dbapi"]


class _Outcome:
    """What a statement left on its sqlite3 cursor, read on the thread before it closed."""

    __slots__ = ("arraysize", "description", "lastrowid", "rowcount")

    def __init__(self) -> None:
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    def close(self) -> None:
        """Nothing to close: the sqlite3 cursor was closed on the thread."""


def _run(
    connection: sqlite3.Connection,
    operation: str,
    parameters: Any,
    outcome: _Outcome,
    many: bool,
) -> list[Any] | None:
    """On aiosqlite's thread: run one statement and return its rows (``None`` when it has
    none), noting the cursor's attributes in ``outcome``."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        outcome.description = cursor.description
        rows = cursor.fetchall() if cursor.description else None
        outcome.rowcount = cursor.rowcount
        outcome.lastrowid = cursor.lastrowid
        return rows
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """The adapter's cursor, each statement one call on aiosqlite's thread."""

    __slots__ = ()
    #: ``close()`` is synchronous here (nothing is left open on the thread).
    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: Any) -> None:
        # Not the parent's: it opens an aiosqlite cursor (a hop) that is never needed.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = _Outcome()  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()

    async def _execute_async(self, operation: Any, parameters: Any) -> None:
        async with self._adapt_connection._execute_mutex:
            rows = await self._hop(operation, parameters, many=False)
            self._rows = collections.deque(rows) if rows is not None else collections.deque()

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> None:
        async with self._adapt_connection._execute_mutex:
            await self._hop(operation, seq_of_parameters, many=True)

    async def _hop(self, operation: Any, parameters: Any, *, many: bool) -> Sequence[Any] | None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        result: list[Any] | None = await connection._execute(  # type: ignore[no-untyped-call]
            _run,
            connection._conn,
            operation,
            parameters,
            self._cursor,
            many,
        )
        return result


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor


class _OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _OneHopConnection:
        adapted = super().connect(*arg, **kw)
        return _OneHopConnection(self, adapted._connection)


def one_hop_dbapi() -> AsyncAdapt_aiosqlite_dbapi:
    """The DBAPI module for ``create_async_engine(..., module=...)`` on ``sqlite+aiosqlite``."""
    return _OneHopDBAPI(aiosqlite, sqlite3)
