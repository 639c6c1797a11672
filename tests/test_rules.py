"""The journal rules of DESIGN section 1, case by case, with explicit times."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from connector.assembly import Direction
from storage.rules import (
    STATUS_LABELS,
    AttentionWindow,
    NumberFacts,
    Status,
    evaluate,
    is_later_contact,
)

MSK = ZoneInfo("Europe/Moscow")
DAY = AttentionWindow.fixed(24 * 3600, MSK)
EOD = AttentionWindow.until_end_of_day(MSK)


def at(text: str) -> float:
    """Epoch seconds of a Moscow wall-clock time."""
    return datetime.fromisoformat(text).replace(tzinfo=MSK).timestamp()


def missed(facts: NumberFacts, *, window: AttentionWindow = DAY, now: str = "2026-11-28 12:00"):
    return evaluate(
        direction=Direction.INCOMING,
        answered=False,
        ended_at=at("2026-11-28 10:00"),
        has_number=True,
        facts=facts,
        window=window,
        now=at(now),
    )


def test_labels_are_the_russian_badges_of_the_user_guide() -> None:
    assert {s.value: STATUS_LABELS[s] for s in Status} == {
        "answered": "Принят",
        "reached": "Дозвонились",
        "no_answer": "Нет ответа",
        "lost": "Потерян",
        "cancelled": "Отменен",
    }


@pytest.mark.parametrize(
    ("direction", "answered", "status"),
    [
        (Direction.INCOMING, True, Status.ANSWERED),
        (Direction.OUTGOING, True, Status.REACHED),
        (Direction.OUTGOING, False, Status.CANCELLED),
        (Direction.INTERNAL, True, Status.REACHED),
        (Direction.INTERNAL, False, Status.CANCELLED),
    ],
)
def test_status_of_answered_and_outgoing_calls(
    direction: Direction, answered: bool, status: Status
) -> None:
    result = evaluate(
        direction=direction,
        answered=answered,
        ended_at=0.0,
        has_number=direction is not Direction.INTERNAL,
        facts=NumberFacts(registered=False, earlier_calls=True),
        window=DAY,
        now=1.0,
    )
    assert result.status is status
    assert result.attention is False
    assert result.settled is True


@pytest.mark.parametrize(
    ("facts", "status", "attention"),
    [
        # unregistered, nobody called back: lost and needs attention
        (NumberFacts(registered=False, earlier_calls=False), Status.LOST, True),
        # registered customer: no_answer from the start, still needs attention
        (NumberFacts(registered=True, earlier_calls=True), Status.NO_ANSWER, True),
        # answered contact 30 s after: handled
        (
            NumberFacts(False, False, later_contact_at=at("2026-11-28 10:00:30")),
            Status.NO_ANSWER,
            False,
        ),
        # answered contact 23 h later: still inside a 24 h window
        (
            NumberFacts(False, False, later_contact_at=at("2026-11-29 09:00")),
            Status.NO_ANSWER,
            False,
        ),
        # answered contact 25 h later: too late, stays lost with attention
        (NumberFacts(False, False, later_contact_at=at("2026-11-29 11:00")), Status.LOST, True),
        # registered, called back in time
        (NumberFacts(True, True, later_contact_at=at("2026-11-28 11:00")), Status.NO_ANSWER, False),
    ],
)
def test_missed_incoming_call_with_24h_window(
    facts: NumberFacts, status: Status, attention: bool
) -> None:
    result = missed(facts)
    assert (result.status, result.attention) == (status, attention)


def test_end_of_day_window_closes_at_moscow_midnight() -> None:
    assert EOD.closes_at(at("2026-11-28 10:00")) == at("2026-11-29 00:00")
    # 23:59 Moscow is 20:59 UTC: the day still ends at Moscow midnight, one minute later.
    assert EOD.closes_at(at("2026-11-28 23:59")) == at("2026-11-29 00:00")


@pytest.mark.parametrize(
    ("contact", "handled"),
    [("2026-11-28 23:59:59", True), ("2026-11-29 00:00:01", False)],
)
def test_end_of_day_call_back_before_and_after_midnight(contact: str, handled: bool) -> None:
    result = missed(NumberFacts(False, False, later_contact_at=at(contact)), window=EOD)
    assert result.status is (Status.NO_ANSWER if handled else Status.LOST)
    assert result.attention is (not handled)


def test_window_closing_settles_but_keeps_attention() -> None:
    open_ = missed(NumberFacts(False, False), now="2026-11-28 12:00")
    closed = missed(NumberFacts(False, False), now="2026-11-29 10:00:01")
    assert (open_.settled, closed.settled) == (False, True)
    assert (closed.status, closed.attention) == (Status.LOST, True)


def test_a_contact_before_the_missed_call_ended_does_not_count() -> None:
    assert not is_later_contact(at("2026-11-28 10:00"), at("2026-11-28 09:59"), DAY)
    assert is_later_contact(at("2026-11-28 10:00"), at("2026-11-28 10:00"), DAY)


@pytest.mark.parametrize(
    ("registered", "earlier", "has_number", "first"),
    [
        (False, False, True, True),
        (False, True, True, False),
        (True, False, True, False),
        (False, False, False, False),
    ],
)
def test_first_contact_only_for_new_unregistered_numbers(
    registered: bool, earlier: bool, has_number: bool, first: bool
) -> None:
    result = evaluate(
        direction=Direction.INCOMING,
        answered=True,
        ended_at=0.0,
        has_number=has_number,
        facts=NumberFacts(registered=registered, earlier_calls=earlier),
        window=DAY,
        now=0.0,
    )
    assert result.first_contact is first
