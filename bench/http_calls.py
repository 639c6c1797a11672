"""The HTTP API at a million calls: p50/p95 of ``GET /calls`` (each filter, each search) and of
``GET /changes``, over a real TCP connection, SQLite.

Not a test. Run it from the repository root:

    python bench/http_calls.py                     # fills /tmp/pbxjournal-http-bench.sqlite3
    python bench/http_calls.py --reuse             # keeps an already filled file
    python bench/http_calls.py --rows 100000 --repeat 20

Theory of operation
-------------------
*Fill.* :mod:`bench.journal_queries` makes the rows: the 70 real calls copied a million times
over a year, with Cyrillic customers and contacts bound to 40 % of the numbers, through the
migrated schema (the real indexes and FTS5 triggers), then ``ANALYZE``.

*Serve.* The API runs in a child process (``--serve``), exactly as the daemon would run it:
:func:`httpd.app.init_app` over a :class:`storage.store.SqlJournal`, an ``AppRunner`` on
127.0.0.1, port 0. The child writes its port to a file; its stdout (the access log) goes to
/dev/null.

*Measure.* The parent sends each case ``--repeat`` times (plus one warm-up) on one keep-alive
connection, one request at a time, and times request to last byte of the JSON body: the page
query, loading 50 entries, rendering call objects, JSON encoding and HTTP on loopback. Cases
vary their argument per repetition (employee, week, search term, cursor depth), like
:mod:`bench.journal_queries` does for the bare queries, whose table this one can be read
beside: the difference is what HTTP and rendering add.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-token"


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    make: Callable[[random.Random], dict[str, str]]


def calls_cases(rows: int, pool: int, customers: int) -> list[Case]:
    from bench.journal_queries import (
        EMPLOYEES,
        YEAR,
        YEAR_START,
        contact_name,
        customer_name,
        employee_name,
        pool_number,
    )
    from storage.queries import encode_cursor

    def fixed(**params: str) -> Callable[[random.Random], dict[str, str]]:
        return lambda rnd: dict(params)

    def week(rnd: random.Random) -> dict[str, str]:
        from datetime import datetime, timedelta
        from zoneinfo import ZoneInfo

        start = datetime.fromtimestamp(
            YEAR_START + rnd.randrange(0, 50) * 7 * 86400.0, ZoneInfo("Europe/Moscow")
        )
        return {
            "from": start.date().isoformat(),
            "to": (start + timedelta(days=6)).date().isoformat(),
        }

    def employee(rnd: random.Random) -> str:
        return str(101 + rnd.randrange(EMPLOYEES))

    def deep(rnd: random.Random) -> dict[str, str]:
        middle = YEAR_START + YEAR * rnd.uniform(0.3, 0.7)
        return {"cursor": encode_cursor(middle, rows)}

    def number(rnd: random.Random) -> str:
        return pool_number(int(pool * rnd.random() ** 2))

    def full_number(rnd: random.Random) -> dict[str, str]:
        digits = number(rnd)[2:]
        return {"q": f"8 {digits[:3]} {digits[3:6]}-{digits[6:8]}-{digits[8:]}"}

    calls = "/api/v1/calls"
    return [
        Case("journal (internal hidden)", calls, fixed()),
        Case("deep page (cursor mid-year)", calls, deep),
        Case("internal=show", calls, fixed(internal="show")),
        Case("internal=only", calls, fixed(internal="only")),
        Case("from/to one week", calls, week),
        Case("kind=incoming", calls, fixed(kind="incoming")),
        Case("kind=outgoing", calls, fixed(kind="outgoing")),
        Case("kind=missed", calls, fixed(kind="missed")),
        Case("kind=lost", calls, fixed(kind="lost")),
        Case("kind=missed,outgoing", calls, fixed(kind="missed,outgoing")),
        Case("first_contact", calls, fixed(first_contact="true")),
        Case("unregistered", calls, fixed(unregistered="true")),
        Case("attention", calls, fixed(attention="true")),
        Case("employee (my calls)", calls, lambda r: {"employee": employee(r)}),
        Case(
            "missed+attention+employee",
            calls,
            lambda r: {"kind": "missed", "attention": "true", "employee": employee(r)},
        ),
        Case(
            "week+lost+first_contact",
            calls,
            lambda r: {**week(r), "kind": "lost", "first_contact": "true"},
        ),
        Case(
            "search: customer name",
            calls,
            lambda r: {"q": customer_name(r.randrange(customers))},
        ),
        Case("search: 'ромаш' (many)", calls, fixed(q="ромаш")),
        Case(
            "search: contact name",
            calls,
            lambda r: {"q": contact_name(3 * r.randrange(pool // 15))},
        ),
        Case(
            "search: employee name", calls, lambda r: {"q": employee_name(r.randrange(EMPLOYEES))}
        ),
        Case("search: 8 916 123-45-67 form", calls, full_number),
        Case("search: 7 digits", calls, lambda r: {"q": number(r)[-7:]}),
        Case("search: extension", calls, lambda r: {"q": employee(r)}),
    ]


def changes_cases(rows: int) -> list[Case]:
    changes = "/api/v1/changes"
    return [
        Case(
            "changes: 500 from anywhere",
            changes,
            lambda r: {"since": str(r.randrange(0, rows - 500)), "limit": "500"},
        ),
        Case(
            "changes: 50 from anywhere",
            changes,
            lambda r: {"since": str(r.randrange(0, rows - 50)), "limit": "50"},
        ),
        Case(
            "changes: the last 10",
            changes,
            lambda r: {"since": str(rows - 10)},
        ),
        Case("changes: none new (wait=0)", changes, lambda r: {"since": str(rows)}),
    ]


# -- the server (child process) -----------------------------------------------------------


async def serve(path: Path, port_file: Path) -> None:
    from aiohttp import web

    from config import HttpClient, HttpSettings, Settings
    from httpd.app import init_app
    from storage.engine import open_database
    from storage.migrate import upgrade
    from storage.rules import AttentionWindow
    from storage.store import SqlJournal

    settings = Settings()
    settings = replace(
        settings,
        http=HttpSettings(listen="127.0.0.1:0", clients=(HttpClient(name="bench", token=TOKEN),)),
    )
    database = open_database(f"sqlite+aiosqlite:///{path}")
    await upgrade(database)
    journal = SqlJournal(
        database,
        pbx="main",
        window=AttentionWindow.fixed(86400.0, settings.pbx.tz),
        region=settings.pbx.default_region,
    )
    app = init_app(settings, journal, merged_cache=Path(tempfile.gettempdir()) / "bench-merged")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await asyncio.to_thread(port_file.write_text, str(runner.addresses[0][1]))
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await database.dispose()


# -- the client (parent process) ----------------------------------------------------------


async def measure(base: str, cases: list[Case], repeat: int) -> list[tuple[str, float, float, int]]:
    import aiohttp

    results = []
    rnd = random.Random(11)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(base, connector=connector, headers=headers) as session:
        for case in cases:
            timings = []
            items = 0
            for n in range(repeat + 1):
                params = case.make(rnd)
                began = time.perf_counter()
                async with session.get(case.path, params=params) as response:
                    body = await response.json()
                elapsed = (time.perf_counter() - began) * 1000
                if response.status != 200:
                    raise SystemExit(f"{case.name}: {response.status} {body}")
                if n:  # the first run warms the caches
                    timings.append(elapsed)
                    items += len(body["items"])
            p50 = statistics.median(timings)
            p95 = statistics.quantiles(timings, n=20)[-1] if len(timings) > 1 else timings[0]
            results.append((case.name, p50, p95, items // repeat))
            print(f"  {case.name:<32}{p50:>9.1f}{p95:>9.1f}{items // repeat:>7}", file=sys.stderr)
    return results


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory} RAM; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}; "
        f"load average at the end {load} (other work on the machine skews p95)"
    )


def prepare(path: Path, rows: int, reuse: bool) -> Any:
    from bench.journal_queries import Synth, fill_sqlite

    synth = Synth(rows)
    if reuse and path.exists():
        return synth
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    async def migrate() -> None:
        from storage.engine import open_database
        from storage.migrate import upgrade

        database = open_database(f"sqlite+aiosqlite:///{path}")
        try:
            await upgrade(database)
        finally:
            await database.dispose()

    asyncio.run(migrate())
    began = time.perf_counter()

    def progress(done: int) -> None:
        print(f"\r  filling: {done:,} calls", end="", file=sys.stderr)

    fill_sqlite(path, synth, progress)
    print(f"\n  filled in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument(
        "--sqlite-path", type=Path, default=Path("/tmp/pbxjournal-http-bench.sqlite3")
    )
    parser.add_argument("--reuse", action="store_true", help="keep an already filled file")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.sqlite_path, args.port_file))
        return
    synth = prepare(args.sqlite_path, args.rows, args.reuse)
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "--sqlite-path",
                str(args.sqlite_path),
                "--port-file",
                str(port_file),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while not port_file.exists() or not port_file.read_text():
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the API did not start")
                time.sleep(0.1)
            base = f"http://127.0.0.1:{port_file.read_text()}"
            cases = calls_cases(args.rows, synth.pool, synth.customers) + changes_cases(args.rows)
            print(f"== {args.rows:,} calls at {base}: case, p50, p95 (ms), items", file=sys.stderr)
            results = asyncio.run(measure(base, cases, args.repeat))
        finally:
            child.terminate()
            child.wait(30)
    print(
        f"\n{args.rows:,} calls in SQLite, over HTTP on loopback, {args.repeat} requests per case"
    )
    print(f"machine: {machine()}\n")
    print(f"| {'request':<32} | {'p50 ms':>7} | {'p95 ms':>7} | {'items':>5} |")
    print(f"|{'-' * 34}|{'-' * 9}|{'-' * 9}|{'-' * 7}|")
    for name, p50, p95, items in results:
        print(f"| {name:<32} | {p50:>7.1f} | {p95:>7.1f} | {items:>5} |")


if __name__ == "__main__":
    main()
