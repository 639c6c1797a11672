"""The PBX's clock, as the daemon reads it. Sans-IO: it is handed the clocks it reads.

Theory of operation
-------------------
A journal row is dated by the PBX, not by the host the daemon runs on: the two can disagree
by days (a PBX without NTP, a wrong RTC after a reboot), and mixing them closes every call the
moment it opens (a conversation "born" older than ``max_call_duration``). So there is exactly
one clock, the PBX's:

* an event with a ``Timestamp`` (``timestampevents = yes``) is dated by it, and that stamp
  anchors the clock: between events, the PBX's time is the last stamp plus the host's
  *monotonic* time elapsed since it arrived;
* an event without one is dated on the same clock (:meth:`PbxClock.date`), never by the host's
  wall clock;
* before any stamp has arrived (a PBX with ``timestampevents = no``), the host's wall clock is
  read once and then advanced monotonically, so the clock never jumps when the host's does.

A *step* of the PBX's clock (NTP correcting it, an admin running ``date -s``) is a stamp that
disagrees with where the clock should be by more than ``forward`` seconds ahead or
``backward`` seconds behind. :meth:`PbxClock.observe` returns its size once; the daemon logs it
and moves the open conversations by it (``CallAssembler.shift_clock``), so that a step neither
expires nor closes nor reorders them and their durations count the time the PBX really spent.

A step is only recognised once the PBX's clock has *run with the host's* (within
``tolerance``) for ``settle`` seconds. A stream faster than real time — a capture replayed
at full speed, where minutes of PBX time pass in milliseconds — never does, and its gaps are
taken as they come rather than as steps. The monotonic time is the time each message was
*received* (not handled), so a backlog in the daemon is not mistaken for a step either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from connector.events import AmiEvent

__all__ = [
    "STEP_BACKWARD_SECONDS",
    "STEP_FORWARD_SECONDS",
    "PbxClock",
]

#: A stamp this far ahead of where the PBX's clock should be is a forward step...
STEP_FORWARD_SECONDS = 60.0
#: ...and this far behind, a backward step (smaller: a PBX never stamps far in the past).
STEP_BACKWARD_SECONDS = 10.0
#: The PBX's clock runs with the host's while it stays this close to it...
RUNNING_TOLERANCE_SECONDS = 2.0
#: ...and only after this long together are its jumps steps rather than a fast replay.
SETTLE_SECONDS = 1.0


class PbxClock:
    """One clock for the PBX's time: stamped events, unstamped ones and the timers.

    ``monotonic`` and ``wall`` are the host's clocks (``time.monotonic``/``loop.time`` and
    ``time.time`` in the daemon; anything in a test).
    """

    def __init__(
        self,
        monotonic: Callable[[], float],
        wall: Callable[[], float],
        *,
        forward: float = STEP_FORWARD_SECONDS,
        backward: float = STEP_BACKWARD_SECONDS,
        tolerance: float = RUNNING_TOLERANCE_SECONDS,
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._forward = forward
        self._backward = backward
        self._tolerance = tolerance
        self._settle = settle
        #: (PBX time, monotonic time) of the last anchor; None before the first reading.
        self._anchor: tuple[float, float] | None = None
        #: True once a PBX stamp has been seen (the anchor is the PBX's, not the host's).
        self.stamped = False
        #: (PBX time, monotonic time) since when the PBX's clock has run with the host's.
        self._together: tuple[float, float] | None = None
        #: The monotonic time of the last reading that agreed with ``_together``.
        self._confirmed = 0.0
        #: Steps seen, and their total (seconds; forward positive).
        self.steps = 0
        self.stepped_seconds = 0.0
        #: The PBX's clock minus the host's wall clock at the first stamp (None: no stamp).
        self.host_offset: float | None = None

    # -- reading -----------------------------------------------------------------------

    def now(self, at: float | None = None) -> float:
        """The PBX's time at monotonic time ``at`` (default: now)."""
        mono = self._monotonic() if at is None else at
        anchor = self._anchor
        if anchor is None:
            # No stamp yet: the host's wall clock, read once and advanced monotonically.
            anchor = self._anchor = (self._wall(), mono)
        return anchor[0] + (mono - anchor[1])

    def date(self, event: AmiEvent) -> tuple[AmiEvent, float]:
        """The event dated on this clock, and the size of a clock step it revealed (0.0).

        A stamped event keeps its time (and moves the clock); an unstamped one gets the
        clock's time at its receipt (``event.received``; now, when that is unknown).
        """
        at = event.received or None
        if event.timestamped:
            return event, self.observe(event.time, at)
        return replace(event, time=self.now(at)), 0.0

    def observe(self, stamp: float, at: float | None = None) -> float:
        """A reading of the PBX's clock (``stamp``) taken at monotonic time ``at``.

        Returns the size of the step it reveals (positive: the clock jumped forward), or 0.0.
        """
        mono = self._monotonic() if at is None else at
        if not self.stamped:
            self.stamped = True
            self.host_offset = stamp - (self._wall() - (self._monotonic() - mono))
            self._anchor = (stamp, mono)
            self._together = (stamp, mono)
            self._confirmed = mono
            return 0.0
        anchor = self._anchor
        assert anchor is not None  # set with ``stamped``
        expected = anchor[0] + (mono - anchor[1])
        deviation = stamp - expected
        together = self._together
        # Settled: events *seen* to agree with the host's clock over ``settle`` seconds (a
        # silence proves nothing: a replay that paused has not run with the host).
        settled = together is not None and self._confirmed - together[1] >= self._settle
        # A stamp a little behind (events stamped out of order by a few ms) does not move
        # the clock back; one further behind does (a replay that paused, a step).
        small_lag = -self._tolerance <= deviation < 0
        self._anchor = (expected if small_lag else stamp, mono)
        if settled and (deviation > self._forward or deviation < -self._backward):
            self.steps += 1
            self.stepped_seconds += deviation
            # The clock runs with the host's again from the new reading on.
            self._together = (stamp, mono)
            self._confirmed = mono
            self._anchor = (stamp, mono)
            return deviation
        if together is None or abs(stamp - (together[0] + (mono - together[1]))) > self._tolerance:
            self._together = (stamp, mono)
        self._confirmed = mono
        return 0.0
