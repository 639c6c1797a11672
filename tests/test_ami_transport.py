"""The AMI transport against a real TCP peer: the FakePbx replaying real captures."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from connector.ami import (
    AmiActionTimeout,
    AmiConnector,
    AmiDisconnected,
    AmiLoginError,
    SessionEvent,
    open_session,
)
from connector.events import AmiEvent, AmiMessage
from connector.fakepbx import FakePbx
from tests.ami_helpers import (
    Recorder,
    ami_settings,
    comparable,
    running,
    serving,
    streamed_events,
    trace,
    wait_until,
)

CYRILLIC_NAMES = {
    b"Ivanova Anna": "Иванова Анна".encode(),
    b"Petrov Ivan": "Петров Иван".encode(),
    b"Sidorova Maria": "Сидорова Мария".encode(),
    b"Kuznetsov Dmitry": "Кузнецов Дмитрий".encode(),
    b"Smirnova Olga": "Смирнова Ольга".encode(),
}


def split_inside_characters(data: bytes) -> Iterator[bytes]:
    """Pieces of 1–3 bytes around every non-ASCII byte, so each multi-byte letter is cut.

    Every lead byte of a UTF-8 sequence ends a piece: the rest of its letter starts the
    next one.
    """
    start = 0
    for index, byte in enumerate(data):
        if byte >= 0xC0:  # a lead byte: cut right after it
            if index - start > 3:
                yield data[start : index - 1]
                start = index - 1
            yield data[start : index + 1]
            start = index + 1
    if start < len(data):
        yield data[start:]


def cuts_a_character(read: bytes) -> bool:
    try:
        read.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


async def test_cyrillic_names_arrive_intact_when_every_letter_is_split_between_reads(
    tmp_path: Path,
) -> None:
    data = trace("10").read_bytes()
    for latin, cyrillic in CYRILLIC_NAMES.items():
        data = data.replace(latin, cyrillic)
    capture = tmp_path / "10-cyrillic.ami"  # no recvlog: the byte offsets changed
    capture.write_bytes(data)
    expected = streamed_events(capture)
    assert any(e.get("CallerIDName") == "Иванова Анна" for e in expected)

    reads: list[bytes] = []
    recorder = Recorder()
    async with serving(
        FakePbx([capture], keep_time=True, speed=0, chunker=split_inside_characters)
    ) as fake:
        connector = AmiConnector(
            ami_settings(fake.port), recorder, tap=lambda _t, chunk: reads.append(chunk)
        )
        async with running(connector):
            await fake.wait_done()
            await wait_until(lambda: len(comparable(recorder.events)) == len(expected))

    assert comparable(recorder.events) == comparable(expected)
    names = {e.get("CallerIDName") for e in recorder.events} | {
        e.get("ConnectedLineName") for e in recorder.events
    }
    assert "Иванова Анна" in names
    assert not any("\ufffd" in v for e in recorder.events for v in e.headers.values())
    # The reads really did end inside letters: the framer, not luck, kept them whole.
    assert sum(cuts_a_character(read) for read in reads) > 100


async def test_a_handler_exception_is_logged_and_counted_and_the_next_events_still_arrive() -> None:
    recorder = Recorder()

    def handler(event: AmiEvent) -> None:
        if event.name == "Newchannel" and event.get("Uniqueid") == "1795837371.0":
            raise RuntimeError("assembler bug")
        recorder(event)

    async with serving(FakePbx([trace("01")], keep_time=True, speed=0)) as fake:
        connector = AmiConnector(ami_settings(fake.port), handler)
        with structlog.testing.capture_logs() as logs:
            async with running(connector):
                await wait_until(lambda: "Hangup" in recorder.names() and len(recorder.events) > 5)
                await wait_until(lambda: recorder.names().count("Hangup") == 2)
                stats = connector.stats
                assert stats.handler_errors == 1
                await wait_until(lambda: connector.stats.connected)
        assert fake.connections == 1
    assert stats.reconnects == 0
    failures = [entry for entry in logs if entry["event"] == "AMI event handler failed"]
    assert len(failures) == 1
    assert failures[0]["event_name"] == "Newchannel"
    assert failures[0]["uniqueid"] == "1795837371.0"
    assert failures[0]["log_level"] == "error"
    # Everything after the failing event came through, on the same connection.
    expected = comparable(streamed_events(trace("01")))[1:]
    assert comparable(recorder.events) == expected


async def test_a_rejected_login_says_which_user_and_retries_at_the_slowest_pace() -> None:
    async with serving(FakePbx([], username="journal", secret="right")) as fake:
        settings = ami_settings(fake.port, secret="wrong", reconnect_min=0.01, reconnect_max=0.3)
        with pytest.raises(AmiLoginError) as caught:
            await open_session(settings)
        assert str(caught.value) == (
            f"AMI login rejected for user 'journal' at 127.0.0.1:{fake.port}: Authentication failed"
        )

        connector = AmiConnector(settings, Recorder())
        with structlog.testing.capture_logs() as logs:
            async with running(connector):
                await asyncio.sleep(1.0)
    errors = [e for e in logs if e["log_level"] == "error"]
    # Attempts at 0, ~0.3, ~0.6, ~0.9 s: each one logged, none in a tight loop.
    assert 3 <= connector.stats.login_failures <= 5
    assert len(errors) == connector.stats.login_failures
    assert all("AMI login rejected for user 'journal'" in e["event"] for e in errors)
    assert all(e["retry_in"] == 0.3 for e in errors)
    assert not connector.stats.connected


async def test_unreachable_pbx_is_retried_with_exponential_backoff() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ami_settings(port, reconnect_min=0.02, reconnect_max=0.16)
    connector = AmiConnector(settings, Recorder())
    with structlog.testing.capture_logs() as logs:
        async with running(connector):
            await wait_until(lambda: connector.stats.connect_attempts >= 6)
    delays = [e["retry_in"] for e in logs if e["event"] == "AMI connection failed"][:5]
    bases = [0.04, 0.08, 0.16, 0.16, 0.16]
    for delay, base in zip(delays, bases, strict=True):
        assert 0.75 * base - 0.001 <= delay <= base + 0.001


async def test_the_ping_watchdog_drops_a_connection_whose_pbx_stopped_answering() -> None:
    recorder = Recorder()
    async with serving(FakePbx([])) as fake:
        settings = ami_settings(fake.port, ping_interval=0.2, ping_timeout=0.15)
        connector = AmiConnector(settings, recorder, on_session=recorder.on_session)
        async with running(connector):
            await wait_until(lambda: recorder.count("connected") == 1)
            await asyncio.sleep(0.3)  # pings are answered: nothing happens
            assert recorder.count("disconnected") == 0

            loop = asyncio.get_running_loop()
            fake.ignore_actions.add("ping")
            silent_since = loop.time()
            await wait_until(lambda: recorder.count("disconnected") == 1)
            detected_after = loop.time() - silent_since
            fake.ignore_actions.clear()
            await wait_until(lambda: recorder.count("connected") == 2)

    assert detected_after <= 0.2 + 0.15 + 0.1
    assert "no answer to Ping within 0.15 s" in recorder.sessions[1].reason
    assert fake.connections == 2
    assert connector.stats.reconnects == 1


async def test_after_a_drop_the_pending_action_fails_is_never_resent_and_the_stream_resumes() -> (
    None
):
    recorder = Recorder()
    async with serving(FakePbx([trace("01")], keep_time=True, speed=0)) as fake:
        fake.hold_when(lambda m: m.event == "DialBegin")
        settings = ami_settings(fake.port, reconnect_min=0.2, reconnect_max=1.0)
        connector = AmiConnector(settings, recorder, on_session=recorder.on_session)
        async with running(connector):
            await fake.wait_held()
            await wait_until(lambda: "DialBegin" in recorder.names())
            fake.ignore_actions.add("status")
            pending = asyncio.create_task(connector.send_action({"Action": "Status"}, timeout=10))
            await wait_until(lambda: _actions(fake, "Status") == 1)

            fake.drop()
            with pytest.raises(AmiDisconnected, match="lost before Status was answered"):
                await pending
            await wait_until(lambda: recorder.count("connected") == 2)
            fake.release()
            await fake.wait_done()
            await wait_until(lambda: recorder.names().count("Hangup") == 2)
            await asyncio.sleep(0.1)  # room for a wrongly re-sent action to show up

    assert _actions(fake, "Status") == 1
    assert fake.connections == 2
    assert connector.stats.reconnects == 1
    disconnected, reconnected = recorder.sessions[1], recorder.sessions[2]
    assert reconnected.at - disconnected.at >= 0.2  # reconnect_min, not at once
    # The stream went on where it was: every event once, in order (it was held, so none
    # fell into the gap).
    assert comparable(recorder.events) == comparable(streamed_events(trace("01")))


def _actions(fake: FakePbx, name: str) -> int:
    return sum(1 for m in fake.actions_received if m.first("Action") == name)


async def test_an_unanswered_action_times_out_and_the_connection_stays() -> None:
    async with serving(FakePbx([])) as fake:
        connector = AmiConnector(ami_settings(fake.port), Recorder())
        async with running(connector):
            await wait_until(lambda: connector.stats.connected)
            fake.ignore_actions.add("status")
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(AmiActionTimeout, match=r"Status .* within 0\.2 s"):
                await connector.send_action({"Action": "Status"}, timeout=0.2)
            assert 0.2 <= loop.time() - started < 0.5
            (pong,) = await connector.send_action({"Action": "Ping"})
            assert pong.first("Ping") == "Pong"
    assert fake.connections == 1


async def test_core_show_channels_in_the_middle_of_a_call_lists_the_channels_alive_then() -> None:
    bridged: list[AmiMessage] = []

    def second_bridge_enter(message: AmiMessage) -> bool:
        if message.event == "BridgeEnter":
            bridged.append(message)
        return len(bridged) == 2

    async with serving(FakePbx([trace("01")], keep_time=True, speed=0)) as fake:
        fake.hold_when(second_bridge_enter)
        connector = AmiConnector(ami_settings(fake.port), Recorder())
        async with running(connector):
            await fake.wait_held()
            await wait_until(lambda: connector.stats.connected)
            messages = await connector.send_action(
                {"Action": "CoreShowChannels", "ActionID": "resync-1"}
            )
            fake.release()
            await fake.wait_done()
            after = await connector.send_action({"Action": "CoreShowChannels"})

    response, *channels, complete = messages
    assert response.first("EventList") == "start"
    assert complete.event == "CoreShowChannelsComplete"
    assert complete.first("ListItems") == "2"
    assert {m.first("ActionID") for m in messages} == {"resync-1"}
    by_uniqueid = {m.first("Uniqueid"): m for m in channels}
    assert set(by_uniqueid) == {"1795837371.0", "1795837371.1"}
    trunk, phone = by_uniqueid["1795837371.0"], by_uniqueid["1795837371.1"]
    assert trunk.first("Channel") == "IAX2/provider-9127"
    assert phone.first("Channel") == "IAX2/101-14268"
    for channel in (trunk, phone):
        assert channel.first("ChannelStateDesc") == "Up"
        assert channel.first("Linkedid") == "1795837371.0"
        assert channel.first("BridgeId") == bridged[0].first("BridgeUniqueid")
        assert channel.first("Duration").count(":") == 2
    assert trunk.first("CallerIDNum") == "79161234567"
    assert phone.first("Application") == "AppDial"
    # When the capture is over, every channel has hung up.
    assert [m.event for m in after[1:]] == ["CoreShowChannelsComplete"]
    assert after[-1].first("ListItems") == "0"


async def test_capture_00_plays_as_a_pbx_restart_shutdown_then_a_fresh_session() -> None:
    recorder = Recorder()
    async with serving(FakePbx([trace("00")], keep_time=True, speed=0)) as fake:
        connector = AmiConnector(ami_settings(fake.port), recorder, on_session=recorder.on_session)
        async with running(connector):
            await wait_until(lambda: recorder.names().count("FullyBooted") == 2)
            await fake.wait_done()

    timeline = [
        item.kind if isinstance(item, SessionEvent) else item.name for item in recorder.timeline
    ]
    assert timeline == [
        "connected",
        "FullyBooted",
        "Reload",
        "Shutdown",
        "disconnected",
        "connected",
        "FullyBooted",
        "disconnected",  # close() at the end of the test
    ]
    first_boot, second_boot = (e for e in recorder.events if e.name == "FullyBooted")
    assert first_boot.get("Uptime") == "3600"
    assert second_boot.get("Uptime") == "0"
    assert [s.uptime for s in recorder.sessions] == [3600.0, None, 0.0, None]
    assert "Shutdown" in recorder.sessions[1].reason
    assert recorder.sessions[3].reason == "connector closed"
    assert fake.connections == 2
    assert connector.stats.reconnects == 1


async def test_malformed_messages_are_counted_and_skipped_on_a_connection_that_stays_up() -> None:
    recorder = Recorder()
    valid = b"Event: Newchannel\r\nChannel: IAX2/101-1\r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\n\r\n"
    async with serving(FakePbx([])) as fake:
        connector = AmiConnector(ami_settings(fake.port), recorder)
        async with running(connector):
            await wait_until(lambda: connector.stats.connected and len(recorder.events) == 1)
            with structlog.testing.capture_logs() as logs:
                await fake.inject(b"\x00\x01\xff\xfe\x80 line noise\r\n\r\n")
                await fake.inject(b"no colon here\r\nnor here\r\n\r\n")
                await fake.inject(b"Privilege: call,all\r\nChannel: no event name\r\n\r\n")
                await fake.inject(
                    b"Event: Newchannel\r\nChannel: " + b"x" * 1_048_576 + b"\r\n\r\n"
                )
                await fake.inject(valid)
                await wait_until(lambda: len(recorder.events) == 2)
            (pong,) = await connector.send_action({"Action": "Ping"})

    assert connector.stats.malformed == 4
    assert recorder.events[1].get("Uniqueid") == "1.1"
    assert pong.first("Ping") == "Pong"
    assert fake.connections == 1
    # The first is logged at once; the others wait for the summary (tests/test_security_ami.py).
    (line,) = [e for e in logs if "malformed" in e["event"] or "size limit" in e["event"]]
    assert line["skipped"] == 1


async def test_an_async_session_hook_can_query_the_pbx_while_live_events_wait() -> None:
    recorder = Recorder()
    listed: list[list[AmiMessage]] = []

    async def resynchronise(event: SessionEvent) -> None:
        recorder.on_session(event)
        if event.kind == "connected":
            listed.append(await connector.send_action({"Action": "CoreShowChannels"}))
            await asyncio.sleep(0.05)  # the stream keeps coming meanwhile
            recorder.timeline.append(SessionEvent("connected", 0.0, "resynchronised"))

    async with serving(FakePbx([trace("01")], keep_time=True, speed=0)) as fake:
        connector = AmiConnector(ami_settings(fake.port), recorder, on_session=resynchronise)
        async with running(connector):
            await fake.wait_done()
            await wait_until(lambda: recorder.names().count("Hangup") == 2)

    assert [m.event for m in listed[0][1:]] == ["CoreShowChannelsComplete"]
    # Nothing reached the handler before the hook was done; then everything, in order.
    first, second = recorder.timeline[:2]
    assert isinstance(first, SessionEvent) and first.kind == "connected"
    assert isinstance(second, SessionEvent) and second.reason == "resynchronised"
    assert comparable(recorder.events) == comparable(streamed_events(trace("01")))
    assert connector.stats.queue_high_water > 10


async def test_a_server_that_never_sends_a_banner_times_out_and_close_does_not_wait() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TimeoutError, match=r"banner of the AMI at .* within 0\.2 s"):
            await open_session(ami_settings(port, connect_timeout=0.2))

        connector = AmiConnector(ami_settings(port, connect_timeout=30.0), Recorder())
        task = asyncio.create_task(connector.run())
        await wait_until(lambda: len(held) == 2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await connector.close()
        await task
        assert loop.time() - started < 0.5
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
