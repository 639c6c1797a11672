"""A changed attention window repairs the journal (``SqlJournal.repair_window``): the rows
become what :class:`MemoryJournal` computes from scratch with the new window, and only the
rows whose verdict changed get a new version. Both engines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from connector.assembly import Direction, FinishedCall
from connector.fakepbx import FakePbx
from connector.recordings import RecordingFinder
from pbxjournal.daemon import Daemon
from pbxjournal.dbtools import open_journal
from pbxjournal.writer import JournalWriter
from storage.engine import Database, open_database
from storage.memory import MemoryJournal
from storage.migrate import upgrade
from storage.rules import AttentionWindow
from storage.store import SqlJournal
from tests.calls import at, make_call
from tests.daemon_support import Committed, daemon_settings
from tests.db import MOSCOW, make_journal
from tests.scenarios import TRACES, capture
from tests.test_number_reads import NUMBER, pair, story
from tests.test_replay import json_lines, run_cli, write_config

IN, OUT = Direction.INCOMING, Direction.OUTGOING

VLADIVOSTOK = ZoneInfo("Asia/Vladivostok")
WINDOWS = {
    "24h": AttentionWindow.fixed(86400.0, MOSCOW),
    "1h": AttentionWindow.fixed(3600.0, MOSCOW),
    "end_of_day": AttentionWindow.until_end_of_day(MOSCOW),
    "end_of_day_vladivostok": AttentionWindow.until_end_of_day(VLADIVOSTOK),
}
CHANGES = [
    ("24h", "1h"),
    ("1h", "end_of_day"),
    ("end_of_day", "24h"),
    ("end_of_day", "end_of_day_vladivostok"),
]
#: When the repair tests run a repair.
NOW = at("12-05 12:00")


async def written_under_24h_reopened_under_1h(
    database: Database, *, seed: int, count: int
) -> tuple[list[FinishedCall], SqlJournal]:
    """A story of ``count`` calls written (and its window recorded) under 24 h, and the
    journal opened again with 1 h, its repair not yet run (``NOW``)."""
    written = await pair(database, WINDOWS["24h"])
    calls = list(story(seed, count))
    for call in calls:
        await written.write(call, call.ended_at)
    await written.sql.repair_window(NOW)
    return calls, await make_journal(database, WINDOWS["1h"])


async def assert_as_computed_under_1h(journal: SqlJournal, calls: list[FinishedCall]) -> None:
    """Each call's status and attention in ``journal`` are what the in-memory journal computes
    for the same calls with the 1 h window from scratch."""
    scratch = MemoryJournal(pbx="main", window=WINDOWS["1h"], region="RU")
    for call in calls:
        scratch.write(call, [], call.ended_at)
    rows = {e.id: e for e in await journal.entries(range(1, len(calls) + 1))}
    assert [(rows[e.id].status, rows[e.id].attention) for e in scratch.entries()] == [
        (e.status, e.attention) for e in scratch.entries()
    ]


def test_a_window_is_recorded_by_what_decides_it() -> None:
    assert WINDOWS["24h"].definition == "fixed 86400s"
    assert WINDOWS["end_of_day"].definition == "end_of_day Europe/Moscow"
    # The time zone decides only the end_of_day window.
    assert AttentionWindow.fixed(3600.0, VLADIVOSTOK).definition == WINDOWS["1h"].definition
    assert WINDOWS["end_of_day_vladivostok"].definition != WINDOWS["end_of_day"].definition


@pytest.mark.parametrize(("old", "new"), CHANGES, ids=[f"{a}-to-{b}" for a, b in CHANGES])
async def test_a_changed_window_repairs_the_journal_as_the_memory_journal_computes_it(
    database: Database, old: str, new: str
) -> None:
    written = await pair(database, WINDOWS[old])
    calls = list(story(3, 150))
    for call in calls:
        await written.write(call, call.ended_at)
    now = at("12-05 12:00")
    # A journal never recorded: re-evaluated once; with the window it was written with,
    # nothing changes.
    first = await written.sql.repair_window(now)
    assert first is not None and first.recorded is None and first.changed == 0
    assert first.rows > 0
    assert await written.sql.repair_window(now) is None
    before = {e.id: e for e in await written.sql.entries(range(1, len(calls) + 1))}
    last = await written.sql.last_version()

    reopened = await make_journal(database, WINDOWS[new])
    repair = await reopened.repair_window(now)
    assert repair is not None
    assert (repair.recorded, repair.configured) == (
        WINDOWS[old].definition,
        WINDOWS[new].definition,
    )
    assert await reopened.recorded_window() == WINDOWS[new].definition
    assert await reopened.repair_window(now) is None  # recorded: done once

    scratch = MemoryJournal(pbx="main", window=WINDOWS[new], region="RU")
    for call in calls:
        scratch.write(call, [], call.ended_at)
    after = {e.id: e for e in await reopened.entries(before)}
    assert len(after) == len(scratch.entries()) == len(before)
    for expected in scratch.entries():
        row = after[expected.id]
        assert (row.status, row.attention, row.first_contact, row.window_closes_at) == (
            expected.status,
            expected.attention,
            expected.first_contact,
            expected.window_closes_at,
        ), expected.call.conversation_id
        if row.attention:
            assert row.settled == (row.window_closes_at is not None and now >= row.window_closes_at)

    def verdict(entry: object) -> tuple[object, ...]:
        return tuple(
            getattr(entry, name)
            for name in ("status", "attention", "first_contact", "window_closes_at")
        )

    moved = {i for i in before if verdict(before[i]) != verdict(after[i])}
    assert moved and repair.changed == len(moved)
    for i, entry in after.items():
        if i in moved:
            assert entry.version > last
        else:
            assert entry.version == before[i].version
    assert sorted(after[i].version for i in moved) == list(range(last + 1, last + len(moved) + 1))
    assert await reopened.last_version() == last + len(moved)


async def test_a_repair_in_small_batches_is_the_same_repair(database: Database) -> None:
    """Batches split anywhere (3 calls each here) change the same rows as one batch."""
    calls, reopened = await written_under_24h_reopened_under_1h(database, seed=4, count=80)
    repair = await reopened.repair_window(NOW, batch_size=3)
    assert repair is not None and repair.changed > 0
    await assert_as_computed_under_1h(reopened, calls)
    # Forced again with the same window: every call read, nothing changes.
    again = await reopened.repair_window(NOW, force=True, batch_size=3)
    assert again is not None and again.rows == repair.rows and again.changed == 0


async def test_the_daemon_repairs_a_changed_window_before_it_serves(tmp_path: Path) -> None:
    """A journal written with a 24-hour window, the daemon restarted with one hour: the calls
    answered 2 hours later are lost again, logged once before and once after."""
    path = tmp_path / "journal.sqlite3"
    database = open_database(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(database)
        journal = await make_journal(database, WINDOWS["24h"])
        start = at("11-20 10:00")
        missed = make_call(IN, NUMBER, start, answered=False)
        back = make_call(OUT, NUMBER, start + 7200, answered=True)
        for call in (missed, back):
            await journal.write(call, [], call.ended_at)
        await journal.repair_window(back.ended_at)  # recorded: 24 hours
        (before,) = [e for e in await journal.entries([1]) if e.call == missed]
        assert (before.status.value, before.attention) == ("no_answer", False)
    finally:
        await database.dispose()
    slugs = ["01-incoming-answered-direct"]
    pbx = FakePbx([capture(s) for s in slugs], speed=0)
    port = await pbx.start()
    settings = daemon_settings(port, path, slugs, {"PBXJOURNAL_RULES__ATTENTION_WINDOW": "1h"})
    with capture_logs() as logs:
        daemon = Daemon(settings)
        committed = Committed(daemon)
        runner = asyncio.create_task(daemon.run())
        try:
            await committed.wait_for(1)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    events = [e["event"] for e in logs]
    said = events.index("attention window changed: re-evaluating the calls with a window")
    done = events.index("calls re-evaluated with the configured attention window")
    assert said < done < events.index("call")
    assert (logs[said]["recorded"], logs[said]["configured"]) == ("fixed 86400s", "fixed 3600s")
    assert (logs[done]["calls"], logs[done]["changed"]) == (1, 1)
    database = open_database(f"sqlite+aiosqlite:///{path}")
    try:
        reopened = await make_journal(database, WINDOWS["1h"])
        (after,) = await reopened.entries([before.id])
        assert (after.status.value, after.attention) == ("lost", True)
        assert after.version > before.version
        assert await reopened.recorded_window() == "fixed 3600s"
    finally:
        await database.dispose()


def test_reevaluate_command_repairs_a_journal_written_with_another_window(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'j.sqlite3'}"
    (tmp_path / "wide").mkdir()
    (tmp_path / "narrow").mkdir()
    wide = str(write_config(tmp_path / "wide", window="24h"))
    narrow = str(write_config(tmp_path / "narrow", window="1s"))
    captures = [str(p) for p in sorted(TRACES.glob("*.ami"))]
    written = run_cli("replay", *captures, "--config", wide, "--database", url)
    assert written.returncode == 0, written.stderr

    def listed() -> dict[int, tuple[str, bool]]:
        shown = run_cli(
            "calls",
            "--json",
            "--internal",
            "show",
            "--limit",
            "500",
            "--config",
            narrow,
            "--database",
            url,
        )
        assert shown.returncode == 0, shown.stderr
        return {o["id"]: (o["status"], o["attention"]) for o in json_lines(shown.stdout)}

    before = listed()
    result = run_cli("reevaluate", "--config", narrow, "--database", url)
    assert result.returncode == 0, result.stderr
    assert "recorded=unknown configured=fixed 1s" in result.stderr
    assert "calls re-evaluated with the configured attention window" in result.stderr
    # The journal is now what replaying with the narrow window gives.
    expected = run_cli("replay", *captures, "--json", "--config", narrow)
    assert expected.returncode == 0, expected.stderr
    want = {o["id"]: (o["status"], o["attention"]) for o in json_lines(expected.stdout)}
    assert before != want  # the 24-hour window handled a call a second does not
    assert listed() == want
    missing = run_cli(
        "reevaluate", "--config", narrow, "--database", "postgresql+asyncpg://x@127.0.0.1:1/none"
    )
    assert missing.returncode == 3, missing.stderr


@pytest.mark.parametrize("fails", [False, True], ids=["completes", "fails"])
async def test_the_writer_writes_after_its_first_work(tmp_path: Path, fails: bool) -> None:
    """The repair is the writer's first work: calls finished meanwhile wait, then are
    written; a repair that fails is logged and the calls are written all the same."""
    settings = daemon_settings(5038, tmp_path / "journal.sqlite3")
    release = asyncio.Event()
    started = asyncio.Event()

    async def first() -> None:
        started.set()
        await release.wait()
        if fails:
            raise OSError("disk gone")

    calls = [make_call(IN, NUMBER, at("11-20 10:00"), answered=False)]
    async with open_journal(settings) as journal:
        writer = JournalWriter(
            journal,
            RecordingFinder([]),
            lambda: calls[-1].ended_at + 10,
            first_work=first,
            min_batch_interval=0.0,
        )
        with capture_logs() as logs:
            task = asyncio.create_task(writer.run())
            await asyncio.wait_for(started.wait(), 10)
            writer.submit(calls)
            await asyncio.sleep(0.2)
            assert writer.stats.calls_written == 0 and writer.pending == 1
            release.set()
            await asyncio.wait_for(writer.flush(), 10)
            await writer.close()
            await task
    assert writer.stats.calls_written == 1
    failed = [e for e in logs if e["event"].startswith("re-evaluation with the configured")]
    assert len(failed) == (1 if fails else 0)


async def test_a_repair_stopped_between_batches_is_done_again_next_time(
    database: Database,
) -> None:
    calls, reopened = await written_under_24h_reopened_under_1h(database, seed=5, count=60)
    stopped = await reopened.repair_window(NOW, batch_size=2, keep_going=lambda: False)
    assert stopped is not None and not stopped.complete and stopped.rows == 2
    assert await reopened.recorded_window() == WINDOWS["24h"].definition
    done = await reopened.repair_window(NOW, batch_size=2)
    assert done is not None and done.complete and done.rows > 2
    await assert_as_computed_under_1h(reopened, calls)
    assert await reopened.recorded_window() == WINDOWS["1h"].definition
