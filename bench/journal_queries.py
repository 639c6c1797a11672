"""Journal pages at a million calls: p50/p95 of each filter and of search, SQLite and PostgreSQL.

Not a test. Run it from the repository root:

    python bench/journal_queries.py                       # 1,000,000 calls, both engines
    python bench/journal_queries.py --rows 100000 --engines sqlite --no-docs
    python bench/journal_queries.py --engines sqlite --reuse   # an already filled file

It writes its table to its section of docs/benchmarks.md (``--no-docs``: only prints it).

PostgreSQL comes from ``--pg-url`` or ``PBXJOURNAL_TEST_PG_URL`` (``scripts/test-postgres``);
its ``public`` schema is dropped and recreated. SQLite goes to ``--sqlite-path``.

Theory of operation
-------------------
*Fill.* The 70 calls of the real captures (replayed through the in-memory journal) are the
templates. Row ``i`` copies template ``i mod 70`` with its own start time (the rows spread
evenly over a year), a number drawn with a skew from a pool of ``rows / 5`` numbers (so
numbers recur, as customers call again), its employees renumbered among 40, and recording
parts renamed. 40 % of the numbers belong to 1C customers with Cyrillic names, a third of
those through a contact person. The rules' flags follow the same logic as the daemon's
(registered → ``no_answer``; an unregistered missed call is ``lost`` unless a call back is
drawn; ``first_contact`` on a number's first call), and ``search_text`` is built by the
daemon's own :func:`storage.search.search_text`. Rows go in with the engines' bulk paths
(``executemany`` on SQLite, ``COPY`` on PostgreSQL) into the migrated schema, so the FTS5
triggers and every index are the real ones; then ``ANALYZE``.

*Measure.* Each case runs :func:`storage.queries.list_calls` — the query *and* loading the 50
entries of the page, what ``GET /calls`` costs before JSON — ``--repeat`` times with varying
arguments (employee, search term, week), and reports p50 and p95 in milliseconds. The plan of
each case is printed once (``EXPLAIN QUERY PLAN`` / ``EXPLAIN``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from config import Settings  # noqa: E402
from connector.assembly import Direction  # noqa: E402
from pbxjournal.pipeline import build_pipeline  # noqa: E402
from pbxjournal.replay import replay_captures  # noqa: E402
from storage.engine import Database, open_database  # noqa: E402
from storage.journal import JournalEntry  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Call, CallParticipant, CallRecording  # noqa: E402
from storage.queries import (  # noqa: E402
    InternalCalls,
    JournalFilter,
    encode_cursor,
    explain,
    fts_matches,
    journal_statement,
    list_calls,
)
from storage.search import number_forms, parse_query, search_text  # noqa: E402

TRACES = ROOT / "tests" / "data" / "ami-traces"
YEAR_START = 1767214800.0  # 2026-01-01 00:00 Moscow
YEAR = 365 * 86400.0
EMPLOYEES = 40
SURNAMES = [
    "Иванов", "Петров", "Сидоров", "Кузнецов", "Смирнов", "Попов", "Соколов", "Лебедев",
    "Козлов", "Новиков", "Морозов", "Волков", "Соловьёв", "Васильев", "Зайцев", "Павлов",
]  # fmt: skip
FIRST_NAMES = ["Пётр", "Анна", "Иван", "Мария", "Дмитрий", "Ольга", "Сергей", "Елена"]
STEMS = [
    "Ромашка", "Василёк", "Горизонт", "Вектор", "Меридиан", "Альфа", "Сигма", "Радуга",
    "Техносервис", "Стройкомплект", "Агроторг", "Медтехника", "Логистик", "Энергосбыт",
]  # fmt: skip
PREFIXES = ["ООО", "АО", "ИП", "ЗАО"]


def employee_name(n: int) -> str:
    return f"{SURNAMES[n % len(SURNAMES)]}а {FIRST_NAMES[n % len(FIRST_NAMES)]} {n}"


def customer_name(n: int) -> str:
    return f"{PREFIXES[n % 4]} {STEMS[n % len(STEMS)]}-{n}"


def contact_name(n: int) -> str:
    return f"{SURNAMES[(n * 7) % len(SURNAMES)]} {FIRST_NAMES[(n * 3) % len(FIRST_NAMES)]} {n}"


def pool_number(k: int) -> str:
    return f"+79{(100_000_000 + k * 7919) % 1_000_000_000:09d}"


def templates() -> list[JournalEntry]:
    pipeline = build_pipeline(Settings())
    for _ in replay_captures(pipeline, sorted(TRACES.glob("*.ami"))):
        pass
    return pipeline.journal.entries()


@dataclass
class Tables:
    calls: list[tuple[Any, ...]]
    participants: list[tuple[Any, ...]]
    recordings: list[tuple[Any, ...]]


CALL_COLUMNS = [c.name for c in Call.__table__.columns]
PART_COLUMNS = [c.name for c in CallParticipant.__table__.columns]
REC_COLUMNS = [c.name for c in CallRecording.__table__.columns]


class Synth:
    """Deterministic rows, generated in batches (memory stays flat)."""

    def __init__(self, rows: int, seed: int = 7) -> None:
        self.rows = rows
        self.templates = templates()
        self.random = random.Random(seed)
        self.pool = max(rows // 5, 100)
        self.customers = max(self.pool // 4, 25)
        self.seen: set[int] = set()
        self.recording_id = 0
        self.forms: dict[str, str] = {}

    def owner(self, k: int) -> tuple[int, int | None] | None:
        """(customer, contact) of pool number k, or None (unregistered)."""
        if k % 5 >= 2:
            return None
        customer = k % self.customers
        return customer, (k if k % 3 == 0 else None)

    def batches(self, size: int) -> Iterator[Tables]:
        for start in range(0, self.rows, size):
            tables = Tables([], [], [])
            for i in range(start, min(start + size, self.rows)):
                self._row(i, tables)
            yield tables

    def _row(self, i: int, tables: Tables) -> None:
        rnd = self.random
        t = self.templates[i % len(self.templates)]
        call = t.call
        call_id = i + 1
        started = YEAR_START + i * (YEAR / self.rows) + rnd.random()
        shift = started - call.started_at
        internal = call.direction is Direction.INTERNAL
        k = int(self.pool * rnd.random() ** 2)
        number = None if internal else pool_number(k)
        owner = None if internal else self.owner(k)
        registered = owner is not None
        first_contact = not internal and not registered and k not in self.seen
        if not internal:
            self.seen.add(k)
        status, attention = t.status.value, t.attention
        if status in ("lost", "no_answer"):
            if registered:
                status, attention = "no_answer", rnd.random() < 0.5
            elif rnd.random() < 0.5:
                status, attention = "no_answer", False
            else:
                status, attention = "lost", True
        extensions = sorted({p.extension for p in call.participants})
        chosen = rnd.sample(range(EMPLOYEES), len(extensions))
        ext_map = {e: str(101 + n) for e, n in zip(extensions, chosen, strict=True)}
        names = []
        if owner is not None:
            names.append(customer_name(owner[0]))
            if owner[1] is not None:
                names.append(contact_name(owner[1]))
        mapped = [ext_map[p.extension] for p in call.participants]
        names.extend(employee_name(int(e) - 101) for e in mapped)
        missed = status in ("lost", "no_answer")
        ended = call.ended_at + shift
        values = {
            "id": call_id,
            "pbx": "main",
            "conversation_id": f"{started:.6f}",
            "linkedids": json.dumps([f"{started:.6f}"]),
            "started_at": started,
            "answered_at": None if call.answered_at is None else call.answered_at + shift,
            "ended_at": ended,
            "approximate_end": False,
            "direction": call.direction.value,
            "answered": call.answered,
            "number": number,
            "number_raw": number[1:] if number else None,
            "did": call.did,
            "ring_seconds": call.ring_seconds,
            "talk_seconds": call.talk_seconds,
            "queues": json.dumps(list(call.queues)),
            "announced_recordings": "[]",
            "recording_hints": "[]",
            "status": status,
            "attention": attention,
            "first_contact": first_contact,
            "registered_at_end": registered,
            "unregistered": not internal and not registered,
            "customer_id": f"c{owner[0]}" if owner else None,
            "contact_id": f"p{owner[1]}" if owner and owner[1] is not None else None,
            "window_closes_at": ended + 86400 if missed else None,
            "settled": True,
            "fingerprint": f"{call_id:064x}",
            "search_text": self._search_text(number, names, mapped),
            "version": call_id,
            "number_withheld": False,
        }
        tables.calls.append(tuple(values[c] for c in CALL_COLUMNS))
        for ordinal, p in enumerate(call.participants):
            row = {
                "call_id": call_id,
                "ordinal": ordinal,
                "extension": ext_map[p.extension],
                "role": p.role.value,
                "placed": p.placed,
                "rang": p.rang,
                "answered_at": None if p.answered_at is None else p.answered_at + shift,
                "rang_at": None if p.rang_at is None else p.rang_at + shift,
                "talk_seconds": p.talk_seconds,
                "on_mobile": False,
            }
            tables.participants.append(tuple(row[c] for c in PART_COLUMNS))
        for stored in t.recordings:
            self.recording_id += 1
            path = f"/var/spool/asterisk/monitor/main/{call_id}-{stored.found.part}.wav"
            row = {
                "id": self.recording_id,
                "call_id": call_id,
                "part": stored.found.part,
                "pbx_path": path,
                "file_path": path,
                "started_at": stored.found.started_at + shift,
                "offset_seconds": stored.found.offset_seconds,
                "duration_seconds": stored.found.duration_seconds,
                "size": stored.found.size,
            }
            tables.recordings.append(tuple(row[c] for c in REC_COLUMNS))

    def _search_text(self, number: str | None, names: list[str], extensions: list[str]) -> str:
        """The daemon's search text; the number's part (a phonenumbers parse) cached."""
        rest = search_text(
            number=None, number_raw=None, region="RU", names=names, extensions=extensions
        )
        if number is None:
            return rest
        forms = self.forms.get(number)
        if forms is None:
            forms = self.forms[number] = " | ".join(number_forms(number, number[1:], "RU"))
        return f"{forms} | {rest}"

    def directory(
        self,
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        customers = [(f"c{n}", customer_name(n), YEAR_START) for n in range(self.customers)]
        contacts, numbers = [], []
        for k in range(self.pool):
            owner = self.owner(k)
            if owner is None:
                continue
            if owner[1] is not None:
                contacts.append((f"p{k}", f"c{owner[0]}", contact_name(k)))
            number = pool_number(k)
            numbers.append((number, number[1:], f"c{owner[0]}", f"p{k}" if owner[1] else None))
        return customers, contacts, numbers


def employees() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    people = [(str(101 + n), employee_name(n)) for n in range(EMPLOYEES)]
    return people, [(e, e) for e, _ in people]


def _placeholders(columns: list[str]) -> str:
    return ", ".join("?" for _ in columns)


def fill_sqlite(path: Path, synth: Synth, progress: Callable[[int], None]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    customers, contacts, numbers = synth.directory()
    people, extensions = employees()
    db.executemany("INSERT INTO customers (id, name, updated_at) VALUES (?, ?, ?)", customers)
    db.executemany("INSERT INTO contacts (id, customer_id, name) VALUES (?, ?, ?)", contacts)
    db.executemany(
        "INSERT INTO numbers (number, raw, customer_id, contact_id) VALUES (?, ?, ?, ?)", numbers
    )
    db.executemany("INSERT INTO employees (id, name) VALUES (?, ?)", people)
    db.executemany(
        "INSERT INTO employee_extensions (extension, employee_id) VALUES (?, ?)", extensions
    )
    db.execute("COMMIT")
    # FTS5 builds its index far faster in one 'rebuild' than row by row through the triggers.
    search = importlib.import_module("storage.migrations.versions.0001_initial")
    for statement in search.SQLITE_SEARCH_DROP[:3]:
        db.execute(statement)
    done = 0
    for batch in synth.batches(20_000):
        db.execute("BEGIN")
        db.executemany(
            f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({_placeholders(CALL_COLUMNS)})",
            batch.calls,
        )
        db.executemany(
            f"INSERT INTO call_participants ({', '.join(PART_COLUMNS)}) "
            f"VALUES ({_placeholders(PART_COLUMNS)})",
            batch.participants,
        )
        db.executemany(
            f"INSERT INTO call_recordings ({', '.join(REC_COLUMNS)}) "
            f"VALUES ({_placeholders(REC_COLUMNS)})",
            batch.recordings,
        )
        db.execute("COMMIT")
        done += len(batch.calls)
        progress(done)
    db.execute("INSERT INTO calls_search(calls_search) VALUES ('rebuild')")
    for statement in search.SQLITE_SEARCH[1:]:
        db.execute(statement)
    db.execute("UPDATE journal_state SET last_version = ?", (synth.rows,))
    db.execute("ANALYZE")
    db.close()


async def fill_postgres(url: str, synth: Synth, progress: Callable[[int], None]) -> None:
    import asyncpg

    u = make_url(url)
    db = await asyncpg.connect(
        user=u.username, password=u.password, host=u.host, port=u.port, database=u.database
    )
    try:
        customers, contacts, numbers = synth.directory()
        people, extensions = employees()
        await db.copy_records_to_table("customers", records=customers)
        await db.copy_records_to_table(
            "contacts", records=contacts, columns=["id", "customer_id", "name"]
        )
        await db.copy_records_to_table(
            "numbers", records=numbers, columns=["number", "raw", "customer_id", "contact_id"]
        )
        await db.copy_records_to_table("employees", records=people, columns=["id", "name"])
        await db.copy_records_to_table(
            "employee_extensions", records=extensions, columns=["extension", "employee_id"]
        )
        # A GIN index is built far faster in one go than maintained over a million inserts.
        await db.execute("DROP INDEX ix_calls_search_trgm")
        done = 0
        for batch in synth.batches(50_000):
            await db.copy_records_to_table("calls", records=batch.calls, columns=CALL_COLUMNS)
            await db.copy_records_to_table(
                "call_participants", records=batch.participants, columns=PART_COLUMNS
            )
            await db.copy_records_to_table(
                "call_recordings", records=batch.recordings, columns=REC_COLUMNS
            )
            done += len(batch.calls)
            progress(done)
        await db.execute("SET maintenance_work_mem = '512MB'")
        await db.execute(
            "CREATE INDEX ix_calls_search_trgm ON calls USING gin (search_text gin_trgm_ops)"
        )
        await db.execute("UPDATE journal_state SET last_version = $1", synth.rows)
        for table in ("calls", "call_recordings"):
            await db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        await db.execute("VACUUM ANALYZE")
    finally:
        await db.close()


@dataclass(frozen=True)
class Case:
    name: str
    #: Makes the filter (and cursor) for repetition ``n``: arguments vary between runs.
    make: Callable[[random.Random], tuple[JournalFilter, str | None]]


def _week(rnd: random.Random) -> tuple[float, float]:
    start = YEAR_START + rnd.randrange(0, 50) * 7 * 86400.0
    return start, start + 7 * 86400.0


def _employee(rnd: random.Random) -> str:
    return str(101 + rnd.randrange(EMPLOYEES))


def cases(synth: Synth) -> list[Case]:
    def fixed(where: JournalFilter) -> Callable[[random.Random], tuple[JournalFilter, None]]:
        return lambda rnd: (where, None)

    def search(terms: Callable[[random.Random], str]) -> Callable[..., Any]:
        return lambda rnd: (JournalFilter(query=terms(rnd)), None)

    def deep(rnd: random.Random) -> tuple[JournalFilter, str]:
        middle = YEAR_START + YEAR * rnd.uniform(0.3, 0.7)
        return JournalFilter(), encode_cursor(middle, synth.rows)

    def full_number(rnd: random.Random) -> str:
        digits = pool_number(int(synth.pool * rnd.random() ** 2))[2:]
        return f"8 {digits[:3]} {digits[3:6]}-{digits[6:8]}-{digits[8:]}"

    def partial_number(rnd: random.Random) -> str:
        return pool_number(int(synth.pool * rnd.random() ** 2))[-7:]

    return [
        Case("journal (internal hidden)", fixed(JournalFilter())),
        Case("deep page (cursor mid-year)", deep),
        Case("internal=show", fixed(JournalFilter(internal=InternalCalls.SHOW))),
        Case("internal=only", fixed(JournalFilter(internal=InternalCalls.ONLY))),
        Case("from/to one week", lambda r: (JournalFilter(*_week(r)), None)),
        Case("kind=incoming", fixed(JournalFilter(kinds=frozenset({"incoming"})))),
        Case("kind=outgoing", fixed(JournalFilter(kinds=frozenset({"outgoing"})))),
        Case("kind=missed", fixed(JournalFilter(kinds=frozenset({"missed"})))),
        Case("kind=lost", fixed(JournalFilter(kinds=frozenset({"lost"})))),
        Case("kind=missed,outgoing", fixed(JournalFilter(kinds=frozenset({"missed", "outgoing"})))),
        Case("first_contact", fixed(JournalFilter(first_contact=True))),
        Case("unregistered", fixed(JournalFilter(unregistered=True))),
        Case("attention", fixed(JournalFilter(attention=True))),
        Case("employee (my calls)", lambda r: (JournalFilter(employee=_employee(r)), None)),
        Case(
            "missed+attention+employee",
            lambda r: (
                JournalFilter(kinds=frozenset({"missed"}), attention=True, employee=_employee(r)),
                None,
            ),
        ),
        Case(
            "week+lost+first_contact",
            lambda r: (
                JournalFilter(*_week(r), kinds=frozenset({"lost"}), first_contact=True),
                None,
            ),
        ),
        Case(
            "search: customer name", search(lambda r: customer_name(r.randrange(synth.customers)))
        ),
        Case("search: 'ромаш' (many)", search(lambda r: "ромаш")),
        Case(
            "search: contact name",
            search(lambda r: contact_name(3 * r.randrange(synth.pool // 15))),
        ),
        Case("search: employee name", search(lambda r: employee_name(r.randrange(EMPLOYEES)))),
        Case("search: 8 916 123-45-67 form", search(full_number)),
        Case("search: 7 digits", search(partial_number)),
        Case("search: extension", search(_employee)),
    ]


async def measure(
    database: Database, synth: Synth, repeat: int, plans: bool
) -> list[tuple[str, float, float, int]]:
    results = []
    rnd = random.Random(11)
    for case in cases(synth):
        timings = []
        rows = 0
        for n in range(repeat + 1):
            where, cursor = case.make(rnd)
            async with database.sessions() as session:
                began = time.perf_counter()
                page = await list_calls(session, where, limit=50, cursor=cursor)
                elapsed = (time.perf_counter() - began) * 1000
            if n:  # the first run warms the cache
                timings.append(elapsed)
                rows += len(page.entries)
        if plans:
            where, cursor = case.make(random.Random(1))
            async with database.sessions() as session:
                frequent = False
                if where.query and database.is_sqlite:
                    search = parse_query(where.query)
                    frequent = search.indexable and await fts_matches(session, search) is None
                # For a rare term SQLite then runs the FTS5 query first and looks the rows up
                # by rowid; the subquery shown here is the same work in one statement.
                statement = journal_statement(
                    database.dialect, where, limit=51, cursor=cursor, frequent_search=frequent
                )
                plan = await explain(session, statement)
            print(f"\n-- {case.name}\n   " + "\n   ".join(plan))
        p50 = statistics.median(timings)
        p95 = statistics.quantiles(timings, n=20)[-1] if len(timings) > 1 else timings[0]
        results.append((case.name, p50, p95, rows // repeat))
    return results


def _clear_sqlite(path: Path, *, reuse: bool) -> bool:
    """Remove the old file unless it is to be reused; whether the database must be filled."""
    if reuse and path.exists():
        return False
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return True


async def prepare(engine: str, args: argparse.Namespace, synth: Synth) -> str:
    if engine == "sqlite":
        url = f"sqlite+aiosqlite:///{args.sqlite_path}"
        if not _clear_sqlite(Path(args.sqlite_path), reuse=args.reuse):
            return url
    else:
        url = args.pg_url
        if not url:
            raise SystemExit("PostgreSQL: pass --pg-url or set PBXJOURNAL_TEST_PG_URL")
        if args.reuse:
            return url
        sys.path.insert(0, str(ROOT))
        from tests.db import reset_postgres

        await reset_postgres(url)
    database = open_database(url)
    try:
        await upgrade(database)
    finally:
        await database.dispose()
    began = time.perf_counter()

    def progress(done: int) -> None:
        rate = done / (time.perf_counter() - began)
        print(f"\r  {engine}: {done:,} calls ({rate:,.0f}/s)", end="", file=sys.stderr)

    if engine == "sqlite":
        await asyncio.to_thread(fill_sqlite, Path(args.sqlite_path), synth, progress)
    else:
        await fill_postgres(url, synth, progress)
    print(f"\n  {engine}: filled in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return url


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--sqlite-path", default="/tmp/pbxjournal-bench.sqlite3")
    parser.add_argument("--pg-url", default=os.environ.get("PBXJOURNAL_TEST_PG_URL"))
    parser.add_argument("--reuse", action="store_true", help="keep an already filled database")
    parser.add_argument("--no-plans", action="store_true")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    synth = Synth(args.rows)
    report: dict[str, list[tuple[str, float, float, int]]] = {}
    for engine in args.engines.split(","):
        synth = Synth(args.rows)
        url = await prepare(engine, args, synth)
        database = open_database(url)
        try:
            print(f"\n== {engine}: plans", file=sys.stderr)
            report[engine] = await measure(database, synth, args.repeat, not args.no_plans)
        finally:
            await database.dispose()
    engines = list(report)
    print(f"\n{args.rows:,} calls, one page of 50 (query + loading the entries), ms")
    header = f"{'case':<32}" + "".join(f"{e + ' p50':>16}{e + ' p95':>16}" for e in engines)
    print(header)
    for index, (name, *_rest) in enumerate(report[engines[0]]):
        cells = "".join(
            f"{report[e][index][1]:>16.1f}{report[e][index][2]:>16.1f}" for e in engines
        )
        print(f"{name:<32}{cells}")
    if not args.no_docs:
        load = f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
        write_docs(args.rows, args.repeat, report, load)


def write_docs(
    rows: int, repeat: int, results: dict[str, list[tuple[str, float, float, int]]], load: str
) -> None:
    """This benchmark's section of docs/benchmarks.md."""
    from bench import report

    engines = list(results)
    header = ["case", *(f"{e} {p}" for e in engines for p in ("p50", "p95")), "rows"]
    lines = [
        [
            name,
            *(f"{results[e][index][k]:.1f}" for e in engines for k in (1, 2)),
            str(results[engines[0]][index][3]),
        ]
        for index, (name, *_rest) in enumerate(results[engines[0]])
    ]
    intro = report.prose(
        f"""Machine: {report.machine()}, SQLite {sqlite3.sqlite_version}. Load average (1 min)
        {load}: other work shares the machine.

        {rows:,} calls ({", ".join(engines)}): the 70 real calls copied over a year, numbers
        drawn with a skew from a pool of {rows // 5:,}, 40 % of them bound to customers with
        Cyrillic names, through the migrated schema, then `ANALYZE`. Each case is
        `storage.queries.list_calls` — the page query and loading the 50 entries of the page,
        what `GET /calls` costs before rendering and JSON — {repeat} times (plus one warm-up)
        with varying arguments (employee, week, search term, cursor depth). Milliseconds; "rows"
        is the page's length (a rare search term finds fewer than 50). The plans are printed by
        the command (`EXPLAIN QUERY PLAN` / `EXPLAIN`); `bench.http_calls` measures the same
        cases over HTTP."""
    )
    text = "\n\n".join(
        [
            "## Journal queries: a page of each filter and search at a million calls",
            f"Command: `{report.command_line()}`",
            intro,
            report.table(header, lines),
        ]
    )
    report.update_section("bench.queries", text)


if __name__ == "__main__":
    asyncio.run(main())
