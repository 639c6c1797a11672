"""``pbxjournal run``: the AMI connector feeding the journal pipeline, live.

One asyncio loop; every task is owned by a ``TaskGroup`` and awaited. The connector's single
consumer calls :meth:`Daemon.handle` for each event in order; a timer closes conversations
whose grace period ran out, because the last ``Hangup`` is not followed by any event that
would do it. Nothing blocks the loop for long: the only file-system work, finding a finished
call's recordings, is a few ``stat`` calls.

Time is the PBX's, one clock for everything (:class:`~connector.clock.PbxClock`): each
timestamped event anchors it, an unstamped one is dated on it, the timer reads it between
events (the last stamp plus the host's monotonic time since). A daemon on a host whose clock
is off, or a fake PBX replaying last month's captures, closes calls exactly as the PBX timed
them; a step of the PBX's clock while calls are up is logged once and moves the open
conversations with it (``CallAssembler.shift_clock``).

Finished calls go to the :class:`~pbxjournal.writer.JournalWriter` (a queue and one writer
task, so the AMI consumer never waits for the database), which stores them in the SQL journal
(migrated and seeded at start) and reports what changed: the daemon logs one line per call and
tells its listeners (the HTTP layer's long-polls). Calls the database cannot take wait in the
spool (``writer.spool``), which the next start writes first.

A stop (SIGTERM) takes at most ``writer.stop_timeout``: the AMI session is closed, the
conversations waiting out their grace period are finished, the writer writes what waits for
half of the time left and spools the rest, saves the open conversations, and the HTTP server
stops within what remains.

"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import signal
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog
from aiohttp import web

from config import ConfigError, Settings, load_settings
from connector.ami import AmiConnector, AmiError, SessionEvent
from connector.assembly import FinishedCall
from connector.clock import PbxClock
from connector.events import AmiEvent
from connector.live import snapshot as live_snapshot
from httpd.app import change_feed, init_app, start_http
from httpd.feed import ChangeFeed
from pbxjournal.dbtools import open_journal, repair_rules
from pbxjournal.logs import call_number_for_log, configure_logging
from pbxjournal.originate import Originator
from pbxjournal.pipeline import (
    build_assembler,
    build_classifier,
    build_finder,
    employee_directory,
)
from pbxjournal.sdnotify import Notifier
from pbxjournal.startup import sqlite_path
from pbxjournal.writer import CallSpool, JournalWriter
from storage.engine import run_tool
from storage.journal import JournalEntry, to_call_object
from storage.store import Change, SqlJournal, WrittenBatch

__all__ = ["Daemon", "run_daemon"]

log = structlog.get_logger("pbxjournal")

#: The grace-period timer sleeps until the next conversation's grace period runs out, but
#: at most this long (expire() also looks for conversations gone silent)...
TICK_SECONDS = 0.25
#: ...and at least this long, so that a stream of deadlines does not keep the loop spinning.
MIN_TICK_SECONDS = 0.002
#: The collector's thresholds: young collections every 5,000 allocations rather than 700,
#: so that full collections (tens of milliseconds with thousands of open conversations)
#: come about seven times less often.
GC_THRESHOLDS = (5000, 10, 10)
#: When the daemon refreshes the database planner's statistics: soon after start, then daily.
MAINTENANCE_FIRST_SECONDS = 60.0
MAINTENANCE_EVERY_SECONDS = 24 * 3600.0
#: A PBX clock this far from the host's is worth a warning at the first stamp.
CLOCK_OFFSET_WARNING_SECONDS = 5.0
#: Of ``writer.stop_timeout``: what the HTTP server's stop gets at least, after the writer.
HTTP_STOP_SECONDS = 1.0


def settle_collector() -> None:
    """Put what exists now (modules, the mappers, the configuration, the restored
    conversations: what start-up made, which lives as long as the process) out of the
    collector's sight, and space young collections by ``GC_THRESHOLDS``: a full collection
    then scans only what the calls and requests make. Without it, full collections stalled
    the event loop for 100-140 ms every 10 s at 100 calls/s, the tail of the latency, and
    a ``/changes`` of 500 now and then (``docs/benchmarks.md``). The benchmarks that serve the
    journal call it as the daemon does."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def spool_path(settings: Settings) -> Path:
    """Where finished calls wait for the database (``writer.spool``, or its default)."""
    if settings.writer.spool:
        return Path(settings.writer.spool)
    name = f"spool-{settings.pbx.name}.jsonl"
    database = sqlite_path(settings.storage.url)
    if database is not None:
        return database.with_name(f"{database.name}-{name}")
    state = os.environ.get("STATE_DIRECTORY")  # systemd's StateDirectory= (the unit sets it)
    if state:
        return Path(state.split(":")[0]) / name
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "pbxjournal" / name


_action_ids = itertools.count(1)


def _next_action_id(prefix: str) -> str:
    return f"{prefix}-{next(_action_ids)}"


@dataclass(slots=True)
class _Resync:
    """A resynchronisation under way: the snapshot collects as its events arrive."""

    lost_since: float | None
    uptime: float | None
    #: The PBX announced a Shutdown before the session ended.
    shut_down: bool = False
    action_ids: set[str] = field(default_factory=set)
    channels: list[AmiEvent] = field(default_factory=list)
    variables: dict[str, dict[str, str]] = field(default_factory=dict)


Listener = Callable[[list[JournalEntry]], Awaitable[None] | None]


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        notifier: Notifier | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.assembler = build_assembler(settings)
        # Finished calls waiting for the writer are saved as they ended (pbxjournal.writer).
        self.assembler.keep_finished = True
        self.finder = build_finder(settings)
        self.notifier = notifier or Notifier()
        self.config_path = config_path
        self._employees = employee_directory(settings)
        # The loop's clock is time.monotonic, the one the transport stamps receipts with.
        self._clock = PbxClock(time.monotonic, time.time)
        self.connector = AmiConnector(settings.ami, self.handle, on_session=self._on_session)
        #: Click-to-call (POST /api/v1/originate) over the connector's session.
        self.originator = Originator(
            settings, self.connector.send_action, lambda: live_snapshot(self.assembler)
        )
        self.journal: SqlJournal | None = None
        #: The assembler's time as of the last event handled (see :meth:`handle`).
        self._handled_until = 0.0
        self._classifier_loads: set[asyncio.Task[None]] = set()
        # Loads of the classifier one at a time, in the order they began: a later one read
        # the directory later, so the last to finish is the newest.
        self._classifier_lock = asyncio.Lock()
        self.writer: JournalWriter | None = None
        #: Called with the changes of every committed batch, first thing after the commit
        #: (the HTTP long-polls: 1C hears of a call before the daemon logs it).
        self.commit_hooks: list[Callable[[list[Change]], None]] = []
        #: Called with the entries of every committed batch (tests).
        self.listeners: list[Listener] = []
        self._feed: ChangeFeed | None = None
        self._stop = asyncio.Event()
        #: PBX time of the last disconnect, until the next resync has used it.
        self._lost_since: float | None = None
        #: A ``Shutdown`` event arrived since the last complete resync: whatever the
        #: outage's length, the PBX that answers next has restarted.
        self._shut_down = False
        self._resync: _Resync | None = None
        self._clock_reported = False
        #: The HTTP port actually bound (``http.listen`` may say 0 for "any free port").
        self.http_port: int | None = None

    def handle(self, event: AmiEvent) -> None:
        resync = self._resync
        if resync is not None and event.get("ActionID") in resync.action_ids:
            self._take_snapshot(resync, event)
            return
        if self.originator.observe(event):
            return  # an OriginateResponse: the click-to-call's state, not a channel's
        event, step = self._clock.date(event)
        if step:
            self._clock_stepped(step, event.name)
        elif not self._clock_reported and self._clock.stamped:
            self._clock_first_read()
        if event.name == "Shutdown":
            self._shut_down = True
            log.warning(
                "PBX shutting down",
                shutdown=event.get("Shutdown"),
                restart=event.get("Restart"),
                open_conversations=self.assembler.open_conversations,
            )
        # The assembler's "now" is the PBX's time when this event was received, not the time
        # it is handled: behind a backlog (a burst, a resync waiting for its answer) the clock
        # runs ahead of the events still queued, and a conversation due meanwhile would be
        # closed before its queued events (a late channel within the grace) were seen.
        self._handled_until = max(self._clock.now(event.received or None), event.time)
        self._submit(self.assembler.feed(event, self._handled_until))

    def _clock_first_read(self) -> None:
        """Once: how far the PBX's clock is from this host's (it is used as it is)."""
        offset = self._clock.host_offset
        if offset is None or self._clock_reported:
            return
        self._clock_reported = True
        if abs(offset) >= CLOCK_OFFSET_WARNING_SECONDS:
            log.warning(
                "PBX clock differs from this host's; calls are dated by the PBX",
                pbx_ahead_seconds=round(offset, 3),
            )

    def _clock_stepped(self, step: float, seen_in: str) -> None:
        """The PBX's clock jumped: the open conversations move with it (logged once)."""
        self.assembler.shift_clock(step)
        log.warning(
            "PBX clock stepped; open conversations moved with it",
            step_seconds=round(step, 3),
            seen_in=seen_in,
            open_conversations=self.assembler.open_conversations,
        )

    async def run(self) -> None:
        settings = self.settings
        log.info(
            "starting",
            ami=f"{settings.ami.host}:{settings.ami.port}",
            ami_user=settings.ami.username,
            pbx=settings.pbx.name,
            timezone=settings.pbx.timezone,
            database=settings.storage.redacted_url,
            employees=len(settings.employees),
            recordings=list(settings.recordings.directories),
        )
        spool = CallSpool(spool_path(settings))
        try:
            await self._serve(spool)
        finally:
            spool.close()
        self.notifier.close()

    async def _serve(self, spool: CallSpool) -> None:
        settings = self.settings
        # Migrations at start may take minutes on a big journal: systemd is told to wait.
        opening = asyncio.create_task(
            self.notifier.keep_starting("opening the journal database (migrations)"),
            name="start-timeout",
        )
        try:
            async with open_journal(settings) as journal:
                opening.cancel()
                await self._serve_journal(journal, spool)
        finally:
            opening.cancel()

    async def _serve_journal(self, journal: SqlJournal, spool: CallSpool) -> None:
        settings = self.settings
        # After the journal: a journal that cannot be opened is what an admin must hear
        # of (the default spool lies beside a SQLite file), and its directory is never
        # created by the spool. Only the default outside systemd is a directory of ours.
        own = not settings.writer.spool and spool.path.parent.name == "pbxjournal"
        await asyncio.to_thread(spool.open, create_directory=own)
        if spool.count:
            log.warning(
                "spooled calls from the last run are written first",
                calls=spool.count,
                spool=str(spool.path),
            )
        self.journal = journal
        # Employees' extensions and mobiles as the journal has them (the configuration's,
        # seeded, and edits over HTTP), and again after each edit: new calls follow. The edits
        # are followed from before the first load: one made while it reads loads again after.
        journal.on_employees_changed(self._employees_changed)
        await self._load_classifier()
        await self._restore_open(journal, await asyncio.to_thread(spool.conversation_ids))
        writer = JournalWriter(
            journal,
            self.finder,
            self._pbx_now,
            on_written=self._on_written,
            spool=spool,
            max_pending=settings.writer.max_pending,
            open_changes=self.assembler.take_changes,
            open_all=self.assembler.export_all,
            open_prefix=self._open_prefix,
            open_new=lambda: self.assembler.take_changes(new_only=True),
            open_written=self.assembler.forget_finished,
            # A changed attention window (or time zone, for end_of_day) re-evaluates the
            # calls it decides, as the writer's first work (docs/storage.md, "A changed
            # attention window"); on the host's clock, the PBX's may not be read yet.
            first_work=lambda: repair_rules(
                journal,
                time.time(),
                lambda message, details: log.info(message, **details),
                keep_going=lambda: not writer.closing,
            ),
        )
        self.writer = writer
        http = await self._start_http(journal)
        settle_collector()
        async with asyncio.TaskGroup() as tasks:
            writing = tasks.create_task(writer.run(), name="journal-writer")
            connector = tasks.create_task(self.connector.run(), name="ami-connector")
            tasks.create_task(self._tick(), name="grace-timer")
            maintenance = tasks.create_task(self._maintain(journal), name="db-maintenance")
            watchdog = tasks.create_task(self.notifier.run_watchdog(), name="watchdog")
            self.notifier.notify(
                ready=1, status=f"journal of {settings.pbx.name}; AMI {settings.ami.host}"
            )
            await self._stop.wait()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + settings.writer.stop_timeout
            self.notifier.notify(stopping=1, status="stopping")
            watchdog.cancel()
            maintenance.cancel()
            await self.connector.close()
            await connector
            # Conversations only waiting out their grace period are finished now rather
            # than lost; the writer writes what it can by the deadline, spools the rest.
            self._submit(self.assembler.expire(self._pbx_now() + settings.pbx.hangup_grace))
            writer_deadline = deadline - HTTP_STOP_SECONDS
            await writer.close(writer_deadline)
            try:
                # run() returns by the deadline unless one write outlasts it (a database
                # that hangs): cancelled then, it spools what is left as it ends.
                await asyncio.wait_for(
                    asyncio.shield(writing), max(0.0, writer_deadline - loop.time()) + 0.5
                )
            except TimeoutError:
                log.warning("stop deadline: the journal writer cancelled")
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing
        try:
            async with asyncio.timeout_at(max(deadline, loop.time() + 0.1)):
                await http.cleanup()
        except TimeoutError:
            log.warning("stop deadline: HTTP requests still running were cut off")
        log.info(
            "stopped",
            calls=writer.stats.calls_written,
            spooled=writer.spooled,
            open_conversations=self.assembler.open_conversations,
        )

    async def _maintain(self, journal: SqlJournal) -> None:
        """Refresh the planner's statistics now and then (SQLite's PRAGMA optimize)."""
        delay = MAINTENANCE_FIRST_SECONDS
        while True:
            await asyncio.sleep(delay)
            delay = MAINTENANCE_EVERY_SECONDS
            try:
                await journal.optimize()
            except Exception as exc:
                log.warning("database maintenance failed", error=f"{type(exc).__name__}: {exc}")

    # -- the HTTP API (httpd) and what it asks of the daemon ------------------------------

    async def _start_http(self, journal: SqlJournal) -> web.AppRunner:
        """Serve the API; the port is bound before systemd hears READY."""
        settings = self.settings
        # systemd's CacheDirectory= (the unit sets it): merged recordings live there.
        cache_root = os.environ.get("CACHE_DIRECTORY")
        cache = Path(cache_root) / "merged" if cache_root else None
        app = init_app(
            settings,
            journal,
            live=lambda: live_snapshot(self.assembler),
            status=self,
            merged_cache=cache,
            originator=self.originator,
        )
        self._feed = change_feed(app)
        self.commit_hooks.append(self._feed.committed)
        # The port bound, with the limits on what clients send (http.header_timeout, ...).
        runner = await start_http(app, settings.http)
        # runner.addresses: what was really bound (http.listen may ask for port 0).
        self.http_port = int(runner.addresses[0][1]) if runner.addresses else settings.http.port
        log.info("http listening", url=f"http://{settings.http.host}:{self.http_port}/api/v1/")
        return runner

    @property
    def ami_connected(self) -> bool:
        return self.connector.stats.connected

    @property
    def events_received(self) -> int:
        return self.connector.stats.messages_received

    @property
    def calls_written(self) -> int:
        return self.writer.stats.calls_written if self.writer is not None else 0

    @property
    def write_failure(self) -> str | None:
        """Why journal writes fail, while they do (``/healthz`` answers 503)."""
        return self.writer.write_failure if self.writer is not None else None

    @property
    def _open_prefix(self) -> str:
        return f"{self.settings.pbx.name}/"

    async def _restore_open(self, journal: SqlJournal, spooled: Collection[str] = ()) -> None:
        """Take back the conversations open when the daemon last stopped (or died).

        The first login's resynchronisation then settles them: channels still alive go on,
        those that ended meanwhile close at the moment the daemon stopped (approximate).
        A conversation whose finished call is in the spool is not taken back (its state was
        saved before it ended, or as it ended while the database was away): the spooled
        call is written instead, deleting that state in its transaction.
        """
        prefix = self._open_prefix
        saved = {
            key: state
            for key, state in (await journal.load_open(prefix)).items()
            if key.removeprefix(prefix) not in spooled
        }
        if not saved:
            return
        restored = self.assembler.restore(saved.values())
        stopped_at = max(float(state.get("last_event_at", 0.0)) for state in saved.values())
        self._lost_since = stopped_at
        log.info("open conversations restored", conversations=restored, saved=len(saved))

    def reload(self) -> None:
        """SIGHUP: re-read the employee directory and the log level; the AMI session stays."""
        if self.config_path is None:
            log.info("reload ignored: no configuration file")
            return
        self.notifier.notify(reloading=1)
        try:
            fresh = load_settings(self.config_path)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration", errors=exc.problems)
        else:
            self.settings = replace(self.settings, employees=fresh.employees, log=fresh.log)
            self.originator.settings = self.settings
            self._employees = employee_directory(self.settings)
            # The same classifier as at start: extensions and employees' mobiles.
            self.assembler.classifier = build_classifier(self.settings)
            self._employees_changed()
            configure_logging(fresh.log.level, fresh.log.format)
            log.info("reloaded", employees=len(fresh.employees), log_level=fresh.log.level)
        self.notifier.notify(ready=1)

    async def _load_classifier(self) -> None:
        if self.journal is None:
            return
        async with self._classifier_lock:
            extensions, mobiles = await self.journal.classifier_directory()
            self.assembler.classifier = build_classifier(
                self.settings, extensions=extensions, mobiles=mobiles
            )

    async def _reload_classifier(self) -> None:
        try:
            await self._load_classifier()
        except Exception as exc:  # the database is away: the next change tries again
            log.warning("employee directory not reloaded", error=type(exc).__name__)

    def _employees_changed(self) -> None:
        """An employee changed (over HTTP, or a reload): rebuild the classifier from the
        journal's directory, off the caller's path."""
        if self.journal is None:
            return
        task = asyncio.get_running_loop().create_task(self._reload_classifier())
        self._classifier_loads.add(task)
        task.add_done_callback(self._classifier_loads.discard)

    def stop(self) -> None:
        self._stop.set()

    async def _tick(self) -> None:
        """Finish conversations the moment their grace period runs out.

        Events close what is due as they arrive; this timer covers the quiet after the last
        ``Hangup``. It sleeps until the next deadline, at most ``TICK_SECONDS`` and at most
        the grace period: a conversation that starts closing meanwhile is due no sooner than
        a grace period after its ``Hangup``, so the timer is up by then.
        """
        longest = min(TICK_SECONDS, max(self.settings.pbx.hangup_grace, MIN_TICK_SECONDS))
        while not self._stop.is_set():
            delay = longest
            due = self.assembler.next_closing()
            if due is not None:
                delay = min(delay, max(MIN_TICK_SECONDS, due - self._clock.now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._clock.stamped:
                # Not before the PBX's clock is read: the conversations restored at start are
                # dated by it, and the host's may be days ahead (they would all expire).
                self._submit(self.assembler.expire(self._horizon()))

    def _horizon(self) -> float:
        """How far the grace periods may run out: the PBX's time now when every event received
        is handled, else the receipt of the last one handled (those queued may still belong
        to a conversation in its grace period)."""
        if self.connector.backlog:
            return self._handled_until
        return self._clock.now()

    def _submit(self, calls: list[FinishedCall]) -> None:
        if calls and self.writer is not None:
            # A conversation placed by click-to-call carries the call it returns.
            self.writer.submit([self.originator.tag(call) for call in calls])

    def _pbx_now(self) -> float:
        return self._clock.now()

    async def _on_session(self, event: SessionEvent) -> None:
        """Runs in order with the events: the live ones wait in the queue meanwhile."""
        if event.kind == "disconnected":
            self._lost_since = self._pbx_now()
            self._resync = None
            return
        await self._start_resync(event.uptime)

    def _observe_pong(self, stamp: str) -> None:
        """A ``Ping`` answer's ``Timestamp`` reads the PBX's clock. Asterisk stamps every
        answer to ``Ping``, with or without ``timestampevents``, and the resync pings before
        the events after a login are handled: the login's ``FullyBooted`` (never stamped) is
        dated by the PBX, not the host."""
        try:
            value = float(stamp)
        except ValueError:
            return
        if not 0.0 < value < 1e11:
            return
        step = self._clock.observe(value)
        if step:
            self._clock_stepped(step, "Ping")
        elif not self._clock_reported:
            self._clock_first_read()

    async def _start_resync(self, uptime: float | None) -> None:
        """DESIGN 3.3: ask for the PBX's live channels; the answer is applied in stream order.

        ``CoreShowChannels`` and ``Status`` travel with ``in_stream``: their events reach
        :meth:`handle` after the live events received before them, so the snapshot is applied
        exactly where it belongs, and what happened meanwhile is neither lost nor doubled.
        """
        try:
            pong = await self.connector.send_action({"Action": "Ping"})
            self._observe_pong(pong[0].first("Timestamp"))
        except AmiError as exc:
            log.warning("AMI resync failed", step="Ping", error=str(exc))
            return
        channels_id = _next_action_id("resync-channels")
        status_id = _next_action_id("resync-status")
        resync = _Resync(lost_since=self._lost_since, uptime=uptime, shut_down=self._shut_down)
        resync.action_ids.update((channels_id, status_id))
        self._resync = resync
        try:
            await self.connector.send_action(
                {"Action": "CoreShowChannels", "ActionID": channels_id}, in_stream=True
            )
            await self.connector.send_action(
                {"Action": "Status", "Variables": "MIXMONITOR_FILENAME", "ActionID": status_id},
                in_stream=True,
            )
        except AmiError as exc:
            # Whatever arrived is applied; a PBX refusing Status only costs recording names.
            log.warning("AMI resync incomplete", error=str(exc))

    def _take_snapshot(self, resync: _Resync, event: AmiEvent) -> None:
        if event.name == "CoreShowChannel":
            resync.channels.append(event)
        elif event.name == "Status":
            resync.variables[event.get("Uniqueid")] = event.variables()
        elif event.name == "CoreShowChannelsComplete":
            now = self._pbx_now()
            lost_since = resync.lost_since
            before = self.assembler.open_channels
            closed = self.assembler.resync(resync.channels, now, lost_since=lost_since)
            outage = None if lost_since is None else max(0.0, now - lost_since)
            log.info(
                "AMI resync",
                live_channels=len(resync.channels),
                open_channels_before=before,
                open_channels=self.assembler.open_channels,
                calls_closed=len(closed),
                pbx_restarted=resync.shut_down
                or (resync.uptime is not None and outage is not None and resync.uptime < outage),
                outage_seconds=None if outage is None else round(outage, 3),
            )
            self._lost_since = None
            self._shut_down = False
            self._submit(closed)
        elif event.name == "StatusComplete":
            self.assembler.adopt_recordings(resync.variables, self._pbx_now())
            self._resync = None

    async def _on_written(self, written: WrittenBatch) -> None:
        """After each committed batch: its rows as read back in its transaction (the change
        feed keeps them for the long-polls), the commit hooks (which wake those), one log
        line per call, then the listeners."""
        changes = written.changes
        entries = written.entries
        if self._feed is not None:
            # Read back once: the long-polls woken below are answered from these rows.
            self._feed.remember(entries)
        for hook in list(self.commit_hooks):
            try:
                hook(changes)
            except Exception:
                log.exception("journal commit hook failed")
        self.originator.written(entries)
        if self.journal is None:
            return
        numbers = self.settings.log.numbers
        for entry in entries:
            call = to_call_object(entry, self.settings.pbx.tz, self._employees)
            log.info(
                "call",
                linkedid=call["linkedid"],
                version=call["version"],
                started_at=call["started_at"],
                direction=call["direction"],
                status=call["status"],
                number=call_number_for_log(call, numbers),
                employees=[f"{e['extension']}:{e['role']}" for e in call["employees"]],
                ring_seconds=call["ring_seconds"],
                talk_seconds=call["talk_seconds"],
                recordings=len(call["recordings"]),
                attention=call["attention"],
                first_contact=call["first_contact"],
                approximate_end=call["approximate_end"],
            )
        for listener in list(self.listeners):
            try:
                result = listener(entries)
                if isinstance(result, Awaitable):
                    await result
            except Exception:
                log.exception("journal listener failed")


def run_daemon(settings: Settings, config_path: Path | None = None) -> int:
    async def main() -> int:
        daemon = Daemon(settings, config_path=config_path)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, daemon.stop)
        loop.add_signal_handler(signal.SIGHUP, daemon.reload)
        await daemon.run()
        return 0

    return run_tool(main())
