"""The SQL journal: finished calls in, rows with the rules applied, one transaction each.

Theory of operation
-------------------
:class:`SqlJournal` keeps :class:`storage.memory.MemoryJournal`'s semantics, in a database:

1. a call is stored once per ``(pbx, conversation_id)``; writing it again updates the row;
2. the calls of the same normalised number whose verdict the write can change are
   re-evaluated by :func:`storage.rules.evaluate` with facts read from the database
   (registered when it ended? an earlier call? the first later answered contact?), because
   the new call may hand a ``lost`` call its later contact or take ``first_contact`` away
   from a later one (see "Bounded reads" below);
3. a row gets a new ``version`` when it is new, when the call itself changed (its fingerprint:
   participants, recordings found, times...) or when the verdict changed — never otherwise,
   so writing the same capture twice changes nothing.

Versions. 1C polls "versions after N" and must never miss a change, so a version may become
visible only after every smaller one has. A PostgreSQL sequence does not give that: two
transactions draw 7 and 8, the one holding 8 commits first, a reader sees 8, then polls from
8 and never sees 7. Here every write transaction starts by locking the single
``journal_state`` row (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the writer's
``BEGIN IMMEDIATE`` holds the database lock), takes versions from ``last_version`` and stores
the new value before committing. Writers are therefore serialised, and PostgreSQL makes a
transaction visible before it releases its locks, so versions become visible strictly in
order. The same lock makes the rules race-free when several daemons (one per PBX) share a
database: two calls of one number cannot both believe they are the first. Writes are a few
milliseconds at the rate calls end, so serialising them costs nothing that matters.

Bounded reads. A number may have tens of thousands of calls (the company's own forwarded
line, a spammer); a write must not load them all. The verdict of a call depends on its number's
other calls only through two facts: *is there an earlier call* (only the first call of the
number has none) and *is there an answered call starting within its window* (only missed
incoming calls ask). So a call that arrives, or moves, changes the verdict of at most: itself;
the number's first call among the others (it may stop, or start, being the first); and the
missed incoming calls whose window holds its start as an answered call — now or before the
write — which ended at most :attr:`AttentionWindow.longest` before that start and after the
last answered call of the others before it. Those are read by index range: ``ix_calls_number``
(``number, started_at``) for the first calls and the answered calls, and migration 0008's
partial ``ix_calls_number_missed`` (``number, ended_at`` of the missed incoming calls: those
with a window) for the calls a contact may handle. Each of them is then evaluated with the
facts read per call (the first answered call after its end, one correlated lookup for all);
every other call of the number keeps its verdict, as the full re-evaluation would leave it.
:class:`storage.memory.MemoryJournal` re-evaluates every call of the number: the reference.

The attention window needs no poll: :meth:`SqlJournal.next_window_close` is the earliest open
window (an index lookup) for the daemon to arm a timer on, and :meth:`SqlJournal.settle` marks
the rows whose window has closed. Nothing visible changes then, so no version is bumped.

Customers, numbers and employees are :mod:`storage.directory`'s, offered here as methods that
run in the same kind of transaction.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased, load_only

from connector.assembly import Direction, FinishedCall
from connector.recordings import FoundRecording
from storage import directory
from storage.directory import ContactRecord, CustomerRecord, EmployeeRecord, NumberOwner
from storage.engine import Database
from storage.journal import EmployeeDirectory, JournalEntry, StoredRecording
from storage.models import (
    Call,
    CallComment,
    CallLeg,
    CallParticipant,
    CallRecording,
    CallTransfer,
    JournalState,
    OpenConversation,
)
from storage.numbers import normalize_number
from storage.queries import load_employee_directory, load_entries, load_recording, read_entries
from storage.rules import AttentionWindow, NumberFacts, evaluate, is_later_contact
from storage.searchkeys import KeyId, add_call_keys, note_keys

__all__ = [
    "Change",
    "ContactRecord",
    "CustomerRecord",
    "EmployeeRecord",
    "NumberOwner",
    "SqlJournal",
    "UnknownCall",
    "WindowRepair",
    "WriteTransaction",
    "WrittenBatch",
]

_S = TypeVar("_S", AsyncSession, Session)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, order=True)
class Change:
    """A row that is new or changed, with the version it now carries."""

    version: int
    id: int


class UnknownCall(LookupError):
    """No call has this id."""


@dataclass(slots=True)
class WriteTransaction(Generic[_S]):
    """A write in progress: its session and the versions it hands out."""

    session: _S
    last_version: int
    changes: list[Change] = field(default_factory=list)
    #: The earliest attention window still open among the rows bumped (for the settler).
    earliest_window: float | None = None

    def bump(self, call: Call) -> None:
        """Give ``call`` the next version and record the change."""
        self.last_version += 1
        call.version = self.last_version
        self.changes.append(Change(self.last_version, call.id))


@dataclass(frozen=True, slots=True)
class WrittenBatch:
    """What :meth:`SqlJournal.write_batch` committed."""

    #: Every row that is new or changed, once, with its last version, by version.
    changes: list[Change]
    #: Those rows as committed (read in the same transaction), when asked for.
    entries: list[JournalEntry]
    #: The earliest attention window the batch opened or moved, if any is still open: the
    #: settler needs to look again only if it is earlier than the one it waits for.
    earliest_window: float | None


#: Calls per transaction of :meth:`SqlJournal.repair_window`.
REPAIR_BATCH = 500


@dataclass(frozen=True, slots=True)
class WindowRepair:
    """What :meth:`SqlJournal.repair_window` did."""

    #: The window definition recorded before (None: unknown) and the one now recorded.
    recorded: str | None
    configured: str
    #: Calls with a window re-evaluated, and those of them whose verdict changed.
    rows: int
    changed: int
    seconds: float
    #: False: stopped between two batches, the window not recorded (done again next time).
    complete: bool = True


def fingerprint(call: FinishedCall, recordings: Sequence[FoundRecording]) -> str:
    """Identity of what a row shows of the call itself (frozen dataclasses repr exactly)."""
    return hashlib.sha256(repr((call, tuple(recordings))).encode()).hexdigest()


_RULE_COLUMNS = (
    Call.id,
    Call.number,
    Call.started_at,
    Call.ended_at,
    Call.direction,
    Call.answered,
    Call.registered_at_end,
    Call.status,
    Call.attention,
    Call.first_contact,
    Call.window_closes_at,
    Call.settled,
    Call.version,
)


#: How long :meth:`SqlJournal.employee_directory` answers from what it read (seconds).
DIRECTORY_SECONDS = 2.0

_CHUNK = 500  # items per IN (...) list: far below SQLite's and asyncpg's parameter limits


def _chunks(items: Sequence[_T]) -> Iterable[list[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])


@dataclass(frozen=True, slots=True)
class _Place:
    """What of a row decides other calls' verdicts: its number, start, and whether it was
    answered (an answered call is the later contact of the missed calls before it)."""

    number: str | None
    started_at: float
    answered: bool


@dataclass(slots=True)
class _NumberWork:
    """One number's share of a write batch: its rows the batch wrote, and the starts of the
    answered calls the batch added, moved or took away (whose missed calls may change)."""

    rows: list[Call] = field(default_factory=list)
    contacts: set[float] = field(default_factory=set)
    #: A row of the batch arrived, left or moved: the first of the others may change.
    reordered: bool = False


@dataclass(slots=True)
class _Batch:
    """What one write transaction read once for all its calls."""

    #: Each call's normalised external number (None: internal, or no number).
    numbers: dict[str, str | None]
    #: Rows of the batch's conversations, by conversation id (new ones added as written).
    rows: dict[str, Call] = field(default_factory=dict)
    owners: dict[str, NumberOwner] = field(default_factory=dict)
    employees: dict[str, str] = field(default_factory=dict)
    #: Where each of the batch's rows written before stood before the batch, by
    #: conversation id.
    before: dict[str, _Place] = field(default_factory=dict)
    #: The batch's numbers that had no call before it: all their calls are the batch's.
    fresh: set[str] = field(default_factory=set)
    #: The search keys of the calls the batch wrote, with their texts and newest start
    #: (``storage.searchkeys.note_keys``).
    keys: dict[KeyId, tuple[str, float]] = field(default_factory=dict)


@dataclass(slots=True)
class _Parts:
    """The parts of a batch's calls, as rows to insert: one executemany per table rather
    than an ORM object each."""

    participants: list[dict[str, Any]] = field(default_factory=list)
    legs: list[dict[str, Any]] = field(default_factory=list)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    recordings: list[dict[str, Any]] = field(default_factory=list)

    def insert(self, session: Session) -> None:
        connection = session.connection()
        for model, rows in (
            (CallParticipant, self.participants),
            (CallLeg, self.legs),
            (CallTransfer, self.transfers),
            (CallRecording, self.recordings),
        ):
            if rows:
                connection.execute(sa.insert(model), rows)


@dataclass(slots=True)
class _Staged:
    """A call of a write batch whose row is up to date, its parts and verdict to follow."""

    row: Call
    call: FinishedCall
    recordings: Sequence[FoundRecording]
    new: bool
    parts_changed: bool
    changed: bool


class SqlJournal:
    """The journal in a database, with the rules of DESIGN section 1."""

    def __init__(
        self, database: Database, *, pbx: str, window: AttentionWindow, region: str = "RU"
    ) -> None:
        self.database = database
        self.pbx = pbx
        self.window = window
        self.region = region
        # One writer per process; across processes the journal_state lock serialises.
        self._write_lock = asyncio.Lock()
        #: (monotonic time read, directory) of :meth:`employee_directory`, and a counter
        #: of the changes made here (a read that began before one must not be kept).
        self._directory: tuple[float, EmployeeDirectory] | None = None
        self._directory_changes = 0
        self._employee_listeners: list[Callable[[], None]] = []

    # -- transactions -------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[WriteTransaction[AsyncSession]]:
        """A write transaction holding the version lock; commits on success."""
        async with (
            self._write_lock,
            self.database.write_sessions() as session,
            session.begin(),
        ):
            last = await session.run_sync(_lock_versions)
            tx = WriteTransaction(session, last)
            yield tx
            if tx.last_version != last:
                await session.run_sync(_store_last_version, tx.last_version)

    async def _run_write(self, work: Callable[[WriteTransaction[Any], Session], _T]) -> _T:
        """Run blocking ORM ``work`` in a write transaction: on SQLite as one call in the
        batch thread (see :mod:`storage.engine`: one thread hop, not one per cursor call),
        on PostgreSQL through ``run_sync`` on the event loop's connection."""
        database = self.database
        if database.batch_sessions is not None:
            sessions = database.batch_sessions
            async with self._write_lock:
                return await database.in_batch_thread(lambda: _sync_transaction(sessions, work))
        async with self.transaction() as tx:
            return await tx.session.run_sync(lambda session: work(tx, session))

    async def last_version(self) -> int:
        async with self.database.sessions() as session:
            value = await session.scalar(
                sa.select(JournalState.last_version).where(JournalState.id == 1)
            )
            return int(value or 0)

    # -- calls ----------------------------------------------------------------------------

    async def write(
        self, call: FinishedCall, recordings: Sequence[FoundRecording], now: float
    ) -> list[Change]:
        """Store a finished call; return every row that is new or changed, by version."""
        return await self.write_many([(call, recordings)], now)

    async def write_many(
        self,
        items: Sequence[tuple[FinishedCall, Sequence[FoundRecording]]],
        now: float,
        *,
        open_keys: Sequence[str] = (),
    ) -> list[Change]:
        """Store several finished calls in one transaction; see :meth:`write_batch`."""
        return (await self.write_batch(items, now, open_keys=open_keys)).changes

    async def write_batch(
        self,
        items: Sequence[tuple[FinishedCall, Sequence[FoundRecording]]],
        now: float,
        *,
        open_keys: Sequence[str] = (),
        read_back: bool = False,
    ) -> WrittenBatch:
        """Store several finished calls in one transaction (the daemon's batches): one commit,
        one fsync, and 1C sees them all at once. A row changed twice in the batch is reported
        once, with its last version. ``open_keys`` are the saved open-conversation states
        these calls replace: deleted in the same transaction, so that a restart can never
        take back a conversation whose row is already written. ``read_back``: the changed
        rows come back as entries too, read in the same transaction (for the log and the
        long-polls, without another query).

        What the batch needs from the database is read once for all of it (its rows if they
        were written before, the owners of its numbers, its employees' names, the other
        calls of its numbers), not once per call."""
        items = list(items)
        keys = list(open_keys)
        return await self._run_write(
            lambda tx, session: self._write_batch(
                tx, session, items, now, open_keys=keys, read_back=read_back
            )
        )

    def _write_batch(
        self,
        tx: WriteTransaction[Any],
        session: Session,
        items: Sequence[tuple[FinishedCall, Sequence[FoundRecording]]],
        now: float,
        *,
        open_keys: Sequence[str],
        read_back: bool,
    ) -> WrittenBatch:
        batch = self._prefetch(session, [call for call, _ in items])
        staged: dict[str, _Staged] = {}
        for call, recordings in items:
            self._stage(tx, session, batch, staged, call=call, recordings=recordings)
        # The new rows of the whole batch in one multi-row INSERT (their ids come back).
        session.flush()
        note_keys(session, batch.keys)
        parts = _Parts()
        for item in staged.values():
            if item.parts_changed:
                self._add_parts(
                    session, item.row.id, item.call, item.recordings, new=item.new, parts=parts
                )
        parts.insert(session)
        forced = {id(item.row) for item in staged.values() if item.changed}
        work = _number_work(batch, staged)
        numbers_done: set[str] = set()
        for conversation_id, item in staged.items():
            number = item.row.number
            if number is None:
                self._reevaluate(tx, [item.row], forced, now)
            before = batch.before.get(conversation_id)
            # The row's number first, then the one it left (as MemoryJournal.write).
            for touched in (number, before.number if before is not None else None):
                if touched is not None and touched not in numbers_done:
                    numbers_done.add(touched)
                    self._reevaluate_number(
                        session,
                        tx,
                        touched,
                        work[touched],
                        fresh=batch.fresh,
                        forced=forced,
                        now=now,
                    )
        session.flush()
        for chunk in _chunks(list(open_keys)):
            session.execute(sa.delete(OpenConversation).where(OpenConversation.key.in_(chunk)))
        latest: dict[int, Change] = {}
        for change in tx.changes:
            latest[change.id] = change
        changes = sorted(latest.values())
        entries = read_entries(session, [c.id for c in changes]) if read_back else []
        return WrittenBatch(changes, entries, tx.earliest_window)

    def _number(self, call: FinishedCall) -> str | None:
        if call.direction is Direction.INTERNAL:
            return None
        return normalize_number(call.external_number, self.region)

    def _prefetch(self, session: Session, calls: Sequence[FinishedCall]) -> _Batch:
        batch = _Batch(numbers={call.conversation_id: self._number(call) for call in calls})
        ids = sorted({call.conversation_id for call in calls})
        for chunk in _chunks(ids):
            found = session.scalars(
                sa.select(Call).where(Call.pbx == self.pbx, Call.conversation_id.in_(chunk))
            )
            batch.rows.update((row.conversation_id, row) for row in found)
        numbers = sorted({n for n in batch.numbers.values() if n})
        batch.owners = directory.read_owners(session, numbers)
        batch.employees = directory.read_employee_names(
            session, (p.extension for call in calls for p in call.participants)
        )
        batch.fresh = set(numbers) - _numbers_with_calls(session, numbers)
        return batch

    def _stage(
        self,
        tx: WriteTransaction[Any],
        session: Session,
        batch: _Batch,
        staged: dict[str, _Staged],
        *,
        call: FinishedCall,
        recordings: Sequence[FoundRecording],
    ) -> None:
        """Bring the call's row up to date (a new one gets a provisional version, negative
        and unique in the transaction, until the rules give it its real one); its parts and
        its number's verdicts follow once the batch's rows have their ids."""
        number = batch.numbers[call.conversation_id]
        owner = batch.owners.get(number) if number else None
        digest = fingerprint(call, recordings)
        row = batch.rows.get(call.conversation_id)
        # The same conversation twice in a batch: the second call adds to what the first did.
        earlier = staged.get(call.conversation_id)
        added = earlier is not None and earlier.new  # its row inserted by this batch, no parts
        customer_id = owner.customer_id if owner else None
        contact_id = owner.contact_id if owner else None
        is_new = row is None
        if row is not None and earlier is None:
            batch.before[call.conversation_id] = _Place(row.number, row.started_at, row.answered)
        parts_changed = row is None or row.fingerprint != digest
        if row is None:
            row = Call(pbx=self.pbx, conversation_id=call.conversation_id)
            row.version = -(len(batch.rows) + 1)
            row.status, row.attention, row.first_contact, row.settled = "lost", False, False, False
            batch.rows[call.conversation_id] = row
            changed = True
        else:
            changed = (
                parts_changed
                or row.number != number
                or (row.customer_id, row.contact_id) != (customer_id, contact_id)
            )
            if parts_changed and not added:
                self._delete_parts(session, row.id)
        if changed:
            _fill_call(row, call, number)
            row.fingerprint = digest
            row.registered_at_end = owner is not None
            row.customer_id, row.contact_id = customer_id, contact_id
            row.unregistered = call.direction is not Direction.INTERNAL and owner is None
            names = [owner.customer_name, owner.contact_name] if owner else []
            extensions = [p.extension for p in call.participants]
            row.search_text = directory.call_search_text(
                row, extensions, names, self.region, batch.employees
            )
            add_call_keys(
                batch.keys,
                row.started_at,
                number=row.number,
                owner=owner,
                extensions=extensions,
                employees=batch.employees,
                region=self.region,
            )
            session.add(row)
        staged[call.conversation_id] = _Staged(
            row=row,
            call=call,
            recordings=recordings,
            new=is_new or added,
            parts_changed=parts_changed or (earlier is not None and earlier.parts_changed),
            changed=changed or (earlier is not None and earlier.changed),
        )

    def _reevaluate_number(
        self,
        session: Session,
        tx: WriteTransaction[Any],
        number: str,
        work: _NumberWork,
        *,
        fresh: set[str],
        forced: set[int],
        now: float,
    ) -> None:
        """Apply the rules to the calls of ``number`` the batch can have changed (see
        "Bounded reads" above), reading them and their facts by index range: the batch's own
        rows, the first of the others, and the missed calls around each answered start the
        batch added or took away. The rows are flushed: the database holds the batch's calls
        where they now are."""
        if number in fresh:
            # Every call of the number is the batch's (a new number: most calls): no query.
            self._reevaluate(tx, work.rows, forced, now)
            return
        ours = {row.id for row in work.rows}
        chosen: dict[int, Call] = {row.id: row for row in work.rows}
        # The first calls of the number: the first of all has no earlier call; the first of
        # the others may have gained or lost its earlier calls with the batch's rows.
        head = session.scalars(
            _rule_rows(Call.number == number)
            .order_by(Call.started_at, Call.id)
            .limit(len(ours) + 1)
        ).all()
        first = head[0].id if head else None
        if work.reordered:
            for row in head:
                if row.id not in ours:
                    chosen.setdefault(row.id, row)
                    break
        longest = self.window.longest
        for contact in sorted(work.contacts):
            # Missed calls ending before the last answered call of the others (before the
            # contact) have that call as their later contact, with or without this one.
            since = contact - longest
            answered = session.execute(
                sa.select(Call.id, Call.started_at)
                .where(
                    Call.number == number,
                    Call.answered == sa.true(),
                    Call.started_at >= since,
                    Call.started_at <= contact,
                )
                .order_by(Call.started_at.desc())
                .limit(len(ours) + 1)
            ).all()
            for call_id, started_at in answered:
                if call_id not in ours:
                    since = max(since, float(started_at))
                    break
            missed = session.scalars(
                _rule_rows(
                    Call.number == number,
                    Call.window_closes_at.is_not(None),
                    Call.ended_at >= since,
                    Call.ended_at <= contact,
                )
            )
            for row in missed:
                if is_later_contact(row.ended_at, contact, self.window):
                    chosen.setdefault(row.id, row)
        related = sorted(chosen.values(), key=lambda c: (c.started_at, c.id))
        later = self._later_contacts(
            session,
            number,
            [row.id for row in related if row.direction == "incoming" and not row.answered],
        )
        facts = [
            NumberFacts(
                registered=row.registered_at_end,
                earlier_calls=row.id != first,
                later_contact_at=later.get(row.id),
            )
            for row in related
        ]
        self._apply(tx, related, facts, forced, now)

    def _later_contacts(
        self, session: Session, number: str | None, ids: Sequence[int]
    ) -> dict[int, float | None]:
        """The start of the first answered call of ``number`` (None: of each call's own
        number) at or after the end of each call of ``ids`` (itself excepted), if one starts
        within the longest window: one index seek per call, in one statement per 500 calls."""
        other = aliased(Call)
        first_after = (
            sa.select(other.started_at)
            .where(
                other.number == (Call.number if number is None else number),
                other.answered == sa.true(),
                other.started_at >= Call.ended_at,
                other.started_at <= Call.ended_at + self.window.longest,
                other.id != Call.id,
            )
            .order_by(other.started_at)
            .limit(1)
            .scalar_subquery()
        )
        found: dict[int, float | None] = {}
        for chunk in _chunks(ids):
            for call_id, started_at in session.execute(
                sa.select(Call.id, first_after).where(Call.id.in_(chunk))
            ):
                found[int(call_id)] = None if started_at is None else float(started_at)
        return found

    def _reevaluate(
        self, tx: WriteTransaction[Any], related: list[Call], forced: set[int], now: float
    ) -> None:
        """Apply the rules to every call of one number (``related``, sorted here in place);
        bump those whose verdict changed, and those in ``forced`` (by ``id()``: the rows the
        batch changed).

        ``later_contact_at`` of a call is the start of the earliest answered call of the
        number that started at or after it ended (the call back, DESIGN 1): one sorted list
        of answered starts and a bisection per call, rather than a scan of every pair."""
        related.sort(key=lambda c: (c.started_at, c.id))
        answered = [(c.started_at, c.id) for c in related if c.answered]
        starts = [start for start, _ in answered]
        facts = []
        for index, entry in enumerate(related):
            at = bisect.bisect_left(starts, entry.ended_at)
            while at < len(answered) and answered[at][1] == entry.id:
                at += 1  # not its own call back
            facts.append(
                NumberFacts(
                    registered=entry.registered_at_end,
                    # Sorted by (started_at, id): everything before this one is earlier.
                    earlier_calls=index > 0,
                    later_contact_at=starts[at] if at < len(answered) else None,
                )
            )
        self._apply(tx, related, facts, forced, now)

    def _apply(
        self,
        tx: WriteTransaction[Any],
        related: Sequence[Call],
        facts: Sequence[NumberFacts],
        forced: set[int],
        now: float,
    ) -> None:
        """Give each row of ``related`` (in the order of its number: started_at, id) the
        verdict of its ``facts``; bump those whose verdict changed and those in ``forced``."""
        for entry, fact in zip(related, facts, strict=True):
            verdict = evaluate(
                direction=Direction(entry.direction),
                answered=entry.answered,
                ended_at=entry.ended_at,
                has_number=entry.number is not None,
                facts=fact,
                window=self.window,
                now=now,
            )
            before = (entry.status, entry.attention, entry.first_contact, entry.window_closes_at)
            after = (
                verdict.status.value,
                verdict.attention,
                verdict.first_contact,
                verdict.window_closes_at,
            )
            entry.settled = verdict.settled
            if before != after or id(entry) in forced:
                entry.status, entry.attention, entry.first_contact, entry.window_closes_at = after
                tx.bump(entry)
                closes = verdict.window_closes_at
                if closes is not None and not verdict.settled:
                    earliest = tx.earliest_window
                    tx.earliest_window = closes if earliest is None else min(earliest, closes)

    def _delete_parts(self, session: Session, call_id: int) -> None:
        for model in (CallParticipant, CallLeg, CallTransfer):
            session.execute(sa.delete(model).where(model.call_id == call_id))

    def _add_parts(
        self,
        session: Session,
        call_id: int,
        call: FinishedCall,
        recordings: Sequence[FoundRecording],
        *,
        new: bool = False,
        parts: _Parts,
    ) -> None:
        """Queue the call's parts in ``parts`` (inserted for the whole batch at once); the
        recordings of a row written before go through :meth:`_store_recordings`."""
        parts.participants.extend(
            {
                "call_id": call_id,
                "ordinal": ordinal,
                "extension": p.extension,
                "role": p.role.value,
                "placed": p.placed,
                "rang": p.rang,
                "answered_at": p.answered_at,
                "rang_at": p.rang_at,
                "talk_seconds": p.talk_seconds,
                "on_mobile": p.mobile,
            }
            for ordinal, p in enumerate(call.participants)
        )
        parts.legs.extend(
            {
                "call_id": call_id,
                "ordinal": ordinal,
                "extension": leg.extension,
                "connected_at": leg.connected_at,
                "disconnected_at": leg.disconnected_at,
                "on_mobile": leg.mobile,
            }
            for ordinal, leg in enumerate(call.legs)
        )
        parts.transfers.extend(
            {
                "call_id": call_id,
                "ordinal": ordinal,
                "kind": note.kind,
                "at": note.at,
                "by_extension": note.by,
                "target_extension": note.target,
            }
            for ordinal, note in enumerate(call.transfers)
        )
        if new:
            parts.recordings.extend(
                {
                    "call_id": call_id,
                    "pbx_path": found.pbx_path,
                    "part": found.part,
                    "file_path": str(found.file),
                    "started_at": found.started_at,
                    "offset_seconds": found.offset_seconds,
                    "duration_seconds": found.duration_seconds,
                    "size": found.size,
                }
                for found in recordings
            )
        else:
            self._store_recordings(session, call_id, recordings)

    def _store_recordings(
        self, session: Session, call_id: int, recordings: Sequence[FoundRecording]
    ) -> None:
        """Keep the id of a part the PBX announced again (1C may hold its URL)."""
        known = {
            r.pbx_path: r
            for r in session.scalars(
                sa.select(CallRecording).where(CallRecording.call_id == call_id)
            )
        }
        for found in recordings:
            stored = known.pop(found.pbx_path, None) or CallRecording(
                call_id=call_id, pbx_path=found.pbx_path
            )
            stored.part = found.part
            stored.file_path = str(found.file)
            stored.started_at = found.started_at
            stored.offset_seconds = found.offset_seconds
            stored.duration_seconds = found.duration_seconds
            stored.size = found.size
            session.add(stored)
        for gone in known.values():
            session.delete(gone)

    # -- the attention window -------------------------------------------------------------

    async def next_window_close(self) -> float | None:
        """When the earliest open attention window closes (for the daemon's timer)."""
        async with self.database.sessions() as session:
            value = await session.scalar(
                sa.select(sa.func.min(Call.window_closes_at)).where(
                    Call.settled == sa.false(), Call.window_closes_at.is_not(None)
                )
            )
            return None if value is None else float(value)

    async def settle(self, now: float) -> int:
        """Mark the rows whose window closed by ``now`` as settled; return how many."""
        async with self.transaction() as tx:
            result = await tx.session.execute(
                sa.update(Call)
                .where(Call.settled == sa.false(), Call.window_closes_at <= now)
                .values(settled=True)
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    # -- a changed rules setting ----------------------------------------------------------

    async def recorded_window(self) -> str | None:
        """The attention window the stored verdicts were computed with
        (:attr:`AttentionWindow.definition`), None if unknown (written before migration 0009,
        or never repaired since)."""
        async with self.database.sessions() as session:
            value = await session.scalar(
                sa.select(JournalState.rules_window).where(JournalState.id == 1)
            )
            return None if value is None else str(value)

    async def repair_window(
        self,
        now: float,
        *,
        force: bool = False,
        batch_size: int = REPAIR_BATCH,
        keep_going: Callable[[], bool] | None = None,
    ) -> WindowRepair | None:
        """Bring every verdict the attention window decides in line with this journal's
        window, if the one recorded differs (or ``force``); then record this one.

        Only missed incoming calls carry a window (``window_closes_at`` not null): their
        status, attention flag, window and settledness are what a window decides. Nothing
        else can change: ``first_contact`` and the other calls' verdicts do not depend on the
        window. They are read by id, ``batch_size`` per transaction (so calls written
        meanwhile by another process wait a batch, not the whole repair), each with its
        facts read by index as the writer does (the first answered call of its number after
        its end: one correlated seek each); a row whose verdict changed gets a new version,
        so 1C sees it through ``/changes``. The definition is recorded only once every batch
        committed: a repair cut short (``keep_going`` said no between two batches: the
        daemon stops) is done again, whole, at the next start (a row already repaired then
        changes nothing)."""
        recorded = await self.recorded_window()
        wanted = self.window.definition
        if recorded == wanted and not force:
            return None
        started = time.monotonic()
        size = max(1, batch_size)
        after = 0
        rows = changed = 0
        while True:

            def work(
                tx: WriteTransaction[Any], session: Session, after: int = after
            ) -> tuple[int, int, int]:
                return self._repair_batch(tx, session, after=after, size=size, now=now)

            count, after, bumped = await self._run_write(work)
            rows += count
            changed += bumped
            if count < size:
                break
            if keep_going is not None and not keep_going():
                return WindowRepair(
                    recorded=recorded,
                    configured=wanted,
                    rows=rows,
                    changed=changed,
                    seconds=time.monotonic() - started,
                    complete=False,
                )

        def record(_tx: WriteTransaction[Any], session: Session) -> None:
            session.execute(
                sa.update(JournalState)
                .where(JournalState.id == 1)
                .values(rules_window=wanted)
                .execution_options(synchronize_session=False)
            )

        await self._run_write(record)
        return WindowRepair(
            recorded=recorded,
            configured=wanted,
            rows=rows,
            changed=changed,
            seconds=time.monotonic() - started,
        )

    def _repair_batch(
        self, tx: WriteTransaction[Any], session: Session, *, after: int, size: int, now: float
    ) -> tuple[int, int, int]:
        """One transaction of :meth:`repair_window`: the next ``size`` calls with a window
        after id ``after``; returns (calls read, the last id, rows changed)."""
        ids = [
            int(i)
            for i in session.scalars(
                sa.select(Call.id)
                .where(Call.window_closes_at.is_not(None), Call.id > after)
                .order_by(Call.id)
                .limit(size)
            )
        ]
        if not ids:
            return 0, after, 0
        rows = sorted(session.scalars(_rule_rows(Call.id.in_(ids))), key=lambda c: c.id)
        later = self._later_contacts(session, None, ids)
        facts = [
            NumberFacts(
                registered=row.registered_at_end,
                # first_contact does not depend on the window: kept as it is (with these
                # facts evaluate() gives it back whatever the row's registration).
                earlier_calls=not row.first_contact,
                later_contact_at=later.get(row.id),
            )
            for row in rows
        ]
        before = len(tx.changes)
        self._apply(tx, rows, facts, set(), now)
        return len(ids), ids[-1], len(tx.changes) - before

    async def optimize(self) -> None:
        """Refresh SQLite's planner statistics (``PRAGMA optimize``): cheap, and what keeps
        the planner choosing the right index for combined filters as the journal grows. The
        daemon runs it now and then; PostgreSQL's autovacuum does the same by itself."""
        if not self.database.is_sqlite:
            return
        async with self._write_lock, self.database.writer.begin() as connection:
            await connection.exec_driver_sql("PRAGMA optimize=0x10002")

    # -- comments -------------------------------------------------------------------------

    async def set_comment(self, call_id: int, text: str | None, now: float) -> Change:
        """Set (or, with empty text, remove) a call's comment; the row gets a new version.

        Nothing to change (the same text again, or no comment to remove) is no change: the
        row keeps its version, which the returned ``Change`` then carries."""
        async with self.transaction() as tx:
            row = await tx.session.get(Call, call_id)
            if row is None:
                raise UnknownCall(call_id)
            comment = await tx.session.get(CallComment, call_id)
            wanted = text if text and text.strip() else None
            if (comment.text if comment is not None else None) == wanted:
                return Change(row.version, call_id)
            if wanted is not None:
                if comment is None:
                    comment = CallComment(call_id=call_id)
                comment.text = wanted
                comment.updated_at = now
                tx.session.add(comment)
            elif comment is not None:
                await tx.session.delete(comment)
            tx.bump(row)
            return tx.changes[-1]

    # -- reading back ---------------------------------------------------------------------

    async def id_of(self, conversation_id: str) -> int | None:
        """The row id of this PBX's conversation, if it was written."""
        async with self.database.sessions() as session:
            found = await session.scalar(
                sa.select(Call.id).where(
                    Call.pbx == self.pbx, Call.conversation_id == conversation_id
                )
            )
            return None if found is None else int(found)

    async def get(self, call_id: int) -> JournalEntry | None:
        async with self.database.sessions() as session:
            found = await load_entries(session, [call_id])
            return found[0] if found else None

    async def entries(self, ids: Iterable[int]) -> list[JournalEntry]:
        async with self.database.sessions() as session:
            return await load_entries(session, list(ids))

    async def recording(self, recording_id: int) -> tuple[int, StoredRecording] | None:
        """(call id, part) of a recording id, for ``GET /recordings/{id}``."""
        async with self.database.sessions() as session:
            return await load_recording(session, recording_id)

    # -- open conversations ---------------------------------------------------------------

    async def save_open(self, key: str, state: dict[str, Any], now: float) -> None:
        async with self.transaction() as tx:
            await tx.session.merge(OpenConversation(key=key, state=state, updated_at=now))

    async def drop_open(self, key: str) -> None:
        async with self.transaction() as tx:
            await tx.session.execute(sa.delete(OpenConversation).where(OpenConversation.key == key))

    async def load_open(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Saved open conversations whose key starts with ``prefix`` (one PBX's)."""
        async with self.database.sessions() as session:
            query = sa.select(OpenConversation)
            if prefix:
                escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                query = query.where(OpenConversation.key.like(escaped + "%", escape="\\"))
            rows = await session.scalars(query)
            return {row.key: row.state for row in rows}

    async def sync_open(
        self, states: Mapping[str, dict[str, Any]], gone: Iterable[str], now: float
    ) -> None:
        """Save the open conversations that changed and forget those merged away, at once:
        one DELETE per 500 keys and one multi-row INSERT, not a SELECT and an UPDATE per
        state (the daemon saves hundreds at a time, and a conversation never saved before
        must not wait behind them)."""
        keys = sorted(set(gone) | states.keys())
        rows = [{"key": k, "state": v, "updated_at": now} for k, v in states.items()]

        def work(_tx: WriteTransaction[Any], session: Session) -> None:
            for chunk in _chunks(keys):
                session.execute(sa.delete(OpenConversation).where(OpenConversation.key.in_(chunk)))
            if rows:
                session.execute(sa.insert(OpenConversation), rows)

        await self._run_write(work)

    # -- customers, numbers, employees (storage.directory) -----------------------------

    async def upsert_customer(self, customer: CustomerRecord, now: float) -> list[Change]:
        async with self.transaction() as tx:
            await directory.upsert_customer(tx.session, customer, now, self.region, tx.bump)
            return sorted(tx.changes)

    async def import_customers(
        self,
        customers: Iterable[CustomerRecord],
        now: float,
        *,
        chunk_size: int = directory.IMPORT_CHUNK,
        committed: Callable[[list[Change]], None] | None = None,
    ) -> list[Change]:
        """Bulk upsert, as :meth:`upsert_customer` of each in order would leave things.

        Every record is checked first (a bad number anywhere raises and nothing is written),
        then ``chunk_size`` customers go in per transaction (:func:`directory.import_chunk`),
        so calls are written between them rather than behind the whole import; a customer is
        never split. An import that fails half-way (the database, not the data) leaves the
        whole customers of a prefix applied: sending the same list again completes it, and
        once complete, changes nothing. ``committed`` hears each transaction's changes once
        it committed (for the change feed)."""
        records = list(customers)
        prepared = await asyncio.to_thread(directory.prepare_import, records, self.region)
        changes: list[Change] = []
        for start in range(0, len(prepared), max(1, chunk_size)):
            chunk = prepared[start : start + max(1, chunk_size)]

            def work(
                tx: WriteTransaction[Any],
                session: Session,
                chunk: list[directory.PreparedCustomer] = chunk,
            ) -> list[Change]:
                directory.import_chunk(session, chunk, now, self.region, tx.bump)
                return list(tx.changes)

            done = await self._run_write(work)
            changes.extend(done)
            if committed is not None and done:
                committed(sorted(done))
        return sorted(changes)

    async def delete_customer(self, customer_id: str) -> list[Change]:
        async with self.transaction() as tx:
            await directory.delete_customer(tx.session, customer_id, self.region, tx.bump)
            return sorted(tx.changes)

    async def bind_number(
        self, number: str, customer_id: str, contact_id: str | None = None
    ) -> list[Change]:
        async with self.transaction() as tx:
            await directory.bind_number(
                tx.session,
                number,
                customer_id=customer_id,
                contact_id=contact_id,
                region=self.region,
                bump=tx.bump,
            )
            return sorted(tx.changes)

    async def unbind_number(self, number: str) -> list[Change]:
        async with self.transaction() as tx:
            await directory.unbind_number(tx.session, number, self.region, tx.bump)
            return sorted(tx.changes)

    async def lookup_number(self, number: str) -> NumberOwner | None:
        async with self.database.sessions() as session:
            return await directory.owner_of(session, normalize_number(number, self.region))

    async def upsert_employee(self, employee: EmployeeRecord) -> list[directory.ExtensionsMoved]:
        """Name and extensions of one employee; calls' search text follows, versions do not.
        Returns the employees extensions were taken from (:func:`directory.upsert_employee`)."""
        try:
            async with self.transaction() as tx:
                moved = await directory.upsert_employee(tx.session, employee, self.region)
                if employee.mobile is not None:
                    await directory.set_employee_mobiles(
                        tx.session, employee.id, employee.mobile, self.region
                    )
                return moved
        finally:
            self._forget_directory()

    async def delete_employee(self, employee_id: str) -> bool:
        """Remove an employee and free their extensions; False if there was none."""
        try:
            async with self.transaction() as tx:
                return await directory.delete_employee(tx.session, employee_id, self.region)
        finally:
            self._forget_directory()

    async def seed_employees(self, employees: Iterable[EmployeeRecord]) -> int:
        """Add configured employees and extensions the database does not know yet."""
        try:
            async with self.transaction() as tx:
                return await directory.seed_employees(tx.session, employees, self.region)
        finally:
            self._forget_directory()

    async def employee_directory(self) -> EmployeeDirectory:
        """Extension → employee, for rendering calls: read at most every
        ``DIRECTORY_SECONDS`` (every answer of the API needs it; it changes rarely), at once
        after a change made through this journal. Another process's change (``pbxjournal``
        tools on the same database) shows within that time."""
        now = time.monotonic()
        cached = self._directory
        if cached is not None and now - cached[0] < DIRECTORY_SECONDS:
            return cached[1]
        changes = self._directory_changes
        async with self.database.sessions() as session:
            found = await load_employee_directory(session)
        if changes == self._directory_changes:
            self._directory = (now, found)
        return found

    def _forget_directory(self) -> None:
        self._directory = None
        self._directory_changes += 1
        for listener in list(self._employee_listeners):
            listener()

    def on_employees_changed(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change of employees made through this journal
        (the daemon rebuilds its channel classifier: extensions, employees' mobiles)."""
        self._employee_listeners.append(listener)

    async def classifier_directory(self) -> tuple[list[str], dict[str, str]]:
        """Every extension, and employees' mobiles (normalised) → extension."""
        async with self.database.sessions() as session:
            return await directory.mobile_owners(session)

    async def employees(self) -> list[EmployeeRecord]:
        async with self.database.sessions() as session:
            return await directory.list_employees(session)


def _rule_rows(*where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """Calls with the columns the rules read and write only."""
    return sa.select(Call).where(*where).options(load_only(*_RULE_COLUMNS))


def _numbers_with_calls(session: Session, numbers: Sequence[str]) -> set[str]:
    """Those of ``numbers`` the journal holds a call of: one index seek each, 200 to a
    statement (one ``EXISTS`` column per number)."""
    found: set[str] = set()
    for start in range(0, len(numbers), 200):
        chunk = numbers[start : start + 200]
        probes = [sa.exists().where(Call.number == number) for number in chunk]
        flags = session.execute(sa.select(*probes)).one()
        found.update(number for number, flag in zip(chunk, flags, strict=True) if flag)
    return found


def _number_work(batch: _Batch, staged: Mapping[str, _Staged]) -> dict[str, _NumberWork]:
    """What each number touched by the batch must look at again (:class:`_NumberWork`): a
    row's number now and the one it had before the batch, if it left it."""
    work: dict[str, _NumberWork] = {}
    for conversation_id, item in staged.items():
        row = item.row
        now = _Place(row.number, row.started_at, row.answered)
        before = batch.before.get(conversation_id)
        if row.number is not None:
            mine = work.setdefault(row.number, _NumberWork())
            mine.rows.append(row)
            if before != now:
                mine.reordered = True
                if row.answered:
                    mine.contacts.add(row.started_at)
        if before is not None and before.number is not None and before != now:
            left = work.setdefault(before.number, _NumberWork())
            left.reordered = True
            if before.answered:
                left.contacts.add(before.started_at)
    return work


def _fill_call(row: Call, call: FinishedCall, number: str | None) -> None:
    row.linkedids = list(call.linkedids)
    row.started_at = call.started_at
    row.answered_at = call.answered_at
    row.ended_at = call.ended_at
    row.approximate_end = call.approximate_end
    row.direction = call.direction.value
    row.answered = call.answered
    row.number = number
    row.number_raw = call.external_number
    row.number_withheld = call.number_withheld
    row.callback_of = call.callback_of
    row.did = call.did
    row.ring_seconds = call.ring_seconds
    row.talk_seconds = call.talk_seconds
    row.queues = list(call.queues)
    row.announced_recordings = [[r.path, r.started_at, r.channel] for r in call.recordings]
    row.recording_hints = list(call.recording_hints)


def _sync_transaction(
    sessions: Callable[[], Session], work: Callable[[WriteTransaction[Any], Session], _T]
) -> _T:
    """:meth:`SqlJournal.transaction` for the batch thread: the version lock, ``work``, the
    new last version, commit (or rollback on any error)."""
    with sessions() as session, session.begin():
        last = _lock_versions(session)
        tx = WriteTransaction(session, last)
        result = work(tx, session)
        if tx.last_version != last:
            _store_last_version(session, tx.last_version)
        return result


def _lock_versions(session: Session) -> int:
    """Lock ``journal_state`` (``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already holds
    the database) and return the last version handed out."""
    last = session.execute(
        sa.select(JournalState.last_version).where(JournalState.id == 1).with_for_update()
    ).scalar()
    if last is None:
        raise RuntimeError("journal_state is missing: run `pbxjournal migrate`")
    return int(last)


def _store_last_version(session: Session, version: int) -> None:
    session.execute(
        sa.update(JournalState)
        .where(JournalState.id == 1)
        .values(last_version=version)
        .execution_options(synchronize_session=False)
    )
