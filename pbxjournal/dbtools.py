"""The database commands: ``pbxjournal migrate``, ``pbxjournal calls``, ``replay --database``.

They share one way in: the URL (``--database``, else ``storage.url``), a migration to head
(idempotent, so every command can run it on start), the employees of ``[employees]`` seeded
into the database, and a :class:`storage.store.SqlJournal` with the configured rules.
SQLAlchemy is imported only here, when one of these commands runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TextIO

from config import Settings, load_settings
from connector.assembly import FinishedCall
from connector.events import AmiEvent
from pbxjournal.pipeline import JournalPipeline
from storage.engine import run_tool
from storage.journal import to_call_object
from storage.rules import AttentionWindow

__all__ = [
    "add_calls_arguments",
    "attention_window",
    "employee_records",
    "open_journal",
    "repair_rules",
    "replay_events",
    "replay_into_database",
    "run_calls",
    "run_migrate",
    "run_reevaluate",
]

if TYPE_CHECKING:  # keeps SQLAlchemy out of `pbxjournal --help`
    from storage.directory import EmployeeRecord
    from storage.store import Change, SqlJournal, WindowRepair


def attention_window(settings: Settings) -> AttentionWindow:
    configured = settings.rules.attention_window
    if configured.seconds is None:
        return AttentionWindow.until_end_of_day(settings.pbx.tz)
    return AttentionWindow.fixed(configured.seconds, settings.pbx.tz)


def employee_records(settings: Settings) -> list[EmployeeRecord]:
    """``[employees]`` grouped by id (several extensions may share one employee)."""
    from storage.directory import EmployeeRecord

    grouped: dict[str, tuple[str, list[str], list[str]]] = {}
    for employee in settings.employees:
        entry = grouped.setdefault(employee.id, (employee.name, [], []))
        entry[1].append(employee.extension)
        entry[2].extend(employee.mobile)
    return [
        EmployeeRecord(i, name, tuple(exts), tuple(mobiles))
        for i, (name, exts, mobiles) in grouped.items()
    ]


@asynccontextmanager
async def open_journal(settings: Settings, url: str | None = None) -> AsyncIterator[SqlJournal]:
    """The journal at ``url`` (default ``storage.url``), migrated and seeded; disposed after."""
    from storage.engine import open_database
    from storage.migrate import upgrade
    from storage.store import SqlJournal

    database = open_database(url or settings.storage.url)
    try:
        await upgrade(database, region=settings.pbx.default_region)
        journal = SqlJournal(
            database,
            pbx=settings.pbx.name,
            window=attention_window(settings),
            region=settings.pbx.default_region,
        )
        await journal.seed_employees(employee_records(settings))
        yield journal
    finally:
        await database.dispose()


async def repair_rules(
    journal: SqlJournal,
    now: float,
    say: Callable[[str, dict[str, Any]], None],
    *,
    force: bool = False,
    keep_going: Callable[[], bool] | None = None,
) -> WindowRepair | None:
    """Re-evaluate the calls the attention window decides if the window the journal's
    verdicts were computed with is not the configured one (or ``force``), saying so once
    before (the old and the new definitions) and once after (rows changed, seconds): the
    daemon at start and ``pbxjournal reevaluate`` (``SqlJournal.repair_window``)."""
    recorded = await journal.recorded_window()
    configured = journal.window.definition
    if recorded == configured and not force:
        return None
    say(
        "attention window changed: re-evaluating the calls with a window"
        if recorded != configured
        else "re-evaluating the calls with a window",
        {"recorded": recorded or "unknown", "configured": configured},
    )
    repair = await journal.repair_window(now, force=force, keep_going=keep_going)
    if repair is not None:
        say(
            "calls re-evaluated with the configured attention window"
            if repair.complete
            else "re-evaluation stopped before its end; done again at the next start",
            {
                "calls": repair.rows,
                "changed": repair.changed,
                "seconds": round(repair.seconds, 1),
            },
        )
    return repair


def run_reevaluate(args: argparse.Namespace) -> int:
    """``pbxjournal reevaluate``: the daemon's start-up repair, on demand (always re-reads
    every call with a window; a row changes only if its verdict does)."""
    import time

    settings = load_settings(args.config)
    url = args.database or settings.storage.url

    def say(message: str, details: dict[str, Any]) -> None:
        fields = " ".join(f"{key}={value}" for key, value in details.items())
        print(f"{message}: {fields}", file=sys.stderr)

    async def reevaluate() -> None:
        async with open_journal(settings, url) as journal:
            await repair_rules(journal, time.time(), say, force=True)

    try:
        run_tool(reevaluate())
    except Exception as exc:
        if _is_database_error(exc):
            return _fail("reevaluate", exc, url)
        raise
    return 0


def run_reindex_search(args: argparse.Namespace) -> int:
    """``pbxjournal reindex-search``: rebuild the search keys from the journal."""
    import time

    from storage import searchkeys

    settings = load_settings(args.config)
    url = args.database or settings.storage.url
    region = settings.pbx.default_region

    async def reindex() -> int:
        async with open_journal(settings, url) as journal, journal.transaction() as tx:
            # The journal's write transaction: its lock keeps a running writer out meanwhile.
            return await tx.session.run_sync(
                lambda sync: searchkeys.fill(sync.connection(), region)
            )

    began = time.monotonic()
    try:
        count = run_tool(reindex())
    except Exception as exc:
        if _is_database_error(exc):
            return _fail("reindex-search", exc, url)
        raise
    print(f"search keys rebuilt: {count} keys in {time.monotonic() - began:.1f} s", file=sys.stderr)
    return 0


def _is_database_error(exc: BaseException) -> bool:
    """An error of the database or of reaching it (not a bug of ours)."""
    from storage.engine import DatabaseError

    return isinstance(exc, (DatabaseError, OSError)) or type(exc).__module__.startswith(
        ("sqlalchemy", "asyncpg", "sqlite3")
    )


def _fail(command: str, exc: BaseException, url: str) -> int:
    """One line naming what failed and where, a hint, and the exit code of
    :mod:`pbxjournal.startup` (3 for a journal that cannot be opened); else the error's
    first line and exit 1."""
    from pbxjournal.startup import explain

    failure = explain(exc, database_url=url)
    if failure is not None:
        print(failure.render(command), file=sys.stderr)
        return failure.exit_code
    first = (str(exc) or type(exc).__name__).splitlines()[0]
    print(f"pbxjournal {command}: database error: {first}", file=sys.stderr)
    return 1


def run_migrate(args: argparse.Namespace) -> int:
    from storage.engine import open_database
    from storage.migrate import current_revision, upgrade

    settings = load_settings(args.config)
    url = args.database or settings.storage.url

    async def migrate() -> str | None:
        database = open_database(url)
        try:
            await upgrade(database, region=settings.pbx.default_region)
            return await current_revision(database)
        finally:
            await database.dispose()

    try:
        revision = run_tool(migrate())
    except Exception as exc:
        if _is_database_error(exc):
            return _fail("migrate", exc, url)
        raise
    print(f"journal schema at revision {revision}", file=sys.stderr)
    return 0


async def replay_events(
    pipeline: JournalPipeline,
    journal: SqlJournal,
    events: Iterable[tuple[AmiEvent, float]],
    on_changes: Callable[[list[Change]], Awaitable[None]] | None = None,
) -> list[int]:
    """Feed events through the pipeline's assembler into ``journal``; return the ids written.

    The end of the events lets every grace period run out and settles the windows closed by
    then, as time would have.
    """
    written: dict[int, None] = {}
    last = 0.0

    async def write(calls: Iterable[FinishedCall], now: float) -> None:
        for call in calls:
            # Recordings are found with a few stat() calls: off the event loop all the same.
            found = await asyncio.to_thread(pipeline.finder.find, call)
            changes = await journal.write(call, found, now)
            written.update((change.id, None) for change in changes)
            if on_changes is not None and changes:
                await on_changes(changes)

    for event, now in events:
        last = now
        await write(pipeline.assembler.feed(event, now), now)
    end = last + pipeline.grace + 1e-6
    await write(pipeline.assembler.expire(end), end)
    await journal.settle(end)
    return list(written)


def replay_into_database(
    pipeline: JournalPipeline,
    settings: Settings,
    url: str,
    events: Iterable[tuple[AmiEvent, float]],
    *,
    as_json: bool,
    stream: TextIO,
) -> int:
    """``replay --database``: the captures' calls written into the journal database."""

    async def replay() -> None:
        async with open_journal(settings, url) as journal:

            async def print_changes(changes: list[Change]) -> None:
                await _print_json(journal, [c.id for c in changes], settings, stream)

            written = await replay_events(
                pipeline, journal, events, print_changes if as_json else None
            )
            if not as_json:
                entries = await journal.entries(written)
                entries.sort(key=lambda e: (e.call.started_at, e.id), reverse=True)
                await _print_table(journal, entries, settings, stream)

    try:
        run_tool(replay())
    except Exception as exc:
        if _is_database_error(exc):
            return _fail("replay", exc, url)
        raise
    stream.flush()
    return 0


async def _print_json(
    journal: SqlJournal, ids: list[int], settings: Settings, stream: TextIO
) -> None:
    from storage.queries import load_employee_directory

    async with journal.database.sessions() as session:
        employees = await load_employee_directory(session)
    for entry in await journal.entries(ids):
        obj = to_call_object(entry, settings.pbx.tz, employees)
        stream.write(json.dumps(obj, ensure_ascii=False) + "\n")


async def _print_table(
    journal: SqlJournal, entries: list[Any], settings: Settings, stream: TextIO
) -> None:
    from storage.queries import load_employee_directory

    async with journal.database.sessions() as session:
        employees = await load_employee_directory(session)
    for entry in entries:
        stream.write(format_row(to_call_object(entry, settings.pbx.tz, employees)) + "\n")
    stream.write(f"{len(entries)} calls\n")


def format_row(row: dict[str, Any]) -> str:
    """One journal row as a terminal line (the columns 1C shows)."""
    people = ", ".join(f"{p['name'] or p['extension']} ({p['role']})" for p in row["employees"])
    flags = "".join(
        mark
        for mark, on in (
            ("N", row["first_contact"]),
            ("!", row["attention"]),
            ("C", row["comment"] is not None),
        )
        if on
    )
    customer = row["customer"]
    who = customer["name"] if customer else (row["number"] or "-")
    return (
        f"{row['started_at'][:19]}  {row['direction']:<8}  {who:<20.20}  "
        f"{row['status_label']:<11}  {row['talk_seconds']:>6.1f}s  {flags:<3}  "
        f"rec:{len(row['recordings'])}  {people}"
    )


def add_calls_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``GET /calls`` filters as options of ``pbxjournal calls``."""
    parser.add_argument("--from", dest="started_from", metavar="WHEN", help="ISO date/datetime")
    parser.add_argument("--to", dest="started_to", metavar="WHEN", help="ISO date/datetime")
    parser.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help="incoming, outgoing, missed, lost (repeatable or comma list; any of them)",
    )
    for flag in ("first-contact", "unregistered", "attention"):
        parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--internal", choices=["hide", "show", "only"], default="hide")
    parser.add_argument("--employee", metavar="ID", help="my calls: employee id or extension")
    parser.add_argument("-q", "--search", metavar="TEXT", help="name, extension or number")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--cursor", default=None, help="next_cursor of the previous page")
    parser.add_argument("--json", action="store_true", help="one call object per line")
    parser.add_argument("--database", default=None, metavar="URL", help="default: storage.url")


def run_calls(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from storage.queries import (
        KINDS,
        CursorError,
        InternalCalls,
        JournalFilter,
        decode_cursor,
        list_calls,
        load_employee_directory,
        parse_time_bound,
    )

    stream = out if out is not None else sys.stdout
    settings = load_settings(args.config)
    tz = settings.pbx.tz
    kinds = frozenset(k.strip() for value in args.kind for k in value.split(",") if k.strip())
    try:
        unknown = sorted(kinds - KINDS)
        if unknown:
            raise ValueError(f"unknown kind {unknown[0]!r}; expected {', '.join(sorted(KINDS))}")
        if not 1 <= args.limit <= 500:
            raise ValueError("--limit must be between 1 and 500")
        where = JournalFilter(
            started_from=parse_time_bound(args.started_from, tz, end=False)
            if args.started_from
            else None,
            started_until=parse_time_bound(args.started_to, tz, end=True)
            if args.started_to
            else None,
            kinds=kinds,
            first_contact=args.first_contact,
            unregistered=args.unregistered,
            attention=args.attention,
            internal=InternalCalls(args.internal),
            employee=args.employee,
            query=args.search,
        )
    except ValueError as exc:
        print(f"pbxjournal calls: {exc}", file=sys.stderr)
        return 2
    if args.cursor is not None:
        try:
            decode_cursor(args.cursor)
        except CursorError as exc:
            print(f"pbxjournal calls: --cursor: {exc}", file=sys.stderr)
            return 2

    async def show() -> str | None:
        async with (
            open_journal(settings, args.database) as journal,
            journal.database.sessions() as session,
        ):
            page = await list_calls(
                session,
                where,
                limit=args.limit,
                cursor=args.cursor,
                region=settings.pbx.default_region,
            )
            employees = await load_employee_directory(session)
        for entry in page.entries:
            row = to_call_object(entry, tz, employees)
            line = json.dumps(row, ensure_ascii=False) if args.json else format_row(row)
            stream.write(line + "\n")
        if not args.json:
            stream.write(f"{len(page.entries)} calls\n")
        return page.next_cursor

    try:
        next_cursor = run_tool(show())
    except CursorError as exc:
        print(f"pbxjournal calls: --cursor: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if _is_database_error(exc):
            return _fail("calls", exc, args.database or settings.storage.url)
        raise
    if next_cursor:
        print(f"next page: --cursor {next_cursor}", file=sys.stderr)
    stream.flush()
    return 0
