"""Over a real AMI session the journal is the same as offline.

The captures are served by the fake PBX on a real TCP port, read by the panoramisk-based
transport, and fed to the assembler; the calls that come out must equal those of the offline
replay, field for field.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from config import AmiSettings
from connector.ami import AmiConnector
from connector.assembly import FinishedCall
from connector.clock import PbxClock
from connector.events import AmiEvent
from connector.fakepbx import FakePbx
from tests.scenarios import (
    GRACE,
    all_slugs,
    assemble_capture,
    capture,
    events_of,
    new_assembler,
    same_call_on_another_clock,
)

SETTINGS = AmiSettings(
    host="127.0.0.1",
    port=0,
    username="journal",
    secret="s3cret",
    connect_timeout=5.0,
    action_timeout=5.0,
    ping_interval=30.0,
    ping_timeout=5.0,
    reconnect_min=0.05,
    reconnect_max=0.2,
)


async def assemble_live(slug: str, *, keep_time: bool = True) -> list[FinishedCall]:
    # The events the offline replay sees, minus the captured login's FullyBooted: the fake
    # PBX sends its own at login.
    wanted = sum(1 for e in events_of(capture(slug).read_bytes()) if e.name != "FullyBooted")
    pbx = FakePbx(
        [capture(slug)], username="journal", secret="s3cret", speed=0, keep_time=keep_time
    )
    port = await pbx.start()
    assembler = new_assembler()
    # The daemon's clock: the PBX's, whatever the host's says.
    clock = PbxClock(time.monotonic, time.time)
    calls: list[FinishedCall] = []
    seen = 0
    last = 0.0
    done = asyncio.Event()

    def handle(event: AmiEvent) -> None:
        nonlocal last, seen
        event, step = clock.date(event)
        assert step == 0.0  # a replay at full speed is never taken for a clock step
        if event.name != "FullyBooted":
            seen += 1
        last = max(last, event.time)
        calls.extend(assembler.feed(event, max(clock.now(), event.time)))
        if seen >= wanted:
            done.set()

    connector = AmiConnector(replace(SETTINGS, port=port), handle)
    runner = asyncio.create_task(connector.run())
    try:
        await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        await connector.close()
        await runner
        await pbx.close()
    assert connector.stats.handler_errors == 0
    assert connector.stats.malformed == 0
    calls.extend(assembler.expire(last + GRACE + 0.001))
    return calls


@pytest.mark.parametrize("slug", [s for s in all_slugs() if not s.startswith("00")])
async def test_live_session_gives_the_same_calls_as_offline_replay(slug: str) -> None:
    offline = assemble_capture(slug).calls
    live = await assemble_live(slug)
    assert len(live) == len(offline)
    assert sorted(live, key=lambda c: c.conversation_id) == sorted(
        offline, key=lambda c: c.conversation_id
    )


@pytest.mark.parametrize("slug", ["11-incoming-blind-transfer", "15-missed-then-callback"])
async def test_a_replay_on_todays_clock_gives_the_same_calls_dated_today(slug: str) -> None:
    """The fake PBX's default: the captured clock moved so that the stream starts now."""
    offline = sorted(assemble_capture(slug).calls, key=lambda c: c.conversation_id)
    before = time.time()
    live = sorted(await assemble_live(slug, keep_time=False), key=lambda c: c.conversation_id)
    assert len(live) == len(offline)
    deltas = [same_call_on_another_clock(a, b) for a, b in zip(live, offline, strict=True)]
    delta = deltas[0]
    # One shift for the whole stream (to the microsecond the PBX stamps with).
    assert max(deltas) - min(deltas) <= 2e-6, deltas
    first = min(c.started_at for c in offline)
    # Dated now, not on the day of the capture: the first call starts within seconds of the
    # stream (at full speed the stream's clock runs ahead of the host's).
    assert abs(first + delta - before) < 60.0
