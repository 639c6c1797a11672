"""The daemon on a PBX whose clock is not the host's: days ahead or behind, events with and
without ``Timestamp`` mixed, an NTP-like step of two hours while a call is up.

Real components: the fake PBX on a real TCP port at the captures' own pace (a clock step is
only a step against a clock that ran with the host's), the daemon in-process with its SQLite
journal. Each scenario must give the journal row of the offline replay of the same capture,
dated by the PBX, with the same talk time. The scenarios run side by side (each has its own
PBX, daemon and database), so the suite waits for the capture's length once.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connector.capture import iter_capture_messages
from connector.events import AmiMessage
from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from storage.journal import JournalEntry
from tests.daemon_support import Committed, daemon_settings
from tests.scenarios import assemble_capture, assert_moved_call, capture

SLUG = "01-incoming-answered-direct"
DAY = 86_400.0
STEP = 2 * 3600.0
#: Unstamped events are dated by when they arrived: within this of the PBX's own stamps.
TOLERANCE = 0.15
_STAMP_LINE = re.compile(rb"\r\nTimestamp: [0-9.]+")


@dataclass
class Scenario:
    name: str
    clock_offset: float = 0.0
    step: float = 0.0
    #: Every n-th message of the capture loses its ``Timestamp`` (0: none does).
    strip_every: int = 0


@dataclass
class Outcome:
    entries: list[JournalEntry]
    daemon: Daemon
    started: float  # the host's time when the PBX's stream started
    first_stamp: float  # the capture's first Timestamp


def without_some_stamps(source: Path, target: Path, every: int) -> Path:
    """A copy of a capture in which every ``every``-th message has no ``Timestamp``, with a
    recvlog of one read per message at the original read's time (so it keeps its pace)."""
    out = bytearray()
    lines = []
    banner = source.read_bytes().split(b"\r\n", 1)[0] + b"\r\n"
    out += banner
    lines.append(f"0.0 0 {len(banner)}")
    messages = list(iter_capture_messages(source))
    first_time = next(m.receive_time for m in messages if m.receive_time is not None)
    lines[0] = f"{first_time:.6f} 0 {len(banner)}"
    for index, message in enumerate(messages):
        raw = message.raw
        if index % every == every - 1 and raw.startswith(b"Event:"):
            raw = _STAMP_LINE.sub(b"", raw, count=1)
        data = raw + b"\r\n\r\n"
        lines.append(f"{message.receive_time:.6f} {len(out)} {len(data)}")
        out += data
    target.write_bytes(bytes(out))
    target.with_name(target.name + ".recvlog").write_text("\n".join(lines) + "\n", "ascii")
    return target


def second_bridge_enter() -> object:
    seen = 0

    def predicate(message: AmiMessage) -> bool:
        nonlocal seen
        if message.event == "BridgeEnter":
            seen += 1
        return seen == 2

    return predicate


async def run(scenario: Scenario, tmp_path: Path, starting: asyncio.Lock) -> Outcome:
    folder = tmp_path / scenario.name
    folder.mkdir()
    source = capture(SLUG)
    if scenario.strip_every:
        source = without_some_stamps(source, folder / f"{SLUG}.ami", scenario.strip_every)
    pbx = FakePbx([source], speed=1.0, clock_offset=scenario.clock_offset)
    if scenario.step:
        pbx.hold_when(second_bridge_enter())  # type: ignore[arg-type]
    port = await pbx.start()
    daemon = Daemon(daemon_settings(port, folder / "journal.sqlite3", [SLUG]))
    committed = Committed(daemon)
    async with starting:  # Alembic's migration context is one per process: one at a time
        started = time.time()
        runner = asyncio.create_task(daemon.run())
        for _ in range(2000):  # its journal open (migrated): at most 20 s
            if daemon.journal is not None or runner.done():
                break
            await asyncio.sleep(0.01)
    try:
        if scenario.step:
            # The customer talks with 101: the PBX's clock is stepped under the call.
            await asyncio.wait_for(pbx.wait_held(), 30)
            pbx.step_clock(scenario.step)
            pbx.release()
        await asyncio.wait_for(pbx.wait_done(), 60)
        await committed.wait_for(1, seconds=20)
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 15)
        await pbx.close()
    stamps = [m.raw for m in iter_capture_messages(capture(SLUG))]
    first = next(float(s.group(1)) for r in stamps if (s := re.search(rb"Timestamp: ([0-9.]+)", r)))
    return Outcome(committed.entries, daemon, started, first)


SCENARIOS = [
    Scenario("pbx-3-days-ahead-mixed-stamps", clock_offset=3 * DAY, strip_every=3),
    Scenario("pbx-3-days-behind-mixed-stamps", clock_offset=-3 * DAY, strip_every=3),
    Scenario("ntp-step-forward-2h", step=STEP),
    Scenario("ntp-step-back-2h", step=-STEP),
]


async def test_the_journal_is_the_pbxs_whatever_its_clock_says(tmp_path: Path) -> None:
    (want,) = assemble_capture(SLUG).calls
    with capture_logs() as logs:
        starting = asyncio.Lock()
        outcomes = await asyncio.gather(*(run(s, tmp_path, starting) for s in SCENARIOS))
    for scenario, outcome in zip(SCENARIOS, outcomes, strict=True):
        (entry,) = outcome.entries
        call = entry.call
        # The same row as the offline replay, dated by the PBX: the capture's clock moved to
        # the stream's start (today, the PBX's offset from the host) and by the step.
        delta = assert_moved_call(call, want, tolerance=TOLERANCE)
        expected = outcome.started + scenario.clock_offset - outcome.first_stamp + scenario.step
        assert delta == pytest.approx(expected, abs=5.0), scenario.name
        assert call.talk_seconds == pytest.approx(want.talk_seconds, abs=TOLERANCE)
        assert not call.approximate_end, scenario.name
        assert entry.status.value == "answered", scenario.name
        assert outcome.daemon.assembler.stats.conversations_expired == 0, scenario.name
    steps = sorted(e["step_seconds"] for e in logs if e["event"].startswith("PBX clock stepped"))
    assert steps == pytest.approx([-STEP, STEP], abs=1.0)  # once each, with its size
    offsets = sorted(
        e["pbx_ahead_seconds"] for e in logs if e["event"].startswith("PBX clock differs")
    )
    assert offsets == pytest.approx([-3 * DAY, 3 * DAY], abs=5.0)
