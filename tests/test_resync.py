"""Resynchronisation (DESIGN 3.3): after every login the PBX's list of channels is the truth.

The daemon runs in-process against the fake PBX on a real TCP port; the fake loses the events
of an outage (``discard_until``) or dies without a word (``crash``), as a real network or PBX
would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from connector.events import AmiMessage
from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from tests.daemon_support import Committed, daemon_settings
from tests.scenarios import capture


def bridge_enter(channel_prefix: str, nth: int = 1) -> Callable[[AmiMessage], bool]:
    """Matches the ``nth`` BridgeEnter (counted from now) of a channel with that prefix."""
    seen = 0

    def match(message: AmiMessage) -> bool:
        nonlocal seen
        if message.event != "BridgeEnter" or not message.first("Channel").startswith(
            channel_prefix
        ):
            return False
        seen += 1
        return seen == nth

    return match


def phone_101_hangs_up(message: AmiMessage) -> bool:
    return message.event == "Hangup" and message.first("Channel").startswith("IAX2/101")


async def wait_for_log(logs: list[dict[str, Any]], event: str, count: int) -> None:
    for _ in range(200):
        if sum(1 for line in logs if line["event"] == event) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} {event!r} log lines")


async def test_transfer_during_an_outage_is_recovered_from_the_pbx_channel_list(
    tmp_path: Path,
) -> None:
    slug = "11-incoming-blind-transfer"
    pbx = FakePbx([capture(slug)], keep_time=True, speed=0)
    # Stop right after 101 answered, as the network fails.
    pbx.hold_when(bridge_enter("IAX2/provider"))
    port = await pbx.start()
    with capture_logs() as logs:
        daemon = Daemon(daemon_settings(port, tmp_path / "journal.sqlite3", [slug]))
        committed = Committed(daemon)
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(pbx.wait_held(), 10)
            await asyncio.sleep(0.2)  # the daemon has read everything up to the hold
            # The outage: the transfer to 103 and 103 answering happen while nobody listens.
            pbx.drop()
            pbx.discard_until(bridge_enter("IAX2/provider"), then_hold=True)
            pbx.release()
            # The daemon logs in again and looks while 103 talks with the customer.
            await wait_for_log(logs, "AMI resync", 2)
            pbx.release()
            await committed.wait_for(1)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    assert pbx.events_lost > 0
    (entry,) = committed.entries
    call = entry.call
    assert call.employees_answered == ("101", "103")
    assert call.answered and not call.approximate_end  # the end itself was seen
    # The second recording part started during the outage: Status reported its file.
    assert [p.path.rsplit("/", 1)[1] for p in call.recordings] == [
        "external-101-79057778899-20261128-034457-1795837497.40.wav",
        "external-103-79057778899-20261128-034509-1795837497.40.wav",
    ]
    assert len(entry.recordings) == 2
    resyncs = [line for line in logs if line["event"] == "AMI resync"]
    assert resyncs[-1]["live_channels"] == 2
    assert resyncs[-1]["pbx_restarted"] is False


async def test_pbx_crash_mid_call_closes_the_call_at_the_disconnect_marked_approximate(
    tmp_path: Path,
) -> None:
    slug = "01-incoming-answered-direct"
    pbx = FakePbx([capture(slug)], keep_time=True, speed=0)
    pbx.hold_when(bridge_enter("IAX2/provider"))
    port = await pbx.start()
    with capture_logs() as logs:
        daemon = Daemon(daemon_settings(port, tmp_path / "journal.sqlite3", [slug]))
        committed = Committed(daemon)
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(pbx.wait_held(), 10)
            await asyncio.sleep(0.2)
            pbx.crash()
            # The restarted PBX knows nothing of the call: none of its hangups is ever sent.
            pbx.discard_until(phone_101_hangs_up)
            pbx.release()
            await committed.wait_for(1)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    (entry,) = committed.entries
    call = entry.call
    assert call.approximate_end
    assert call.employees_answered == ("101",)
    assert daemon.assembler.open_conversations == 0
    resync = [line for line in logs if line["event"] == "AMI resync"][-1]
    assert resync["pbx_restarted"] is True
    assert resync["live_channels"] == 0


async def test_call_in_progress_when_the_daemon_starts_is_adopted(tmp_path: Path) -> None:
    slug = "01-incoming-answered-direct"
    pbx = FakePbx([capture(slug)], keep_time=True, speed=0)
    # Before anyone logs in, the call is already ringing and answered.
    pbx.discard_until(bridge_enter("IAX2/provider"), then_hold=True)
    port = await pbx.start()
    with capture_logs() as logs:
        daemon = Daemon(daemon_settings(port, tmp_path / "journal.sqlite3", [slug]))
        committed = Committed(daemon)
        runner = asyncio.create_task(daemon.run())
        try:
            await wait_for_log(logs, "AMI resync", 1)
            pbx.release()
            await committed.wait_for(1)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    (entry,) = committed.entries
    call = entry.call
    assert call.direction.value == "incoming"
    assert call.external_number == "79161234567"
    assert [(p.extension, p.role.value) for p in call.participants] == [("101", "answered")]
    assert not call.approximate_end
    assert len(entry.recordings) == 1  # from Status' MIXMONITOR_FILENAME


async def test_a_known_channel_dialled_during_an_outage_does_not_become_the_caller(
    tmp_path: Path,
) -> None:
    # Click-to-call: 101 answered, then the trunk channel is created and the Dial to it
    # happens while nobody listens. The channel list shows it as AppDial: it was called.
    slug = "18-click-to-call-originate"
    pbx = FakePbx([capture(slug)], keep_time=True, speed=0)
    pbx.hold_when(
        lambda m: m.event == "Newchannel" and m.first("Channel").startswith("IAX2/provider")
    )
    port = await pbx.start()
    with capture_logs() as logs:
        daemon = Daemon(daemon_settings(port, tmp_path / "journal.sqlite3", [slug]))
        committed = Committed(daemon)
        runner = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(pbx.wait_held(), 10)
            await asyncio.sleep(0.2)
            pbx.drop()
            pbx.discard_until(
                lambda m: (
                    m.event == "DialBegin" and m.first("DestChannel").startswith("IAX2/provider")
                ),
                then_hold=True,
            )
            pbx.release()
            # The daemon logs in again and looks while the customer's phone rings.
            await wait_for_log(logs, "AMI resync", 2)
            pbx.release()
            await committed.wait_for(1)
        finally:
            daemon.stop()
            await asyncio.wait_for(runner, 10)
            await pbx.close()
    assert pbx.events_lost > 0
    resync = [line for line in logs if line["event"] == "AMI resync"][-1]
    assert resync["live_channels"] == 4  # the Local pair, 101 and the trunk
    (entry,) = committed.entries
    call = entry.call
    assert call.direction.value == "outgoing"
    assert call.employees_answered == ("101",)
    assert call.external_number is not None and call.external_number.endswith("9857001234")
    assert not call.approximate_end
