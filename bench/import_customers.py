"""``POST /customers:import`` at 1,000 / 5,000 / 20,000 customers, SQLite and PostgreSQL.

Not a test. Run it from the repository root:

    python bench/import_customers.py                              # both engines, all sizes
    python bench/import_customers.py --sizes 1000 --engines sqlite
    python bench/import_customers.py --max-seconds 60             # skip sizes after a slow one

PostgreSQL comes from ``--pg-url`` or ``PBXJOURNAL_TEST_PG_URL``; the benchmark creates a
database of its own next to the one in the URL and drops it at the end. SQLite goes to a
temporary directory.

Theory of operation
-------------------
*Fill.* A migrated journal with the configured employees and one missed incoming call from
each customer's first number (written as the daemon does, in batches), so that the import has
calls to re-show: every customer is new, so each of those calls gets its customer and a new
version. Customer ``i`` has two numbers of its own and one contact person with one number,
written the way 1C writes them (``+7 916 …``, ``8 916 …``).

*Measure.* :meth:`storage.store.SqlJournal.import_customers` — what the HTTP handler awaits
after parsing the body — three times: the first import (everything new, the calls re-shown),
the same list again (nothing changes), and the list with every customer renamed (every call's
customer name and search text change). During each, a probe writes one call every 20 ms through
:meth:`SqlJournal.write` and reports how many got written while the import ran and the longest
any of them waited: the write lock an import holds is what calls wait behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from connector.assembly import Direction  # noqa: E402
from storage.directory import ContactRecord, CustomerRecord  # noqa: E402
from storage.engine import open_database  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.rules import AttentionWindow  # noqa: E402
from storage.store import SqlJournal  # noqa: E402
from tests.calls import at, make_call  # noqa: E402
from tests.db import MOSCOW, employee_records  # noqa: E402

PROBE_EVERY = 0.02


def customers(count: int, *, suffix: str = "") -> list[CustomerRecord]:
    return [
        CustomerRecord(
            f"c-{i}",
            f"ООО Клиент {i}{suffix}",
            (f"+7 916 {3 * i:07d}", f"8 (916) {3 * i + 1:07d}"),
            (ContactRecord(f"p-{i}", f"Иванов Пётр {i}{suffix}", (f"8916{3 * i + 2:07d}",)),),
        )
        for i in range(count)
    ]


async def fill(journal: SqlJournal, count: int) -> None:
    await journal.seed_employees(employee_records())
    start = at("11-20 09:00")
    calls = [
        make_call(Direction.INCOMING, f"8916{3 * i:07d}", start + 60.0 * i, answered=False)
        for i in range(count)
    ]
    for first in range(0, len(calls), 500):
        batch = calls[first : first + 500]
        await journal.write_many([(c, []) for c in batch], batch[-1].ended_at)


@dataclass
class Probe:
    written: int = 0
    during: int = 0
    longest: float = 0.0


async def probe_writes(journal: SqlJournal, probe: Probe, running: asyncio.Event) -> None:
    """One call every PROBE_EVERY seconds while ``running`` is set."""
    number = 0
    while running.is_set():
        number += 1
        call = make_call(
            Direction.INCOMING, f"8903{number:07d}", at("11-28 10:00") + number, answered=True
        )
        began = time.perf_counter()
        await journal.write(call, [], call.ended_at)
        probe.longest = max(probe.longest, time.perf_counter() - began)
        probe.written += 1
        if running.is_set():
            probe.during += 1
        await asyncio.sleep(PROBE_EVERY)


async def timed(
    journal: SqlJournal, work: Callable[[], Awaitable[list[Any]]]
) -> tuple[float, int, Probe]:
    probe, running = Probe(), asyncio.Event()
    running.set()
    prober = asyncio.create_task(probe_writes(journal, probe, running))
    await asyncio.sleep(PROBE_EVERY)
    began = time.perf_counter()
    try:
        changes = await work()
    finally:
        elapsed = time.perf_counter() - began
        running.clear()
        await prober
    return elapsed, len({c.id for c in changes}), probe


async def run_size(url: str, count: int) -> list[str]:
    database = open_database(url)
    try:
        await upgrade(database)
        journal = SqlJournal(
            database, pbx="main", window=AttentionWindow.fixed(86400.0, MOSCOW), region="RU"
        )
        await fill(journal, count)
        lines = []
        first = customers(count)
        renamed = customers(count, suffix=" (переим.)")
        now = at("11-28 12:00")
        for label, records in (("new", first), ("again", first), ("renamed", renamed)):

            def work(r: list[CustomerRecord] = records) -> Awaitable[list[Any]]:
                return journal.import_customers(r, now)

            elapsed, changed, probe = await timed(journal, work)
            lines.append(
                f"{count:>7,} {label:<8} {elapsed:8.2f} s {changed:>7,} calls changed; "
                f"{probe.during:>4} call writes during the import, longest wait "
                f"{probe.longest * 1000:7.0f} ms"
            )
            print(lines[-1], flush=True)
        return lines
    finally:
        await database.dispose()


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


async def fresh_postgres(base: str) -> str:
    name = f"{make_url(base).database}_bench_import_{os.getpid()}_{secrets.token_hex(3)}"
    connection = await _admin(base)
    try:
        await connection.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'")
    finally:
        await connection.close()
    return make_url(base).set(database=name).render_as_string(False)


async def drop_postgres(base: str, url: str) -> None:
    connection = await _admin(base)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")
    finally:
        await connection.close()


async def benchmark(args: argparse.Namespace) -> None:
    for engine in args.engines.split(","):
        print(f"== {engine}", flush=True)
        for count in [int(s) for s in args.sizes.split(",")]:
            began = time.perf_counter()
            if engine == "sqlite":
                with tempfile.TemporaryDirectory() as directory:
                    await run_size(f"sqlite+aiosqlite:///{directory}/journal.sqlite3", count)
            else:
                if not args.pg_url:
                    raise SystemExit("PostgreSQL needs --pg-url or PBXJOURNAL_TEST_PG_URL")
                url = await fresh_postgres(args.pg_url)
                try:
                    await run_size(url, count)
                finally:
                    await drop_postgres(args.pg_url, url)
            if time.perf_counter() - began > args.max_seconds:
                print(f"   (took over {args.max_seconds:.0f} s: larger sizes skipped)")
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("PBXJOURNAL_TEST_PG_URL"))
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=float("inf"),
        help="skip the larger sizes once one size took longer than this",
    )
    asyncio.run(benchmark(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
