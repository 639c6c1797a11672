"""A real PBX restart (capture ``00-connect-and-reconnect``): ``Shutdown``, the connection
closed by Asterisk, a new session whose ``FullyBooted`` says ``Uptime: 0``.

The daemon runs in-process against the fake PBX, which plays the capture as Asterisk did: it
sends the ``Shutdown``, closes the connection, forgets its channels and accepts the next login
with a fresh uptime. The daemon must reconnect, resynchronise, say that the PBX restarted, and
keep nothing open — neither in the assembler nor in the ``open_conversations`` table.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector.capture import iter_capture_messages
from connector.fakepbx import BANNER, FakePbx
from pbxjournal.daemon import Daemon
from tests.daemon_support import Committed, daemon_settings
from tests.scenarios import capture

RESTART = "00-connect-and-reconnect"


async def _wait(predicate: Any, what: str, seconds: float = 15.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _journal(database: Path) -> tuple[list[tuple[str, int]], int]:
    """(conversation id, approximate_end) of every row, and the open_conversations count."""
    with closing(sqlite3.connect(database)) as connection:
        rows = connection.execute("SELECT conversation_id, approximate_end FROM calls").fetchall()
        (left,) = connection.execute("SELECT count(*) FROM open_conversations").fetchone()
    return [(str(c), int(a)) for c, a in rows], int(left)


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == name]


@pytest.mark.parametrize("speed", [0, 4])
async def test_the_pbx_restart_capture_reconnects_resyncs_and_leaves_nothing_open(
    tmp_path: Path, speed: float
) -> None:
    database = tmp_path / "journal.sqlite3"
    pbx = FakePbx([capture(RESTART)], keep_time=True, speed=speed)
    port = await pbx.start()
    # Back after 1.2 s: the new PBX reports Uptime 1, longer than the outage its own clock
    # shows (the fake's clock is its stream, which waits for the login). The Shutdown is
    # what tells the restart apart, as it does when the clocks are off on a real PBX.
    slow = {"PBXJOURNAL_AMI__RECONNECT_MIN": "1.2", "PBXJOURNAL_AMI__RECONNECT_MAX": "1.2"}
    with capture_logs() as logs:
        daemon = Daemon(daemon_settings(port, database, extra=slow))
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(pbx.wait_done(), 15)
            await _wait(
                lambda: any(r["pbx_restarted"] for r in _events(logs, "AMI resync")),
                "the resync after the restart",
            )
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    assert pbx.logins == 2  # the daemon logged in again after Asterisk closed the session
    (shutdown,) = _events(logs, "PBX shutting down")
    assert (shutdown["shutdown"], shutdown["restart"]) == ("Cleanly", "True")
    disconnects = _events(logs, "AMI disconnected")
    assert "Shutdown" in disconnects[0]["reason"]
    resyncs = _events(logs, "AMI resync")
    # At real pace the first session lives 6 s and is resynchronised too: no restart then.
    # As fast as possible the Shutdown cuts the first resync short.
    assert [r["pbx_restarted"] for r in resyncs] == ([True] if speed == 0 else [False, True])
    assert resyncs[-1]["live_channels"] == 0
    assert daemon.assembler.open_conversations == 0
    assert _journal(database) == ([], 0)


def _call_then_restart(directory: Path) -> tuple[Path, float]:
    """Capture 01 up to the moment 101 answers, then the Shutdown and the new session of
    capture 00, moved in time to follow it: Asterisk restarts in the middle of the call."""
    call = [m.raw for m in iter_capture_messages(capture("01-incoming-answered-direct"))]
    answered = next(
        i
        for i, raw in enumerate(call)
        if raw.startswith(b"Event: BridgeEnter") and b"Channel: IAX2/provider" in raw
    )
    stamp = max(
        float(line.partition(b": ")[2])
        for raw in call[: answered + 1]
        for line in raw.split(b"\r\n")
        if line.startswith(b"Timestamp: ")
    )
    restart = [m.raw for m in iter_capture_messages(capture(RESTART))]
    shutdown_at = next(i for i, raw in enumerate(restart) if raw.startswith(b"Event: Shutdown"))
    old_shutdown = 1795837358.810966
    shift = stamp + 2.0 - old_shutdown

    def moved(raw: bytes) -> bytes:
        return b"\r\n".join(
            b"Timestamp: %.6f" % (float(line.partition(b": ")[2]) + shift)
            if line.startswith(b"Timestamp: ")
            else line
            for line in raw.split(b"\r\n")
        )

    second_session = [moved(raw) for raw in restart[shutdown_at + 1 :]]
    path = directory / "call-then-restart.ami"
    with path.open("wb") as out:
        out.write(BANNER)
        for raw in call[: answered + 1]:
            out.write(raw + b"\r\n\r\n")
        out.write(moved(restart[shutdown_at]) + b"\r\n\r\n")
        out.write(BANNER)
        for raw in second_session:
            out.write(raw + b"\r\n\r\n")
    return path, old_shutdown + shift


async def test_a_call_up_when_the_pbx_restarts_is_written_once_marked_approximate(
    tmp_path: Path,
) -> None:
    database = tmp_path / "journal.sqlite3"
    stream, shutdown_at = _call_then_restart(tmp_path)
    pbx = FakePbx([stream], keep_time=True, speed=0)
    port = await pbx.start()
    with capture_logs() as logs:
        daemon = Daemon(daemon_settings(port, database, ["01-incoming-answered-direct"]))
        committed = Committed(daemon)
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(pbx.wait_done(), 15)
            await committed.wait_for(1)
            await _wait(
                lambda: any(r["pbx_restarted"] for r in _events(logs, "AMI resync")),
                "the resync after the restart",
            )
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    assert pbx.logins == 2
    (entry,) = committed.entries
    call = entry.call
    assert call.approximate_end  # its end was never seen: Asterisk went down with it
    assert call.ended_at == pytest.approx(shutdown_at)
    assert call.answered and call.employees_answered == ("101",)
    (shutdown,) = _events(logs, "PBX shutting down")
    assert shutdown["open_conversations"] == 1
    resync = _events(logs, "AMI resync")[-1]
    assert resync["pbx_restarted"] is True
    assert (resync["live_channels"], resync["open_channels"]) == (0, 0)
    assert daemon.assembler.open_conversations == 0
    assert _journal(database) == ([(call.conversation_id, 1)], 0)
