"""Writing calls of a number with 50,000 calls (issue 18): the rules' reads per write.

Theory of operation
-------------------
A journal is filled with ``--calls`` calls of one number (the company's own forwarded main line,
or a spammer) spread over ``--days`` days, mixed with ``--background`` calls of other numbers,
inserted in bulk with the verdicts the rules give them (:func:`storage.rules.evaluate` over each
number's calls, as the writer would leave them). Then new calls of that number are
written through the same writer, as the daemon's writer hands them over
(:class:`pbxjournal.writer.Writer` calls ``write_batch``):

- ``in order, 1 per transaction``: the next calls of the number, each one its own batch, at the
  rate calls end one by one;
- ``in order, 20 per transaction``: the same in batches of 20 (the daemon under load);
- ``late, 1 per transaction``: calls that ended between a day and a year ago, arriving now
  (a restarted daemon's backlog, a PBX clock put right): they may be the first call of the
  number or the later contact of an old missed call;
- ``a new number, 1 per transaction``: calls of numbers never seen before, for scale.

For each: calls written per second (wall clock, the median of ``--runs`` rounds), the median
and p95 of one transaction, and the call rows the writer loaded per call written (every ORM
load of a ``calls`` row, counted by SQLAlchemy's ``loaded_as_persistent`` event); on PostgreSQL
also the ``calls`` rows the server read per call written (``seq_tup_read + idx_tup_fetch`` of
``pg_stat_user_tables``, read after the writer's connections closed). The journal is copied
back to the filled state before each round (SQLite: the file; PostgreSQL: a template database).

The same script runs on the code before the change (``git worktree add /tmp/base e18ce11``,
the script copied there, ``PYTHONPATH=/tmp/base``) with ``--json before.json``; the run after
it with ``--before before.json`` puts both in the table it writes to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench import report
from bench.databases import scratch_database
from connector.assembly import Direction, FinishedCall, Participant, Role
from storage import searchkeys
from storage.engine import open_database
from storage.migrate import upgrade
from storage.models import Call
from storage.rules import AttentionWindow, NumberFacts, evaluate
from storage.store import SqlJournal

__all__ = ["main"]

HOT = "+74957770000"
MOSCOW = ZoneInfo("Europe/Moscow")
#: The first call of the filled journal: 2024-01-01 00:00 Moscow.
EPOCH = 1704056400.0
CASES = (
    "in order, 1 per transaction",
    "in order, 20 per transaction",
    "late, 1 per transaction",
    "a new number, 1 per transaction",
)


def make_call(
    rng: random.Random, number: str, started: float, serial: int, *, answered: bool | None = None
) -> FinishedCall:
    """An incoming (70 %) or outgoing call of ``number``, answered 45 % of the time."""
    direction = Direction.INCOMING if rng.random() < 0.7 else Direction.OUTGOING
    answered = rng.random() < 0.45 if answered is None else answered
    ring = 5.0 + rng.random() * 20
    talk = 30.0 + rng.random() * 300 if answered else 0.0
    ended = started + ring + talk
    answered_at = started + ring if answered else None
    incoming = direction is Direction.INCOMING
    participant = Participant(
        "101",
        (Role.ANSWERED if answered else Role.RANG) if incoming else Role.PLACED,
        not incoming,
        incoming,
        answered_at,
        started if incoming else None,
        talk,
    )
    return FinishedCall(
        conversation_id=f"hot.{serial}",
        linkedids=(),
        started_at=started,
        answered_at=answered_at,
        ended_at=ended,
        approximate_end=False,
        direction=direction,
        external_number=number,
        did="74957770101" if incoming else None,
        answered=answered,
        participants=(participant,),
        legs=(),
        ring_seconds=ring,
        talk_seconds=talk,
        recordings=(),
        recording_hints=(),
        queues=(),
        transfers=(),
    )


def _journal(url: str) -> tuple[Any, SqlJournal]:
    database = open_database(url)
    window = AttentionWindow.fixed(86400.0, MOSCOW)
    return database, SqlJournal(database, pbx="main", window=window, region="RU")


def _verdicts(calls: list[FinishedCall], window: AttentionWindow, now: float) -> list[Any]:
    """The rules' verdict of each call (one number's, sorted by start), as the writer
    would leave them: the first call has no earlier one; a missed call's later contact is
    the first answered call starting at or after its end."""
    answered = [c.started_at for c in calls if c.answered]
    verdicts = []
    for index, call in enumerate(calls):
        at = bisect.bisect_left(answered, call.ended_at)
        facts = NumberFacts(
            registered=False,
            earlier_calls=index > 0,
            later_contact_at=answered[at] if at < len(answered) else None,
        )
        verdicts.append(
            evaluate(
                direction=call.direction,
                answered=call.answered,
                ended_at=call.ended_at,
                has_number=True,
                facts=facts,
                window=window,
                now=now,
            )
        )
    return verdicts


async def fill(url: str, args: argparse.Namespace) -> float:
    """The journal at ``url``: the hot number's calls among the background's, inserted in
    bulk (multi-row INSERTs of 2,000) with the verdicts the writer would have given them.
    Returns when the last one ended."""
    rng = random.Random(args.seed)
    span = args.days * 86400.0
    hot = [(EPOCH + rng.random() * span, HOT) for _ in range(args.calls)]
    others = [
        (EPOCH + rng.random() * span, f"+7916{rng.randrange(args.background // 5 + 1):07d}")
        for _ in range(args.background)
    ]
    calls = [
        make_call(rng, number, started, serial)
        for serial, (started, number) in enumerate(sorted(hot + others))
    ]
    now = max(c.ended_at for c in calls)
    window = AttentionWindow.fixed(86400.0, MOSCOW)
    by_number: dict[str, list[FinishedCall]] = {}
    for call in calls:  # sorted by start
        by_number.setdefault(call.external_number or "", []).append(call)
    verdict = {}
    for related in by_number.values():
        for call, judged in zip(related, _verdicts(related, window, now), strict=True):
            verdict[call.conversation_id] = judged
    calls.sort(key=lambda c: c.ended_at)  # ids in the order the writer would give them
    rows = []
    for call_id, call in enumerate(calls, start=1):
        judged = verdict[call.conversation_id]
        rows.append(
            {
                "id": call_id,
                "pbx": "main",
                "conversation_id": call.conversation_id,
                "linkedids": [],
                "started_at": call.started_at,
                "answered_at": call.answered_at,
                "ended_at": call.ended_at,
                "approximate_end": False,
                "direction": call.direction.value,
                "answered": call.answered,
                "number": call.external_number,
                "number_raw": call.external_number,
                "number_withheld": False,
                "did": call.did,
                "ring_seconds": call.ring_seconds,
                "talk_seconds": call.talk_seconds,
                "queues": [],
                "announced_recordings": [],
                "recording_hints": [],
                "status": judged.status.value,
                "attention": judged.attention,
                "first_contact": judged.first_contact,
                "registered_at_end": False,
                "unregistered": True,
                "customer_id": None,
                "contact_id": None,
                "window_closes_at": judged.window_closes_at,
                "settled": judged.settled,
                "fingerprint": f"{call_id:064x}",
                "search_text": f"{call.external_number} | 101",
                "version": call_id,
            }
        )
    database = open_database(url)
    try:
        await upgrade(database)
        began = time.perf_counter()
        async with database.writer.begin() as connection:
            for start in range(0, len(rows), 2_000):
                await connection.execute(sa.insert(Call.__table__), rows[start : start + 2_000])
            await connection.execute(
                sa.text("UPDATE journal_state SET last_version = :v"), {"v": len(rows)}
            )
            if not database.is_sqlite:
                await connection.execute(
                    sa.text("SELECT setval(pg_get_serial_sequence('calls', 'id'), :v)"),
                    {"v": len(rows)},
                )
            # The search keys of the calls (migration 0012), as the writer would have left them.
            if await connection.run_sync(searchkeys.has_keys):
                await connection.run_sync(lambda sync: searchkeys.fill(sync, "RU"))
        print(f"filled {len(rows):,} calls in {time.perf_counter() - began:.0f} s", flush=True)
        autocommit = database.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as connection:
            await connection.execute(sa.text("ANALYZE" if database.is_sqlite else "VACUUM ANALYZE"))
    finally:
        await database.dispose()
    return now


def workload(case: str, last: float, count: int, seed: int) -> list[list[FinishedCall]]:
    """The batches of one case: calls after ``last`` (in order), or older ones (late)."""
    rng = random.Random(seed)
    serial = 10_000_000 + CASES.index(case) * 100_000
    batches: list[list[FinishedCall]] = []
    at = last
    size = 20 if "20 per" in case else 1
    if size > 1:
        count = max(count, 3 * size)  # the first batch is not timed: two at least are
    calls: list[FinishedCall] = []
    for i in range(count):
        if case.startswith("late"):
            started = last - 86400 - rng.random() * 364 * 86400
            calls.append(make_call(rng, HOT, started, serial + i))
        elif case.startswith("a new"):
            at += 60 + rng.random() * 600
            calls.append(make_call(rng, f"+7926{i:07d}", at, serial + i))
        else:
            at += 60 + rng.random() * 1200
            calls.append(make_call(rng, HOT, at, serial + i))
    for start in range(0, len(calls), size):
        batches.append(calls[start : start + size])
    return batches


@contextmanager
def counting_loads() -> Iterator[list[int]]:
    counter = [0]

    def loaded(_session: Session, instance: object) -> None:
        if isinstance(instance, Call):
            counter[0] += 1

    sa.event.listen(Session, "loaded_as_persistent", loaded)
    try:
        yield counter
    finally:
        sa.event.remove(Session, "loaded_as_persistent", loaded)


async def server_reads(url: str) -> int | None:
    """``calls`` rows PostgreSQL read so far (None on SQLite)."""
    database = open_database(url)
    try:
        if database.is_sqlite:
            return None
        async with database.engine.connect() as connection:
            value = await connection.scalar(
                sa.text(
                    "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
                    "FROM pg_stat_user_tables WHERE relname = 'calls'"
                )
            )
            return int(value or 0)
    finally:
        await database.dispose()


async def measure(url: str, batches: list[list[FinishedCall]]) -> dict[str, Any]:
    database, journal = _journal(url)
    durations: list[float] = []
    try:
        with counting_loads() as loads:
            # The first batch opens the connections and warms the caches: not timed.
            await journal.write_many([(c, []) for c in batches[0]], batches[0][-1].ended_at)
            loads[0] = 0
            batches = batches[1:]
            before = await server_reads(url)
            began = time.perf_counter()
            cpu = time.process_time()
            for batch in batches:
                now = max(c.ended_at for c in batch)
                start = time.perf_counter()
                await journal.write_many([(c, []) for c in batch], now)
                durations.append(time.perf_counter() - start)
            seconds = time.perf_counter() - began
            cpu = time.process_time() - cpu
    finally:
        await database.dispose()
    calls = sum(len(b) for b in batches)
    await asyncio.sleep(1.2)  # the backend's statistics reach the shared view
    after = await server_reads(url)
    durations.sort()
    return {
        "calls": calls,
        "seconds": seconds,
        "rate": calls / seconds,
        "cpu_ms_per_call": cpu * 1000 / calls,
        "median_ms": statistics.median(durations) * 1000,
        "p95_ms": durations[int(len(durations) * 0.95)] * 1000,
        "loaded_per_call": loads[0] / calls,
        "server_reads_per_call": None
        if before is None or after is None
        else (after - before) / calls,
    }


class Snapshot:
    """The filled journal, put back before each round."""

    def __init__(self, engine: str, url: str, workdir: Path, admin: str | None) -> None:
        self.engine, self.url, self.workdir, self.admin = engine, url, workdir, admin

    async def save(self) -> None:
        if self.engine == "sqlite":
            shutil.copy(self.workdir / "journal.sqlite3", self.workdir / "filled.sqlite3")
            return
        await self._admin(f"DROP DATABASE IF EXISTS {self._name}_filled")
        await self._admin(f"CREATE DATABASE {self._name}_filled TEMPLATE {self._name}")

    async def restore(self) -> None:
        if self.engine == "sqlite":
            for suffix in ("-wal", "-shm"):
                (self.workdir / f"journal.sqlite3{suffix}").unlink(missing_ok=True)
            shutil.copy(self.workdir / "filled.sqlite3", self.workdir / "journal.sqlite3")
            return
        await self._admin(f"DROP DATABASE IF EXISTS {self._name}")
        await self._admin(f"CREATE DATABASE {self._name} TEMPLATE {self._name}_filled")

    async def drop(self) -> None:
        if self.engine != "sqlite":
            await self._admin(f"DROP DATABASE IF EXISTS {self._name}_filled")

    @property
    def _name(self) -> str:
        from sqlalchemy.engine import make_url

        return str(make_url(self.url).database)

    async def _admin(self, statement: str) -> None:
        import asyncpg  # type: ignore[import-untyped]
        from sqlalchemy.engine import make_url

        parsed = make_url(self.url)
        connection = await asyncpg.connect(
            user=parsed.username,
            password=parsed.password,
            host=parsed.host,
            port=parsed.port,
            database=self.admin,
        )
        try:
            await connection.execute(statement)
        finally:
            await connection.close()


async def run_engine(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"hot-number-{engine}-"))
    url, drop = await scratch_database(
        args.postgres if engine == "postgresql" else None, workdir, "hotnumber"
    )
    admin = None
    if args.postgres:
        from sqlalchemy.engine import make_url

        admin = make_url(args.postgres).database
    snapshot = Snapshot(engine, url, workdir, admin)
    try:
        last = await fill(url, args)
        await snapshot.save()
        results: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
        for round_no in range(args.runs):
            for case in CASES:
                await snapshot.restore()
                batches = workload(case, last, args.writes, args.seed + round_no)
                result = await measure(url, batches)
                results[case].append(result)
                print(
                    f"{engine} run {round_no + 1} {case:<36} {result['rate']:>8,.0f} calls/s "
                    f"p95 {result['p95_ms']:.1f} ms, {result['loaded_per_call']:,.1f} rows "
                    f"loaded/call, server reads/call {result['server_reads_per_call']}",
                    flush=True,
                )
        return {case: _median(runs) for case, runs in results.items()}
    finally:
        await snapshot.drop()
        if drop is not None:
            await drop()
        shutil.rmtree(workdir, ignore_errors=True)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["rate"] for r in runs]
    middle = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    return {**middle, "runs": rates}


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    if 0 < value < 10:
        digits = max(digits, 1)  # a rate of 0.1 calls/s is not 0
    return f"{value:,.{digits}f}"


def render(
    after: dict[str, Any], before: dict[str, Any] | None, args: argparse.Namespace, loads: str
) -> str:
    header = [
        "engine",
        "case",
        "calls/s before",
        "calls/s after",
        "p95 ms before → after",
        "CPU ms per call before → after",
        "rows loaded per call before → after",
        "rows PostgreSQL read per call before → after",
    ]
    rows = []
    for engine, cases in after["engines"].items():
        for case, now in cases.items():
            old = (before or {}).get("engines", {}).get(engine, {}).get(case)

            def pair(key: str, digits: int, now: dict[str, Any] = now, old: Any = old) -> str:
                was = _fmt(old[key], digits) if old and key in old else "?"
                return f"{was} → {_fmt(now[key], digits)}"

            rows.append(
                [
                    engine,
                    case,
                    _fmt(old["rate"]) if old else "?",
                    _fmt(now["rate"]),
                    pair("p95_ms", 1),
                    pair("cpu_ms_per_call", 2),
                    pair("loaded_per_call", 1),
                    pair("server_reads_per_call", 0) if engine == "postgresql" else "–",
                ]
            )
    text = f"""## Writing calls of a number with 50,000 calls (the rules' reads per write)

Machine: {report.machine()}. {loads} Shared with two other helpers' work.

Command: `{report.command_line()}` (and the same with `PYTHONPATH=/tmp/base` on the code
before, `e18ce11`, for the "before" columns).

Journal: {args.calls:,} calls of one number over {args.days} days and {args.background:,} calls
of {args.background // 5 + 1:,} other numbers, inserted in bulk with the verdicts the rules give
them; 24 h attention window. Each case writes
{args.writes} calls through `SqlJournal.write_many` (the daemon writer's call) on a copy of the
filled journal; the median of {args.runs} rounds. "CPU ms" is the benchmark process's CPU time per
call written (the writer, and SQLite's own work; not PostgreSQL's server). "rows loaded" counts
the `calls` rows the ORM
loaded per call written; "rows PostgreSQL read" is `seq_tup_read + idx_tup_fetch` of `calls`
per call written. Before: every write loaded every call of its number and re-evaluated them
all; after: the calls it can change, by index range (`storage/store.py`, "Bounded reads").
PostgreSQL: {after.get("postgres_version", "?")} on this machine, sharing its cores.
"""
    title, _, body = text.partition("\n\n")
    return f"{title}\n\n{report.prose(body)}\n\n{report.table(header, rows)}\n"


async def _postgres_version(url: str) -> str:
    database = open_database(url)
    try:
        async with database.engine.connect() as connection:
            return f"PostgreSQL {await connection.scalar(sa.text('SHOW server_version'))}"
    finally:
        await database.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hot_number", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--background", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL URL (scripts/test-postgres)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--before", type=Path, help="results of the code before, for the table")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    parser.add_argument(
        "--results", type=Path, help="render these results (a --json file) instead of measuring"
    )
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "postgresql" in engines and not args.postgres:
        print("postgresql left out: no --postgres URL", flush=True)
        engines.remove("postgresql")
    if args.results:
        results = json.loads(args.results.read_text())
        load_before, load_after = results["load"]
    else:
        load_before = os.getloadavg()
        results = {"engines": {}}
        for engine in engines:
            results["engines"][engine] = asyncio.run(run_engine(engine, args))
        if args.postgres:
            results["postgres_version"] = asyncio.run(_postgres_version(args.postgres))
        load_after = os.getloadavg()
        results["load"] = [load_before, load_after]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    before = json.loads(args.before.read_text()) if args.before else None
    loads = (
        f"Load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.2f}' for x in load_after)} after this run"
    )
    if before:
        b0, b1 = before["load"]
        loads += (
            f"; {'/'.join(f'{x:.2f}' for x in b0)} before and "
            f"{'/'.join(f'{x:.2f}' for x in b1)} after the run on the code before."
        )
    else:
        loads += "."
    text = render(results, before, args, loads)
    print()
    print(text)
    if not args.no_docs:
        report.update_section("bench.hot-number", text)
        print(f"\nwritten to {report.BENCHMARKS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
