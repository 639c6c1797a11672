"""The web journal's first screen at a million calls, in headless Chromium: navigation start to
the first screen of rows in the DOM (issue 16: "≤ 300 ms in the browser").

Not a test. Run it from the repository root:

    python bench/web_render.py                  # fills (once) and measures 1,000,000 calls
    python bench/web_render.py --rows 100000 --repeat 10 --no-docs

It writes its table to its section of docs/benchmarks.md (``--no-docs``: only prints it).

Theory of operation
-------------------
*Fill.* :mod:`bench.journal_queries`' generator (the 70 real calls copied over a year, 40 % of
the numbers bound to customers), into ``--dir`` (a temporary directory by default), kept
between runs: an existing file of the same size is reused.

*Serve.* The daemon's aiohttp app (:func:`httpd.app.init_app` over a
:class:`storage.store.SqlJournal`) in a child process (``--serve``), as the daemon runs it,
without a PBX; a web user ``bench`` is added to the journal.

*Measure.* Debian's chromium (Selenium, headless, as tests/test_web_journal.py drives it) signs
in, then loads the page. The page marks ``performance.mark('journal-first-rows')`` once the
first page of rows is appended (httpd/web/static/journal.js); its ``startTime`` is the time
from navigation start. The Resource Timing entry of the page's first ``/api/v1/calls`` fetch
splits it: before the fetch (HTML, the modules), the fetch itself (the API: query, JSON,
loopback) and after it (JSON parse and building the rows). Cases: *cold* — the first load of
``/`` after the server process started (``--cold`` restarts; the OS page cache stays warm, the
browser's cache holds the static files, revalidated); *warm* — repeated loads; *lost calls* —
``/?kind=lost``; *search* — ``/?q=`` a customer's name, a different one each load.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import CHROMEDRIVER, CHROMIUM, chromium  # noqa: E402

USER, PASSWORD = "bench", "bench-password"
MARK = "journal-first-rows"
GOAL_MS = 300.0


# -- the journal ----------------------------------------------------------------------------


def fill(path: Path, rows: int) -> None:
    """``bench.journal_queries``' rows into a new SQLite file at ``path``."""
    from bench import journal_queries as jq

    args = argparse.Namespace(sqlite_path=str(path), reuse=False, pg_url=None)
    asyncio.run(jq.prepare("sqlite", args, jq.Synth(rows)))


def journal_file(directory: Path, rows: int) -> Path:
    path = directory / f"journal-{rows}.sqlite3"
    if path.exists():
        with sqlite3.connect(path) as db:
            if db.execute("SELECT count(*) FROM calls").fetchone()[0] == rows:
                print(f"reusing {path}", file=sys.stderr)
                return path
    directory.mkdir(parents=True, exist_ok=True)
    fill(path, rows)
    return path


# -- the server (child process) -------------------------------------------------------------


async def serve(path: Path, port_file: Path) -> None:
    from aiohttp import web

    from config import HttpSettings, Settings
    from httpd.app import init_app
    from httpd.web.accounts import Accounts
    from storage.engine import open_database
    from storage.migrate import upgrade
    from storage.rules import AttentionWindow
    from storage.store import SqlJournal

    settings = Settings()
    settings = replace(settings, http=HttpSettings(listen="127.0.0.1:0"))
    database = open_database(f"sqlite+aiosqlite:///{path}")
    await upgrade(database)
    journal = SqlJournal(
        database,
        pbx="main",
        window=AttentionWindow.fixed(86400.0, settings.pbx.tz),
        region=settings.pbx.default_region,
    )
    accounts = Accounts(database)
    if await accounts.authenticate(USER, PASSWORD) is None:
        await accounts.add(USER, "101", PASSWORD, admin=False)
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


@contextmanager
def server(path: Path) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(path), str(port_file)],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while not port_file.exists() or not port_file.read_text():
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port_file.read_text()}"
        finally:
            child.terminate()
            child.wait(15)


# -- the browser ----------------------------------------------------------------------------


@contextmanager
def browser() -> Iterator[Any]:
    with chromium(page_load_timeout=60) as driver:
        yield driver


def sign_in(driver: Any, base: str) -> None:
    """Signed in without loading the journal (the sign-in goes on to a static file)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.delete_all_cookies()
    driver.get(base + "/login?next=" + quote("/static/journal.css", safe=""))
    driver.find_element(By.ID, "login").send_keys(USER)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 30).until(lambda d: "/static/journal.css" in d.current_url)


_READ = f"""
  const mark = performance.getEntriesByName({MARK!r})[0];
  if (!mark) return null;
  const api = performance.getEntriesByType('resource')
    .find(e => new URL(e.name).pathname === '/api/v1/calls');
  return {{
    first_rows: mark.startTime,
    api_start: api ? api.startTime : null,
    api_end: api ? api.responseEnd : null,
    rows: document.querySelectorAll('#rows tr.call').length,
  }};
"""


def load(driver: Any, url: str) -> dict[str, float]:
    """One navigation to ``url``; the page's timings in ms from navigation start."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get(url)
    found: dict[str, float] = WebDriverWait(driver, 60, poll_frequency=0.02).until(
        lambda d: d.execute_script(_READ)
    )
    return found


# -- the run --------------------------------------------------------------------------------

Sample = dict[str, float]


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarize(name: str, samples: list[Sample]) -> list[str]:
    first = [s["first_rows"] for s in samples]
    api = [s["api_end"] - s["api_start"] for s in samples]
    before = [s["api_start"] for s in samples]
    after = [s["first_rows"] - s["api_end"] for s in samples]
    rows = int(statistics.median(s["rows"] for s in samples))
    worst = max(first)
    return [
        name,
        str(len(samples)),
        f"{statistics.median(first):.0f}",
        f"{percentile(first, 95):.0f}",
        f"{worst:.0f}",
        f"{statistics.median(before):.0f}",
        f"{statistics.median(api):.0f}",
        f"{percentile(api, 95):.0f}",
        f"{statistics.median(after):.0f}",
        str(rows),
        "met" if percentile(first, 95) <= GOAL_MS else "NOT met",
    ]


HEADER = [
    "case",
    "n",
    "first rows p50",
    "p95",
    "max",
    "until fetch p50",
    "/calls fetch p50",
    "fetch p95",
    "render p50",
    "rows",
    "≤ 300 ms (p95)",
]


def versions() -> str:
    def output(*command: str) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return "?"

    from selenium import __version__ as selenium

    chromium = output(str(CHROMIUM), "--version").split("built")[0].strip()
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.partition(":")[2].strip()
            break
    return (
        f"{cpu}, nproc {os.cpu_count()}, Linux {platform.release()}, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, {chromium} "
        f"(headless, chromedriver), Selenium {selenium}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "pbxjournal-web-bench"))
    parser.add_argument("--repeat", type=int, default=20, help="loads per warm case")
    parser.add_argument("--cold", type=int, default=3, help="server restarts, one cold load each")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    parser.add_argument("--serve", nargs=2, metavar=("PATH", "PORT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve[0]), Path(args.serve[1])))
        return
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise SystemExit("needs /usr/bin/chromium and /usr/bin/chromedriver")
    from bench.journal_queries import MAX_CUSTOMERS, customer_name

    path = journal_file(Path(args.dir), args.rows)
    count = min(MAX_CUSTOMERS, max(max(args.rows // 5, 100) // 4, 25))  # Synth's customers
    rnd = random.Random(5)
    load_before = os.getloadavg()[0]
    results: dict[str, list[Sample]] = {"cold (first load after start)": []}
    with browser() as driver:
        for n in range(args.cold):
            with server(path) as base:
                if n == 0:
                    sign_in(driver, base)
                results["cold (first load after start)"].append(load(driver, base + "/"))
                if n + 1 < args.cold:
                    continue
                cases = {
                    "warm (repeated loads)": lambda: "/",
                    "lost calls (?kind=lost)": lambda: "/?kind=lost",
                    "search: a customer's name": lambda: (
                        "/?q=" + quote(customer_name(rnd.randrange(count)))
                    ),
                    "search: 'ромаш' (many)": lambda: "/?q=" + quote("ромаш"),
                }
                for name, make in cases.items():
                    load(driver, base + make())  # one warm-up
                    results[name] = [load(driver, base + make()) for _ in range(args.repeat)]
                    print(f"  {name}: done", file=sys.stderr)
    lines = [summarize(name, samples) for name, samples in results.items()]
    from bench import report

    print(f"\n{args.rows:,} calls, ms from navigation start")
    print(report.table(HEADER, lines))
    if args.no_docs:
        return
    load_text = f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    write_docs(args, lines, versions(), load_text)


def write_docs(args: argparse.Namespace, lines: list[list[str]], machine: str, load: str) -> None:
    from bench import report

    intro = report.prose(
        f"""Machine: {machine}. Load average (1 min) {load}: other work (a CI rehearsal)
        shares the machine.

        {args.rows:,} calls in SQLite (`bench.journal_queries`' rows), served by the daemon's
        aiohttp app in a child process (no PBX); headless Chromium driven by Selenium, signed
        in as a web user, loads the journal page. "first rows": navigation start to
        `performance.mark('journal-first-rows')`, which the page sets once the first page of
        50 rows is in the DOM. It is split by the Resource Timing entry of the page's
        `/api/v1/calls` fetch: "until fetch" (the HTML and the modules, up to the fetch's
        start), the fetch itself (query, JSON, loopback; the page's `/api/v1/live` and
        `/api/v1/changes` requests start at the same moment and share the server) and
        "render" (from the fetch's last byte to the mark: JSON parsing and building the
        rows). Cold: the first load after the server process started, {args.cold} starts (the
        OS page cache stays warm). The other cases: {args.repeat} loads each after one
        warm-up, the search a different customer's name each time. Milliseconds; the goal
        (issue 16) is {GOAL_MS:.0f} ms."""
    )
    text = "\n\n".join(
        [
            "## Web journal: first screen of a million-call journal in the browser",
            f"Command: `{report.command_line()}`",
            intro,
            report.table(HEADER, lines),
        ]
    )
    report.update_section("bench.web-render", text)


if __name__ == "__main__":
    main()
