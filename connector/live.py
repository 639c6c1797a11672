"""Calls in progress, read from the assembler without touching it (``GET /live``).

The assembler keeps every open conversation to build its journal row when it ends; 1C's "who
is on the phone now" panel wants the same state while it runs. :func:`snapshot` reads it and
returns frozen records: which employee phones are ringing, which are talking with the
counterpart, the external number and the direction as they look *now* (a call that is still
ringing may change direction once it is answered or transferred; the journal row is what
counts).

Read-only and sans-IO like the assembler: it calls only methods that compute (``_shape``,
``_reachable_phones`` are pure reads of the channel graph) and never changes a field, so it
may run between any two ``feed`` calls of the same event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.assembly import CallAssembler, ChannelKind, Direction

__all__ = ["LiveConversation", "LiveParticipant", "snapshot"]

#: Channel states (``ChannelStateDesc``) of a phone that is being rung.
_RINGING_STATES = frozenset({"Ring", "Ringing"})


@dataclass(frozen=True, slots=True)
class LiveParticipant:
    extension: str
    #: ``placed`` (their phone started the call), ``talking`` (connected to the counterpart
    #: now), ``ringing`` (their phone rings now), ``talked`` (was connected, is no longer),
    #: ``rang`` (was rung, did not answer).
    state: str
    since: float | None


@dataclass(frozen=True, slots=True)
class LiveConversation:
    id: str
    started_at: float
    direction: Direction
    #: The external party's number as the PBX presents it (None for internal calls).
    number: str | None
    #: ``talking`` when an employee is connected to the counterpart now, else ``ringing``
    #: while a phone rings, else ``waiting`` (an IVR, a queue's music, a transfer between).
    state: str
    answered_at: float | None
    participants: tuple[LiveParticipant, ...]


def snapshot(assembler: CallAssembler) -> list[LiveConversation]:
    """Every open conversation with at least one channel up, oldest first."""
    found: list[LiveConversation] = []
    for conversation in list(assembler._conversations.values()):
        channels = list(conversation.channels.values())
        if not any(c.hungup_at is None for c in channels):
            continue  # over, waiting out its grace period
        direction, placer, counterparts = assembler._shape(conversation)
        talking = dict(conversation.connected)
        ringing: dict[str, float | None] = {}
        for channel in channels:
            if (
                channel.kind is ChannelKind.PHONE
                and channel.hungup_at is None
                and channel.endpoint not in talking
                and (channel.state in _RINGING_STATES or channel.ring_ended_at is None)
                and channel.rang_at is not None
            ):
                ringing[channel.endpoint] = channel.rang_at
        people: list[LiveParticipant] = []
        seen: set[str] = set()
        if placer is not None and placer.kind is ChannelKind.PHONE:
            people.append(LiveParticipant(placer.endpoint, "placed", placer.created_at))
            seen.add(placer.endpoint)
        for extension, since in sorted(talking.items(), key=lambda item: item[1]):
            if extension not in seen:
                people.append(LiveParticipant(extension, "talking", since))
                seen.add(extension)
        for extension, at in sorted(ringing.items(), key=lambda item: (item[1] or 0.0, item[0])):
            if extension not in seen:
                people.append(LiveParticipant(extension, "ringing", at))
                seen.add(extension)
        for extension, at in sorted(conversation.answered.items(), key=lambda item: item[1]):
            if extension not in seen:
                people.append(LiveParticipant(extension, "talked", at))
                seen.add(extension)
        for extension, at in sorted(conversation.rang.items(), key=lambda item: item[1]):
            if extension not in seen:
                people.append(LiveParticipant(extension, "rang", at))
                seen.add(extension)
        answered = min(conversation.answered.values(), default=None)
        found.append(
            LiveConversation(
                id=conversation.key,
                started_at=conversation.started_at,
                direction=direction,
                number=assembler._external_number(direction, counterparts),
                state="talking" if talking else "ringing" if ringing else "waiting",
                answered_at=answered,
                participants=tuple(people),
            )
        )
    found.sort(key=lambda c: (c.started_at, c.id))
    return found
