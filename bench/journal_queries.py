"""Journal pages at a million or ten million calls: p50/p95 (and, cold, pages read from the
disk) of every filter, every pair of filters, each with "Мои звонки", periods, a deep cursor,
every search form and ``/changes``, SQLite and PostgreSQL, warm or cold.

Not a test. Run it from the repository root:

    python bench/journal_queries.py                       # 1,000,000 calls, both engines
    python bench/journal_queries.py --rows 100000 --engines sqlite --no-docs
    python bench/journal_queries.py --engines sqlite --reuse   # an already filled file
    python bench/journal_queries.py --rows 10000000 --engines sqlite --schema 0005 --fill-only
    python bench/journal_queries.py --rows 10000000 --engines postgresql --fill-only \
        --from-sqlite /path/filled.sqlite3                # the same rows, without generating
    python bench/journal_queries.py --reuse --cold --give-up 5 --section bench.queries-cold

It writes its table to its section of docs/benchmarks.md (``--section``; ``--no-docs``: only
prints it; ``--json``: also a file).

PostgreSQL comes from ``--pg-url`` or ``PBXJOURNAL_TEST_PG_URL`` (``scripts/test-postgres``);
its ``public`` schema is dropped and recreated. SQLite goes to ``--sqlite-path``.

Theory of operation
-------------------
*Fill.* The 70 calls of the real captures (replayed through the in-memory journal) are the
templates. Row ``i`` copies template ``i mod 70`` with its own start time (the rows spread
evenly over a year), a number drawn with a skew from a pool of ``rows / 5`` numbers (so
numbers recur, as customers call again) — except one external call in 180, which is of one
busy number (50,000 calls at ten million: a forwarded main line, or a spammer) — its
employees renumbered among 40, and recording parts renamed. 40 % of the numbers belong to 1C
customers with Cyrillic names (at most 100,000 customers, every one with numbers; 30 % of the
customers reached through contact persons). The rules' flags follow the same logic as the
daemon's (registered → ``no_answer``; an unregistered missed call is ``lost`` unless a call
back is drawn; ``first_contact`` on a number's first call), and ``search_text`` is built by
the daemon's own :func:`storage.search.search_text`. Rows go in with the engines' bulk paths
(``executemany`` in 20,000-row transactions on SQLite, ``COPY`` on PostgreSQL) into the
migrated schema (``--schema``: at that revision) with the secondary indexes dropped and built
after the load, the FTS5 index rebuilt once and its triggers recreated, ``extension_calls``
(migration 0011) filled from the participants in one ``INSERT ... SELECT`` with its triggers
dropped for the load and recreated; then ``ANALYZE``.

*Measure.* Each case (:func:`query_cases`, shared with ``bench/http_calls.py``) is a query
string of ``GET /calls`` (or ``/changes``), read as the API reads it, and runs
:func:`storage.queries.list_calls` — the query *and* loading the 50 entries of the page,
what ``GET /calls`` costs before JSON — ``--repeat`` times with varying arguments (employee,
period, search term, cursor depth); it reports p50 and p95 in milliseconds. Warm: after one
untimed warm-up. Cold (``--cold``): before every request the engine's connections are closed
and the database's files dropped from the page cache (:mod:`bench.coldcache`), and the pages
read from the disk are counted. A request slower than ``--give-up`` seconds is interrupted and
its case reported as "> N". The plan of each case is printed once (``EXPLAIN QUERY PLAN`` /
``EXPLAIN``).
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: E402

from bench.coldcache import DiskCache, postgres_cache, sqlite_cache  # noqa: E402
from config import Settings  # noqa: E402
from connector.assembly import Direction  # noqa: E402
from pbxjournal.daemon import settle_collector  # noqa: E402
from pbxjournal.pipeline import build_pipeline  # noqa: E402
from pbxjournal.replay import replay_captures  # noqa: E402
from storage import searchkeys  # noqa: E402
from storage.engine import Database, open_database  # noqa: E402
from storage.journal import JournalEntry  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Call, CallParticipant, CallRecording  # noqa: E402
from storage.queries import (  # noqa: E402
    InternalCalls,
    JournalFilter,
    changes,
    encode_cursor,
    explain,
    fts_matches,
    journal_statement,
    list_calls,
    parse_time_bound,
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


#: At most this many 1C customers (issue 18: 100,000, 30 % of them reached through contacts).
MAX_CUSTOMERS = 100_000
#: The share of calls of the one busy number, and its pool index (outside the pool).
HOT_SHARE = 1 / 180
HOT_K = -1
HOT_NUMBER = "+74957771000"


def pool_number(k: int) -> str:
    if k == HOT_K:
        return HOT_NUMBER
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
        self.customers = min(MAX_CUSTOMERS, max(self.pool // 4, 25))
        self.seen: set[int] = set()
        self.recording_id = 0
        self.forms: dict[str, str] = {}

    def owner(self, k: int) -> tuple[int, int | None] | None:
        """(customer, contact) of pool number k, or None (unregistered).

        Two numbers in five are bound; the bound ones are dealt to the customers in turn, so
        every customer has numbers; a customer with ``n % 10 < 3`` (30 %) is reached through
        contact persons (each of its numbers is a contact's)."""
        if k % 5 >= 2:
            return None
        customer = (k // 5 * 2 + k % 5) % self.customers
        return customer, (k if customer % 10 < 3 else None)

    def cursor_at(self, rnd: random.Random, depth: int) -> str:
        """A cursor about ``depth`` rows below the newest call (row ``i`` starts at
        ``YEAR_START + i * YEAR / rows`` plus under a second)."""
        i = self.rows - depth - rnd.randrange(100)
        return encode_cursor(YEAR_START + i * (YEAR / self.rows), i + 1)

    def contact_number(self, rnd: random.Random) -> int:
        """A pool number (skewed like the calls) that belongs to a contact person."""
        while True:
            k = int(self.pool * rnd.random() ** 2)
            owner = self.owner(k)
            if owner is not None and owner[1] is not None:
                return k

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
        # One external call in 180 is of the same number (the company's forwarded main line, or a
        # spammer): 50,000 calls at ten million, unregistered.
        if not internal and rnd.random() < HOT_SHARE:
            k = HOT_K
        number = None if internal else pool_number(k)
        owner = None if internal or k == HOT_K else self.owner(k)
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
            "callback_of": None,
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
        rest = search_text(number=None, region="RU", names=names, extensions=extensions)
        if number is None:
            return rest
        forms = self.forms.get(number)
        if forms is None:
            forms = self.forms[number] = " | ".join(number_forms(number, "RU"))
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


@dataclass(frozen=True)
class Projection:
    """The generator's columns of one table that the journal has at its revision (filled at
    an older ``--schema``, a table lacks the columns later migrations added: ``callback_of``
    before 0006), and how to cut the generator's rows to them."""

    columns: list[str]
    keep: list[int] | None  # None: every column is there, rows go as they are

    @classmethod
    def of(cls, generated: list[str], present: Iterable[str]) -> Projection:
        have = set(present)
        keep = [i for i, c in enumerate(generated) if c in have]
        if len(keep) == len(generated):
            return cls(list(generated), None)
        return cls([generated[i] for i in keep], keep)

    def rows(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if self.keep is None:
            return rows
        keep = self.keep
        return [tuple(row[i] for i in keep) for row in rows]


#: The tables whose secondary indexes are dropped for the load and built after it.
BULK_TABLES = ("calls", "call_participants", "call_recordings", "extension_calls")
#: Migration 0011: ``extension_calls``' triggers, dropped for the load, and its bulk fill.
EXTENSION_CALLS = "storage.migrations.versions.0011_extension_calls"


def _has_extension_calls(names: Iterable[str]) -> bool:
    """Whether the journal is at 0011 or later (filled at an older ``--schema``: not)."""
    return "extension_calls" in set(names)


def fill_sqlite(path: Path, synth: Synth, progress: Callable[[int], None]) -> dict[str, float]:
    """The rows into the migrated file: indexes dropped and built after, FTS5 rebuilt once,
    ``ANALYZE``. The seconds of each phase."""
    timings: dict[str, float] = {}
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")  # 1 GB: index builds sort in memory
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
    # FTS5 builds its index far faster in one 'rebuild' than row by row through the triggers,
    # and a B-tree far faster from sorted keys than by a million random inserts.
    search = importlib.import_module("storage.migrations.versions.0001_initial")
    for statement in search.SQLITE_SEARCH_DROP[:3]:
        db.execute(statement)
    marks = ", ".join("?" for _ in BULK_TABLES)
    indexes = db.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        f"AND tbl_name IN ({marks})",
        BULK_TABLES,
    ).fetchall()
    for name, _sql in indexes:
        db.execute(f"DROP INDEX {name}")
    # extension_calls is filled from the participants once, not row by row by its triggers.
    mine = None
    if _has_extension_calls(r[0] for r in db.execute("SELECT name FROM sqlite_master")):
        mine = importlib.import_module(EXTENSION_CALLS)
        for statement in mine.drop_triggers("sqlite"):
            db.execute(statement)
    calls, parts, recs = (
        Projection.of(generated, (r[1] for r in db.execute(f"PRAGMA table_info({table})")))
        for table, generated in (
            ("calls", CALL_COLUMNS),
            ("call_participants", PART_COLUMNS),
            ("call_recordings", REC_COLUMNS),
        )
    )
    began = time.perf_counter()
    done = 0
    for batch in synth.batches(20_000):
        db.execute("BEGIN")
        for table, projection, rows in (
            ("calls", calls, batch.calls),
            ("call_participants", parts, batch.participants),
            ("call_recordings", recs, batch.recordings),
        ):
            db.executemany(
                f"INSERT INTO {table} ({', '.join(projection.columns)}) "
                f"VALUES ({_placeholders(projection.columns)})",
                projection.rows(rows),
            )
        db.execute("COMMIT")
        done += len(batch.calls)
        progress(done)
    timings["rows"] = time.perf_counter() - began
    if mine is not None:
        began = time.perf_counter()
        db.execute("BEGIN")
        db.execute(mine.FILL)
        for statement in mine.triggers("sqlite"):
            db.execute(statement)
        db.execute("COMMIT")
        timings["extension_calls"] = time.perf_counter() - began
    began = time.perf_counter()
    for _name, sql in indexes:
        db.execute(sql)
    timings["indexes"] = time.perf_counter() - began
    began = time.perf_counter()
    db.execute("INSERT INTO calls_search(calls_search) VALUES ('rebuild')")
    for statement in search.SQLITE_SEARCH[1:]:
        db.execute(statement)
    timings["fts5"] = time.perf_counter() - began
    db.execute("UPDATE journal_state SET last_version = ?", (synth.rows,))
    began = time.perf_counter()
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    timings["analyze"] = time.perf_counter() - began
    db.close()
    return timings


def _bool_columns(table: Any, columns: list[str]) -> list[int]:
    return [i for i, c in enumerate(columns) if isinstance(table.c[c].type, sa.Boolean)]


def _sqlite_rows(
    path: Path, table: str, columns: list[str], bools: list[int], size: int = 50_000
) -> Iterator[list[tuple[Any, ...]]]:
    """A filled SQLite file's rows, in batches, booleans as booleans (for COPY)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cursor = db.execute(f"SELECT {', '.join(columns)} FROM {table}")
        while rows := cursor.fetchmany(size):
            if bools:
                fixed = []
                for row in rows:
                    values = list(row)
                    for i in bools:
                        values[i] = bool(values[i])
                    fixed.append(tuple(values))
                rows = fixed
            yield rows
    finally:
        db.close()


async def fill_postgres(
    url: str, synth: Synth, progress: Callable[[int], None], source: Path | None = None
) -> dict[str, float]:
    """The rows by ``COPY`` (from the generator, or from a filled SQLite file ``source``: the
    same rows without generating them again), plain indexes dropped and built after, the
    trigram index built once, ``VACUUM ANALYZE``. The seconds of each phase."""
    import asyncpg

    timings: dict[str, float] = {}
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
        # Plain indexes (the trigram one among them) are built far faster in one go than
        # maintained over millions of rows; unique ones stay (they back constraints).
        indexes = await db.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename = ANY($1::text[]) AND indexdef NOT LIKE 'CREATE UNIQUE%'",
            list(BULK_TABLES),
        )
        for index in indexes:
            await db.execute(f"DROP INDEX {index['indexname']}")
        tables = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        mine = None
        if _has_extension_calls(r["tablename"] for r in tables):
            mine = importlib.import_module(EXTENSION_CALLS)
            for statement in mine.drop_triggers("postgresql"):
                await db.execute(statement)
        present: dict[str, list[str]] = {}
        for row in await db.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        ):
            present.setdefault(row["table_name"], []).append(row["column_name"])
        calls, parts, recs = (
            Projection.of(generated, present[table])
            for table, generated in (
                ("calls", CALL_COLUMNS),
                ("call_participants", PART_COLUMNS),
                ("call_recordings", REC_COLUMNS),
            )
        )
        began = time.perf_counter()
        done = 0
        if source is None:
            for batch in synth.batches(50_000):
                for name, projection, records in (
                    ("calls", calls, batch.calls),
                    ("call_participants", parts, batch.participants),
                    ("call_recordings", recs, batch.recordings),
                ):
                    await db.copy_records_to_table(
                        name, records=projection.rows(records), columns=projection.columns
                    )
                done += len(batch.calls)
                progress(done)
        else:
            for table, projection in (
                (Call.__table__, calls),
                (CallParticipant.__table__, parts),
                (CallRecording.__table__, recs),
            ):
                columns = projection.columns
                bools = _bool_columns(table, columns)
                for rows in _sqlite_rows(source, table.name, columns, bools):
                    await db.copy_records_to_table(table.name, records=rows, columns=columns)
                    if table.name == "calls":
                        done += len(rows)
                        progress(done)
        timings["rows"] = time.perf_counter() - began
        await db.execute("SET maintenance_work_mem = '1GB'")
        if mine is not None:
            began = time.perf_counter()
            await db.execute("SET work_mem = '1GB'")
            await db.execute(mine.FILL)
            for statement in mine.triggers("postgresql"):
                await db.execute(statement)
            timings["extension_calls"] = time.perf_counter() - began
        began = time.perf_counter()
        for index in indexes:
            await db.execute(index["indexdef"])
        timings["indexes"] = time.perf_counter() - began
        await db.execute("UPDATE journal_state SET last_version = $1", synth.rows)
        for table in ("calls", "call_recordings"):
            await db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        began = time.perf_counter()
        await db.execute("VACUUM ANALYZE")
        timings["analyze"] = time.perf_counter() - began
    finally:
        await db.close()
    return timings


@dataclass(frozen=True)
class Case:
    """One benchmark case: a request of ``GET /api/v1/calls`` (or ``/changes``), its query
    string made anew for each repetition (employee, week, search term, cursor depth vary)."""

    name: str
    make: Callable[[random.Random], dict[str, str]]
    path: str = "/api/v1/calls"


TZ = ZoneInfo("Europe/Moscow")


def _day(moment: float) -> str:
    return datetime.fromtimestamp(moment, TZ).date().isoformat()


def _period(days: int) -> Callable[[random.Random], dict[str, str]]:
    def make(rnd: random.Random) -> dict[str, str]:
        start = YEAR_START + rnd.randrange(0, max(1, 365 - days + 1)) * 86400.0
        return {"from": _day(start), "to": _day(start + (days - 1) * 86400.0)}

    return make


def _employee(rnd: random.Random) -> str:
    return str(101 + rnd.randrange(EMPLOYEES))


#: The guide's filters (and DESIGN's ``attention`` and ``internal=only``), as query strings.
FILTERS: dict[str, Callable[[random.Random], dict[str, str]]] = {
    "week": _period(7),
    "incoming": lambda r: {"kind": "incoming"},
    "outgoing": lambda r: {"kind": "outgoing"},
    "missed": lambda r: {"kind": "missed"},
    "lost": lambda r: {"kind": "lost"},
    "first_contact": lambda r: {"first_contact": "true"},
    "unregistered": lambda r: {"unregistered": "true"},
    "attention": lambda r: {"attention": "true"},
    "internal=show": lambda r: {"internal": "show"},
    "internal=only": lambda r: {"internal": "only"},
}


def _combine(*makers: Callable[[random.Random], dict[str, str]]) -> Callable[..., Any]:
    def make(rnd: random.Random) -> dict[str, str]:
        params: dict[str, str] = {}
        for maker in makers:
            for key, value in maker(rnd).items():
                # Several kinds are one parameter (OR-ed), as 1C sends them.
                params[key] = f"{params[key]},{value}" if key == "kind" and key in params else value
        return params

    return make


def query_cases(synth: Synth) -> list[Case]:
    """Issue 18's cases: each filter alone, every pair, each with "Мои звонки", a week / a
    month / a year, every search form, a page 10,000 rows deep, ``/changes`` from anywhere."""

    def mine(rnd: random.Random) -> dict[str, str]:
        return {"employee": _employee(rnd)}

    def deep(rnd: random.Random) -> dict[str, str]:
        middle = YEAR_START + YEAR * rnd.uniform(0.3, 0.7)
        return {"cursor": encode_cursor(middle, synth.rows)}

    def number(rnd: random.Random) -> str:
        return pool_number(int(synth.pool * rnd.random() ** 2))

    def search(terms: Callable[[random.Random], str]) -> Callable[..., Any]:
        return lambda rnd: {"q": terms(rnd)}

    def customer(rnd: random.Random) -> str:
        return customer_name(rnd.randrange(synth.customers))

    def contact(rnd: random.Random) -> str:
        return contact_name(synth.contact_number(rnd))

    def written(rnd: random.Random) -> str:
        d = number(rnd)[2:]
        forms = [
            f"8 {d[:3]} {d[3:6]}-{d[6:8]}-{d[8:]}",
            f"+7 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}",
            f"7{d}",
            d,
        ]
        return forms[rnd.randrange(len(forms))]

    def digits(count: int) -> Callable[[random.Random], str]:
        def make(rnd: random.Random) -> str:
            d = number(rnd)[1:]
            at = rnd.randrange(0, len(d) - count + 1)
            return d[at : at + count]

        return make

    cases = [Case("journal (internal hidden)", lambda r: {})]
    cases += [Case(name, make) for name, make in FILTERS.items()]
    names = list(FILTERS)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if first.startswith("internal") and second.startswith("internal"):
                continue  # one parameter
            cases.append(Case(f"{first}+{second}", _combine(FILTERS[first], FILTERS[second])))
    cases.append(Case("employee (my calls)", mine))
    cases += [Case(f"employee+{name}", _combine(mine, make)) for name, make in FILTERS.items()]
    cases += [
        Case("missed+attention+employee", _combine(FILTERS["missed"], FILTERS["attention"], mine)),
        Case(
            "week+lost+first_contact",
            _combine(FILTERS["week"], FILTERS["lost"], FILTERS["first_contact"]),
        ),
        Case("month", _period(30)),
        Case("year", _period(365)),
        Case("deep page (cursor mid-year)", deep),
        Case("page 10,000 rows deep", lambda r: {"cursor": synth.cursor_at(r, 10_000)}),
        Case("search: customer name", search(customer)),
        Case("search: customer name prefix", search(lambda r: customer(r)[:-1])),
        Case("search: word of a customer name", search(lambda r: customer(r).split()[1])),
        Case("search: 'ромаш' (many)", search(lambda r: "ромаш")),
        Case("search: contact name", search(contact)),
        Case("search: contact name prefix", search(lambda r: contact(r)[:-1])),
        Case("search: word of a contact name", search(lambda r: contact(r).split()[0])),
        Case("search: employee name", search(lambda r: employee_name(r.randrange(EMPLOYEES)))),
        Case("search: extension", search(_employee)),
        Case("search: number, any written form", search(written)),
        Case("search: the busy number", search(lambda r: "8 495 777-10-00")),
        Case("search: 7 digits", search(digits(7))),
        Case("search: 5 digits", search(digits(5))),
        Case("search: 4 digits", search(digits(4))),
        Case(
            "changes: 500 from anywhere",
            lambda r: {"since": str(r.randrange(0, synth.rows - 500)), "limit": "500"},
            "/api/v1/changes",
        ),
        # A search with the guide's other filters (after the cases above, whose arguments
        # stay as they were drawn before these were added). A term in too many keys (an
        # extension, most runs of four digits, a surname) walks the journal or the
        # employee's calls, and the filter decides how far.
        Case("search: extension + my calls", _combine(search(_employee), mine)),
        Case(
            "search: extension + my missed calls",
            _combine(search(_employee), mine, FILTERS["missed"]),
        ),
        Case("search: 4 digits + my calls", _combine(search(digits(4)), mine)),
        Case("search: 4 digits + lost", _combine(search(digits(4)), FILTERS["lost"])),
        Case(
            "search: surname + first contact",
            _combine(search(lambda r: contact(r).split()[0]), FILTERS["first_contact"]),
        ),
        Case(
            "search: 4 digits, internal calls only",
            _combine(search(digits(4)), FILTERS["internal=only"]),
        ),
        Case(
            "search: 'ооо' + unregistered (none)",
            _combine(search(lambda r: "ооо"), FILTERS["unregistered"]),
        ),
        # A run of four digits with the filters that pass few calls (``window_page``).
        Case("search: 4 digits + a week", _combine(search(digits(4)), FILTERS["week"])),
        Case("search: 4 digits + missed", _combine(search(digits(4)), FILTERS["missed"])),
        Case(
            "search: 4 digits + first contact",
            _combine(search(digits(4)), FILTERS["first_contact"]),
        ),
    ]
    return cases


def to_filter(params: dict[str, str]) -> tuple[JournalFilter, str | None]:
    """A query string of ``GET /calls`` as :func:`httpd.calls.journal_filter` reads it."""
    started_from = parse_time_bound(params["from"], TZ, end=False) if "from" in params else None
    started_until = parse_time_bound(params["to"], TZ, end=True) if "to" in params else None
    flags = {
        name: params[name] == "true"
        for name in ("first_contact", "unregistered", "attention")
        if name in params
    }
    where = JournalFilter(
        started_from=started_from,
        started_until=started_until,
        kinds=frozenset(params["kind"].split(",")) if "kind" in params else frozenset(),
        internal=InternalCalls(params.get("internal", "hide")),
        employee=params.get("employee"),
        query=params.get("q"),
        **flags,
    )
    return where, params.get("cursor")


Timing = tuple[str, float, float, int, float]


def _summary(name: str, timings: list[float], rows: int, pages: list[int]) -> Timing:
    p50 = statistics.median(timings)
    p95 = statistics.quantiles(timings, n=20)[-1] if len(timings) > 1 else timings[0]
    return name, p50, p95, rows, statistics.median(pages) if pages else 0.0


async def _plan(database: Database, where: JournalFilter, cursor: str | None) -> list[str]:
    async with database.sessions() as session:
        frequent = False
        if where.query and database.is_sqlite:
            search = parse_query(where.query)
            frequent = search.indexable and await fts_matches(session, search) is None
        # For a rare term SQLite runs the FTS5 query first and looks the rows up by rowid;
        # the subquery shown here is the same work in one statement.
        statement = journal_statement(
            database.dialect, where, limit=51, cursor=cursor, frequent_search=frequent
        )
        return await explain(session, statement)


async def _interrupt(session: AsyncSession) -> None:
    """Stop the running statement: SQLite's ``interrupt()`` (thread-safe; cancelling the task
    would leave the query running in aiosqlite's thread), PostgreSQL's cancel request."""
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    if hasattr(driver, "interrupt"):
        await driver.interrupt()
    else:
        driver.terminate()


async def _request(session: AsyncSession, case: Case, params: dict[str, str]) -> int:
    if case.path.endswith("/changes"):
        entries, _ = await changes(session, int(params["since"]), int(params["limit"]))
        return len(entries)
    where, cursor = to_filter(params)
    page = await list_calls(session, where, limit=50, cursor=cursor)
    return len(page.entries)


async def measure(
    url: str,
    synth: Synth,
    repeat: int,
    *,
    plans: bool,
    cache: DiskCache | None = None,
    only: str | None = None,
    give_up: float = 10.0,
) -> list[Timing]:
    """p50, p95, rows and median pages read of each case. With ``cache``, cold: before each
    request the engine's connections are closed (SQLite's page cache with them) and the
    database's files dropped from the system's cache. A request still running after
    ``give_up`` seconds is abandoned (with the rest of its case) and counted as that long."""
    results = []
    rnd = random.Random(11)
    database = open_database(url)
    # As the daemon after its start: otherwise a full collection of this process (the
    # synthetic journal's tables, ~40 ms here) lands in a request now and then, a pause the
    # daemon does not have.
    settle_collector()
    try:
        for case in query_cases(synth):
            if only and only not in case.name:
                # Its arguments are drawn all the same: the cases measured get the arguments
                # they get in a full run (an extension, a contact, a cursor), so that a case
                # picked out with ``--only`` is the case the full table shows (when no case
                # before it was abandoned, which cuts its draws short).
                for _ in range(repeat + 1):
                    case.make(rnd)
                continue
            timings: list[float] = []
            pages: list[int] = []
            rows = 0
            abandoned = False
            for n in range(repeat + 1):
                params = case.make(rnd)
                if cache is not None:
                    await database.dispose()
                async with database.sessions() as session:
                    # Connected, schema read: a running daemon has done that long before.
                    await session.execute(sa.text("SELECT last_version FROM journal_state"))
                    if cache is not None:
                        cache.drop()
                    before = cache.read_bytes() if cache is not None else 0
                    began = time.perf_counter()
                    request = asyncio.ensure_future(_request(session, case, params))
                    done, _ = await asyncio.wait([request], timeout=give_up)
                    if done:
                        found = request.result()
                    else:
                        found = 0
                        abandoned = True
                        await _interrupt(session)
                        await asyncio.gather(request, return_exceptions=True)
                    elapsed = (time.perf_counter() - began) * 1000
                    read = cache.pages_since(before) if cache is not None else None
                # The first request is not timed, warm or cold: it fills this process's caches
                # of compiled statements (a daemon's first request of each kind does that once
                # in its life). Cold, its pages are dropped again before the next request.
                if n or abandoned:
                    timings.append(elapsed)
                    rows += found
                    if read is not None:
                        pages.append(read)
                if abandoned:
                    break  # one request over the limit says enough: the table shows "> limit"
            count = -1 if abandoned else rows // len(timings)
            result = _summary(case.name, timings, count, pages)
            results.append(result)
            print(
                f"  {case.name:<40}{result[1]:>9.1f}{result[2]:>9.1f}{result[3]:>6}"
                f"{result[4]:>8.0f}",
                file=sys.stderr,
            )
            if plans and not case.path.endswith("/changes"):
                where, cursor = to_filter(case.make(random.Random(1)))
                plan = await _plan(database, where, cursor)
                print("     " + "\n     ".join(plan), file=sys.stderr)
    finally:
        await database.dispose()
    return results


def _clear_sqlite(path: Path, *, reuse: bool) -> bool:
    """Remove the old file unless it is to be reused; whether the database must be filled."""
    if reuse and path.exists():
        return False
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return True


async def prepare(engine: str, args: argparse.Namespace, synth: Synth) -> str:
    """The filled journal's URL: filled now at ``--schema`` (default: the newest revision),
    or an already filled one with ``--reuse``."""
    schema = getattr(args, "schema", None) or "head"
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
        await upgrade(database, schema)
    finally:
        await database.dispose()
    began = time.perf_counter()

    def progress(done: int) -> None:
        rate = done / (time.perf_counter() - began)
        print(f"\r  {engine}: {done:,} calls ({rate:,.0f}/s)", end="", file=sys.stderr)

    if engine == "sqlite":
        phases = await asyncio.to_thread(fill_sqlite, Path(args.sqlite_path), synth, progress)
    else:
        source = getattr(args, "from_sqlite", None)
        phases = await fill_postgres(url, synth, progress, Path(source) if source else None)
    phases["search_keys"] = await _fill_search_keys(url)
    detail = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items())
    print(
        f"\n  {engine}: filled at revision {schema} in {time.perf_counter() - began:.0f} s "
        f"({detail}); {await database_size(url) / 1e6:,.0f} MB",
        file=sys.stderr,
    )
    return url


async def _fill_search_keys(url: str) -> float:
    """Build the search keys of the bulk-loaded journal (migration 0012's fill), if its
    revision has them; the seconds it took."""
    database = open_database(url)
    try:
        async with database.writer.begin() as connection:
            if not await connection.run_sync(searchkeys.has_keys):
                return 0.0
            began = time.perf_counter()
            await connection.run_sync(lambda c: searchkeys.fill(c, "RU"))
            return time.perf_counter() - began
    finally:
        await database.dispose()


async def database_size(url: str) -> int:
    """Bytes on disk: the SQLite file (and its WAL), or ``pg_database_size``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = str(parsed.database)
        return sum(
            os.stat(f"{path}{suffix}").st_size
            for suffix in ("", "-wal")
            if os.path.exists(f"{path}{suffix}")  # noqa: ASYNC240 (a benchmark's report)
        )
    import asyncpg

    db = await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    try:
        return int(await db.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await db.close()


async def disk_cache(url: str) -> DiskCache:
    """The database's files and readers (see :mod:`bench.coldcache`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return sqlite_cache(Path(str(parsed.database)))
    import asyncpg

    db = await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    try:
        directory = await db.fetchval("SHOW data_directory")
        oid = await db.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
    finally:
        await db.close()
    return postgres_cache(Path(directory), int(oid))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--sqlite-path", default="/tmp/pbxjournal-bench.sqlite3")
    parser.add_argument("--pg-url", default=os.environ.get("PBXJOURNAL_TEST_PG_URL"))
    parser.add_argument("--reuse", action="store_true", help="keep an already filled database")
    parser.add_argument(
        "--schema", default="head", help="fill at this revision (then measure `migrate`)"
    )
    parser.add_argument(
        "--from-sqlite", metavar="PATH", help="PostgreSQL: copy the rows of this filled file"
    )
    parser.add_argument("--fill-only", action="store_true", help="fill, measure nothing")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the database's files from the page cache before each request (root)",
    )
    parser.add_argument("--only", help="only the cases whose name contains this")
    parser.add_argument(
        "--give-up", type=float, default=10.0, help="seconds after which a case is abandoned"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--section", default="bench.queries", help="docs/benchmarks.md section")
    parser.add_argument("--no-plans", action="store_true")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    report: dict[str, list[Timing]] = {}
    disks: dict[str, tuple[float, float]] = {}
    for engine in args.engines.split(","):
        synth = Synth(args.rows)
        url = await prepare(engine, args, synth)
        if args.fill_only:
            continue
        cache = await disk_cache(url) if args.cold else None
        mode = "cold" if args.cold else "warm"
        if cache is not None:
            disks[engine] = cache.latency()
            print(
                f"\n{engine}: a random 4 KiB read from the disk: p50 {disks[engine][0]:.2f} ms,"
                f" p95 {disks[engine][1]:.2f} ms",
                file=sys.stderr,
            )
        print(f"\n== {engine}, {mode}: case, p50, p95 (ms), rows, pages read", file=sys.stderr)
        report[engine] = await measure(
            url,
            synth,
            args.repeat,
            plans=not args.no_plans,
            cache=cache,
            only=args.only,
            give_up=args.give_up,
        )
    engines = list(report)
    if not engines:
        return
    load = f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": args.rows,
                    "cold": args.cold,
                    "load": load,
                    "disk": disks,
                    "results": report,
                }
            )
        )
    text = docs_text(args.rows, args.repeat, report, load, cold=args.cold, disks=disks)
    print("\n" + text)
    if not args.no_docs:
        from bench import report as docs

        docs.update_section(args.section, text)


def docs_text(
    rows: int,
    repeat: int,
    results: dict[str, list[Timing]],
    load: str,
    *,
    cold: bool,
    disks: dict[str, tuple[float, float]] | None = None,
) -> str:
    """This benchmark's section of docs/benchmarks.md."""
    from bench import report

    engines = list(results)
    header = ["case"]
    for engine in engines:
        header += [f"{engine} p50", f"{engine} p95"] + ([f"{engine} pages"] if cold else [])
    header.append("rows")
    lines = []
    for index, (name, *_rest) in enumerate(results[engines[0]]):
        line = [name]
        for engine in engines:
            _, p50, p95, count, pages = results[engine][index]
            if count < 0:  # abandoned
                line += [f"> {p95:,.0f}", f"> {p95:,.0f}"] + (["?"] if cold else [])
                continue
            line += [f"{p50:.1f}", f"{p95:.1f}"] + ([f"{pages:.0f}"] if cold else [])
        line.append(str(max(r[index][3] for r in results.values())))
        lines.append(line)
    mode = (
        "Cold: before each request the engine's connections are closed and the database's "
        "files dropped from the page cache (`posix_fadvise(POSIX_FADV_DONTNEED)`, "
        "`bench.coldcache`); each case's first request is not timed (it compiles the "
        "case's statements, once in a daemon's life); \"pages\" is the median of 4 KiB pages the "
        "database's processes read from the disk for it (`/proc/<pid>/io` read_bytes). "
        + "".join(
            f"A random 4 KiB read of {engine}'s largest file took p50 {p50:.2f} ms, p95 "
            f"{p95:.2f} ms (`bench.coldcache.random_reads`, one read at a time, as a B-tree "
            "is descended): a cold request spends about its pages times that on reads. "
            for engine, (p50, p95) in (disks or {}).items()
        )
        if cold
        else f"Warm: each case {repeat} times after one untimed warm-up."
    )
    intro = report.prose(
        f"""Machine: {report.machine()}, SQLite {sqlite3.sqlite_version}. Load average (1 min)
        {load}: other work shares the machine.

        {rows:,} calls ({", ".join(engines)}): the 70 real calls copied over a year, numbers
        drawn with a skew from a pool of {rows // 5:,} (one of them in 180 external calls), 40 %
        of them bound to {min(MAX_CUSTOMERS, rows // 20):,} customers with Cyrillic names (30 %
        of the customers through contact persons), bulk-loaded into the migrated schema, then
        `ANALYZE`. Each case is what `GET /calls` (or `/changes`) asks of the storage:
        `storage.queries.list_calls`, the page query and loading the 50 entries, {repeat} times
        with varying arguments (employee, period, search term, cursor depth). {mode}
        Milliseconds; "rows" is the page's length; "> N": the request was abandoned after N
        ms (and the rest of its case with it)."""
    )
    return "\n\n".join(
        [
            f"## Journal queries at {rows:,} calls, {', '.join(engines)}, "
            f"{'cold' if cold else 'warm'}",
            f"Command: `{report.command_line()}`",
            intro,
            report.table(header, lines),
        ]
    )


if __name__ == "__main__":
    asyncio.run(main())
