"""Synthetic finished calls at explicit local times, for rule and directory tests."""

from __future__ import annotations

import itertools
from datetime import datetime

from connector.assembly import Direction, FinishedCall, Participant, Role
from tests.db import MOSCOW

_ids = itertools.count(1)


def at(text: str) -> float:
    """``"11-27 23:30"`` (or ``"11-27 23:30:15"``) in Moscow, 2026, as epoch seconds."""
    return datetime.fromisoformat(f"2026-{text}").replace(tzinfo=MOSCOW).timestamp()


def make_call(
    direction: Direction,
    number: str | None,
    started: float,
    *,
    answered: bool,
    seconds: float = 60.0,
    extension: str = "101",
    conversation_id: str | None = None,
) -> FinishedCall:
    """One employee, one counterpart: rang then (maybe) talked, or placed the call."""
    ring = 5.0
    answered_at = started + ring if answered else None
    ended = started + (seconds if answered else ring + 10.0)
    if direction is Direction.INCOMING:
        role = Role.ANSWERED if answered else Role.RANG
        participant = Participant(
            extension, role, False, True, answered_at, started, ended - started - ring
        )
    else:
        participant = Participant(
            extension,
            Role.PLACED,
            True,
            False,
            answered_at,
            None,
            (ended - started - ring) if answered else 0.0,
        )
    return FinishedCall(
        conversation_id=conversation_id or f"{started:.0f}.{next(_ids)}",
        linkedids=(),
        started_at=started,
        answered_at=answered_at,
        ended_at=ended,
        approximate_end=False,
        direction=direction,
        external_number=number if direction is not Direction.INTERNAL else None,
        did="74957770101" if direction is Direction.INCOMING else None,
        answered=answered,
        participants=(participant,),
        legs=(),
        ring_seconds=ring if answered else ended - started,
        talk_seconds=(ended - started - ring) if answered else 0.0,
        recordings=(),
        recording_hints=(),
        queues=(),
        transfers=(),
    )
