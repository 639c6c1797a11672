"""The first requests after PostgreSQL restarts, as a running daemon serves them.

Not a test. Run it from the repository root, as root (it runs its own cluster as the
``postgres`` user and drops its files from the page cache):

    python bench/pg_restart.py --rows 100000 --baseline 696ffe5

A private cluster (``bench/outage.py``'s) is filled with ``bench/journal_queries.py``'s
generator. The API (``bench/http_calls.py --serve``: the daemon's app, its pool and its change
feed) serves it; after it has answered a few requests, the cluster is restarted (``pg_ctl stop
-m fast``, ``start``) and every file of its data directory dropped from the page cache, as after
a reboot. ``--settle`` seconds later (the daemon reconnects on its own; the change feed's LISTEN
connection within 0.5 s) the same requests are sent one after the other: the table gives the
first request's time, the p50 and the maximum of the first ``--requests`` (each of the pool's
five connections takes its turn: the pool is FIFO), and the pages the server's processes read
from the disk meanwhile. ``--baseline REV`` serves that revision's code the same way first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.coldcache import children, drop_files, read_bytes  # noqa: E402
from bench.http_calls import TOKEN, api_server, code_of  # noqa: E402
from bench.journal_queries import Synth, fill_postgres  # noqa: E402
from bench.outage import Cluster  # noqa: E402
from storage.engine import open_database  # noqa: E402
from storage.migrate import upgrade  # noqa: E402

PAGE = 4096
#: What a journal's first screens ask: the journal, missed calls, "my calls", a combination,
#: a search, the feed.
REQUESTS = [
    ("/api/v1/calls", {}),
    ("/api/v1/calls", {"kind": "missed"}),
    ("/api/v1/calls", {"employee": "105"}),
    ("/api/v1/calls", {"kind": "incoming", "first_contact": "true"}),
    ("/api/v1/calls", {"q": "ромашка"}),
    ("/api/v1/changes", {"since": "1000", "limit": "500"}),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cluster_files(data: Path) -> list[Path]:
    return [path for path in data.rglob("*") if path.is_file()]


def _server_pids(data: Path) -> list[int]:
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    return [postmaster, *children(postmaster)]


async def _fill(url: str, rows: int) -> None:
    database = open_database(url)
    try:
        await upgrade(database)
    finally:
        await database.dispose()
    await fill_postgres(url, Synth(rows), lambda done: None, None)


async def _requests(base: str, count: int) -> list[float]:
    import aiohttp

    timings = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(base, headers=headers) as session:
        for n in range(count):
            path, params = REQUESTS[n % len(REQUESTS)]
            began = time.perf_counter()
            async with session.get(path, params=params) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"{path}: {response.status}")
            timings.append((time.perf_counter() - began) * 1000)
    return timings


def _round(cluster: Cluster, base: str, count: int, settle: float) -> tuple[list[float], int]:
    asyncio.run(_requests(base, count))  # the daemon's pool in use, as before a restart
    data = cluster.directory / "data"
    cluster.stop()
    drop_files(_cluster_files(data))
    cluster.start()
    drop_files(_cluster_files(data))
    time.sleep(settle)
    before = read_bytes(_server_pids(data))
    timings = asyncio.run(_requests(base, count))
    return timings, (read_bytes(_server_pids(data)) - before) // PAGE


@contextlib.contextmanager
def _cluster() -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="pbxjournal-restart-") as tmp:
        os.chmod(tmp, 0o755)  # the postgres user makes its data directory inside
        cluster = Cluster(Path(tmp) / "pg", _free_port())
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--baseline", metavar="REV")
    args = parser.parse_args()
    rnd = random.Random(3)
    with _cluster() as cluster, contextlib.ExitStack() as stack:
        asyncio.run(_fill(cluster.url, args.rows))
        codes = [("after", ROOT)]
        if args.baseline:
            codes.insert(0, ("before", stack.enter_context(code_of(args.baseline))))
        print("| code | round | first ms | p50 ms | max ms | pages read | load |")
        print("|---|---|---|---|---|---|---|")
        for name, code in codes:
            with api_server(cluster.url, code) as (base, _pid):
                for n in range(args.rounds):
                    timings, pages = _round(cluster, base, args.requests, args.settle)
                    load = Path("/proc/loadavg").read_text().split()[0]
                    print(
                        f"| {name} | {n + 1} | {timings[0]:.1f} | {statistics.median(timings):.1f}"
                        f" | {max(timings):.1f} | {pages} | {load} |",
                        flush=True,
                    )
                    time.sleep(rnd.uniform(0.5, 1.0))


if __name__ == "__main__":
    main()
