"""Wake-ups for ``GET /changes?wait=``: a long-poll returns as soon as a change is committed.

Theory of operation
-------------------
:class:`ChangeFeed` knows the newest committed journal version it has heard of. A long-poll
that found nothing waits on the feed's current :class:`asyncio.Event`; when the version moves,
that event is set (waking every waiter at once) and replaced by a fresh one. A thousand
waiting clients are a thousand suspended coroutines on one event: no timer, no query, nothing
per client.

The version moves from three sources:

1. **This process's writers** call :meth:`ChangeFeed.committed` right after a write
   transaction commits: the daemon after each journal write, the HTTP handlers after a comment,
   a binding, a customer. The waiters wake in the same loop iteration.
2. **Other processes on PostgreSQL** (a second daemon for a second PBX, a stateless HTTP
   front end taking comments): every feed sends ``NOTIFY pbxjournal_changes, '<version>'``
   after its own commits, on a dedicated asyncpg connection that also ``LISTEN``\\s to the
   channel. PostgreSQL delivers a notification only after the sender's commit is visible.
   The connection is re-established with backoff when it drops.
3. **A version probe**: while anyone waits, one task reads ``journal_state.last_version``,
   every ``probe_interval`` at most, starting fast after a change and backing off while
   nothing happens. On SQLite (no notifications across processes: ``pbxjournal replay
   --database`` into the daemon's file, a migration) this is the only cross-process path,
   and its ceiling (0.1 s) keeps a long-poll within ~100 ms of any writer. On PostgreSQL it
   is a slow safety net (2 s) for writers that do not notify. Nobody waiting: no probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.engine import make_url

from storage.journal import JournalEntry
from storage.queries import journal_identity
from storage.store import Change, SqlJournal

__all__ = ["CHANNEL", "ChangeFeed", "FeedTiming"]

log = structlog.get_logger("pbxjournal.http")

#: The PostgreSQL notification channel (payload: the newest committed version).
CHANNEL = "pbxjournal_changes"
#: Longest the pool's warm-up may take before it is given up (seconds).
WARM_UP_TIMEOUT = 30.0
#: How many of the last committed row versions the feed keeps to answer long-polls from.
RECENT_ENTRIES = 2000


@dataclass(frozen=True, slots=True)
class FeedTiming:
    #: First probe delay after a change (seconds).
    probe_min: float
    #: Longest probe delay while nothing changes.
    probe_max: float
    #: Reconnect delays of the LISTEN connection.
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0

    @classmethod
    def for_dialect(cls, dialect: str) -> FeedTiming:
        if dialect == "postgresql":
            return cls(probe_min=0.5, probe_max=2.0)
        return cls(probe_min=0.02, probe_max=0.1)


class ChangeFeed:
    """The newest committed version, and the event long-polls wait on."""

    def __init__(self, journal: SqlJournal, *, timing: FeedTiming | None = None) -> None:
        self.journal = journal
        self.timing = timing or FeedTiming.for_dialect(journal.database.dialect)
        #: The newest committed version: only ever a version this process committed, read
        #: from the database or was notified of by another writer, never a client's number.
        self.version = 0
        self._journal_id: str | None = None
        self._changed = asyncio.Event()
        self._waiters = 0
        self._someone_waits = asyncio.Event()
        self._closed = False
        #: Highest version committed here and not yet announced over NOTIFY.
        self._unannounced: int | None = None
        self._announce = asyncio.Event()
        self.listening = False
        #: The reader pool's connections were warmed since the LISTEN connection was made.
        self.warmed = False
        self.notifications_received = 0
        self.probes = 0
        #: Probes that found a version nobody had told the feed of (another process's commit).
        self.probe_finds = 0
        #: Reads of ``/changes`` answered without a query (the remembered rows, or nothing
        #: beyond the feed's version), and those that queried the database.
        self.answers_from_memory = 0
        self.answers_from_database = 0
        #: The entries of the last versions committed here, by version (see :meth:`recent`).
        self._recent: OrderedDict[int, JournalEntry] = OrderedDict()

    # -- writers ------------------------------------------------------------------------

    def committed(self, changes: Iterable[Change] | int) -> None:
        """A write transaction of this process committed these changes (or this version).

        Synchronous and cheap: call it right after ``await journal.write(...)`` and friends.
        """
        if isinstance(changes, int):
            newest = changes
        else:
            newest = max((change.version for change in changes), default=0)
        if newest <= 0:
            return
        self.advance(newest)
        if self.journal.database.dialect == "postgresql":
            self._unannounced = max(self._unannounced or 0, newest)
            self._announce.set()

    def advance(self, version: int) -> None:
        """The journal is known to be at ``version`` or beyond: wake whoever waits for it."""
        if version <= self.version:
            return
        self.version = version
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def remember(self, entries: Iterable[JournalEntry]) -> None:
        """The rows of a batch this process just committed, as read back after the commit:
        a long-poll it wakes can be answered from them instead of from the database. A row
        is kept under the version it was read with; a version never changes its row."""
        recent = self._recent
        for entry in sorted(entries, key=lambda e: e.version):
            recent[entry.version] = entry
            recent.move_to_end(entry.version)
        while len(recent) > RECENT_ENTRIES:
            recent.popitem(last=False)

    def recent(self, since: int, limit: int) -> tuple[list[JournalEntry], int] | None:
        """What ``storage.queries.changes(session, since, limit)`` would answer, if every
        version from ``since`` up to the newest the feed knows is among the remembered rows;
        None otherwise (a version committed by another path or process, or evicted).

        The versions are gap-free and each belongs to one row state, so the remembered ones
        in order, less the rows that reappear at a later version, are the page."""
        last = self.version
        recent = self._recent
        if since >= last or since + 1 not in recent:
            return None
        versions = range(since + 1, last + 1)
        if any(v not in recent for v in versions):
            return None
        newest: dict[int, int] = {}
        for version in versions:
            newest[recent[version].id] = version
        page: list[JournalEntry] = []
        for version in versions:
            entry = recent[version]
            if newest[entry.id] != version:
                continue  # the row changed again later: it is shown at its newest version
            page.append(entry)
            if len(page) == limit:
                return page, version
        return page, last

    # -- readers ------------------------------------------------------------------------

    async def journal_id(self) -> str:
        """The journal's UUID (``journal_state.journal_id``), read once: it never changes."""
        if self._journal_id is None:
            async with self.journal.database.sessions() as session:
                self._journal_id = (await journal_identity(session)).journal_id
        return self._journal_id

    @property
    def waiting(self) -> int:
        return self._waiters

    async def wait_beyond(self, version: int, seconds: float) -> bool:
        """Wait up to ``seconds`` for a version above ``version``; True if it came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.version <= version and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed = self._changed
            self._waiters += 1
            self._someone_waits.set()
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return False
            finally:
                self._waiters -= 1
        return self.version > version

    def close(self) -> None:
        """Server shutting down: release every waiter now (they answer with what they have)."""
        self._closed = True
        self._changed.set()
        self._someone_waits.set()
        self._announce.set()

    # -- background work, owned by the application (see :meth:`running`) ----------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ChangeFeed]:
        """Start the probe (and on PostgreSQL the LISTEN connection); stop them on exit."""
        try:
            self.version = await self.journal.last_version()
            await self.journal_id()
        except Exception as exc:  # the database may come up later: the probe catches up
            log.warning("change feed: cannot read the journal version yet", error=str(exc))
        tasks = [asyncio.create_task(self._probe_loop(), name="changes-probe")]
        if self.journal.database.dialect == "postgresql":
            tasks.append(asyncio.create_task(self._listen_loop(), name="changes-listen"))
        try:
            yield self
        finally:
            self.close()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def probe(self) -> int:
        """Read the committed version now and wake waiters if it moved."""
        self.probes += 1
        version = await self.journal.last_version()
        if version > self.version:
            self.probe_finds += 1
        self.advance(version)
        return version

    async def _probe_loop(self) -> None:
        delay = self.timing.probe_min
        while not self._closed:
            if self._waiters == 0:
                self._someone_waits.clear()
                await self._someone_waits.wait()
                delay = self.timing.probe_min
                continue
            await asyncio.sleep(delay)
            if self._waiters == 0:
                continue
            finds = self.probe_finds
            try:
                await self.probe()
            except Exception as exc:
                log.warning("change feed: version probe failed", error=str(exc))
                delay = self.timing.probe_max
                continue
            # Fast again only when the probe found what this process did not commit itself
            # (another writer is active): this process's own commits wake waiters directly.
            moved = self.probe_finds > finds
            delay = self.timing.probe_min if moved else min(delay * 2, self.timing.probe_max)

    async def _warm_connections(self) -> None:
        """Plan the journal's statements on each of the pool's connections
        (:func:`storage.queries.warm_up`): a new backend's first plans read the catalogs,
        about 550 pages after a restart; here, not in the first requests. Never fatal."""
        from storage.queries import warm_up

        began = time.monotonic()
        try:
            count = await asyncio.wait_for(
                self.journal.database.warm_connections(warm_up), WARM_UP_TIMEOUT
            )
        except Exception as exc:  # the schema may not be there yet; requests work anyway
            log.warning("change feed: warming the connections failed", error=str(exc))
            return
        self.warmed = True
        log.info(
            "database connections warmed",
            connections=count,
            ms=round((time.monotonic() - began) * 1000, 1),
        )

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self.notifications_received += 1
        try:
            version = int(payload)
        except ValueError:
            return
        self.advance(version)

    async def _listen_loop(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        url = make_url(self.journal.database.url)
        delay = self.timing.reconnect_min
        while not self._closed:
            try:
                connection = await asyncpg.connect(
                    user=url.username,
                    password=url.password,
                    host=url.host,
                    port=url.port,
                    database=url.database,
                    timeout=10,
                )
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("change feed: LISTEN connection failed", error=str(exc), retry=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.timing.reconnect_max)
                continue
            lost = False

            def on_lost(_connection: Any) -> None:
                nonlocal lost
                lost = True
                self._announce.set()

            connection.add_termination_listener(on_lost)
            try:
                await connection.add_listener(CHANNEL, self._on_notification)
                self.listening = True
                delay = self.timing.reconnect_min
                # Whatever was committed while nobody listened.
                self.advance(await self.journal.last_version())
                if not self.warmed:
                    # The daemon just started, or the server came back after a restart:
                    # the pool's next connections are new backends with empty caches.
                    await self._warm_connections()
                while not self._closed and not lost:
                    await self._announce.wait()
                    self._announce.clear()
                    pending, self._unannounced = self._unannounced, None
                    if pending is not None and not lost and not self._closed:
                        await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, str(pending))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("change feed: LISTEN connection lost", error=str(exc))
            except Exception as exc:  # the journal read above: retry like a lost connection
                log.warning("change feed: LISTEN setup failed", error=str(exc))
            finally:
                self.listening = False
                # The server may have restarted: warm the pool again once back.
                self.warmed = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 5)
            if not self._closed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.timing.reconnect_max)
