"""A search term with each of the guide's filters, alone and with "Мои звонки", on a filled journal.

Theory of operation
-------------------
``bench/journal_queries.py`` times each search form alone and a few with another filter. This
takes given terms (an extension, a run of digits, a surname: the common terms, which walk the
journal or the employee's calls, are the ones whose cost the filter decides) and times
:func:`storage.queries.list_calls` for a page of 50 with each filter of ``FILTERS``, then with
each filter and "Мои звонки" for ``--employees`` employees drawn as the journal bench draws
them. Each request runs once untimed, then ``--repeat`` times; the best and the slowest are
printed, with the shape the keys chose for the term (``frequent``: every term common, the
calls' texts are walked; ``keys``: its keys are opened; ``extensions``: internal calls only).

    python -m bench.journal_queries --rows 10000000 --engines sqlite \\
        --sqlite-path /tmp/10m.sqlite3 --fill-only --no-docs
    python -m bench.search_filters --url sqlite+aiosqlite:////tmp/10m.sqlite3 --terms 131,7928
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from bench.journal_queries import FILTERS, _employee, to_filter  # noqa: E402
from pbxjournal.daemon import settle_collector  # noqa: E402
from storage.engine import open_database  # noqa: E402
from storage.queries import InternalCalls, key_search, list_calls  # noqa: E402
from storage.search import parse_query  # noqa: E402

Row = tuple[str, str, str, float, float, int]


async def measure(url: str, terms: list[str], employees: int, repeat: int) -> list[Row]:
    """(term, filter, shape, best ms, slowest ms, rows of the last page) for each request."""
    database = open_database(url)
    settle_collector()
    found: list[Row] = []
    try:
        async with database.sessions() as session:
            await session.execute(sa.text("SELECT last_version FROM journal_state"))
            for term in terms:
                for mine in (False, True):
                    for name, make in FILTERS.items():
                        draws = range(employees) if mine else range(1)
                        for seed in draws:
                            params = make(random.Random(seed)) | {"q": term}
                            if mine:
                                params["employee"] = _employee(random.Random(seed))
                            where, _ = to_filter(params)
                            keys = await key_search(
                                session,
                                parse_query(term),
                                internal_only=where.internal is InternalCalls.ONLY,
                                unregistered_only=where.unregistered is True,
                            )
                            shape = (
                                "walk (no keys)"
                                if keys is None
                                else "frequent"
                                if keys.frequent
                                else "extensions"
                                if keys.extensions
                                else "keys"
                            )
                            await list_calls(session, where, limit=50)
                            times = []
                            for _ in range(repeat):
                                began = time.perf_counter()
                                page = await list_calls(session, where, limit=50)
                                times.append((time.perf_counter() - began) * 1000)
                            label = f"my calls ({params['employee']})+{name}" if mine else name
                            row = (term, label, shape, min(times), max(times), len(page.entries))
                            found.append(row)
                            print(
                                f"  {term:>8} {label:<32} {shape:<14}"
                                f"{row[3]:9.1f}{row[4]:9.1f}{row[5]:5}",
                                file=sys.stderr,
                            )
    finally:
        await database.dispose()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="a filled journal's database URL")
    parser.add_argument("--terms", default="131,7928,зайцев", help="comma-separated")
    parser.add_argument("--employees", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rows = asyncio.run(
        measure(args.url, args.terms.split(","), args.employees, max(1, args.repeat))
    )
    print("| term | filter | shape | best ms | slowest ms | rows |")
    print("|---|---|---|---|---|---|")
    for term, label, shape, best, slowest, count in rows:
        print(f"| {term} | {label} | {shape} | {best:.1f} | {slowest:.1f} | {count} |")
    slow = [row for row in rows if row[4] > 50]
    print(f"\n{len(slow)} of {len(rows)} requests over 50 ms at their slowest.")


if __name__ == "__main__":
    main()
