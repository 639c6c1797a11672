"""The HTTP API at a million (or ten million) calls: p50/p95 of ``GET /calls`` (each filter,
each pair, each search form) and of ``GET /changes``, over a real TCP connection, SQLite or
PostgreSQL, warm or cold.

Not a test. Run it from the repository root:

    python bench/http_calls.py                     # fills /tmp/pbxjournal-http-bench.sqlite3
    python bench/http_calls.py --reuse             # keeps an already filled file
    python bench/http_calls.py --reuse --baseline 72727d8   # that commit beside this tree
    python bench/http_calls.py --rows 100000 --repeat 20 --no-docs
    python bench/http_calls.py --rows 10000000 --reuse --cold --url postgresql+asyncpg://...

It writes its table to its section of docs/benchmarks.md (``--no-docs``: only prints it).

Theory of operation
-------------------
*Fill.* :mod:`bench.journal_queries` makes the rows (its generator and its bulk load); a
PostgreSQL journal is filled by that script (``--fill-only``) and served here with
``--reuse``. The cases are :func:`bench.journal_queries.query_cases`, as query strings.

*Cold.* ``--cold`` drops the database's files from the system's page cache before each
request (:mod:`bench.coldcache`) and reports the pages the database's readers read.

*Serve.* The API runs in a child process (``--serve``), exactly as the daemon would run it:
:func:`httpd.app.init_app` over a :class:`storage.store.SqlJournal`, an ``AppRunner`` on
127.0.0.1, port 0. The child writes its port to a file; its stdout (the access log) goes to
/dev/null.

*Measure.* The parent sends each case ``--repeat`` times (plus one warm-up) on one keep-alive
connection, one request at a time, and times request to last byte of the JSON body: the page
query, loading 50 entries, rendering call objects, JSON encoding and HTTP on loopback (the
client decodes the body after the clock stops: its parsing is the client's cost). Cases
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
import json
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

from sqlalchemy.engine import make_url  # noqa: E402

from bench.coldcache import DiskCache, sqlite_cache  # noqa: E402

TOKEN = "bench-token"


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    make: Callable[[random.Random], dict[str, str]]


def cases(synth: Any) -> list[Case]:
    """:mod:`bench.journal_queries`' cases (issue 18's list), as requests."""
    from bench.journal_queries import query_cases

    return [Case(case.name, case.path, case.make) for case in query_cases(synth)] + [
        Case(
            "changes: the last 10",
            "/api/v1/changes",
            lambda r: {"since": str(synth.rows - 10)},
        ),
        Case("changes: none new (wait=0)", "/api/v1/changes", lambda r: {"since": str(synth.rows)}),
    ]


# -- the server (child process) -----------------------------------------------------------


async def serve(url: str, port_file: Path) -> None:
    """The API over the journal at ``url``, from whatever code ``sys.path`` finds first."""
    from aiohttp import web

    from config import HttpClient, HttpSettings, Settings
    from httpd.app import init_app
    from pbxjournal.daemon import settle_collector
    from storage.engine import open_database
    from storage.migrate import upgrade
    from storage.rules import AttentionWindow
    from storage.store import SqlJournal

    settings = Settings()
    settings = replace(
        settings,
        http=HttpSettings(listen="127.0.0.1:0", clients=(HttpClient(name="bench", token=TOKEN),)),
    )
    database = open_database(url)
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
    # As the daemon once it serves: without it a full collection of this process (modules,
    # mappers: ~100 ms) lands in a request now and then, most often a `/changes` of 500.
    settle_collector()
    await asyncio.to_thread(port_file.write_text, str(runner.addresses[0][1]))
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await database.dispose()


# -- the client (parent process) ----------------------------------------------------------


Result = tuple[str, float, float, int, float]


def _percentiles(timings: list[float]) -> tuple[float, float]:
    p50 = statistics.median(timings)
    p95 = statistics.quantiles(timings, n=20)[-1] if len(timings) > 1 else timings[0]
    return p50, p95


async def measure(
    bases: list[str],
    cases: list[Case],
    repeat: int,
    caches: list[DiskCache] | None = None,
    only: str | None = None,
) -> list[list[Result]]:
    """Each case against every server in ``bases``, request by request in turn: one table per
    server, in the order of ``bases``. With ``caches`` (one per server), cold: the database's
    files are dropped from the system's cache before each request, and the pages its readers
    read are counted."""
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
            if only and only not in case.name:
                # Its arguments are drawn all the same, so that a case picked out with
                # ``--only`` gets the arguments it gets in a full run.
                for _ in range(repeat + 1):
                    case.make(rnd)
                continue
            timings: list[list[float]] = [[] for _ in bases]
            pages: list[list[int]] = [[] for _ in bases]
            items = [0 for _ in bases]
            for n in range(repeat + 1):
                params = case.make(rnd)
                # Each server goes first on every other request: the one that reads a page of
                # the file first warms the system's cache for the other.
                order = list(enumerate(sessions))
                if n % 2:
                    order.reverse()
                for index, session in order:
                    before = 0
                    if caches is not None:
                        caches[index].drop()
                        before = caches[index].read_bytes()
                    began = time.perf_counter()
                    async with session.get(case.path, params=params) as response:
                        raw = await response.read()
                    elapsed = (time.perf_counter() - began) * 1000
                    # Decoded after the clock stops: the client's parsing (4 ms for the
                    # 370 KB of a /changes of 500 with the standard library) is not the API's.
                    body = json.loads(raw)
                    if response.status != 200:
                        raise SystemExit(f"{case.name}: {response.status} {body}")
                    # The first request is not timed, warm or cold: it compiles the case's
                    # statements in the server (once in a daemon's life); cold, its pages are
                    # dropped again before the next.
                    if n:
                        timings[index].append(elapsed)
                        items[index] += len(body["items"])
                        if caches is not None:
                            pages[index].append(caches[index].pages_since(before))
            line = f"  {case.name:<40}"
            for index in range(len(bases)):
                p50, p95 = _percentiles(timings[index])
                read = statistics.median(pages[index]) if pages[index] else 0.0
                count = items[index] // len(timings[index])
                results[index].append((case.name, p50, p95, count, read))
                line += f"{p50:>9.1f}{p95:>9.1f}{count:>7}{read:>8.0f}"
            print(line, file=sys.stderr)
    finally:
        for session in sessions:
            await session.close()
    return results


def prepare(url: str, rows: int, reuse: bool) -> Any:
    """:mod:`bench.journal_queries`' generator for ``rows``; the SQLite file filled unless
    reused (PostgreSQL: fill it with ``bench/journal_queries.py --fill-only``)."""
    from bench.journal_queries import Synth, fill_sqlite

    synth = Synth(rows)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if not reuse:
            raise SystemExit("PostgreSQL: fill it with bench/journal_queries.py, then --reuse")
        return synth
    path = Path(str(parsed.database))
    if reuse and path.exists():
        return synth
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    async def migrate() -> None:
        from storage.engine import open_database
        from storage.migrate import upgrade

        database = open_database(url)
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
def api_server(url: str, code: Path) -> Iterator[tuple[str, int]]:
    """The API over ``url`` served by the code under ``code``, in a child process: its base
    URL and process id."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "--code-root",
                str(code),
                "--url",
                url,
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
            yield f"http://127.0.0.1:{port_file.read_text()}", child.pid
        finally:
            child.terminate()
            child.wait(30)


def report_text(
    args: argparse.Namespace, results: list[list[Result]], load: str, engine: str
) -> str:
    from bench import report

    head = short_revision("HEAD")
    cold = args.cold
    if args.baseline is None:
        columns = ["request", "p50 ms", "p95 ms", *(["pages"] if cold else []), "items"]
        lines = [
            [n, f"{p50:.1f}", f"{p95:.1f}", *([f"{r:.0f}"] if cold else []), str(i)]
            for n, p50, p95, i, r in results[0]
        ]
        compared = f"The code of the working tree (at `{head}`)."
    else:
        columns = [
            "request",
            "before p50",
            "after p50",
            "after/before",
            "before p95",
            "after p95",
            *(["before pages", "after pages"] if cold else []),
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
                *([f"{br:.0f}", f"{ar:.0f}"] if cold else []),
                str(i),
            ]
            for (name, b50, b95, _, br), (_, a50, a95, i, ar) in zip(
                results[0], results[1], strict=True
            )
        ]
        compared = (
            f"Before: `{short_revision(args.baseline)}`; after: the working tree (at `{head}`); "
            "both served at once from two processes over the same database, each request sent "
            "to one and then the other with the same arguments."
        )
    mode = (
        "Cold: before each request the database's files are dropped from the page cache "
        "(`posix_fadvise(POSIX_FADV_DONTNEED)`, `bench.coldcache`; the server keeps its "
        "connections, so SQLite's own 2 MB page cache per connection, or PostgreSQL's "
        "`shared_buffers`, hold what they held); each case's first request is not timed "
        "(it compiles the case's statements, once in a daemon's life); \"pages\" is the "
        "median of 4 KiB pages the database's readers (the API's process for SQLite, the "
        "server's processes for PostgreSQL) read from the disk for it."
        if cold
        else "Warm: each case after one untimed warm-up."
    )
    intro = report.prose(
        f"""Machine: {report.machine()}, SQLite {sqlite3.sqlite_version}. Load average (1 min)
        {load}: other work shares the machine, and it shows in the p95 column above all.

        {args.rows:,} calls in {engine} (`bench.journal_queries`' rows and cases), the API in
        a child process as the daemon runs it, one keep-alive connection, one request at a
        time, a page of 50; each case {args.repeat} times with varying arguments, timed from
        the request to the last byte of the JSON body. Milliseconds. {mode} {compared}"""
    )
    return "\n\n".join(
        [
            f"## HTTP API: GET /calls and GET /changes at {args.rows:,} calls, {engine}, "
            f"{'cold' if cold else 'warm'}",
            f"Command: `{report.command_line()}`",
            intro,
            report.table(columns, lines),
        ]
    )


async def disk_caches(url: str, pids: list[int]) -> list[DiskCache]:
    from bench.journal_queries import disk_cache

    if make_url(url).get_backend_name() == "sqlite":
        path = Path(str(make_url(url).database))
        return [sqlite_cache(path, pid) for pid in pids]
    cache = await disk_cache(url)
    return [cache for _ in pids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--sqlite-path", type=Path, default=Path("/tmp/pbxjournal-http-bench.sqlite3")
    )
    parser.add_argument("--url", help="the journal's database URL (default: --sqlite-path)")
    parser.add_argument("--reuse", action="store_true", help="keep an already filled file")
    parser.add_argument(
        "--baseline", metavar="REV", help="also serve this git revision and compare the two"
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the database's files from the page cache before each request (root)",
    )
    parser.add_argument("--only", help="only the cases whose name contains this")
    parser.add_argument("--section", default="bench.http", help="docs/benchmarks.md section")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    url = args.url or f"sqlite+aiosqlite:///{args.sqlite_path}"
    if args.serve:
        # The code to serve comes first on the path: this tree's, or a baseline's.
        code = (args.code_root or ROOT).resolve()
        sys.path.insert(0, str(code))
        import storage

        if not Path(storage.__file__).resolve().is_relative_to(code):
            raise SystemExit(f"serving {storage.__file__}, not the code under {code}")
        asyncio.run(serve(url, args.port_file))
        return
    synth = prepare(url, args.rows, args.reuse)
    load_before = os.getloadavg()[0]
    engine = make_url(url).get_backend_name()
    with ExitStack() as stack:
        codes = [ROOT]
        if args.baseline:
            codes.insert(0, stack.enter_context(code_of(args.baseline)))
        servers = [stack.enter_context(api_server(url, code)) for code in codes]
        bases = [base for base, _ in servers]
        caches = asyncio.run(disk_caches(url, [pid for _, pid in servers])) if args.cold else None
        names = ("before", "after") if args.baseline else ("",)
        print(
            f"== {args.rows:,} calls, {engine}: case, then p50, p95 (ms), items, pages "
            + " | ".join(f"{name} {base}" for name, base in zip(names, bases, strict=True)),
            file=sys.stderr,
        )
        results = asyncio.run(measure(bases, cases(synth), args.repeat, caches, args.only))
    load = f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    text = report_text(args, results, load, engine)
    print("\n" + text)
    if not args.no_docs:
        from bench import report

        report.update_section(args.section, text)


if __name__ == "__main__":
    main()
