"""The PBX's clock (connector.clock) and the assembler under it, sans-IO.

The clock is handed the host's clocks, so each test sets them itself: a PBX days ahead of or
behind the host, a host whose wall clock jumps, a PBX whose clock NTP steps while calls are
up. None of this depends on today's date. The same cases over a real AMI session with the
real daemon are in tests/test_daemon_clock.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from connector.assembly import FinishedCall
from connector.clock import PbxClock
from connector.events import AmiEvent
from tests.scenarios import (
    GRACE,
    assemble_capture,
    capture,
    events_of,
    new_assembler,
    same_call_on_another_clock,
)

HOST_WALL = 2_000_000_000.0  # the host's wall clock at the start of each test
DAY = 86_400.0


class HostClocks:
    """The host's two clocks, moved by the test."""

    def __init__(self, wall: float = HOST_WALL, mono: float = 500.0) -> None:
        self.wall_time = wall
        self.mono_time = mono

    def wall(self) -> float:
        return self.wall_time

    def monotonic(self) -> float:
        return self.mono_time

    def advance(self, seconds: float) -> None:
        self.wall_time += seconds
        self.mono_time += seconds


def stamped(at: float, received: float = 0.0, name: str = "Newstate") -> AmiEvent:
    return AmiEvent(name=name, time=at, headers={}, timestamped=True, received=received)


def unstamped(receive_wall: float, received: float = 0.0, name: str = "Newstate") -> AmiEvent:
    """What the transport makes of an event without ``Timestamp``: the host's wall time."""
    return AmiEvent(name=name, time=receive_wall, headers={}, timestamped=False, received=received)


# -- reading the clock -------------------------------------------------------------------


def test_before_any_stamp_the_hosts_wall_clock_is_read_once_then_runs_monotonically() -> None:
    host = HostClocks()
    clock = PbxClock(host.monotonic, host.wall)
    assert clock.now() == HOST_WALL
    host.mono_time += 10.0
    host.wall_time += 3600.0  # the host's clock is stepped: the PBX's time does not jump
    assert clock.now() == HOST_WALL + 10.0
    event, step = clock.date(unstamped(host.wall_time))
    assert (event.time, step) == (HOST_WALL + 10.0, 0.0)
    assert not clock.stamped


@pytest.mark.parametrize("pbx_ahead", [3 * DAY, -3 * DAY])
def test_an_event_without_timestamp_is_dated_by_the_pbx_clock_not_the_hosts(
    pbx_ahead: float,
) -> None:
    host = HostClocks()
    clock = PbxClock(host.monotonic, host.wall)
    pbx = HOST_WALL + pbx_ahead
    event, step = clock.date(stamped(pbx))
    assert (event.time, step) == (pbx, 0.0)
    assert clock.host_offset == pytest.approx(pbx_ahead)
    host.advance(0.75)
    event, step = clock.date(unstamped(host.wall_time))
    assert event.time == pytest.approx(pbx + 0.75)
    assert not event.timestamped and step == 0.0
    assert clock.now() == pytest.approx(pbx + 0.75)


def test_an_unstamped_event_is_dated_when_it_was_received_not_when_it_is_handled() -> None:
    host = HostClocks()
    clock = PbxClock(host.monotonic, host.wall)
    pbx = HOST_WALL - DAY
    clock.date(stamped(pbx, received=host.mono_time))
    received = host.mono_time + 0.2
    host.advance(5.0)  # a backlog: handled 4.8 s after it arrived
    event, _ = clock.date(unstamped(host.wall_time, received=received))
    assert event.time == pytest.approx(pbx + 0.2)


def test_a_stamp_a_few_ms_out_of_order_does_not_move_the_clock_back() -> None:
    host = HostClocks()
    clock = PbxClock(host.monotonic, host.wall)
    clock.date(stamped(1000.0))
    host.advance(0.5)
    clock.date(stamped(1000.5))
    _, step = clock.date(stamped(1000.495))
    assert step == 0.0
    assert clock.now() == pytest.approx(1000.5)


# -- steps -------------------------------------------------------------------------------


def run_together(clock: PbxClock, host: HostClocks, pbx: float, seconds: float) -> float:
    """The PBX's clock running with the host's: an event every 100 ms."""
    for _ in range(int(seconds * 10)):
        host.advance(0.1)
        pbx += 0.1
        _, step = clock.date(stamped(pbx, received=host.mono_time))
        assert step == 0.0
    return pbx


@pytest.mark.parametrize("size", [7200.0, -7200.0, 61.0, -11.0])
def test_a_step_of_the_pbx_clock_is_reported_once_with_its_size(size: float) -> None:
    host = HostClocks()
    clock = PbxClock(host.monotonic, host.wall)
    pbx = run_together(clock, host, HOST_WALL + DAY, 3.0)
    host.advance(0.004)  # two events a few ms apart
    _, step = clock.date(stamped(pbx + 0.004 + size, received=host.mono_time))
    assert step == pytest.approx(size)
    assert clock.steps == 1
    # The clock runs on from the new reading; the next events are no step.
    run_together(clock, host, pbx + 0.004 + size, 3.0)
    assert clock.steps == 1
    assert clock.stepped_seconds == pytest.approx(size)


@pytest.mark.parametrize("size", [59.0, -9.0])
def test_a_jump_below_the_thresholds_is_no_step(size: float) -> None:
    host = HostClocks()
    clock = PbxClock(host.monotonic, host.wall)
    pbx = run_together(clock, host, HOST_WALL, 3.0)
    _, step = clock.date(stamped(pbx + size, received=host.mono_time))
    assert step == 0.0 and clock.steps == 0


def test_a_replay_faster_than_real_time_is_never_taken_for_steps() -> None:
    """Minutes of the capture's time in milliseconds: gaps, not steps."""
    host = HostClocks()
    clock = PbxClock(host.monotonic, host.wall)
    pbx = HOST_WALL - 400 * DAY
    for index in range(20_000):  # 20 s of the host's time; 40 days of the PBX's
        host.advance(0.001)
        pbx += 600.0 if index % 50 == 0 else 0.5
        _, step = clock.date(stamped(pbx, received=host.mono_time))
        assert step == 0.0
    # A replay that pauses (the fake PBX waiting for a login) is no step either.
    host.advance(120.0)
    _, step = clock.date(stamped(pbx + 0.1, received=host.mono_time))
    assert step == 0.0 and clock.steps == 0


# -- the assembler under a stepped clock (the daemon's handle, sans-IO) ------------------


def replay_in_real_time(
    events: list[AmiEvent],
    *,
    pbx_ahead: float = 0.0,
    step_at: int | None = None,
    step: float = 0.0,
    strip: int = 0,
) -> tuple[list[FinishedCall], PbxClock]:
    """Feed events as the daemon does (clock.date, shift_clock on a step, feed at the
    clock's time), as if they arrived at the capture's own pace. ``pbx_ahead`` moves the
    PBX's clock against the host's; from event ``step_at`` on, the PBX's clock is ``step``
    seconds later; with ``strip`` every ``strip``-th event has no ``Timestamp``."""
    first = next(e.time for e in events if e.timestamped)
    host = HostClocks(wall=first - pbx_ahead, mono=100.0)
    clock = PbxClock(host.monotonic, host.wall)
    # The daemon's resync pings at login, before the first event is handled: the answer's
    # Timestamp anchors the clock (the login's FullyBooted is never stamped).
    clock.observe(first, host.mono_time)
    assembler = new_assembler()
    calls: list[FinishedCall] = []
    for index, original in enumerate(events):
        pbx_time = original.time if original.timestamped else first
        host.wall_time = pbx_time - pbx_ahead
        host.mono_time = 100.0 + (pbx_time - first)
        moved = original.time + (step if step_at is not None and index >= step_at else 0.0)
        if strip and index % strip == 1:
            event = replace(
                original, time=host.wall_time, timestamped=False, received=host.mono_time
            )
        else:
            event = replace(original, time=moved, received=host.mono_time)
        event, stepped = clock.date(event)
        if stepped:
            assembler.shift_clock(stepped)
        calls.extend(assembler.feed(event, max(clock.now(), event.time)))
    host.mono_time += GRACE + 0.001
    calls.extend(assembler.expire(clock.now()))
    return calls, clock


def answered_index(events: list[AmiEvent]) -> int:
    """Just after the second BridgeEnter: the customer talks with an employee."""
    entered = [i for i, e in enumerate(events) if e.name == "BridgeEnter"]
    return entered[1] + 1


@pytest.mark.parametrize("size", [2 * 3600.0, -2 * 3600.0])
@pytest.mark.parametrize(
    "slug", ["01-incoming-answered-direct", "11-incoming-blind-transfer", "10-internal-101-to-102"]
)
def test_a_clock_step_during_a_call_leaves_its_row_and_talk_time_as_they_were(
    slug: str, size: float
) -> None:
    events = list(events_of(capture(slug).read_bytes()))
    offline = assemble_capture(slug).calls
    live, clock = replay_in_real_time(events, step_at=answered_index(events), step=size)
    assert clock.steps == 1 and clock.stepped_seconds == pytest.approx(size)
    (call,) = live
    (want,) = offline
    # The call open across the step is dated by the new clock, as a whole.
    assert same_call_on_another_clock(call, want) == pytest.approx(size)
    assert call.talk_seconds == pytest.approx(want.talk_seconds)
    assert not call.approximate_end


@pytest.mark.parametrize("pbx_ahead", [3 * DAY, -3 * DAY])
def test_a_pbx_clock_days_off_with_stamped_and_unstamped_events_gives_the_same_rows(
    pbx_ahead: float,
) -> None:
    slug = "11-incoming-blind-transfer"
    events = list(events_of(capture(slug).read_bytes()))
    (want,) = assemble_capture(slug).calls
    (call,), clock = replay_in_real_time(events, pbx_ahead=pbx_ahead, strip=3)
    assert clock.steps == 0
    assert clock.host_offset == pytest.approx(pbx_ahead)
    # Unstamped events are dated by when they arrived, on the PBX's clock: here, exactly.
    assert same_call_on_another_clock(call, want) == 0.0
    assert not call.approximate_end
