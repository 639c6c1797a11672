"""``pbxjournal run`` in-process against the fake PBX on a real TCP port, into a real SQLite
journal."""

from __future__ import annotations

import asyncio
from pathlib import Path

from structlog.testing import capture_logs

from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from tests.daemon_support import Committed, daemon_settings
from tests.scenarios import capture


async def test_daemon_writes_every_call_and_closes_the_last_one_on_its_timer(
    tmp_path: Path,
) -> None:
    slugs = ["11-incoming-blind-transfer", "15-missed-then-callback"]
    pbx = FakePbx([capture(s) for s in slugs], username="u", secret="p", speed=0)
    port = await pbx.start()
    settings = daemon_settings(
        port,
        tmp_path / "journal.sqlite3",
        slugs,
        {
            "PBXJOURNAL_AMI__USERNAME": "u",
            "PBXJOURNAL_AMI__SECRET": "p",
            "PBXJOURNAL_LOG__NUMBERS": "masked",
        },
    )
    with capture_logs() as logs:
        daemon = Daemon(settings)
        committed = Committed(daemon)
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(pbx.wait_done(), 30)
            # No event follows the last hangup: only the grace timer can write that call.
            await committed.wait_for(3)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    assert daemon.assembler.open_conversations == 0
    assert daemon.writer is not None and daemon.writer.stats.calls_written == 3
    calls = [entry for entry in logs if entry["event"] == "call"]
    statuses = [(c["direction"], c["status"]) for c in calls]
    assert statuses.count(("incoming", "answered")) == 1
    assert ("incoming", "lost") in statuses and ("incoming", "no_answer") in statuses
    assert ("outgoing", "reached") in statuses
    transfer = next(c for c in calls if c["status"] == "answered")
    assert transfer["employees"] == ["101:answered", "103:answered"]
    assert transfer["recordings"] == 2
    # Numbers are masked at info level by default.
    assert all("***" in c["number"] for c in calls)
    # What the log said is what the journal holds.
    final = {e.call.conversation_id: e for e in committed.entries}
    assert len(final) == 3
    assert sorted(e.status.value for e in final.values()) == ["answered", "no_answer", "reached"]


async def test_restarting_the_daemon_continues_with_the_same_database(tmp_path: Path) -> None:
    database = tmp_path / "journal.sqlite3"
    for slugs in (["01-incoming-answered-direct"], ["02-incoming-ringgroup-102-answers"]):
        pbx = FakePbx([capture(s) for s in slugs], speed=0)
        port = await pbx.start()
        daemon = Daemon(daemon_settings(port, database, slugs))
        committed = Committed(daemon)
        runner = asyncio.create_task(daemon.run())
        try:
            await committed.wait_for(1)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
        (entry,) = committed.entries
    assert daemon.journal is not None
    assert entry.id == 2  # the second run appended to the first run's journal
