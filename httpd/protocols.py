"""What the HTTP app asks of the daemon it runs in (the daemon implements these).

A stateless HTTP front end (several of them on one PostgreSQL, DESIGN section 4) runs
without them: ``/live`` then says it has no PBX to ask, ``/healthz`` checks the database
only, and ``/metrics`` shows the HTTP side only.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from connector.live import LiveConversation

__all__ = [
    "DaemonStatus",
    "LiveCalls",
    "OriginateOrder",
    "OriginateState",
    "OriginateStatus",
    "OriginateUnavailable",
    "Originator",
]


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


class OriginateUnavailable(Exception):
    """The PBX cannot be asked now (the AMI is down, or it did not answer the action)."""


class OriginateState(enum.Enum):
    """Where a click-to-call is, with the label the web journal shows."""

    RINGING_EMPLOYEE = "ringing_employee"
    DIALLING_CUSTOMER = "dialling_customer"
    TALKING = "talking"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def label(self) -> str:
        return _STATE_LABELS[self]

    @property
    def final(self) -> bool:
        return self in (OriginateState.FINISHED, OriginateState.FAILED)


_STATE_LABELS = {
    OriginateState.RINGING_EMPLOYEE: "Звонит ваш телефон",
    OriginateState.DIALLING_CUSTOMER: "Набираем клиента",
    OriginateState.TALKING: "Разговор",
    OriginateState.FINISHED: "Звонок завершён",
    OriginateState.FAILED: "Не удалось",
}


@dataclass(frozen=True, slots=True)
class OriginateOrder:
    """A click-to-call checked by the API: whose phone to ring, what to dial."""

    employee_id: str
    extension: str
    employee_name: str
    #: E.164, as the journal stores numbers.
    number: str
    #: What the PBX dials (``originate.exten`` applied to the number).
    exten: str
    #: What the employee's phone shows while it rings: the customer's name or the number.
    display: str
    callback_of: int | None
    #: The API client (or ``web:<login>``) that asked, for the log.
    client: str
    #: The number is a returned call's withheld one: never logged.
    withheld: bool = False


@dataclass(frozen=True, slots=True)
class OriginateStatus:
    id: str
    state: OriginateState
    order: OriginateOrder
    created_at: float
    updated_at: float
    #: Why it failed: the PBX's words (its ``Message``, or the meaning of ``Reason``).
    reason: str | None = None
    #: ``OriginateResponse``'s ``Reason`` (3: no answer, 5: busy, 8: congestion, ...).
    reason_code: int | None = None
    #: The conversation on the PBX (its linkedid) and, once written, its journal row.
    linkedid: str | None = None
    call_id: int | None = None


class Originator(Protocol):
    """Click-to-call through the daemon's AMI session (``POST /api/v1/originate``)."""

    async def originate(self, order: OriginateOrder) -> OriginateStatus:
        """Send the ``Originate``; the status once the PBX answered the action (``failed``
        when it refused it). Raises :class:`OriginateUnavailable` when it cannot be asked."""
        ...

    def status(self, originate_id: str) -> OriginateStatus | None: ...

    def for_conversation(self, linkedid: str) -> OriginateStatus | None: ...
