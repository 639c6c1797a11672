"""An in-memory journal: the rules applied over a history kept in dictionaries.

It backs ``pbxjournal replay`` without ``--database`` and states, in the simplest form, what
the SQL store must do on every write:

1. the call is stored once per conversation identity (``pbx`` + the conversation's oldest
   linkedid): writing it again replaces it, it never adds a row;
2. every call with the same normalised number is re-evaluated, because this call may be the
   later contact that turns an earlier ``lost`` into ``no_answer``, or the earlier call that
   takes ``first_contact`` away from a later one; a call written again with another number
   has the calls of the number it left re-evaluated too (it may have been their later
   contact, or their first call);
3. every entry whose verdict changed gets a new ``version`` from one journal-wide counter.

Nothing here reads the clock: ``now`` is passed in (the event time during a replay).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connector.assembly import Direction, FinishedCall
from connector.recordings import FoundRecording
from storage.journal import CustomerRef, JournalEntry, StoredRecording
from storage.numbers import normalize_number
from storage.rules import AttentionWindow, Evaluation, NumberFacts, Status, evaluate

__all__ = ["MemoryJournal"]


@dataclass(slots=True)
class _Counters:
    entry: int = 0
    version: int = 0
    recording: int = 0


class MemoryJournal:
    """The journal of one run, with the rules of DESIGN section 1."""

    def __init__(
        self,
        *,
        pbx: str,
        window: AttentionWindow,
        region: str = "RU",
        lookup_customer: Callable[[str], CustomerRef | None] | None = None,
    ) -> None:
        self._pbx = pbx
        self._window = window
        self._region = region
        self._lookup = lookup_customer or (lambda number: None)
        self._entries: dict[int, JournalEntry] = {}
        self._by_identity: dict[str, int] = {}
        self._by_number: dict[str, list[int]] = {}
        self._counters = _Counters()

    @property
    def last_version(self) -> int:
        return self._counters.version

    def entries(self) -> list[JournalEntry]:
        """Every entry, newest first (the journal's order)."""
        return sorted(self._entries.values(), key=lambda e: (e.call.started_at, e.id), reverse=True)

    def get(self, entry_id: int) -> JournalEntry | None:
        return self._entries.get(entry_id)

    def write(
        self, call: FinishedCall, recordings: Sequence[FoundRecording], now: float
    ) -> list[JournalEntry]:
        """Store a finished call; return every entry that is new or changed, by version."""
        number = None
        if call.direction is not Direction.INTERNAL:
            number = normalize_number(call.external_number, self._region)
        customer = self._lookup(number) if number else None
        entry_id = self._by_identity.get(call.conversation_id)
        stored = tuple(self._store_recordings(entry_id, recordings))
        left: str | None = None
        if entry_id is None:
            self._counters.entry += 1
            entry_id = self._counters.entry
            self._by_identity[call.conversation_id] = entry_id
            entry = JournalEntry(
                id=entry_id,
                version=0,
                pbx=self._pbx,
                call=call,
                number=number,
                number_raw=call.external_number,
                status=Status.LOST,  # the rules decide in _reevaluate, right below
                attention=False,
                first_contact=False,
                registered_at_end=customer is not None,
                window_closes_at=None,
                settled=False,
                recordings=stored,
                customer=customer,
            )
            self._entries[entry_id] = entry
            if number:
                self._by_number.setdefault(number, []).append(entry_id)
        else:
            entry = self._entries[entry_id]
            if entry.number and entry.number != number:
                self._by_number[entry.number].remove(entry_id)
                left = entry.number
            if number and entry.number != number:
                self._by_number.setdefault(number, []).append(entry_id)
            entry.call = call
            entry.number = number
            entry.number_raw = call.external_number
            entry.recordings = stored
            entry.customer = customer
            entry.registered_at_end = customer is not None
            entry.version = 0  # force a new version: the call itself changed
        changed = self._reevaluate(number, now, always=entry)
        if left is not None:
            changed += self._reevaluate(left, now, always=None)
        return changed

    def settle(self, now: float) -> list[JournalEntry]:
        """Mark as settled the missed calls whose window has closed by ``now``.

        Nothing visible changes (the attention flag stays), so no version is bumped and
        nothing is returned to show; the SQL store stops re-evaluating settled rows.
        """
        for entry in self._entries.values():
            if (
                not entry.settled
                and entry.window_closes_at is not None
                and now >= entry.window_closes_at
            ):
                entry.settled = True
        return []

    def next_window_close(self) -> float | None:
        pending = [
            e.window_closes_at
            for e in self._entries.values()
            if not e.settled and e.window_closes_at is not None
        ]
        return min(pending) if pending else None

    # -- internals ------------------------------------------------------------------

    def _store_recordings(
        self, entry_id: int | None, recordings: Sequence[FoundRecording]
    ) -> list[StoredRecording]:
        known: dict[str, int] = {}
        if entry_id is not None:
            known = {r.found.pbx_path: r.id for r in self._entries[entry_id].recordings}
        stored = []
        for found in recordings:
            rec_id = known.get(found.pbx_path)
            if rec_id is None:
                self._counters.recording += 1
                rec_id = self._counters.recording
            stored.append(StoredRecording(id=rec_id, found=found))
        return stored

    def _reevaluate(
        self, number: str | None, now: float, always: JournalEntry | None
    ) -> list[JournalEntry]:
        related = [self._entries[i] for i in self._by_number.get(number, ())] if number else []
        if always is not None and always not in related:
            related.append(always)
        changed = []
        for entry in sorted(related, key=lambda e: (e.call.started_at, e.id)):
            verdict = self._verdict(entry, related, now)
            before = (entry.status, entry.attention, entry.first_contact, entry.window_closes_at)
            entry.status = verdict.status
            entry.attention = verdict.attention
            entry.first_contact = verdict.first_contact
            entry.window_closes_at = verdict.window_closes_at
            entry.settled = verdict.settled
            after = (entry.status, entry.attention, entry.first_contact, entry.window_closes_at)
            if entry.version == 0 or before != after:
                self._counters.version += 1
                entry.version = self._counters.version
                changed.append(entry)
        return sorted(changed, key=lambda e: e.version)

    def _verdict(self, entry: JournalEntry, related: list[JournalEntry], now: float) -> Evaluation:
        call = entry.call
        earlier = any(
            other.call.started_at < call.started_at
            or (other.call.started_at == call.started_at and other.id < entry.id)
            for other in related
            if other is not entry
        )
        later = [
            other.call.started_at
            for other in related
            if other is not entry and other.call.answered and other.call.started_at >= call.ended_at
        ]
        facts = NumberFacts(
            registered=entry.registered_at_end,
            earlier_calls=earlier,
            later_contact_at=min(later) if later else None,
        )
        return evaluate(
            direction=call.direction,
            answered=call.answered,
            ended_at=call.ended_at,
            has_number=entry.number is not None,
            facts=facts,
            window=self._window,
            now=now,
        )
