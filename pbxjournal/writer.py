"""The journal writer: finished calls from the assembler into the SQL journal, never lost.

The AMI consumer must never wait for the database (Asterisk drops a manager session whose
reader stalls), so finished calls go into a bounded in-memory queue and one writer task drains
it in batches: what is waiting is written in one transaction, then the next batch, as soon
as the previous one committed (no timer). A single call is therefore visible as soon as its
own transaction commits, and a burst costs one commit per batch instead of one per call. A
batch holds as many calls as the database writes in about ``batch_seconds`` (measured as it
goes, at most ``max_batch``), 50 ms by default: a call that ends while a batch is being
written waits for that batch and its own. A database whose bare commit (a batch of one call)
takes longer than that aims at twice its commit instead: measuring each call at a whole
commit, it would otherwise write one call per commit for good (PostgreSQL on a busy host
fell behind a burst that way, docs/benchmarks.md). Under a steady stream of calls, though, a batch
would start the moment the previous one committed, with one or two calls in it, and the
fixed cost of a batch (the transaction, the reads it makes for all its calls, the readback
for the log, the wake-up of 1C's long-polls) would be paid that many times: batches start at
least ``min_batch_interval`` apart (40 ms by default), so that the calls ending meanwhile
share one. A call ending on a quiet line waits for nothing. The open conversations are saved
between batches, in slices of the same length (below), so that neither waits long for the
other.

When the database refuses (locked beyond ``busy_timeout``, disk full, read-only file, a
PostgreSQL failover or outage), the writer says so loudly, keeps the batch, and retries with
backoff; the AMI session is untouched. A finished call is never dropped: what waits goes to the
spool (:class:`CallSpool`), an append-only file of finished calls on the local disk, fsynced
before the calls leave memory. Calls are spooled as soon as a write fails (and, while writes
keep failing, as they arrive), when more than ``max_pending`` wait in memory (the database
cannot keep up), and at shutdown. The spool is written out first, in order, as soon as the
database takes writes again, and emptied once all of it is committed; it survives ``kill -9``
and is written at the next start. Memory therefore holds at most ``max_pending`` calls while
the spool's disk takes writes, plus those that finish during one step of the writer (a write
waiting for a lock, an fsync): the writer decides between its steps. If the spool fails too,
the calls stay in memory, with an error line.
``stats.writable`` and ``stats.last_error`` say whether the last write failed: ``/healthz``
answers 503 while they do.

At shutdown (:meth:`JournalWriter.close` with a deadline) the writer writes what waits in
memory for at most half of the time left, spools the rest, saves the open conversations and
returns: a backlog costs the next start time, not the shutdown.

Its first work (``first_work``, before any batch) is the daemon's start-up repair of a
changed attention window (``SqlJournal.repair_window``): the AMI connection and the HTTP API
are up meanwhile, finished calls wait in memory and are written after it, with the new
window. A repair that fails is logged and left for the next start (the window is recorded only
once it completed).

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
import dataclasses
import enum
import fcntl
import itertools
import json
import math
import os
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from connector.assembly import (
    Direction,
    FinishedCall,
    Leg,
    Participant,
    RecordingPart,
    Role,
    TransferNote,
)
from connector.recordings import FoundRecording, RecordingFinder
from storage.store import SqlJournal, WrittenBatch

__all__ = [
    "CallSpool",
    "JournalWriter",
    "SpoolBusy",
    "WriterStats",
    "call_from_json",
    "call_to_json",
]

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
    #: Finished calls put into the spool, and how many waited in memory at most.
    spooled: int = 0
    pending_high_water: int = 0
    writable: bool = True
    last_error: str | None = None


# -- the spool: finished calls on the local disk while the database cannot take them ------

#: The format of a spool line; a line of another version is skipped with an error.
SPOOL_VERSION = 1


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot spool {type(value).__name__}")


def call_to_json(call: FinishedCall) -> str:
    """One spool line (without its newline): the call, exactly."""
    return json.dumps(
        {"v": SPOOL_VERSION, "call": dataclasses.asdict(call)},
        default=_plain,
        ensure_ascii=False,
        separators=(",", ":"),
    )


def call_from_json(line: str | bytes) -> FinishedCall:
    """The call of a spool line (ValueError, KeyError or TypeError if it is not one)."""
    document = json.loads(line)
    if document.get("v") != SPOOL_VERSION:
        raise ValueError(f"spool line of version {document.get('v')!r}")
    data = dict(document["call"])
    return FinishedCall(
        **{
            **data,
            "linkedids": tuple(data["linkedids"]),
            "direction": Direction(data["direction"]),
            "participants": tuple(
                Participant(**{**p, "role": Role(p["role"])}) for p in data["participants"]
            ),
            "legs": tuple(Leg(**leg) for leg in data["legs"]),
            "recordings": tuple(RecordingPart(**r) for r in data["recordings"]),
            "recording_hints": tuple(data["recording_hints"]),
            "queues": tuple(data["queues"]),
            "transfers": tuple(TransferNote(**t) for t in data["transfers"]),
        }
    )


class SpoolError(RuntimeError):
    """The spool cannot be opened (its directory is missing)."""


class SpoolBusy(SpoolError):
    """Another process holds the spool (two daemons configured alike)."""


class CallSpool:
    """Finished calls waiting for the database, in an append-only JSON-lines file.

    ``PATH`` holds one call per line, appended and fsynced before the calls leave memory;
    ``PATH.done`` the byte offset up to which the lines are committed to the journal (written
    after each committed batch, atomically). Once every line is committed the file is
    emptied. A restart reads from the offset on, so a call is written again only if the
    daemon died between a batch's commit and the offset's update (writing a call again
    changes nothing: the journal keeps one row per conversation). A torn last line (killed in
    the middle of an append, before its fsync returned) is cut off at open.

    The file is locked (``flock``) while open: a second daemon on the same spool fails to start.
    All methods block (file I/O): the writer calls them in a worker thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._done_path = path.with_name(path.name + ".done")
        self._file: IO[bytes] | None = None
        #: Byte offset of the first line not committed, the file's size, and the lines between.
        self._read_at = 0
        self._size = 0
        self.count = 0

    def open(self, *, create_directory: bool = False) -> None:
        """Open (creating the file) and lock. The directory is created only when asked (a
        default of the daemon's own); a configured one, or the journal's, must exist: it is
        never made by accident where an admin did not mean it."""
        if create_directory:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        elif not self.path.parent.is_dir():
            raise SpoolError(
                f"cannot open the spool {self.path}: directory {self.path.parent} does not exist"
            )
        created = not self.path.exists()
        file = self.path.open("a+b")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise SpoolBusy(f"{self.path} is in use by another process") from None
        self._file = file
        if created:
            _fsync_directory(self.path.parent)
        size = os.fstat(file.fileno()).st_size
        try:
            offset = int(self._done_path.read_text("ascii").strip() or 0)
        except FileNotFoundError:
            offset = 0
        except ValueError:
            log.error(
                "spool offset unreadable; the whole spool is written again",
                path=str(self._done_path),
            )
            offset = 0
        if not 0 <= offset <= size:
            offset = 0
        count = 0
        end = offset
        with self.path.open("rb") as reader:
            reader.seek(offset)
            for line in reader:
                if not line.endswith(b"\n"):
                    break
                end += len(line)
                count += 1
        if end < size:
            log.warning("spool: a torn last line cut off", path=str(self.path), bytes=size - end)
            os.ftruncate(file.fileno(), end)
            os.fsync(file.fileno())
        self._read_at, self._size, self.count = offset, end, count
        if count == 0 and end:
            self._empty()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # releases the lock
            self._file = None

    def append(self, calls: Iterable[FinishedCall]) -> int:
        """Append calls and fsync; return how many."""
        assert self._file is not None, "spool not open"
        lines = [call_to_json(call) + "\n" for call in calls]
        if not lines:
            return 0
        data = "".join(lines).encode()
        fd = self._file.fileno()
        try:
            os.write(fd, data)
            os.fsync(fd)
        except OSError:
            # Whatever part of it was written goes: the calls are still in memory.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        self._size += len(data)
        self.count += len(lines)
        return len(lines)

    def read(self, limit: int) -> tuple[list[FinishedCall], int, int]:
        """Up to ``limit`` calls from the first not committed: (calls, the offset after
        them, the lines they took). A line that cannot be read is skipped with an error."""
        calls: list[FinishedCall] = []
        lines = 0
        offset = self._read_at
        with self.path.open("rb") as reader:
            reader.seek(offset)
            while lines < limit and offset < self._size:
                line = reader.readline()
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                lines += 1
                try:
                    calls.append(call_from_json(line))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("spool: unreadable line skipped", path=str(self.path), error=str(exc))
        return calls, offset, lines

    def committed(self, offset: int, lines: int) -> None:
        """The lines up to ``offset`` are in the journal."""
        self._read_at = offset
        self.count -= lines
        if self.count <= 0:
            self._empty()
            return
        temporary = self._done_path.with_name(self._done_path.name + ".tmp")
        temporary.write_text(str(offset), "ascii")
        os.replace(temporary, self._done_path)

    def conversation_ids(self) -> set[str]:
        """The conversations of the calls not committed yet (read at start)."""
        calls, _, _ = self.read(self.count)
        return {call.conversation_id for call in calls}

    def _empty(self) -> None:
        assert self._file is not None, "spool not open"
        # The offset first: dying in between writes the spool again, never skips a call.
        self._done_path.unlink(missing_ok=True)
        os.ftruncate(self._file.fileno(), 0)
        os.fsync(self._file.fileno())
        self._read_at = self._size = self.count = 0


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalWriter:
    def __init__(
        self,
        journal: SqlJournal,
        finder: RecordingFinder,
        clock: Callable[[], float],
        *,
        on_written: OnWritten | None = None,
        spool: CallSpool | None = None,
        max_pending: int = 10_000,
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
        first_work: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.journal = journal
        self.first_work = first_work
        self.finder = finder
        self.clock = clock
        self.on_written = on_written
        #: Finished calls waiting for the database on disk (None: memory only, which grows
        #: as long as the database refuses; the daemon always has one).
        self.spool = spool
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.batch_seconds = batch_seconds
        self.min_batch_interval = min_batch_interval
        self._last_batch_at = -math.inf
        #: Seconds one call takes to write, a moving average (a guess until measured).
        self._call_seconds = 0.02
        #: Seconds a batch of one call takes, a moving average (0.0 until measured): a
        #: commit's own cost, whatever the calls in it.
        self._commit_seconds = 0.0
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
        #: After a failed append to the spool: not before this (loop time).
        self._spool_retry_at = 0.0
        self._memory_warned = False
        self.stats = WriterStats()
        self._pending: deque[FinishedCall] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        #: At shutdown: loop time by which run() returns, and until when it still writes.
        self._deadline = math.inf
        self._drain_until = math.inf
        self._window_changed = asyncio.Event()
        #: The earliest window close the settler last read (None: no open window).
        self._next_close: float | None = None
        self._settling = True

    @property
    def closing(self) -> bool:
        """:meth:`close` was called (a long first work stops between two of its steps)."""
        return self._closing

    @property
    def pending(self) -> int:
        """Finished calls waiting in memory."""
        return len(self._pending)

    @property
    def spooled(self) -> int:
        """Finished calls waiting in the spool."""
        return self.spool.count if self.spool is not None else 0

    @property
    def write_failure(self) -> str | None:
        """Why the last write failed, while writes fail (None when they succeed)."""
        return None if self.stats.writable else self.stats.last_error or "write failed"

    def submit(self, calls: Sequence[FinishedCall]) -> None:
        """Queue finished calls (from the AMI consumer: never blocks, never drops)."""
        if not calls:
            return
        self._pending.extend(calls)
        self.stats.pending_high_water = max(self.stats.pending_high_water, len(self._pending))
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything submitted so far is written (or the writer is closed)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Write batches until :meth:`close`; then spool what is left and return."""
        try:
            async with asyncio.TaskGroup() as tasks:
                settler = tasks.create_task(self._settle_windows(), name="window-settler")
                try:
                    await self._first_work()
                    await self._write_loop()
                finally:
                    # Python 3.11's wait_for can swallow a cancellation that arrives as the
                    # event it waits on is set (after every batch): the flag ends the loop.
                    self._settling = False
                    self._window_changed.set()
                    settler.cancel()
        finally:
            # Cancelled (the daemon's stop deadline) or failed: what is still in memory goes
            # to disk, here and now.
            if self._pending and self.spool is not None:
                try:
                    self.spool.append(list(self._pending))
                except OSError as exc:
                    log.error(
                        "finished calls lost: cannot spool them",
                        calls=len(self._pending),
                        error=f"{type(exc).__name__}: {exc}",
                    )
                else:
                    self.stats.spooled += len(self._pending)
                    self._pending.clear()
            self._idle.set()

    async def _first_work(self) -> None:
        """``first_work``, once; its failure is logged, and writing goes on."""
        if self.first_work is None:
            return
        try:
            await self.first_work()
        except Exception as exc:
            log.error(
                "re-evaluation with the configured attention window failed; "
                "it is tried again at the next start",
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            self._window_changed.set()  # windows may have moved: the settler looks again

    async def close(self, deadline: float | None = None) -> None:
        """Stop: the daemon's graceful shutdown. With a ``deadline`` (loop time) and a spool,
        what waits in memory is written for at most half of the time left and spooled after
        that, the open conversations are saved, and :meth:`run` returns by the deadline
        (unless one write outlasts it: the daemon cancels it then). Without a spool
        everything queued is written first."""
        self._closing = True
        if deadline is not None:
            now = asyncio.get_running_loop().time()
            self._deadline = deadline
            self._drain_until = now + max(0.0, deadline - now) / 2
        self._wake.set()

    def _set_writable(self, ok: bool, error: str | None = None) -> None:
        self.stats.writable = ok
        self.stats.last_error = error

    def _waiting(self) -> bool:
        return bool(self._pending) or self.spooled > 0

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
            if self._closing and self._done_writing(failures, now):
                await self._finish()
                return
            # 2. Calls to disk when the database refuses or cannot keep up.
            if self._spill_due(now):
                await self._spill()
            # 3. One slice of the open conversations.
            if self._unsaved_count and now >= self._persist_retry_at:
                await self._save_open_slice()
            # 4. One batch of finished calls: the spool's first, in order.
            from_spool = self.spooled > 0 and not self._closing
            if not from_spool and not self._pending:
                if self._unsaved_count and now >= self._persist_retry_at:
                    continue
                if self._closing:
                    continue  # _done_writing says so at the top
                self._idle.set()
                self._wake.clear()
                # A full round waits for the states still unsaved (after a failed save).
                wake_at = self._persist_retry_at if self._unsaved_count else next_persist
                if self.open_new is not None:
                    wake_at = min(wake_at, next_new)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - loop.time()))
                continue
            # A database whose bare commit outlasts batch_seconds (PostgreSQL on a busy host,
            # or across a network) aims at batches twice that commit: aiming at batch_seconds,
            # it would measure each call at that whole commit and write one call per commit
            # for good, slower than calls end.
            target = max(self.batch_seconds, 2 * self._commit_seconds)
            size = max(1, min(self.max_batch, int(target / self._call_seconds)))
            spool_end = spool_lines = 0
            if from_spool:
                assert self.spool is not None
                batch, spool_end, spool_lines = await asyncio.to_thread(self.spool.read, size)
            else:
                gather = self._last_batch_at + self.min_batch_interval - loop.time()
                if gather > 0 and not self._closing and len(self._pending) < size:
                    # The previous batch began a moment ago: let the calls ending now join.
                    await asyncio.sleep(gather)
                batch = [self._pending[i] for i in range(min(size, len(self._pending)))]
            began = self._last_batch_at = loop.time()
            try:
                written = await self._write(batch) if batch else None
            except Exception as exc:  # the database said no: keep the batch, retry
                failures += 1
                self.stats.failures += 1
                self._set_writable(False, f"{type(exc).__name__}: {exc}")
                delay = min(self.retry_max, self.retry_min * 2 ** min(failures - 1, 16))
                delay *= random.uniform(0.8, 1.2)
                log.error(
                    "journal write failed; calls held for retry",
                    error=self.stats.last_error,
                    pending=len(self._pending),
                    spooled=self.spooled,
                    retry_in=round(delay, 2),
                )
                if self._closing and self.spool is None and failures >= 3:
                    log.error("giving up at shutdown; unwritten calls", pending=len(self._pending))
                    self._idle.set()
                    return
                await self._pause(delay)
                continue
            took = loop.time() - began
            if len(batch) == 1:
                self._commit_seconds = (
                    0.7 * self._commit_seconds + 0.3 * took if self._commit_seconds else took
                )
            elif batch:
                # A bare commit takes no longer than a batch of several did: one slow commit
                # (a lock waited for) does not keep the batches big once batches are written.
                self._commit_seconds = min(self._commit_seconds, took)
            if batch:
                per_call = took / len(batch)
                self._call_seconds = 0.7 * self._call_seconds + 0.3 * max(per_call, 1e-5)
            if failures:
                log.warning("journal writable again", after_failures=failures)
            failures = 0
            self._set_writable(True)
            if from_spool:
                assert self.spool is not None
                await asyncio.to_thread(self.spool.committed, spool_end, spool_lines)
                if not self.spool.count:
                    log.info("journal spool written out and emptied")
            else:
                for _ in batch:
                    self._pending.popleft()
                # Their rows replaced their saved states in that transaction: a state of
                # theirs still waiting for its slice would bring them back.
                self._written_or_spooled([call.conversation_id for call in batch])
            self.stats.calls_written += len(batch)
            self.stats.batches += 1
            if written is None:
                continue
            opened = written.earliest_window
            if opened is not None and (self._next_close is None or opened < self._next_close):
                self._window_changed.set()  # earlier than the settler's timer: look again
            if written.changes and self.on_written is not None:
                result = self.on_written(written)
                if isinstance(result, Awaitable):
                    await result

    def _done_writing(self, failures: int, now: float) -> bool:
        """Closing: whether to stop writing (and spool what is left)."""
        if not self._pending:
            return True
        if self.spool is None:
            return False  # everything is written (or given up after three failures)
        return failures > 0 or now >= self._drain_until

    def _spill_due(self, now: float) -> bool:
        if self.spool is None or not self._pending or now < self._spool_retry_at:
            return False
        return not self.stats.writable or len(self._pending) >= self.max_pending

    def _written_or_spooled(self, keys: list[str]) -> None:
        """These calls left memory for good: their saved states are the journal's (or the
        spool's) business now, not the open-conversation saves'."""
        for key in keys:
            self._unsaved.pop(key, None)
        self._unsaved_count = len(self._unsaved) + len(self._unsaved_gone)
        if self.open_written is not None:
            self.open_written(keys)

    async def _spill(self) -> bool:
        """Move every call waiting in memory to the spool (appended, fsynced)."""
        assert self.spool is not None
        calls = list(self._pending)
        first = self.spool.count == 0
        try:
            await asyncio.to_thread(self.spool.append, calls)
        except OSError as exc:
            loop = asyncio.get_running_loop()
            self._spool_retry_at = loop.time() + 1.0
            if not self._memory_warned:
                self._memory_warned = True
                log.error(
                    "cannot spool finished calls; they stay in memory",
                    error=f"{type(exc).__name__}: {exc}",
                    pending=len(self._pending),
                    spool=str(self.spool.path),
                )
            return False
        self._memory_warned = False
        for _ in calls:
            self._pending.popleft()
        self._written_or_spooled([call.conversation_id for call in calls])
        self.stats.spooled += len(calls)
        if first:
            log.warning(
                "finished calls go to the spool until the database takes them",
                calls=len(calls),
                spool=str(self.spool.path),
                reason=self.stats.last_error or "backlog",
            )
        return True

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` before retrying a write; meanwhile spool what arrives (the
        database refuses: memory must not fill) and stop waiting at :meth:`close`."""
        loop = asyncio.get_running_loop()
        until = loop.time() + delay
        while not self._closing:
            self._wake.clear()
            if self._spill_due(loop.time()):
                await self._spill()
            remaining = until - loop.time()
            if remaining <= 0:
                return
            if self._pending and self.spool is not None:
                remaining = min(remaining, max(0.01, self._spool_retry_at - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    async def _finish(self) -> None:
        """Shutdown: spool what was not written, save every open conversation (by the
        deadline), and say idle."""
        if self._pending and self.spool is not None and await self._spill():
            log.info("unwritten calls spooled for the next start", spooled=self.spooled)
        if not self.stats.writable:
            # One more try would only wait out the database's timeouts (SQLite's busy
            # timeout cannot be cut short): the last periodic save and the resync after the
            # next login cover the open conversations.
            log.warning(
                "database refusing writes at stop: open conversations not saved again",
                error=self.stats.last_error,
            )
            self._idle.set()
            return
        self._persist_everything = True
        self._take_open()
        try:
            async with asyncio.timeout_at(self._deadline if self._deadline < math.inf else None):
                while self._unsaved_count:
                    if not await self._save_open_slice():
                        break
        except TimeoutError:
            log.warning(
                "stop deadline: open conversations not all saved",
                unsaved=self._unsaved_count,
            )
        self._idle.set()

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

    async def _save_open_slice(self) -> bool:
        """Save the next states waiting, as many as the database saves in about
        ``batch_seconds``, with every key to delete, in one transaction; False if the
        database refused."""
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
            error = f"{type(exc).__name__}: {exc}"
            self._set_writable(False, error)
            log.warning("saving open conversations failed", error=error)
            return False
        if not self._waiting():
            # Nothing else to prove it: this write did (with calls waiting, their batch must).
            self._set_writable(True)
        if keys:
            per_state = (loop.time() - began) / len(keys)
            self._state_seconds = 0.7 * self._state_seconds + 0.3 * max(per_state, 1e-5)
        for key in keys:
            # A batch written meanwhile may have dropped it already.
            if self._unsaved.get(key) is states[key]:
                del self._unsaved[key]
        self._unsaved_gone = self._unsaved_gone - gone
        self._unsaved_count = len(self._unsaved) + len(self._unsaved_gone)
        return True

    def _find_all(self, batch: list[FinishedCall]) -> list[list[FoundRecording]]:
        # Blocking stat() calls: a worker thread, never the event loop.
        return [self.finder.find(call) for call in batch]

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
