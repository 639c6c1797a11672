"""The daemon behind a backlog: events received but not yet handled must not let a
conversation's grace period run out early.

The fake PBX plays capture 09 (102 dials out, busy) and then a channel of 101 joining the same
conversation (its ``Linkedid``) a second after the last hangup, inside ``pbx.hangup_grace``
(3 s): one conversation, one row. In the second run the PBX never answers the resync's
``Ping``, so the consumer waits ``ami.action_timeout`` (6 s) before it handles the
first event while the whole stream arrives and queues. Handled late, each event is still
dated by the PBX, and the assembler must reach the same single row: the grace period is
measured up to when an event was *received*, not up to when it is handled (the daemon's clock
runs 6 s ahead of the queued events by then).

Real components: the fake PBX on a real TCP port at the capture's pace, the daemon
in-process with its SQLite journal, read back from the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from tests.daemon_support import daemon_settings
from tests.scenarios import capture

LINKEDID = "1795837482.33"
LAST_STAMP = 1795837482.517758


def _late_channel(stamp: float, name: str) -> bytes:
    headers = (
        f"Event: {name}\r\nPrivilege: call,all\r\nTimestamp: {stamp:.6f}\r\n"
        "Channel: IAX2/101-14271\r\nChannelState: 6\r\nChannelStateDesc: Up\r\n"
        "CallerIDNum: 101\r\nCallerIDName: <unknown>\r\nConnectedLineNum: <unknown>\r\n"
        "ConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\n"
        "Context: from-internal\r\nExten: 102\r\nPriority: 1\r\n"
        f"Uniqueid: 1795837483.40\r\nLinkedid: {LINKEDID}\r\n"
    )
    if name == "Hangup":
        headers += "Cause: 16\r\nCause-txt: Normal Clearing\r\n"
    return (headers + "\r\n").encode()


def _stream(tmp_path: Path) -> Path:
    """Capture 09 and the late channel, paced by their Timestamps (no recvlog)."""
    path = tmp_path / "09-and-a-late-channel.ami"
    path.write_bytes(
        capture("09-outgoing-busy").read_bytes()
        + _late_channel(LAST_STAMP + 1.0, "Newchannel")
        + _late_channel(LAST_STAMP + 1.5, "Hangup")
    )
    return path


def _rows(database: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(database) as db:
        return db.execute(
            "SELECT c.conversation_id, c.direction, c.number, c.status, c.answered, "
            "round(c.ended_at - c.started_at, 3), "
            "(SELECT group_concat(p.extension, ',') FROM "
            " (SELECT extension FROM call_participants WHERE call_id = c.id ORDER BY extension) p)"
            " FROM calls c ORDER BY c.id"
        ).fetchall()


async def _journal_of(tmp_path: Path, *, consumer_lags: bool) -> list[tuple[object, ...]]:
    pbx = FakePbx([_stream(tmp_path)], speed=1)
    if consumer_lags:
        pbx.ignore_actions = {"ping"}
    port = await pbx.start()
    database = tmp_path / "journal.sqlite3"
    settings = daemon_settings(port, database, extra={"PBXJOURNAL_AMI__ACTION_TIMEOUT": "6s"})
    daemon = Daemon(settings)
    runner = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(pbx.wait_done(), 30)
        # Every event received and handled (the lagging run handles its backlog after the
        # action's timeout); then the stop finishes what waits out its grace period.
        for _ in range(400):
            if daemon.connector.backlog == 0 and pbx.events_sent and daemon.assembler.stats.events:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        # Behind the unanswered Ping, every event of the stream waited in the queue at once.
        queued_at_once = daemon.connector.stats.queue_high_water >= daemon.assembler.stats.events
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 30)
        await pbx.close()
    assert queued_at_once == consumer_lags
    return _rows(database)


async def test_a_late_channel_joins_its_conversation_even_when_handled_behind_a_backlog(
    tmp_path: Path,
) -> None:
    (tmp_path / "on-time").mkdir()
    (tmp_path / "behind").mkdir()
    on_time = await _journal_of(tmp_path / "on-time", consumer_lags=False)
    behind = await _journal_of(tmp_path / "behind", consumer_lags=True)
    assert len(on_time) == 1, on_time
    ((conversation, direction, _number, _status, _answered, ended, _extensions),) = on_time
    assert (conversation, direction) == (LINKEDID, "outgoing")
    assert ended == 1.506  # the late channel's Hangup ends the conversation
    # Before the fix the conversation was closed at 09's last hangup, and the late channel
    # made a second conversation of the same linkedid: an internal ghost row of 101 that
    # replaced the outgoing call.
    assert behind == on_time
