"""Open conversations survive a restart of the daemon: the assembler's state, saved at any
point of a real call and taken back by a fresh assembler, gives the same journal rows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector.assembly import CallAssembler, FinishedCall
from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from tests.daemon_support import Committed, daemon_settings
from tests.scenarios import GRACE, assemble_capture, capture, events_of, new_assembler

SLUGS = [
    "02-incoming-ringgroup-102-answers",
    "05-incoming-queue-101-answers",
    "11-incoming-blind-transfer",
    "12-incoming-attended-transfer",
    "13-incoming-pickup-by-105",
    "14-two-overlapping-incoming",
    "18-click-to-call-originate",
]


def replay_with_restart(slug: str, cut: int) -> tuple[list[FinishedCall], int]:
    events = list(events_of(capture(slug).read_bytes()))
    first = new_assembler()
    calls: list[FinishedCall] = []
    last = 0.0
    for event in events[:cut]:
        last = max(last, event.time)
        calls.extend(first.feed(event, last))
    # The daemon stops: what is open goes to the database as JSON.
    saved = json.loads(json.dumps(first.export_all()))
    second = new_assembler()
    restored = second.restore(saved.values())
    for event in events[cut:]:
        last = max(last, event.time)
        calls.extend(second.feed(event, last))
    calls.extend(second.expire(last + GRACE + 0.001))
    assert second.open_conversations == 0
    return calls, restored


@pytest.mark.parametrize("slug", SLUGS)
def test_restart_at_every_event_of_a_call_changes_nothing(slug: str) -> None:
    expected = sorted(assemble_capture(slug).calls, key=lambda c: c.conversation_id)
    count = len(list(events_of(capture(slug).read_bytes())))
    restored_somewhere = False
    for cut in range(count + 1):
        calls, restored = replay_with_restart(slug, cut)
        restored_somewhere |= restored > 0
        assert sorted(calls, key=lambda c: c.conversation_id) == expected, f"cut at {cut}"
    assert restored_somewhere


def test_changes_report_open_conversations_and_merged_keys() -> None:
    events = list(events_of(capture("13-incoming-pickup-by-105").read_bytes()))
    assembler = new_assembler()
    keys_seen: set[str] = set()
    gone_seen: set[str] = set()
    for event in events:
        assembler.feed(event, event.time)
        states, gone = assembler.take_changes()
        keys_seen |= set(states)
        gone_seen |= gone
        assert set(states) <= {"1795837553.56", "1795837557.58"}
    # The picker's own conversation was merged into the call: its saved state is obsolete.
    assert gone_seen == {"1795837557.58"}
    assert "1795837553.56" in keys_seen
    assert assembler.take_changes() == ({}, set())


def test_an_unreadable_state_is_skipped_and_counted() -> None:
    assembler = new_assembler()
    assert assembler.restore([{"v": 99}, {"v": 1, "key": "x"}]) == 0
    assert assembler.stats.bad_events == 2
    assert assembler.open_conversations == 0


async def _run_daemon_until_held(
    pbx: FakePbx, database: Path, slug: str
) -> tuple[Daemon, asyncio.Task[None]]:
    daemon = Daemon(daemon_settings(pbx.port, database, [slug]))
    runner = asyncio.create_task(daemon.run())
    await asyncio.wait_for(pbx.wait_held(), 10)
    await asyncio.sleep(0.3)  # the daemon has read everything up to the hold
    return daemon, runner


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_call_in_progress_survives_a_daemon_restart(tmp_path: Path, how: str) -> None:
    slug = "11-incoming-blind-transfer"
    database = tmp_path / "journal.sqlite3"
    pbx = FakePbx([capture(slug)], keep_time=True, speed=0)
    pbx.hold_when(lambda m: m.event == "BridgeEnter" and m.first("Channel").startswith("IAX2/p"))
    await pbx.start()
    first, runner = await _run_daemon_until_held(pbx, database, slug)
    if how == "stop":
        first.stop()
        await asyncio.wait_for(runner, 10)
    else:
        # As abrupt as SIGKILL within one process: no shutdown code runs. The state saved
        # by the periodic persistence (every 2 s) is all the next run gets.
        await asyncio.sleep(2.5)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    pbx.drop()
    second = Daemon(daemon_settings(pbx.port, database, [slug]))
    committed = Committed(second)
    with capture_logs() as logs:
        runner = asyncio.create_task(second.run())
        try:
            await asyncio.sleep(0.3)  # restored and resynchronised before the stream goes on
            pbx.release()
            await committed.wait_for(1)
        finally:
            second.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    (entry,) = committed.entries
    (expected_call,) = assemble_capture(slug).calls
    assert entry.call == expected_call  # as if the daemon had never stopped
    assert "open conversations restored" in [line["event"] for line in logs]
    assert entry.id == 1


def test_a_new_conversation_is_handed_out_once_for_the_quick_save() -> None:
    events = list(events_of(capture("13-incoming-pickup-by-105").read_bytes()))
    assembler = new_assembler()
    first = next(i for i, e in enumerate(events) if e.name == "Newchannel")
    for event in events[: first + 1]:
        assembler.feed(event, event.time)
    states, gone = assembler.take_changes(new_only=True)
    assert list(states) == ["1795837553.56"] and gone == set()
    # Saved: no longer new, and not changed since.
    assert assembler.take_changes(new_only=True) == ({}, set())
    assert assembler.take_changes() == ({}, set())
    for event in events[first + 1 :]:
        assembler.feed(event, event.time)
        states, _ = assembler.take_changes(new_only=True)
        # Only the picker's own conversation is ever new again (before it is merged).
        assert set(states) <= {"1795837557.58"}


async def test_a_call_the_daemon_saw_begin_just_before_it_died_is_not_lost(
    tmp_path: Path,
) -> None:
    # Killed well before the 2 s save of changed conversations: the quick save of new ones
    # (every 0.25 s) is what lets the next run know the call, which ends while it is down.
    slug = "01-incoming-answered-direct"
    database = tmp_path / "journal.sqlite3"
    pbx = FakePbx([capture(slug)], keep_time=True, speed=0)
    pbx.hold_when(lambda m: m.event == "BridgeEnter" and m.first("Channel").startswith("IAX2/p"))
    await pbx.start()
    first = Daemon(daemon_settings(pbx.port, database, [slug]))
    runner = asyncio.create_task(first.run())
    began = asyncio.get_running_loop().time()
    await asyncio.wait_for(pbx.wait_held(), 10)
    for _ in range(100):
        if first.journal is not None and await first.journal.load_open():
            break
        await asyncio.sleep(0.02)
    assert first.journal is not None and await first.journal.load_open()
    assert asyncio.get_running_loop().time() - began < 1.5
    runner.cancel()  # as abrupt as SIGKILL within one process
    await asyncio.gather(runner, return_exceptions=True)
    pbx.drop()
    pbx.discard_until(lambda m: m.event == "Hangup" and m.first("Channel").startswith("IAX2/101"))
    second = Daemon(daemon_settings(pbx.port, database, [slug]))
    committed = Committed(second)
    runner = asyncio.create_task(second.run())
    try:
        pbx.release()
        await committed.wait_for(1)
    finally:
        second.stop()
        await asyncio.wait_for(runner, 10)
        await pbx.close()
    (entry,) = committed.entries
    (expected_call,) = assemble_capture(slug).calls
    assert entry.call.conversation_id == expected_call.conversation_id
    assert entry.call.approximate_end  # it ended while nobody listened
    assert second.assembler.open_conversations == 0


def _finished(slug: str, assembler: CallAssembler) -> tuple[FinishedCall, float]:
    last = 0.0
    calls: list[FinishedCall] = []
    for event in events_of(capture(slug).read_bytes()):
        last = max(last, event.time)
        calls.extend(assembler.feed(event, last))
    assembler.take_changes()  # the saves while it ran
    calls.extend(assembler.expire(last + GRACE + 0.001))
    (call,) = calls
    return call, last


def test_a_finished_conversation_is_handed_out_as_it_ended_until_its_row_is_written() -> None:
    assembler = new_assembler()
    assembler.keep_finished = True
    call, last = _finished("11-incoming-blind-transfer", assembler)
    states, gone = assembler.take_changes(new_only=True)
    assert list(states) == [call.conversation_id] and gone == set()
    assert assembler.take_changes() == ({}, set())  # once
    # Killed before the writer got to it: the next run takes the call back whole.
    fresh = new_assembler()
    assert fresh.restore(json.loads(json.dumps(list(states.values())))) == 1
    assert fresh.expire(last + GRACE + 0.001) == [call]
    # Written first: nothing to save. Without keep_finished nothing is ever kept.
    again = new_assembler()
    again.keep_finished = True
    call, _ = _finished("11-incoming-blind-transfer", again)
    again.forget_finished([call.conversation_id])
    assert again.take_changes() == ({}, set())
    plain = new_assembler()
    _finished("11-incoming-blind-transfer", plain)
    assert plain.take_changes() == ({}, set())


def test_a_dropped_ghost_conversation_has_its_saved_state_deleted() -> None:
    # The Local pair of a click-to-call that led nowhere: saved while it ran, then dropped.
    assembler = new_assembler()
    events = [
        e
        for e in events_of(capture("18-click-to-call-originate").read_bytes())
        if e.get("Channel").startswith("Local/") and e.name in ("Newchannel", "Hangup")
    ]
    assembler.feed(events[0], events[0].time)
    (key,) = assembler.take_changes(new_only=True)[0]
    last = 0.0
    for event in events[1:]:
        last = max(last, event.time)
        assert assembler.feed(event, last) == []
    assert assembler.expire(last + GRACE + 0.001) == []
    assert assembler.take_changes() == ({}, {key})


async def test_a_finished_call_the_writer_had_not_reached_survives_a_kill_whole(
    tmp_path: Path,
) -> None:
    slug = "12-incoming-attended-transfer"
    database = tmp_path / "journal.sqlite3"
    short = {"PBXJOURNAL_PBX__HANGUP_GRACE": "0.3s"}
    pbx = FakePbx([capture(slug)], keep_time=True, speed=0)
    pbx.hold_when(lambda m: m.event == "BridgeEnter" and m.first("Channel").startswith("IAX2/p"))
    await pbx.start()
    first = Daemon(daemon_settings(pbx.port, database, [slug], extra=short))
    runner = asyncio.create_task(first.run())
    await asyncio.wait_for(pbx.wait_held(), 10)
    await asyncio.sleep(0.5)  # saved while it runs (the quick save of a new conversation)
    journal, writer = first.journal, first.writer
    assert journal is not None and writer is not None
    # A backlog: another call's batch takes a second, and the writer never gets past the
    # batch after it. The call ends meanwhile and waits in the queue.
    (other,) = assemble_capture("01-incoming-answered-direct").calls
    write_batch = journal.write_batch
    stuck = asyncio.Event()

    async def behind(items: Any, now: float, **kwargs: Any) -> Any:
        if other in [call for call, _ in items]:
            await asyncio.sleep(1.0)
            return await write_batch(items, now, **kwargs)
        await stuck.wait()
        raise AssertionError("unreachable")

    journal.write_batch = behind  # type: ignore[method-assign]
    writer.submit([other])
    pbx.release()  # the transfer, the hangups
    await asyncio.wait_for(pbx.wait_done(), 10)
    await asyncio.sleep(1.5)  # the batch of the other call, then the save between batches
    assert writer.pending == 1
    runner.cancel()  # as abrupt as SIGKILL within one process
    await asyncio.gather(runner, return_exceptions=True)
    second = Daemon(daemon_settings(pbx.port, database, [slug], extra=short))
    committed = Committed(second)
    runner = asyncio.create_task(second.run())
    try:
        await committed.wait_for(1)
    finally:
        second.stop()
        await asyncio.wait_for(runner, 10)
        await pbx.close()
    (entry,) = committed.entries
    (expected_call,) = assemble_capture(slug).calls
    assert entry.call == expected_call  # its end was seen: not approximate, nothing lost
