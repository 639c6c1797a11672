"""Attacks on the AMI side: events about channels never created.

Real components: the sans-IO assembler, the daemon over a real TCP fake PBX and a SQLite
file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tracemalloc
from pathlib import Path

from structlog.testing import capture_logs

from connector.assembly import CallAssembler
from connector.events import AmiEvent
from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from tests.ami_helpers import wait_until
from tests.daemon_support import Committed, daemon_settings
from tests.scenarios import GRACE, assemble_capture, capture, events_of, new_assembler

# -- point 7: events about channels never created ------------------------------------

#: The events that used to create a channel (and a conversation) for any Uniqueid.
_KINDS = ("Newstate", "DialEnd", "BridgeEnter", "NewCallerid")


def _ghost_headers(kind: str, n: int) -> dict[str, str]:
    """Headers of an event about channel ``n``, which no Newchannel ever announced."""
    uniqueid = f"1700000000.{n}"
    headers = {
        "Event": kind,
        "Channel": f"IAX2/provider-{n:08x}",
        "ChannelState": "5",
        "ChannelStateDesc": "Ringing",
        "CallerIDNum": f"7916{n:07d}",
        "Exten": "100",
        "Uniqueid": uniqueid,
        "Linkedid": uniqueid,
    }
    if kind == "DialEnd":
        headers.update(
            DestChannel=f"PJSIP/101-{n:08x}",
            DestUniqueid=f"1700000001.{n}",
            DestLinkedid=uniqueid,
            DialStatus="ANSWER",
        )
    elif kind == "BridgeEnter":
        headers.update(BridgeUniqueid=f"bridge-{n}", BridgeType="basic")
    return headers


def _ghost(kind: str, n: int, at: float) -> AmiEvent:
    return AmiEvent(name=kind, time=at, headers=_ghost_headers(kind, n))


def _hangup(n: int, at: float) -> AmiEvent:
    headers = _ghost_headers("Hangup", n)
    headers.update(Cause="16", **{"Cause-txt": "Normal Clearing"})
    return AmiEvent(name="Hangup", time=at, headers=headers)


def test_events_about_channels_never_created_open_no_conversation() -> None:
    assembler = new_assembler()
    calls = []
    at = 1_000.0
    for n in range(100):
        at += 0.01
        calls += assembler.feed(_ghost(_KINDS[n % len(_KINDS)], n, at), at)
    assert assembler.open_conversations == 0
    assert assembler.open_channels == 0
    for n in range(100):
        at += 0.01
        calls += assembler.feed(_hangup(n, at), at)
    calls += assembler.expire(at + GRACE + 1.0)
    calls += assembler.close_all(at + GRACE + 2.0)
    assert calls == []
    assert assembler.stats.conversations_opened == 0
    assert assembler.stats.unknown_channel_events == 200
    assert assembler.take_changes() == ({}, set())


def test_unknown_channel_events_do_not_disturb_a_real_call() -> None:
    """Ghost events interleaved with a real capture: the capture's rows, nothing more."""
    expected = assemble_capture("02-incoming-ringgroup-102-answers")
    real = list(events_of(capture("02-incoming-ringgroup-102-answers").read_bytes()))
    mixed: list[AmiEvent] = []
    for n, event in enumerate(real):
        mixed.append(event)
        mixed.append(_ghost(_KINDS[n % len(_KINDS)], n, event.time))
    assembler = new_assembler()
    calls = []
    last = 0.0
    for event in mixed:
        last = max(last, event.time)
        calls += assembler.feed(event, last)
    calls += assembler.expire(last + GRACE + 0.001)
    assert calls == expected.calls
    assert assembler.stats.unknown_channel_events == len(real)


def test_a_flood_of_unknown_channel_events_keeps_memory_bounded() -> None:
    assembler = CallAssembler()
    flood = 100_000
    check_every = 5_000
    at = 2_000.0
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for n in range(flood):
            at += 0.001
            assembler.feed(_ghost(_KINDS[n % len(_KINDS)], n, at), at)
            if n % check_every == check_every - 1:
                grown = tracemalloc.get_traced_memory()[0] - baseline
                # A conversation held per ghost costs kilobytes: 5,000 of them, megabytes.
                assert grown < 1_000_000, f"{grown:,} bytes held after {n + 1:,} events"
                assert assembler.open_conversations == 0
    finally:
        tracemalloc.stop()
    assert assembler.stats.unknown_channel_events == flood
    assert assembler.close_all(at + 1.0) == []


def _ghost_wire(kind: str, n: int) -> bytes:
    lines = [f"{key}: {value}" for key, value in _ghost_headers(kind, n).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _hangup_wire(n: int) -> bytes:
    headers = _ghost_headers("Hangup", n)
    headers.update(Cause="16")
    return ("\r\n".join(f"{k}: {v}" for k, v in headers.items()) + "\r\n\r\n").encode()


def _journal_rows(database: Path) -> int:
    with sqlite3.connect(database) as db:
        (count,) = db.execute("SELECT count(*) FROM calls").fetchone()
    return int(count)


async def test_a_pbx_session_full_of_unknown_channel_events_writes_only_the_real_call(
    tmp_path: Path,
) -> None:
    slug = "01-incoming-answered-direct"
    database = tmp_path / "journal.sqlite3"
    pbx = FakePbx([capture(slug)], speed=0)
    pbx.hold()  # the capture waits until the ghosts are in
    port = await pbx.start()
    with capture_logs() as logs:
        daemon = Daemon(daemon_settings(port, database, [slug]))
        committed = Committed(daemon)
        runner = asyncio.create_task(daemon.run())
        try:
            await wait_until(lambda: any(line["event"] == "AMI resync" for line in logs), within=10)
            ghosts = b"".join(_ghost_wire(_KINDS[n % len(_KINDS)], n) for n in range(100))
            hangups = b"".join(_hangup_wire(n) for n in range(100))
            assert await pbx.inject(ghosts + hangups) == 1
            await wait_until(
                lambda: daemon.assembler.stats.unknown_channel_events == 200, within=10
            )
            pbx.release()
            await committed.wait_for(1)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    (entry,) = committed.entries
    assert entry.call.employees_answered == ("101",)
    assert _journal_rows(database) == 1
    assert daemon.assembler.open_conversations == 0
