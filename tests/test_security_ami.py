"""Attacks on the AMI side: events about channels never created, floods of malformed
messages, a PBX that accepts the login and hangs up at once.

Real components: the sans-IO assembler, the daemon over a real TCP fake PBX and a SQLite
file, a bare asyncio server for the PBX that drops every session.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import structlog
from structlog.testing import capture_logs

from connector.ami import AmiConnector
from connector.assembly import CallAssembler
from connector.events import AmiEvent
from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from tests.ami_helpers import Recorder, ami_settings, running, serving, wait_until
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


# -- point 11 (a): a flood of malformed messages is counted, and logged at a bounded rate --

_MALFORMED = "malformed AMI message skipped"


def _malformed_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == _MALFORMED]


async def test_a_flood_of_malformed_messages_is_counted_exactly_and_logged_a_few_times() -> None:
    flood = 20_000
    recorder = Recorder()
    async with serving(FakePbx([])) as fake:
        connector = AmiConnector(ami_settings(fake.port), recorder, on_session=recorder.on_session)
        connector.malformed_log_interval = 3600.0  # no summary falls due during the test
        with capture_logs() as logs:
            async with running(connector):
                await wait_until(lambda: recorder.count("connected") == 1)
                assert await fake.inject(b"no header here\r\n\r\n" * flood) == 1
                await wait_until(lambda: connector.stats.malformed == flood, within=20)
                # The connection stays up; a good event still goes through.
                await fake.inject(b"Event: Reload\r\nModule: x\r\n\r\n")
                await wait_until(lambda: "Reload" in recorder.names())
            lines = _malformed_lines(logs)
    assert connector.stats.malformed == flood
    # The first one as it happens, then one summary when the connector stops.
    assert len(lines) == 2
    assert [line["skipped"] for line in lines] == [1, flood - 1]
    assert lines[-1]["total"] == flood
    assert all(line["log_level"] == "warning" for line in lines)


async def test_malformed_messages_are_summarised_once_per_interval() -> None:
    recorder = Recorder()
    async with serving(FakePbx([])) as fake:
        connector = AmiConnector(ami_settings(fake.port), recorder, on_session=recorder.on_session)
        connector.malformed_log_interval = 0.2
        with capture_logs() as logs:
            async with running(connector):
                await wait_until(lambda: recorder.count("connected") == 1)
                await fake.inject(b"no header here\r\n\r\n" * 500)
                # The summary comes on its own, without another malformed message.
                await wait_until(lambda: len(_malformed_lines(logs)) == 2)
                summary = _malformed_lines(logs)[1]
                assert summary["skipped"] == 499 and summary["total"] == 500
                # A quiet interval later, the next one is logged at once again.
                await wait_until(lambda: not connector.malformed_log_pending)
                await fake.inject(b"still no header\r\n\r\n")
                await wait_until(lambda: len(_malformed_lines(logs)) == 3)
            lines = _malformed_lines(logs)
    assert [line["skipped"] for line in lines] == [1, 499, 1]
    assert connector.stats.malformed == 501


# -- point 11 (b): a PBX that accepts the login and drops at once --------------------

_BANNER = b"Asterisk Call Manager/9.0.0\r\n"


class _DropAfterLogin:
    """A real AMI server that accepts every login, says FullyBooted, waits ``hold`` seconds
    and closes the connection; it notes when each connection came."""

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.accepted: list[float] = []
        self.closed: list[float] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        self.accepted.append(loop.time())
        try:
            writer.write(_BANNER)
            login = await reader.readuntil(b"\r\n\r\n")
            action_id = next(
                (line for line in login.split(b"\r\n") if line.startswith(b"ActionID:")), b""
            )
            writer.write(
                b"Response: Success\r\n"
                + action_id
                + b"\r\nMessage: Authentication accepted\r\n\r\n"
                + b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 100\r\n"
                + b"LastReload: 100\r\nStatus: Fully Booted\r\n\r\n"
            )
            await writer.drain()
            if self.hold:
                await asyncio.sleep(self.hold)  # the session's lifetime, not a synchronisation
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.append(loop.time())
            writer.close()


async def test_a_pbx_that_drops_every_session_at_once_is_retried_with_growing_delays() -> None:
    server = _DropAfterLogin()
    port = await server.start()
    recorder = Recorder()
    settings = ami_settings(port, reconnect_min=0.05, reconnect_max=0.8)
    connector = AmiConnector(settings, recorder, on_session=recorder.on_session)
    try:
        with structlog.testing.capture_logs():
            async with running(connector):
                await wait_until(lambda: len(server.accepted) >= 6, within=10)
    finally:
        await server.close()
    assert recorder.count("connected") >= 5  # each session did log in
    gaps = [b - a for a, b in zip(server.accepted, server.accepted[1:], strict=False)][:5]
    # 0.1, 0.2, 0.4, 0.8, 0.8 s, each minus up to 25 % jitter (and the session's few ms).
    bases = [0.1, 0.2, 0.4, 0.8, 0.8]
    for gap, base in zip(gaps, bases, strict=True):
        assert gap >= 0.75 * base - 0.01, gaps
    assert server.accepted[5] - server.accepted[0] >= 0.75 * sum(bases) - 0.05


async def test_a_session_that_stayed_up_resets_the_backoff() -> None:
    server = _DropAfterLogin(hold=0.35)
    port = await server.start()
    recorder = Recorder()
    settings = ami_settings(port, reconnect_min=0.05, reconnect_max=2.0)
    connector = AmiConnector(settings, recorder, on_session=recorder.on_session)
    connector.stable_session_seconds = 0.3
    try:
        with structlog.testing.capture_logs():
            async with running(connector):
                await wait_until(lambda: len(server.accepted) >= 4, within=10)
    finally:
        await server.close()
    # Every session lasted longer than 0.3 s: each reconnect waits reconnect_min again
    # (growing, the third would wait 0.3 s or more).
    waits = [server.accepted[i + 1] - server.closed[i] for i in range(3)]
    assert all(wait < 0.25 for wait in waits), waits


def test_the_backoff_stays_at_reconnect_max_after_any_number_of_failures() -> None:
    """A PBX down for days: thousands of failures in a row (2.0 ** 1024 overflows)."""
    settings = ami_settings(1, reconnect_min=1.0, reconnect_max=60.0)
    connector = AmiConnector(settings, Recorder())
    for failures in (10, 1_100, 100_000):
        assert 45.0 <= connector._backoff(failures) <= 60.0
