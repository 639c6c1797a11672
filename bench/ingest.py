"""Ingest benchmark (issue 7, item 1): AMI events per second over loopback TCP.

Theory of operation
-------------------
A synthetic capture of at least a million events (:mod:`bench.synth`: the real calls,
renumbered, ~500 open at once, noise included) is served by :class:`connector.fakepbx.FakePbx`
with ``speed=0`` — as fast as the socket drains — in a process of its own, so the server and
the client under test each have a core. The fake loads the capture once (that takes a while:
it parses every message) and replays it for every run: it holds after the last message and is
re-armed between runs.

Every run is a fresh client process, timed from its TCP connect to the moment it has handled
the last event, with its CPU time beside the wall time:

(0) ``wire`` — a bare socket counting message ends: what the fake PBX itself can send.
(a) ``panoramisk`` — ``panoramisk.Manager`` with its own protocol and a no-op callback on
    ``'*'``: the transport's ceiling, the figure issue 7 compares to.
(b) ``transport`` — :class:`connector.ami.AmiConnector` with a no-op handler: framing on bytes,
    routing without parsing, the queue, parsing and normalising the journal events.
(c) ``pipeline`` — the same feeding :class:`pbxjournal.pipeline.JournalPipeline` with the
    in-memory journal: assembler, recordings finder (no directories), rules, journal rows.
(c) ``sqlite`` — the daemon itself (:class:`pbxjournal.daemon.Daemon`, what ``pbxjournal run``
    runs, with its HTTP server, resynchronisation at login, grace timer, the writer's batches
    and the saving of open conversations) on a fresh SQLite file, migrated before the clock
    starts; timed until its clean stop after the last event, when every call is a committed
    row (checked: ``calls`` holds exactly the capture's calls, ``open_conversations`` is
    empty).
(d) ``postgres`` — the same on a fresh PostgreSQL database (``--postgres URL``: made next to
    the one the URL names, dropped afterwards; ``scripts/test-postgres`` prints such a URL).

The modes run round-robin (0, a, b, c, 0, a, b, c, ...) so that a noisy neighbour hits them
alike; the table shows the median of the runs, the ratio to (a), and whether any session was
dropped (a reconnect, a second connection at the fake, or events the fake could not deliver).
The result replaces the ingest section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from panoramisk import Manager

from bench import report
from bench.databases import scratch_database
from bench.synth import ensure_capture
from config import AmiSettings, Settings, load_settings
from connector.ami import AmiConnector
from connector.capture import iter_capture_messages
from connector.events import AmiEvent, is_journal_message, parse_message
from pbxjournal.daemon import Daemon
from pbxjournal.dbtools import open_journal
from pbxjournal.logs import configure_logging
from storage.engine import open_database

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
USERNAME = "bench"
SECRET = "bench-secret"
MODES = ("wire", "panoramisk", "transport", "pipeline", "sqlite", "postgres")
#: The modes that run the daemon on a database (the others need none).
DAEMON_MODES = ("sqlite", "postgres")
#: A daemon mode that handles no event for this long has lost part of the stream.
STALL_SECONDS = 30.0
LABELS = {
    "wire": "(0) wire: the fake PBX's own ceiling",
    "panoramisk": "(a) panoramisk alone, no-op callback",
    "transport": "(b) our transport + parser, no-op handler",
    "pipeline": "(p) the pipeline alone, in-memory journal",
    "sqlite": "(c) the daemon, to committed SQLite rows",
    "postgres": "(d) the daemon, to committed PostgreSQL rows",
}
#: Issue 7: the whole pipeline at half the transport's ceiling at least, and at 20 times the
#: 2,100 events/s the real Asterisk peaked at, on one core.
GOAL_RATIO = 0.5
GOAL_RATE = 42_000.0


# --------------------------------------------------------------------------------------
# The stream: what the fake sends


@dataclass(frozen=True, slots=True)
class StreamFacts:
    """What a client must receive: every event, and how many of them the journal keeps."""

    events: int
    journal_events: int
    calls: int


def stream_facts(capture: Path, calls: int) -> StreamFacts:
    """Count the events the fake will send (it drops the capture's login answer and
    ``FullyBooted`` and sends its own ``FullyBooted``, which is not counted here)."""
    events = 0
    journal = 0
    for captured in iter_capture_messages(capture):
        raw = captured.raw
        if raw.startswith(b"Response:") or raw.startswith(b"Event: FullyBooted\r\n"):
            continue
        events += 1
        if is_journal_message(raw):
            journal += 1
    return StreamFacts(events=events, journal_events=journal, calls=calls)


def _last_message(capture: Path) -> bytes:
    with capture.open("rb") as handle:
        handle.seek(max(0, capture.stat().st_size - 65536))
        tail = handle.read()
    return tail.rstrip(b"\r\n").rsplit(b"\r\n\r\n", 1)[-1]


# --------------------------------------------------------------------------------------
# The server process


async def serve(capture: Path) -> None:
    """Run the fake PBX; take commands (``stats``, ``rearm``, ``quit``) on stdin."""
    from connector.fakepbx import FakePbx

    began = time.perf_counter()
    pbx = FakePbx(
        [capture],
        username=USERNAME,
        secret=SECRET,
        speed=0,
        loop=True,
        batch_bytes=65536,
        keep_time=True,
    )
    last = parse_message(_last_message(capture))

    def is_last(message: object) -> bool:
        return message == last

    pbx.hold_when(is_last)
    port = await pbx.start()
    _say({"port": port, "stream": pbx.stream_length, "load_seconds": time.perf_counter() - began})
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    try:
        while line := await commands.readline():
            command = line.decode().strip()
            if command == "stats":
                _say(
                    {
                        "connections": pbx.connections,
                        "logins": pbx.logins,
                        "events_sent": pbx.events_sent,
                        "events_lost": pbx.events_lost,
                        "position": pbx.position,
                    }
                )
            elif command == "rearm":
                # The stream is held after its last message; let the last client's
                # connection go away before anyone can be a listener of the next run.
                await pbx.wait_held()
                await asyncio.sleep(0.2)
                pbx.hold_when(is_last)
                pbx.release()
                _say({"rearmed": True})
            elif command == "quit":
                break
    finally:
        await pbx.close(grace=0.1)


def _say(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


class Server:
    """The fake PBX process, seen from the benchmark."""

    def __init__(self, capture: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.ingest", "serve", str(capture)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=_child_env(),
        )
        ready = self._read()
        self.port = int(ready["port"])
        self.stream = int(ready["stream"])
        self.load_seconds = float(ready["load_seconds"])

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake PBX process exited ({self.process.wait()})")
        data: dict[str, Any] = json.loads(line)
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.ask("quit")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _child_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))


# --------------------------------------------------------------------------------------
# The clients


def _settings(port: int) -> AmiSettings:
    return AmiSettings(
        host="127.0.0.1",
        port=port,
        username=USERNAME,
        secret=SECRET,
        connect_timeout=10.0,
        action_timeout=10.0,
        ping_interval=3600.0,
        ping_timeout=10.0,
        reconnect_min=0.5,
        reconnect_max=2.0,
    )


@dataclass(slots=True)
class Measure:
    """One run of one client: the figures it reports back."""

    mode: str
    events: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def run_wire(port: int, facts: StreamFacts) -> dict[str, Any]:
    """(0) Read and count message ends; parse nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"Action: Login\r\nUsername: {USERNAME}\r\nSecret: {SECRET}\r\n\r\n".encode())
    await writer.drain()
    wanted = facts.events + 2  # the login answer and FullyBooted come first
    seen = 0
    tail = b""
    while seen < wanted:
        data = await reader.read(1 << 18)
        if not data:
            raise RuntimeError(f"the fake PBX closed the connection after {seen} messages")
        window = tail + data
        seen += window.count(b"\r\n\r\n")
        tail = window[-3:] if not window.endswith(b"\r\n\r\n") else b""
    writer.close()
    return {"messages": seen}


async def run_panoramisk(port: int, facts: StreamFacts) -> dict[str, Any]:
    """(a) panoramisk's Manager and protocol, one callback for every event."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    wanted = facts.events + 1  # and the fake's FullyBooted
    count = 0

    def on_event(manager: object, message: object) -> None:
        nonlocal count
        count += 1
        if count >= wanted and not done.done():
            done.set_result(None)

    disconnects = 0

    def on_disconnect(manager: object, exc: object) -> None:
        nonlocal disconnects
        disconnects += 1

    manager = Manager(
        host="127.0.0.1",
        port=port,
        username=USERNAME,
        secret=SECRET,
        ping_delay=3600,
        ping_interval=3600,
        reconnect_timeout=3600,
        loop=loop,
        on_disconnect=on_disconnect,
    )
    manager.register_event("*", on_event)
    manager.connect()
    await asyncio.wait_for(done, timeout=600)
    manager.close()
    return {"callbacks": count, "reconnects": disconnects}


async def run_connector(
    port: int, facts: StreamFacts, handle: Callable[[AmiEvent], None] | None
) -> dict[str, Any]:
    """(b)/(c) The AmiConnector, with a no-op handler or the given one."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    count = 0

    def handler(event: AmiEvent) -> None:
        nonlocal count
        if event.name == "FullyBooted":
            return
        if handle is not None:
            handle(event)
        count += 1
        if count >= facts.journal_events and not done.done():
            done.set_result(None)

    connector = AmiConnector(_settings(port), handler)
    runner = asyncio.create_task(connector.run(), name="bench-connector")
    try:
        await asyncio.wait_for(done, timeout=600)
        # The noise after the last journal event is read and dropped too.
        # Polling a counter that no event announces; it is done within milliseconds.
        while connector.stats.messages_received < facts.events + 2:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    finally:
        await connector.close()
        await runner
    stats = connector.stats
    return {
        "journal_events": count,
        "messages_received": stats.messages_received,
        "skipped": stats.skipped,
        "malformed": stats.malformed,
        "handler_errors": stats.handler_errors,
        "reconnects": stats.reconnects,
        "connect_attempts": stats.connect_attempts,
        "queue_high_water": stats.queue_high_water,
    }


class MemoryJournalRun:
    """(c) The daemon's pipeline with the in-memory journal (every row kept, by design)."""

    def __init__(self) -> None:
        from pbxjournal.pipeline import build_pipeline

        self.pipeline = build_pipeline(Settings(), recordings=[])
        self.now = 0.0

    async def start(self) -> None:
        return None

    def handle(self, event: AmiEvent) -> None:
        # The daemon feeds at the PBX's clock; offline, the newest event time is that clock.
        self.now = max(self.now, event.time)
        self.pipeline.feed(event, self.now)

    async def finish(self) -> dict[str, Any]:
        self.pipeline.drain(self.now)
        return {
            "calls": self.pipeline.stats.calls_finished,
            "open_conversations": self.pipeline.assembler.open_conversations,
        }


# -- (c)/(d): the daemon itself, to committed SQLite or PostgreSQL rows ------------------


class CountingDaemon(Daemon):
    """The daemon, counting the stream's journal events it handled (not the answers to its
    own resynchronisation, whose ``ActionID`` is one of its own, nor ``FullyBooted``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.stream_events = 0

    def handle(self, event: AmiEvent) -> None:
        if event.name != "FullyBooted" and not event.get("ActionID").startswith("pbxjournal-"):
            self.stream_events += 1
        super().handle(event)


def _daemon_settings(port: int, url: str, spool: Path) -> Settings:
    environ = {
        # A spool of the run's own: the default one (for PostgreSQL, in the user's state
        # directory) outlives the run, and the next run's fresh database would get the calls
        # this one spooled at its stop ("rows too many").
        "PBXJOURNAL_WRITER__SPOOL": str(spool),
        "PBXJOURNAL_AMI__HOST": "127.0.0.1",
        "PBXJOURNAL_AMI__PORT": str(port),
        "PBXJOURNAL_AMI__USERNAME": USERNAME,
        "PBXJOURNAL_AMI__SECRET": SECRET,
        "PBXJOURNAL_STORAGE__URL": url,
        "PBXJOURNAL_HTTP__LISTEN": "127.0.0.1:0",
    }
    return load_settings(None, environ=environ)


async def run_daemon(
    port: int, facts: StreamFacts, url: str, spool: Path
) -> tuple[dict[str, Any], float]:
    """(c)/(d) ``pbxjournal run``'s :class:`~pbxjournal.daemon.Daemon`, in this process, on a
    journal migrated beforehand; timed from its start to its clean stop once the stream's last
    event is handled and the writer has written the calls finished by then: the stop finishes
    the conversations still in their grace period and writes them, so every call is a
    committed row when the clock stops. Returns the details and the wall seconds."""
    settings = _daemon_settings(port, url, spool)
    configure_logging(settings.log.level, settings.log.format)
    async with open_journal(settings):  # migrate and seed before the clock starts
        pass
    daemon = CountingDaemon(settings)
    began = time.perf_counter()
    running = asyncio.create_task(daemon.run(), name="bench-daemon")
    # Polling a counter that no event announces; every 5 ms against a run of tens of seconds.
    progress, stalled_since = -1, time.perf_counter()
    while daemon.stream_events < facts.journal_events:
        if running.done():
            running.result()
            raise RuntimeError("the daemon stopped before the end of the stream")
        if daemon.stream_events != progress:
            progress, stalled_since = daemon.stream_events, time.perf_counter()
        elif time.perf_counter() - stalled_since > STALL_SECONDS:
            daemon.stop()
            await running
            raise RuntimeError(
                f"no event for {STALL_SECONDS:.0f} s: {daemon.stream_events} of "
                f"{facts.journal_events} journal events handled, "
                f"{daemon.connector.stats.messages_received} messages received"
            )
        await asyncio.sleep(0.005)
    # The calls already finished are written before the stop: the stop writes a backlog for
    # only half of writer.stop_timeout and spools the rest for the next start (by design),
    # and a whole stream handled in a few seconds leaves the writer of a busy PostgreSQL
    # more than that (1,117 of 1,278 calls spooled at load 7). A writer that makes no
    # progress for STALL_SECONDS is stopped all the same, and the run reports what it spooled.
    assert daemon.writer is not None
    written, stalled_since = -1, time.perf_counter()
    while daemon.writer.pending and time.perf_counter() - stalled_since <= STALL_SECONDS:
        if daemon.writer.stats.calls_written != written:
            written, stalled_since = daemon.writer.stats.calls_written, time.perf_counter()
        await asyncio.sleep(0.005)
    daemon.stop()
    await asyncio.wait_for(running, timeout=600)
    seconds = time.perf_counter() - began
    database = open_database(url)
    try:
        async with database.engine.connect() as connection:
            rows = (await connection.execute(sa.text("SELECT count(*) FROM calls"))).scalar_one()
            left = (
                await connection.execute(sa.text("SELECT count(*) FROM open_conversations"))
            ).scalar_one()
    finally:
        await database.dispose()
    stats = daemon.connector.stats
    assert daemon.writer is not None
    return (
        {
            "journal_events": daemon.stream_events,
            "messages_received": stats.messages_received,
            "malformed": stats.malformed,
            "handler_errors": stats.handler_errors,
            "reconnects": stats.reconnects,
            "queue_high_water": stats.queue_high_water,
            "calls": int(rows),
            "open_conversations": int(left),
            "writer_batches": daemon.writer.stats.batches,
            "writer_pending_high_water": daemon.writer.stats.pending_high_water,
            "writer_failures": daemon.writer.stats.failures,
            "spooled_at_stop": daemon.writer.spooled,
        },
        seconds,
    )


async def run_client(
    mode: str, port: int, facts: StreamFacts, postgres: str | None = None
) -> Measure:
    measure = Measure(mode, facts.events)
    if mode in DAEMON_MODES:
        with tempfile.TemporaryDirectory(prefix="pbxjournal-ingest-") as workdir:
            url, drop = await scratch_database(
                postgres if mode == "postgres" else None, Path(workdir), "ingest"
            )
            try:
                began_cpu = time.process_time()
                measure.details, measure.seconds = await run_daemon(
                    port, facts, url, Path(workdir) / "spool.jsonl"
                )
                measure.cpu_seconds = time.process_time() - began_cpu
            finally:
                if drop is not None:
                    await drop()
        return measure
    journal = MemoryJournalRun() if mode == "pipeline" else None
    began_cpu = time.process_time()
    began = time.perf_counter()
    if mode == "wire":
        details = await run_wire(port, facts)
    elif mode == "panoramisk":
        details = await run_panoramisk(port, facts)
    elif mode == "transport":
        details = await run_connector(port, facts, None)
    else:
        assert journal is not None
        details = await run_connector(port, facts, journal.handle)
        details.update(await journal.finish())
    measure.seconds = time.perf_counter() - began
    measure.cpu_seconds = time.process_time() - began_cpu
    measure.details = details
    return measure


# --------------------------------------------------------------------------------------
# The benchmark


@dataclass(slots=True)
class Row:
    mode: str
    measures: list[Measure] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return report.median([m.rate for m in self.measures])

    @property
    def cpu_rate(self) -> float:
        return report.median([m.events / m.cpu_seconds for m in self.measures if m.cpu_seconds])

    @property
    def busy(self) -> float:
        return report.median([m.cpu_seconds / m.seconds for m in self.measures if m.seconds])


def _run_one(
    mode: str, server: Server, facts: StreamFacts, postgres: str | None
) -> tuple[Measure, list[str]]:
    before = server.ask("stats")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ingest",
            "client",
            mode,
            "--port",
            str(server.port),
            "--facts",
            json.dumps([facts.events, facts.journal_events, facts.calls]),
            *(["--postgres", postgres] if postgres and mode == "postgres" else []),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_child_env(),
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"client {mode} failed:\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    measure = Measure(mode, data["events"], data["seconds"], data["cpu_seconds"], data["details"])
    server.ask("rearm")
    after = server.ask("stats")
    problems = []
    connections = after["connections"] - before["connections"]
    if connections != 1:
        problems.append(f"{connections} connections")
    lost = after["events_lost"] - before["events_lost"]
    if lost:
        problems.append(f"{lost} events undelivered")
    sent = after["events_sent"] - before["events_sent"]
    if sent != server.stream:
        problems.append(f"{sent} of {server.stream} events sent")
    if measure.details.get("reconnects"):
        problems.append(f"{measure.details['reconnects']} reconnects")
    if mode in ("pipeline", *DAEMON_MODES) and measure.details.get("calls") != facts.calls:
        problems.append(f"{measure.details.get('calls')} calls of {facts.calls}")
    if measure.details.get("open_conversations"):
        problems.append(f"{measure.details['open_conversations']} conversations left open")
    if measure.details.get("spooled_at_stop"):
        problems.append(f"{measure.details['spooled_at_stop']} calls spooled at the stop")
    if measure.details.get("handler_errors") or measure.details.get("writer_failures"):
        problems.append(
            f"{measure.details.get('handler_errors', 0)} handler errors, "
            f"{measure.details.get('writer_failures', 0)} failed writes"
        )
    return measure, problems


def benchmark(args: argparse.Namespace) -> int:
    capture: Path = args.capture or Path(tempfile.gettempdir()) / "pbxjournal-bench" / (
        f"synth-{args.events}-c{args.concurrency}-s{args.seed}.ami"
    )
    capture.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    summary = ensure_capture(
        capture, events=args.events, concurrency=args.concurrency, seed=args.seed
    )
    facts = stream_facts(capture, summary["call_count"])
    print(
        f"capture {capture}: {facts.events} events ({facts.journal_events} for the journal), "
        f"{facts.calls} calls, {capture.stat().st_size / 1e6:.0f} MB "
        f"[{time.perf_counter() - began:.0f} s]",
        flush=True,
    )
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        print(f"unknown modes {unknown}; choose from {', '.join(MODES)}", file=sys.stderr)
        return 2
    if "postgres" in modes and not args.postgres:
        print("mode postgres left out: no --postgres URL", flush=True)
        modes.remove("postgres")
    load_before = os.getloadavg()[0]
    server = Server(capture)
    print(f"fake PBX loaded the stream in {server.load_seconds:.0f} s", flush=True)
    rows = {mode: Row(mode) for mode in modes}
    try:
        for round_no in range(1, args.runs + 1):
            for mode in modes:
                measure, problems = _run_one(mode, server, facts, args.postgres)
                rows[mode].measures.append(measure)
                rows[mode].dropped.extend(problems)
                print(
                    f"run {round_no} {mode:<10} {measure.rate:>9,.0f} events/s "
                    f"({measure.seconds:.1f} s wall, {measure.cpu_seconds:.1f} s CPU)"
                    + (f"  PROBLEMS: {'; '.join(problems)}" if problems else ""),
                    flush=True,
                )
    finally:
        server.close()
    text = render(rows, facts, args, server, (load_before, os.getloadavg()[0]))
    print()
    print(text)
    if not args.no_docs:
        report.update_section("bench.ingest", text)
        print(f"\nwritten to {report.BENCHMARKS}")
    return 0


def render(
    rows: dict[str, Row],
    facts: StreamFacts,
    args: argparse.Namespace,
    server: Server,
    load: tuple[float, float],
) -> str:
    base = rows.get("panoramisk")
    lines = []
    for row in rows.values():
        rates = sorted(m.rate for m in row.measures)
        lines.append(
            [
                LABELS[row.mode],
                f"{row.rate:,.0f}",
                " / ".join(f"{r:,.0f}" for r in rates),
                f"{row.rate / base.rate:.2f}" if base else "-",
                f"{row.cpu_rate:,.0f}",
                f"{row.cpu_rate / base.cpu_rate:.2f}" if base else "-",
                f"{row.busy:.0%}",
                "; ".join(sorted(set(row.dropped))) or "none",
            ]
        )
    table = report.table(
        [
            "mode",
            "events/s",
            "runs (events/s)",
            "× (a)",
            "events per CPU s",
            "× (a)",
            "client busy",
            "dropped sessions",
        ],
        lines,
    )
    verdict = ""
    if base:

        def said(ok: bool) -> str:
            return "met" if ok else "NOT met"

        for mode in ("pipeline", *DAEMON_MODES):
            if mode not in rows:
                continue
            row = rows[mode]
            name = LABELS[mode].split(" ", 1)
            verdict += (
                f"\n{name[0]} {name[1]}: ≥ {GOAL_RATIO} × (a)? {row.rate / base.rate:.2f} × by "
                f"the wall clock ({said(row.rate >= GOAL_RATIO * base.rate)}), "
                f"{row.cpu_rate / base.cpu_rate:.2f} × per CPU second "
                f"({said(row.cpu_rate >= GOAL_RATIO * base.cpu_rate)}). ≥ "
                f"{GOAL_RATE:,.0f} events/s on one core? {row.cpu_rate:,.0f} per CPU second, "
                f"what one core does ({said(row.cpu_rate >= GOAL_RATE)}); "
                f"{row.rate:,.0f}/s by the wall clock with the client busy "
                f"{row.busy:.0%} of the time ({said(row.rate >= GOAL_RATE)}"
                + (
                    "; below 100 %: waiting for the fake, the database or a CPU)."
                    if row.busy < 0.9
                    else ")."
                )
                + "\n"
            )
        verdict = "Goals (issue 7)." + verdict if verdict else ""
    databases = (
        f"PostgreSQL: {_postgres_version(args.postgres)} on this machine, sharing its cores."
        if "postgres" in rows
        else "PostgreSQL: not run (no `--postgres URL`)."
    )
    intro = report.prose(
        f"""
Machine: {report.machine()}. Load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after:
other work shares the machine.

Command: `{report.command_line()}`

Stream: {facts.events:,} events ({facts.journal_events:,} of them for the journal, the rest
noise the transport must skip), {facts.calls:,} calls built by `bench.synth` from the real
captures, about {args.concurrency} open at once (seed {args.seed}), served by
`FakePbx(speed=0, batch_bytes=65536)` from its own process (it loaded the stream in
{server.load_seconds:.0f} s). Each run is a fresh client process, timed from its connect to its
last event handled. The client is one Python thread: its events/s are on one core. "events
per CPU s" divides by the client's CPU time instead of the wall time, which a busy neighbour
disturbs less; "client busy" is CPU time over wall time (below 100 %: the client waited, for
the fake or for a CPU). Median of {args.runs} runs, modes round-robin; "× (a)" is the ratio
to panoramisk alone.

The daemon modes run `pbxjournal run`'s daemon in the client process (HTTP server, logging at
info to a pipe, the resynchronisation at login, the grace timer, the writer's batches, the
saving of open conversations) on a fresh, migrated journal, and are timed from the daemon's
start to its clean stop after the last event: the stop finishes the conversations still in
their grace period and waits for the writer, so the clock stops when every call is a committed
row (checked after each run: the table holds the capture's calls exactly, nothing is left in
`open_conversations`). {databases}
"""
    )
    return (
        "## Ingest: AMI events per second over loopback TCP\n\n"
        f"{intro}\n\n{table}\n\n{report.prose(verdict) if verdict else ''}\n"
    )


def _postgres_version(url: str) -> str:
    async def ask() -> str:
        database = open_database(url)
        try:
            async with database.engine.connect() as connection:
                version = await connection.execute(sa.text("SHOW server_version"))
                return f"PostgreSQL {version.scalar_one()}"
        finally:
            await database.dispose()

    return asyncio.run(ask())


# --------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma list of " + ", ".join(MODES)
    )
    parser.add_argument("--capture", type=Path, help="where to keep the synthetic capture")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL URL for mode (d) (scripts/test-postgres prints one); without it "
        "mode (d) is left out",
    )
    serve_parser = sub.add_parser("serve", help=argparse.SUPPRESS)
    serve_parser.add_argument("capture", type=Path)
    client_parser = sub.add_parser("client", help=argparse.SUPPRESS)
    client_parser.add_argument("mode", choices=MODES)
    client_parser.add_argument("--port", type=int, required=True)
    client_parser.add_argument("--facts", required=True)
    client_parser.add_argument("--postgres")
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args.capture))
        return 0
    if args.command == "client":
        events, journal, calls = json.loads(args.facts)
        facts = StreamFacts(events, journal, calls)
        measure = asyncio.run(run_client(args.mode, args.port, facts, args.postgres))
        _say(
            {
                "events": measure.events,
                "seconds": measure.seconds,
                "cpu_seconds": measure.cpu_seconds,
                "details": measure.details,
            }
        )
        return 0
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
