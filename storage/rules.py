"""The journal's rules (DESIGN section 1) as pure functions.

The daemon decides every status and flag; 1C only shows them. The rules need facts that only
the journal's history knows (was the number registered when the call ended? did the journal
hold an earlier call with it? did an answered contact follow within the attention window?).
They receive those facts as arguments, so the same functions serve the in-memory journal of
``pbxjournal replay`` and the SQL store, and the tests can state each case in one line.

Nothing here reads the clock or imports I/O: ``now`` is a parameter.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from connector.assembly import Direction

__all__ = [
    "STATUS_LABELS",
    "AttentionWindow",
    "Evaluation",
    "NumberFacts",
    "Status",
    "evaluate",
    "is_later_contact",
]


class Status(enum.Enum):
    ANSWERED = "answered"
    REACHED = "reached"
    NO_ANSWER = "no_answer"
    LOST = "lost"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return STATUS_LABELS[self]

    @property
    def missed(self) -> bool:
        return self in (Status.NO_ANSWER, Status.LOST)


#: The labels 1C shows (the user guide's badges).
STATUS_LABELS: dict[Status, str] = {
    Status.ANSWERED: "Принят",
    Status.REACHED: "Дозвонились",
    Status.NO_ANSWER: "Нет ответа",
    Status.LOST: "Потерян",
    Status.CANCELLED: "Отменен",
}


@dataclass(frozen=True, slots=True)
class AttentionWindow:
    """How long after a missed call a later contact still counts as handling it.

    Either a fixed number of seconds, or ``end_of_day``: until local midnight (in the PBX's
    time zone) of the day the missed call ended.
    """

    seconds: float | None
    end_of_day: bool
    timezone: ZoneInfo

    @classmethod
    def fixed(cls, seconds: float, timezone: ZoneInfo) -> AttentionWindow:
        return cls(seconds=seconds, end_of_day=False, timezone=timezone)

    @classmethod
    def until_end_of_day(cls, timezone: ZoneInfo) -> AttentionWindow:
        return cls(seconds=None, end_of_day=True, timezone=timezone)

    @property
    def definition(self) -> str:
        """What decides every window, as the journal records it (``journal_state``): the
        fixed length, or ``end_of_day`` and the time zone whose midnight closes it. Two
        windows with the same definition give every call the same verdict."""
        if not self.end_of_day:
            return f"fixed {self.seconds or 0.0:g}s"
        return f"end_of_day {self.timezone.key}"

    @property
    def longest(self) -> float:
        """An upper bound of ``closes_at(t) - t`` for any ``t``: how far before a contact the
        missed calls it may handle can have ended (the SQL store's bounded reads). A local day
        is at most 25 hours in any zone; two days leave room for any odd transition."""
        if not self.end_of_day:
            return max(self.seconds or 0.0, 0.0)
        return 2 * 86400.0

    def closes_at(self, missed_ended_at: float) -> float:
        """Epoch seconds at which the window of a call that ended then closes."""
        if not self.end_of_day:
            return missed_ended_at + (self.seconds or 0.0)
        local = datetime.fromtimestamp(missed_ended_at, self.timezone)
        next_midnight = datetime.combine(
            local.date() + timedelta(days=1), datetime.min.time(), tzinfo=self.timezone
        )
        return next_midnight.timestamp()


@dataclass(frozen=True, slots=True)
class NumberFacts:
    """What the journal knows about a call's external number."""

    #: Bound to a customer or a contact person when the call ended.
    registered: bool
    #: The journal holds a call with this number that started before this one.
    earlier_calls: bool
    #: Start of the first *answered* call (either direction) with this number that began
    #: after this call ended, if any.
    later_contact_at: float | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    status: Status
    attention: bool
    first_contact: bool
    #: When the attention window closes (missed calls only).
    window_closes_at: float | None
    #: True once nothing can change the status any more: the window closed or a later
    #: contact arrived in time (or the call was never missed).
    settled: bool


def is_later_contact(
    missed_ended_at: float, contact_started_at: float, window: AttentionWindow
) -> bool:
    """Whether an answered call starting then handles a missed call that ended then."""
    return missed_ended_at <= contact_started_at <= window.closes_at(missed_ended_at)


def evaluate(
    *,
    direction: Direction,
    answered: bool,
    ended_at: float,
    has_number: bool,
    facts: NumberFacts,
    window: AttentionWindow,
    now: float,
) -> Evaluation:
    """Status and flags of one call, given the facts about its number and the time now."""
    first_contact = has_number and not facts.registered and not facts.earlier_calls
    if direction is not Direction.INCOMING:
        status = Status.REACHED if answered else Status.CANCELLED
        return Evaluation(status, False, first_contact, None, True)
    if answered:
        return Evaluation(Status.ANSWERED, False, first_contact, None, True)
    closes_at = window.closes_at(ended_at)
    handled = facts.later_contact_at is not None and is_later_contact(
        ended_at, facts.later_contact_at, window
    )
    if handled:
        return Evaluation(Status.NO_ANSWER, False, first_contact, closes_at, True)
    status = Status.NO_ANSWER if facts.registered else Status.LOST
    return Evaluation(status, True, first_contact, closes_at, now >= closes_at)
