"""SQLite through aiosqlite: SQLAlchemy's cursor (four hops to the thread per statement) against
:mod:`storage.onehop`'s (one), on a bare statement and on the journal's pages.

Theory of operation
-------------------
Two engines on the same file: the daemon's reader engine
(:func:`storage.engine.open_database`, with the one-hop cursor), and the same engine built with
SQLAlchemy's own aiosqlite cursor (the pragmas, ``BEGIN``, the pool). They take turns,
``--rounds`` rounds of each, so that a machine whose speed drifts (a virtual one) drifts for
both. Each round times ``SELECT 1`` ``--statements`` times in one session, and each page
``--repeat`` times, a session per request as the HTTP API opens one: the plain journal page,
searches of ``--search`` (customer, contact and number words of a filled journal) and
``/changes`` of 500 from random versions. The table gives each round's median and the median
of those medians.

The file is one filled by ``bench/journal_queries.py`` (``--sqlite-path``), at any size; the
numbers of ``docs/benchmarks.md`` are at ten million calls.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bench import report
from storage.engine import _json_text, _sqlite_setup, open_database
from storage.journal import EmployeeDirectory
from storage.queries import (
    JournalFilter,
    change_objects,
    list_call_objects,
    load_employee_directory,
)

SEARCHES = ("Зайцев Сергей 450", "Иванов Пётр 0", "Козлов Пётр 3948", "Васильев", "3948")
TIMEZONE = ZoneInfo("Europe/Moscow")


def sessions(
    path: Path, *, one_hop: bool
) -> tuple[Callable[[], Awaitable[None]], async_sessionmaker[AsyncSession]]:
    """Sessions of the file and how to close their engine. The one-hop side is the daemon's
    own reader engine (:func:`storage.engine.open_database`); the other is that engine built
    the same way but with SQLAlchemy's cursor."""
    url = f"sqlite+aiosqlite:///{path}"
    if one_hop:
        database = open_database(url)
        return database.dispose, database.sessions
    engine = create_async_engine(url, pool_size=4, max_overflow=4, json_serializer=_json_text)
    _sqlite_setup(engine.sync_engine, "BEGIN")
    return engine.dispose, async_sessionmaker(engine, expire_on_commit=False)


async def one_round(
    path: Path, one_hop: bool, args: argparse.Namespace, rnd: random.Random
) -> dict[str, float]:
    """One round's medians, in ms: a bare statement, then each page."""
    dispose, make = sessions(path, one_hop=one_hop)
    medians: dict[str, float] = {}
    try:
        async with make() as session:
            await session.execute(sa.text("SELECT 1"))
            began = time.perf_counter()
            for _ in range(args.statements):
                (await session.execute(sa.text("SELECT 1"))).all()
            medians["SELECT 1"] = (time.perf_counter() - began) * 1000 / args.statements
            directory = await load_employee_directory(session)

        def page(where: JournalFilter) -> Callable[[AsyncSession], Awaitable[Any]]:
            return lambda s: list_call_objects(s, where, TIMEZONE, directory, limit=50)

        async def changes(s: AsyncSession, directory: EmployeeDirectory = directory) -> Any:
            return await change_objects(s, rnd.randrange(0, args.versions), TIMEZONE, directory)

        cases: dict[str, Callable[[AsyncSession], Awaitable[Any]]] = {
            "journal": page(JournalFilter()),
            **{f"search: {q}": page(JournalFilter(query=q)) for q in args.search},
            "changes: 500": changes,
        }
        for name, run in cases.items():
            times = []
            for attempt in range(args.repeat + 1):
                began = time.perf_counter()
                async with make() as session:
                    await run(session)
                if attempt:  # the first compiles the case's statements
                    times.append((time.perf_counter() - began) * 1000)
            medians[name] = statistics.median(times)
    finally:
        await dispose()
    return medians


async def measure(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    rnd = random.Random(5)
    results: dict[str, dict[str, list[float]]] = {"stock": {}, "one hop": {}}
    for number in range(args.rounds):
        for label, one_hop in (("stock", False), ("one hop", True)):
            medians = await one_round(args.sqlite_path, one_hop, args, rnd)
            for name, value in medians.items():
                results[label].setdefault(name, []).append(value)
            print(f"round {number + 1} {label}: {medians}", file=sys.stderr)
    return results


def render(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> str:
    rows = []
    for name in results["stock"]:
        old, new = results["stock"][name], results["one hop"][name]
        digits = 3 if name == "SELECT 1" else 1
        rows.append(
            [
                name,
                " / ".join(f"{v:.{digits}f}" for v in old),
                " / ".join(f"{v:.{digits}f}" for v in new),
                f"{statistics.median(old):.{digits}f} → {statistics.median(new):.{digits}f}",
            ]
        )
    body = f"""Machine: {report.machine()}. Command: `{report.command_line()}`. The file:
`{args.sqlite_path.name}`. Each cell of a round is that round's median in ms ({args.repeat}
requests of each page, a session each; `SELECT 1` {args.statements} times in one session)."""
    header = ["case", "SQLAlchemy's cursor, rounds", "one hop, rounds", "median of rounds"]
    return f"{report.prose(body)}\n\n{report.table(header, rows)}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sqlite-path", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--statements", type=int, default=2000)
    parser.add_argument("--versions", type=int, default=9_999_000, help="/changes' since range")
    parser.add_argument("--search", nargs="*", default=list(SEARCHES))
    args = parser.parse_args(argv)
    if not args.sqlite_path.is_file():
        parser.error(f"--sqlite-path: no such file: {args.sqlite_path}")
    print(render(asyncio.run(measure(args)), args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
