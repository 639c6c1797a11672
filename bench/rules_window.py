"""The start-up repair of a changed attention window (issue 18) on a filled journal.

Theory of operation
-------------------
A journal filled by ``bench/journal_queries.py --fill-only`` (a million calls; their windows
are 24 hours) is re-evaluated with ``--window`` (default one hour: every missed call's window
moves, so every row with a window changes and gets a new version: the worst case) by
:meth:`storage.store.SqlJournal.repair_window`, as the daemon does at start; the seconds,
the calls read and the rows changed are printed. ``--copy`` works on a copy of the SQLite file
(the filled one stays as it was, for another run).

    python -m bench.journal_queries --rows 1000000 --engines sqlite \\
        --sqlite-path /tmp/1m.sqlite3 --fill-only --no-docs
    python -m bench.rules_window --url sqlite+aiosqlite:////tmp/1m.sqlite3 --copy
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
from zoneinfo import ZoneInfo

from storage.engine import open_database
from storage.migrate import upgrade
from storage.rules import AttentionWindow
from storage.store import SqlJournal


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--window", type=float, default=3600.0, help="seconds (0: end_of_day)")
    parser.add_argument("--timezone", default="Europe/Moscow")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--copy", action="store_true", help="SQLite: repair a copy of the file")
    args = parser.parse_args()
    url = args.url
    if args.copy and url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        copy = f"{path}.repair"
        shutil.copyfile(path, copy)
        url = url.replace(path, copy)
    zone = ZoneInfo(args.timezone)
    window = (
        AttentionWindow.fixed(args.window, zone)
        if args.window
        else AttentionWindow.until_end_of_day(zone)
    )
    database = open_database(url)
    try:
        await upgrade(database)
        async with database.engine.begin() as connection:
            # The bulk fill leaves last_version behind the rows' versions: as the writer would.
            await connection.exec_driver_sql(
                "UPDATE journal_state SET last_version = "
                "(SELECT coalesce(max(version), 0) FROM calls) WHERE id = 1"
            )
        journal = SqlJournal(database, pbx="main", window=window)
        load = os.getloadavg()
        started = time.monotonic()
        repair = await journal.repair_window(time.time(), force=True, batch_size=args.batch)
        seconds = time.monotonic() - started
    finally:
        await database.dispose()
    assert repair is not None
    print(
        f"{repair.recorded} -> {repair.configured}: {repair.rows:,} calls read, "
        f"{repair.changed:,} changed, {seconds:.1f} s ({repair.rows / seconds:,.0f} calls/s), "
        f"batches of {args.batch}; load average before {load[0]:.2f}"
    )
    if args.copy and url != args.url:
        os.remove(url.split(":///", 1)[1])


if __name__ == "__main__":
    asyncio.run(main())
