"""The HTTP API at a million calls: p50/p95 of ``GET /calls`` (each filter, each search) and of
``GET /changes``, over a real TCP connection, SQLite.

Not a test. Run it from the repository root:

    python bench/http_calls.py                     # fills /tmp/pbxjournal-http-bench.sqlite3
    python bench/http_calls.py --reuse             # keeps an already filled file
    python bench/http_calls.py --reuse --baseline 72727d8   # that commit beside this tree
    python bench/http_calls.py --rows 100000 --repeat 20 --no-docs

It writes its table to its section of docs/benchmarks.md (``--no-docs``: only prints it).

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

*Before and after.* ``--baseline REV`` also serves the code of a git revision (``git
archive`` into a temporary directory, the same database file) from a second child process,
and sends every request to both, one after the other with the same arguments: both sides see
the same machine at the same moment, which matters more than anything else on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
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
    """The API over the file at ``path``, from whatever code ``sys.path`` finds first."""
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


Result = tuple[str, float, float, int]


def _percentiles(timings: list[float]) -> tuple[float, float]:
    p50 = statistics.median(timings)
    p95 = statistics.quantiles(timings, n=20)[-1] if len(timings) > 1 else timings[0]
    return p50, p95


async def measure(bases: list[str], cases: list[Case], repeat: int) -> list[list[Result]]:
    """Each case against every server in ``bases``, request by request in turn: one table per
    server, in the order of ``bases``."""
    import aiohttp

    results: list[list[Result]] = [[] for _ in bases]
    rnd = random.Random(11)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    sessions = [
        aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=1), headers=headers)
        for base in bases
    ]
    try:
        for case in cases:
            timings: list[list[float]] = [[] for _ in bases]
            items = [0 for _ in bases]
            for n in range(repeat + 1):
                params = case.make(rnd)
                # Each server goes first on every other request: the one that reads a page of
                # the file first warms the system's cache for the other.
                order = list(enumerate(sessions))
                if n % 2:
                    order.reverse()
                for index, session in order:
                    began = time.perf_counter()
                    async with session.get(case.path, params=params) as response:
                        body = await response.json()
                    elapsed = (time.perf_counter() - began) * 1000
                    if response.status != 200:
                        raise SystemExit(f"{case.name}: {response.status} {body}")
                    if n:  # the first run warms the caches
                        timings[index].append(elapsed)
                        items[index] += len(body["items"])
            line = f"  {case.name:<32}"
            for index in range(len(bases)):
                p50, p95 = _percentiles(timings[index])
                results[index].append((case.name, p50, p95, items[index] // repeat))
                line += f"{p50:>9.1f}{p95:>9.1f}{items[index] // repeat:>7}"
            print(line, file=sys.stderr)
    finally:
        for session in sessions:
            await session.close()
    return results


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


@contextmanager
def code_of(revision: str) -> Iterator[Path]:
    """The tree of a git revision of this repository, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="pbxjournal-baseline-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", revision],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def short_revision(revision: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", revision],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@contextmanager
def api_server(path: Path, code: Path) -> Iterator[str]:
    """The API over ``path`` served by the code under ``code``, in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "--code-root",
                str(code),
                "--sqlite-path",
                str(path),
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
            yield f"http://127.0.0.1:{port_file.read_text()}"
        finally:
            child.terminate()
            child.wait(30)


def report_text(
    rows: int, repeat: int, results: list[list[Result]], baseline: str | None, load: str
) -> str:
    from bench import report

    head = short_revision("HEAD")
    if baseline is None:
        columns = ["request", "p50 ms", "p95 ms", "items"]
        lines = [[n, f"{p50:.1f}", f"{p95:.1f}", str(i)] for n, p50, p95, i in results[0]]
        compared = f"The code of the working tree (at `{head}`)."
    else:
        columns = [
            "request",
            "before p50",
            "after p50",
            "after/before",
            "before p95",
            "after p95",
            "items",
        ]
        lines = [
            [
                name,
                f"{b50:.1f}",
                f"{a50:.1f}",
                f"{a50 / b50:.2f}",
                f"{b95:.1f}",
                f"{a95:.1f}",
                str(i),
            ]
            for (name, b50, b95, _), (_, a50, a95, i) in zip(results[0], results[1], strict=True)
        ]
        compared = (
            f"Before: `{short_revision(baseline)}`; after: the working tree (at `{head}`); "
            "both served at once from two processes over the same file, each request sent to "
            "one and then the other with the same arguments."
        )
    intro = report.prose(
        f"""Machine: {report.machine()}, SQLite {sqlite3.sqlite_version}. Load average (1 min)
        {load}: other work shares the machine, and it shows in the p95 column above all.

        {rows:,} calls in SQLite (`bench.journal_queries`' rows: the 70 real calls copied over
        a year, 40 % of the numbers bound to customers), the API in a child process as the
        daemon runs it, one keep-alive connection, one request at a time; each case
        {repeat} times (plus one warm-up) with varying arguments, timed from the request to
        the last byte of the JSON body. Milliseconds. {compared}"""
    )
    return "\n\n".join(
        [
            "## HTTP API: GET /calls and GET /changes at a million calls",
            f"Command: `{report.command_line()}`",
            intro,
            report.table(columns, lines),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument(
        "--sqlite-path", type=Path, default=Path("/tmp/pbxjournal-http-bench.sqlite3")
    )
    parser.add_argument("--reuse", action="store_true", help="keep an already filled file")
    parser.add_argument(
        "--baseline", metavar="REV", help="also serve this git revision and compare the two"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        # The code to serve comes first on the path: this tree's, or a baseline's.
        code = (args.code_root or ROOT).resolve()
        sys.path.insert(0, str(code))
        import storage

        if not Path(storage.__file__).resolve().is_relative_to(code):
            raise SystemExit(f"serving {storage.__file__}, not the code under {code}")
        asyncio.run(serve(args.sqlite_path, args.port_file))
        return
    synth = prepare(args.sqlite_path, args.rows, args.reuse)
    load_before = os.getloadavg()[0]
    cases = calls_cases(args.rows, synth.pool, synth.customers) + changes_cases(args.rows)
    with ExitStack() as stack:
        codes = [ROOT]
        if args.baseline:
            codes.insert(0, stack.enter_context(code_of(args.baseline)))
        bases = [stack.enter_context(api_server(args.sqlite_path, code)) for code in codes]
        names = ("before", "after") if args.baseline else ("",)
        print(
            f"== {args.rows:,} calls: case, then p50, p95 (ms), items "
            + " | ".join(f"{name} {base}" for name, base in zip(names, bases, strict=True)),
            file=sys.stderr,
        )
        results = asyncio.run(measure(bases, cases, args.repeat))
    load = f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    text = report_text(args.rows, args.repeat, results, args.baseline, load)
    print("\n" + text)
    if not args.no_docs:
        from bench import report

        report.update_section("bench.http", text)


if __name__ == "__main__":
    main()
