"""What the HTTP app asks of the daemon it runs in (the daemon implements these).

A stateless HTTP front end (several of them on one PostgreSQL, DESIGN section 4) runs
without them: ``/live`` then says it has no PBX to ask, ``/healthz`` checks the database
only, and ``/metrics`` shows the HTTP side only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from connector.live import LiveConversation

__all__ = ["DaemonStatus", "LiveCalls"]


class LiveCalls(Protocol):
    """The conversations open in the daemon's assembler now.

    The daemon passes e.g. ``lambda: connector.live.snapshot(pipeline.assembler)``. It is
    called on the event loop and must not block (the snapshot is a walk over in-memory state).
    """

    def __call__(self) -> Sequence[LiveConversation]: ...


class DaemonStatus(Protocol):
    """Counters and state for ``/healthz`` and ``/metrics``, read at request time."""

    @property
    def ami_connected(self) -> bool: ...

    @property
    def events_received(self) -> int:
        """AMI messages received since start (``AmiStats.messages_received``)."""
        ...

    @property
    def calls_written(self) -> int:
        """Finished calls written to the journal since start."""
        ...
