"""The journal writer holds finished calls while the database refuses, and loses none."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import storage.engine
from connector.assembly import Direction
from connector.recordings import RecordingFinder
from pbxjournal.dbtools import open_journal
from pbxjournal.writer import JournalWriter
from storage.store import WrittenBatch
from tests.calls import at, make_call
from tests.daemon_support import daemon_settings
from tests.scenarios import RECORDINGS, assemble_capture


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_locked_database_holds_calls_and_writes_them_when_it_frees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.engine, "SQLITE_BUSY_TIMEOUT_MS", 100)
    database = tmp_path / "journal.sqlite3"
    settings = daemon_settings(5038, database)
    calls = assemble_capture("14-two-overlapping-incoming").calls
    async with open_journal(settings) as journal:
        finder = RecordingFinder([RECORDINGS / "14-two-overlapping-incoming"])
        committed: list[int] = []
        writer = JournalWriter(
            journal,
            finder,
            lambda: calls[-1].ended_at + 10,
            on_written=lambda written: committed.extend(c.id for c in written.changes),
            retry_min=0.05,
            retry_max=0.2,
            max_pending=3,
        )
        # Another process (a backup, `pbxjournal calls` gone wrong) holds the write lock.
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        with capture_logs() as logs:
            task = asyncio.create_task(writer.run())
            writer.submit(calls)
            await until(lambda: writer.stats.failures >= 2)
            assert writer.stats.writable is False
            assert writer.pending == 2  # held, not lost
            # Without a spool nothing is dropped either: the queue grows past max_pending.
            writer.submit(calls)
            assert writer.pending == 4
            blocker.rollback()
            blocker.close()
            await asyncio.wait_for(writer.flush(), 10)
            await writer.close()
            await task
    assert writer.stats.writable is True
    assert writer.stats.calls_written == 4
    assert len(set(committed)) == 2  # the same two conversations, written once each
    messages = [line["event"] for line in logs]
    assert "journal write failed; calls held for retry" in messages
    assert "journal writable again" in messages


async def test_a_batch_is_one_transaction_and_each_row_reported_once(tmp_path: Path) -> None:
    settings = daemon_settings(5038, tmp_path / "journal.sqlite3")
    missed, callback = sorted(
        assemble_capture("15-missed-then-callback").calls, key=lambda c: c.started_at
    )
    async with open_journal(settings) as journal:
        changes = await journal.write_many([(missed, []), (callback, [])], callback.ended_at)
        # The call back re-evaluated the missed call inside the same batch: one change each.
        assert sorted(c.id for c in changes) == [1, 2]
        entries = {e.id: e for e in await journal.entries([1, 2])}
        assert (entries[1].status.value, entries[1].attention) == ("no_answer", False)
        assert await journal.last_version() == max(c.version for c in changes)


async def test_a_backlog_is_written_in_short_batches_so_open_conversations_are_saved_meanwhile(
    tmp_path: Path,
) -> None:
    settings = daemon_settings(5038, tmp_path / "journal.sqlite3")
    calls = assemble_capture("17-burst-50-mixed").calls * 6  # 300 calls waiting at once
    saves: list[float] = []
    loop = asyncio.get_running_loop()

    def open_new() -> tuple[dict[str, dict[str, object]], set[str]]:
        saves.append(loop.time())
        return {}, set()

    async with open_journal(settings) as journal:
        write_batch = journal.write_batch

        async def slow(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.01 * len(args[0]))  # a database 10 ms slower per call
            return await write_batch(*args, **kwargs)

        journal.write_batch = slow  # type: ignore[method-assign]
        writer = JournalWriter(
            journal,
            RecordingFinder([]),
            lambda: calls[-1].ended_at + 10,
            open_changes=lambda: ({}, set()),
            open_new=open_new,
        )
        task = asyncio.create_task(writer.run())
        writer.submit(calls)
        began = loop.time()
        await asyncio.wait_for(writer.flush(), 60)
        drained = loop.time()
        await writer.close()
        await task
    assert writer.stats.calls_written == 300
    assert writer.stats.batches >= 6  # one batch of 300 would take 3 s and more
    during = [began, *(t for t in saves if began <= t <= drained), drained]
    assert drained - began > 2.0
    assert max(b - a for a, b in itertools.pairwise(during)) < 1.2


async def test_a_finished_call_is_written_between_slices_of_a_long_save_of_open_conversations(
    tmp_path: Path,
) -> None:
    settings = daemon_settings(5038, tmp_path / "journal.sqlite3")
    call, *_ = assemble_capture("17-burst-50-mixed").calls
    loop = asyncio.get_running_loop()
    # 400 open conversations changed since the last save, the finished call's among them
    # (it was open then): far more than one slice of about 50 ms saves.
    states: dict[str, dict[str, Any]] = {f"open-{n}": {"n": n} for n in range(400)}
    states[call.conversation_id] = {"n": -1}
    handed_out: list[dict[str, dict[str, Any]]] = [states]
    slices: list[tuple[float, int]] = []
    written_at: list[float] = []

    def open_changes() -> tuple[dict[str, dict[str, Any]], set[str]]:
        return (handed_out.pop() if handed_out else {}), set()

    async with open_journal(settings) as journal:
        sync_open = journal.sync_open

        async def slow_sync(saving: Any, gone: Any, now: float) -> None:
            await asyncio.sleep(0.002 * len(saving))  # a database 2 ms per state
            await sync_open(saving, gone, now)
            slices.append((loop.time(), len(saving)))

        journal.sync_open = slow_sync  # type: ignore[method-assign]
        writer = JournalWriter(
            journal,
            RecordingFinder([]),
            lambda: call.ended_at + 10,
            on_written=lambda _written: written_at.append(loop.time()),
            open_changes=open_changes,
            open_prefix="main/",
            persist_interval=0.05,  # the round is due at once
        )
        task = asyncio.create_task(writer.run())
        await until(lambda: len(slices) >= 2)
        writer.submit([call])
        await asyncio.wait_for(writer.flush(), 20)
        await until(lambda: sum(n for _, n in slices) >= 400)
        await writer.close()
        await task
        saved = await journal.load_open("main/")
    # The call did not wait for the whole round: it went in between two slices...
    assert written_at and written_at[0] < slices[-1][0]
    assert len(slices) >= 4
    # ...and its state, still waiting for its slice, was dropped with its row written: no
    # saved state outlives the row (a restart would take the call back a second time).
    assert call.conversation_id not in {key.removeprefix("main/") for key in saved}
    assert len(saved) == 400


async def test_calls_ending_just_after_a_batch_share_the_next_one(tmp_path: Path) -> None:
    """Under a steady stream a batch would start the moment the previous one committed, one
    call each: the calls ending within ``min_batch_interval`` of a batch's start share the
    next batch; a call on a quiet line is written at once."""
    settings = daemon_settings(5038, tmp_path / "journal.sqlite3")
    calls = sorted(assemble_capture("17-burst-50-mixed").calls, key=lambda c: c.ended_at)
    written: list[int] = []

    async def on_written(batch: WrittenBatch) -> None:
        written.append(len(batch.changes))

    async with open_journal(settings) as journal:
        writer = JournalWriter(
            journal,
            RecordingFinder([]),
            lambda: calls[-1].ended_at + 10,
            on_written=on_written,
            batch_seconds=10.0,  # batches as big as they come
            min_batch_interval=1.0,  # long enough that no scheduling hiccup splits them
        )
        task = asyncio.create_task(writer.run())
        writer.submit(calls[:1])
        await until(lambda: writer.stats.batches == 1)
        for call in calls[1:4]:  # three calls end one after the other right after it
            writer.submit([call])
            await asyncio.sleep(0.01)
        await until(lambda: writer.stats.batches == 2)
        await writer.close()
        await task
    assert writer.stats.calls_written == 4
    assert writer.stats.batches == 2  # not four


async def test_a_database_whose_bare_commit_outlasts_batch_seconds_gets_bigger_batches(
    tmp_path: Path,
) -> None:
    """PostgreSQL on a busy host: every commit costs 60 ms whatever it holds, more than the
    50 ms a batch aims at. Measured per call at that whole commit, the batches would stay at
    one call, one commit per call (fifty batches here, slower than calls end); they grow
    instead, to batches twice a bare commit."""
    settings = daemon_settings(5038, tmp_path / "journal.sqlite3")
    calls = sorted(assemble_capture("17-burst-50-mixed").calls, key=lambda c: c.ended_at)
    sizes: list[int] = []

    async def on_written(batch: WrittenBatch) -> None:
        sizes.append(len(batch.changes))

    async with open_journal(settings) as journal:
        write_batch = journal.write_batch

        async def slow(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.06)  # the commit's own cost, whatever the batch holds
            return await write_batch(*args, **kwargs)

        journal.write_batch = slow  # type: ignore[method-assign]
        writer = JournalWriter(
            journal, RecordingFinder([]), lambda: calls[-1].ended_at + 10, on_written=on_written
        )
        writer.submit(calls)
        task = asyncio.create_task(writer.run())
        await asyncio.wait_for(writer.flush(), 60)
        await writer.close()
        await task
    assert writer.stats.calls_written == sum(sizes) == 50
    assert writer.stats.batches < 20, sizes
    assert max(sizes) >= 5, sizes


async def test_the_settler_looks_again_only_for_an_earlier_window(tmp_path: Path) -> None:
    """Missed calls open attention windows. After each batch the settler needs the journal's
    earliest window again only if the batch opened one closing before the one it waits for:
    a stream of later windows costs no query per batch; an earlier one is seen at once."""
    settings = daemon_settings(5038, tmp_path / "journal.sqlite3")
    base = at("11-27 10:00")
    missed = [
        make_call(Direction.INCOMING, f"+7916000{n:04d}", base + 60 * n, answered=False)
        for n in range(1, 11)
    ]
    async with open_journal(settings) as journal:
        reads: list[float | None] = []
        next_window_close = journal.next_window_close

        async def counted() -> float | None:
            value = await next_window_close()
            reads.append(value)
            return value

        journal.next_window_close = counted  # type: ignore[method-assign]
        writer = JournalWriter(journal, RecordingFinder([]), lambda: base + 600)
        task = asyncio.create_task(writer.run())
        await until(lambda: len(reads) == 1)  # the settler's first look: nothing open
        writer.submit(missed[:1])
        await asyncio.wait_for(writer.flush(), 10)
        # It looks again for the first window; a batch committed before that look ended
        # would not know of it yet and ask for another (harmless, but not this test's case).
        await until(lambda: len(reads) == 2)
        for call in missed[1:]:  # one batch each, every window later than the first
            writer.submit([call])
            await asyncio.wait_for(writer.flush(), 10)
        await asyncio.sleep(0.2)
        assert writer.stats.batches == len(missed)
        assert len(reads) == 2  # the first window; none for the later ones
        earlier = make_call(Direction.INCOMING, "+79160009999", base, answered=False)
        writer.submit([earlier])
        await asyncio.wait_for(writer.flush(), 10)
        await until(lambda: len(reads) == 3)
        assert reads[-1] is not None and reads[1] is not None and reads[-1] < reads[1]
        await writer.close()
        await task
