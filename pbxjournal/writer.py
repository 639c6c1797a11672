"""The journal writer: finished calls from the assembler into the SQL journal, never lost.

The AMI consumer must never wait for the database (Asterisk drops a manager session whose
reader stalls), so finished calls go into a bounded in-memory queue and one writer task drains
it in batches: what is waiting is written in one transaction, then the next batch, as soon
as the previous one committed (no timer). A single call is therefore visible as soon as its
own transaction commits, and a burst costs one commit per batch instead of one per call. A
batch holds as many calls as the database writes in about ``batch_seconds`` (measured as it
goes, at most ``max_batch``), 50 ms by default: a call that ends while a batch is being
written waits for that batch and its own. Under a steady stream of calls, though, a batch
would start the moment the previous one committed, with one or two calls in it, and the
fixed cost of a batch (the transaction, the reads it makes for all its calls, the readback
for the log, the wake-up of 1C's long-polls) would be paid that many times: batches start at
least ``min_batch_interval`` apart (40 ms by default), so that the calls ending meanwhile
share one. A call ending on a quiet line waits for nothing. The open conversations are saved
between batches, in slices of the same length (below), so that neither waits long for the
other.

When the database refuses (locked beyond ``busy_timeout``, disk full, read-only file, a
PostgreSQL failover), the writer says so loudly, keeps the batch, and retries with backoff;
the AMI session is untouched and the calls wait in the queue. Only if the queue overflows
(``max_pending`` calls, hours of traffic) is the oldest call dropped, each with an error line
naming it. Health reports the database as not writable while writes fail.

The writer also settles attention windows: it sleeps until the journal's next window closes
(``SqlJournal.next_window_close``), not polling the table, and looks again only when a batch
opened a window that closes earlier than the one it waits for.

And it keeps the open conversations in the database, so that a restart of the daemon loses no
call in progress: every ``persist_interval`` it saves the conversations that changed, and the
state of a conversation is deleted in the very transaction that writes its row. Both happen in
this one task, so a saved state can never outlive the row that replaced it: the states handed
out wait in a queue and are saved a slice (one transaction) at a time between batches, and a
batch drops the states of its calls still waiting there. A conversation the
database has never seen is saved sooner, within ``persist_new_interval``: killed before that,
the daemon would not even know after its restart that the call existed, and a short call that
ended meanwhile would be lost; an older one only loses its latest changes, which the
resynchronisation after the restart settles. A conversation that finished is saved once more
as it ended (``open_new`` hands those out too) unless its row is written first, and
``open_written`` tells the assembler when that is: a backlog of writes killed with the daemon
is taken back whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from connector.assembly import FinishedCall
from connector.recordings import FoundRecording, RecordingFinder
from storage.store import SqlJournal, WrittenBatch

__all__ = ["JournalWriter", "WriterStats"]

log = structlog.get_logger("pbxjournal.writer")

#: Called after each committed batch that changed rows, with the rows read back.
OnWritten = Callable[[WrittenBatch], Awaitable[None] | None]
#: Open conversations changed since the last call (key → state) and keys merged away.
OpenChanges = Callable[[], tuple[dict[str, dict[str, Any]], set[str]]]


@dataclass(slots=True)
class WriterStats:
    calls_written: int = 0
    batches: int = 0
    failures: int = 0
    dropped: int = 0
    pending_high_water: int = 0
    writable: bool = True
    last_error: str | None = None


class JournalWriter:
    def __init__(
        self,
        journal: SqlJournal,
        finder: RecordingFinder,
        clock: Callable[[], float],
        *,
        on_written: OnWritten | None = None,
        max_pending: int = 100_000,
        max_batch: int = 500,
        batch_seconds: float = 0.05,
        min_batch_interval: float = 0.04,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        open_changes: OpenChanges | None = None,
        open_all: Callable[[], dict[str, dict[str, Any]]] | None = None,
        open_prefix: str = "",
        persist_interval: float = 2.0,
        open_new: OpenChanges | None = None,
        persist_new_interval: float = 0.25,
        open_written: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.journal = journal
        self.finder = finder
        self.clock = clock
        self.on_written = on_written
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.batch_seconds = batch_seconds
        self.min_batch_interval = min_batch_interval
        self._last_batch_at = -math.inf
        #: Seconds one call takes to write, a moving average (a guess until measured).
        self._call_seconds = 0.02
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.open_changes = open_changes
        self.open_all = open_all
        self.open_prefix = open_prefix
        self.persist_interval = persist_interval
        self.open_new = open_new
        self.open_written = open_written
        self.persist_new_interval = persist_new_interval
        self._persist_everything = False
        #: Open-conversation states handed out and not saved yet (key → state, oldest
        #: first), keys whose saved state must go, and how many of both there are.
        self._unsaved: dict[str, dict[str, Any]] = {}
        self._unsaved_gone: set[str] = set()
        self._unsaved_count = 0
        #: Seconds one state takes to save, a moving average (a guess until measured).
        self._state_seconds = 0.002
        #: After a failed save: not before this (loop time).
        self._persist_retry_at = 0.0
        self.stats = WriterStats()
        self._pending: deque[FinishedCall] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._window_changed = asyncio.Event()
        #: The earliest window close the settler last read (None: no open window).
        self._next_close: float | None = None
        self._settling = True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, calls: Sequence[FinishedCall]) -> None:
        """Queue finished calls (from the AMI consumer: never blocks)."""
        if not calls:
            return
        for call in calls:
            if len(self._pending) >= self.max_pending:
                lost = self._pending.popleft()
                self.stats.dropped += 1
                if self.open_written is not None:
                    # Its saved state stays in the database: a restart takes it back.
                    self.open_written([lost.conversation_id])
                log.error(
                    "journal queue full: oldest finished call dropped",
                    linkedid=lost.conversation_id,
                    max_pending=self.max_pending,
                )
            self._pending.append(call)
        self.stats.pending_high_water = max(self.stats.pending_high_water, len(self._pending))
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything submitted so far is written (or the writer is closed)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Write batches until :meth:`close`; then write what is left and return."""
        async with asyncio.TaskGroup() as tasks:
            settler = tasks.create_task(self._settle_windows(), name="window-settler")
            try:
                await self._write_loop()
            finally:
                # Python 3.11's wait_for can swallow a cancellation that arrives as the event
                # it waits on is set (after every batch): the flag ends the loop regardless.
                self._settling = False
                self._window_changed.set()
                settler.cancel()

    async def close(self) -> None:
        """Stop after writing what is queued (the daemon's graceful shutdown)."""
        self._closing = True
        self._wake.set()

    async def _write_loop(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        next_persist = loop.time() + self.persist_interval
        next_new = loop.time() + self.persist_new_interval
        while True:
            # 1. Hand out the open conversations whose save is due; they are saved a slice
            # at a time, between batches, so neither waits long for the other.
            now = loop.time()
            if now >= next_persist and not self._unsaved:
                self._take_open()
                next_persist = now + self.persist_interval
                next_new = now + self.persist_new_interval
            elif self.open_new is not None and now >= next_new:
                self._take_open(new_only=True)
                next_new = now + self.persist_new_interval
            if self._closing and not self._pending and not self._persist_everything:
                # Shutdown: every open conversation, changed or not, with what is waiting.
                self._persist_everything = True
                self._take_open()
            # 2. One slice of them.
            if self._unsaved_count and now >= self._persist_retry_at:
                await self._save_open_slice()
            # 3. One batch of finished calls.
            if not self._pending:
                if self._unsaved_count and now >= self._persist_retry_at:
                    continue
                if self._closing:
                    self._idle.set()
                    return
                self._idle.set()
                self._wake.clear()
                # A full round waits for the states still unsaved (after a failed save).
                wake_at = self._persist_retry_at if self._unsaved_count else next_persist
                if self.open_new is not None:
                    wake_at = min(wake_at, next_new)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - loop.time()))
                continue
            size = max(1, min(self.max_batch, int(self.batch_seconds / self._call_seconds)))
            gather = self._last_batch_at + self.min_batch_interval - loop.time()
            if gather > 0 and not self._closing and len(self._pending) < size:
                # The previous batch began a moment ago: let the calls ending now join this one.
                await asyncio.sleep(gather)
            batch = [self._pending[i] for i in range(min(size, len(self._pending)))]
            began = self._last_batch_at = loop.time()
            try:
                written = await self._write(batch)
            except Exception as exc:  # the database said no: keep the batch, retry
                failures += 1
                self.stats.failures += 1
                self.stats.writable = False
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(self.retry_max, self.retry_min * 2 ** min(failures - 1, 16))
                delay *= random.uniform(0.8, 1.2)
                log.error(
                    "journal write failed; calls held for retry",
                    error=self.stats.last_error,
                    pending=len(self._pending),
                    retry_in=round(delay, 2),
                )
                if self._closing and failures >= 3:
                    log.error("giving up at shutdown; unwritten calls", pending=len(self._pending))
                    self._idle.set()
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._never(), delay)
                continue
            per_call = (loop.time() - began) / len(batch)
            self._call_seconds = 0.7 * self._call_seconds + 0.3 * max(per_call, 1e-5)
            if failures:
                log.warning("journal writable again", after_failures=failures)
            failures = 0
            self.stats.writable = True
            self.stats.last_error = None
            for _ in batch:
                self._pending.popleft()
            # Their rows replaced their saved states in that transaction: a state of theirs
            # still waiting for its slice would bring them back.
            for call in batch:
                self._unsaved.pop(call.conversation_id, None)
            self._unsaved_count = len(self._unsaved) + len(self._unsaved_gone)
            if self.open_written is not None:
                self.open_written([call.conversation_id for call in batch])
            self.stats.calls_written += len(batch)
            self.stats.batches += 1
            opened = written.earliest_window
            if opened is not None and (self._next_close is None or opened < self._next_close):
                self._window_changed.set()  # earlier than the settler's timer: look again
            if written.changes and self.on_written is not None:
                result = self.on_written(written)
                if isinstance(result, Awaitable):
                    await result

    async def _write(self, batch: list[FinishedCall]) -> WrittenBatch:
        found = await asyncio.to_thread(self._find_all, batch)
        return await self.journal.write_batch(
            list(zip(batch, found, strict=True)),
            self.clock(),
            open_keys=[self.open_prefix + call.conversation_id for call in batch]
            if self.open_changes is not None
            else (),
            read_back=self.on_written is not None,
        )

    def _take_open(self, *, new_only: bool = False) -> None:
        """Take the open conversations that changed (all of them at shutdown), or only those
        the database has never seen, into the states to save.

        A newer state replaces a state of the same conversation still waiting; those never
        saved yet go first. A key to delete drops the state waiting under it."""
        if self.open_changes is None:
            return
        if new_only:
            if self.open_new is None or self._persist_everything:
                return  # the next full round saves everything anyway
            states, gone = self.open_new()
        elif self._persist_everything and self.open_all is not None:
            # Resets the change tracking; what it hands out beyond the open conversations
            # (finished ones not written yet, keys to delete) must not be lost.
            states, gone = self.open_changes()
            states.update(self.open_all())
        else:
            states, gone = self.open_changes()
        if not states and not gone:
            return
        older = self._unsaved
        for key in gone:
            older.pop(key, None)
        if new_only:
            states.update((k, v) for k, v in older.items() if k not in states)
            self._unsaved = states
        else:
            older.update(states)
        self._unsaved_gone |= gone
        self._unsaved_count = len(self._unsaved) + len(self._unsaved_gone)

    async def _save_open_slice(self) -> None:
        """Save the next states waiting, as many as the database saves in about
        ``batch_seconds``, with every key to delete, in one transaction."""
        loop = asyncio.get_running_loop()
        size = max(1, int(self.batch_seconds / self._state_seconds))
        keys = list(itertools.islice(self._unsaved, size))
        states = {key: self._unsaved[key] for key in keys}
        gone = self._unsaved_gone
        prefix = self.open_prefix
        began = loop.time()
        try:
            await self.journal.sync_open(
                {prefix + k: v for k, v in states.items()}, {prefix + k for k in gone}, self.clock()
            )
        except Exception as exc:
            # Nothing is lost: the states wait for the next try, newer ones replacing them.
            self._persist_retry_at = loop.time() + self.persist_new_interval
            log.warning("saving open conversations failed", error=f"{type(exc).__name__}: {exc}")
            return
        if keys:
            per_state = (loop.time() - began) / len(keys)
            self._state_seconds = 0.7 * self._state_seconds + 0.3 * max(per_state, 1e-5)
        for key in keys:
            # A batch written meanwhile may have dropped it already.
            if self._unsaved.get(key) is states[key]:
                del self._unsaved[key]
        self._unsaved_gone = self._unsaved_gone - gone
        self._unsaved_count = len(self._unsaved) + len(self._unsaved_gone)

    def _find_all(self, batch: list[FinishedCall]) -> list[list[FoundRecording]]:
        # Blocking stat() calls: a worker thread, never the event loop.
        return [self.finder.find(call) for call in batch]

    async def _never(self) -> None:
        await asyncio.Event().wait()

    async def _settle_windows(self) -> None:
        """Sleep until the next attention window closes; settle; repeat."""
        while self._settling:
            self._window_changed.clear()
            try:
                closes = await self.journal.next_window_close()
            except Exception as exc:
                log.warning("cannot read the next window close", error=str(exc))
                closes = None
            self._next_close = closes
            now = self.clock()
            wait = 3600.0 if closes is None else max(0.05, min(3600.0, closes - now))
            if closes is not None and closes <= now:
                try:
                    settled = await self.journal.settle(now)
                except Exception as exc:
                    log.warning("settling attention windows failed", error=str(exc))
                    wait = 5.0  # the write loop reports the database; do not spin here
                else:
                    if settled:
                        log.info("attention windows closed", calls=settled)
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._window_changed.wait(), wait)
