"""Chaos run (issue 6): AMI drops and SIGKILLed daemons while 10,000 calls stream in.

Theory of operation
-------------------
A synthetic capture (:mod:`bench.synth`: the real calls of ``tests/data/ami-traces``, renumbered
and interleaved so that a few hundred are open at once) is served by an in-process
:class:`~connector.fakepbx.FakePbx` at ``speed`` times the recorded pace. The capture holds only
the messages the transport hands on (the noise it drops unparsed would only slow the fake
down), so the assembler sees what it would see from the full stream.

``pbxjournal run --config`` is a real subprocess with its own configuration file in a temporary
directory and a SQLite journal there (``--postgres URL`` uses a fresh PostgreSQL database made
next to the one in the URL instead). While the stream plays, at stream positions drawn from
the seed:

- the AMI connection is dropped (:meth:`FakePbx.drop`) ``--drops`` times: the fake keeps its
  clock, so what it sends while nobody is logged in is lost, as in a real outage;
- the daemon is SIGKILLed and started again ``--kills`` times: what it held in memory is gone,
  and the events of the seconds it needs to start are lost too.

Each fault waits until the daemon is logged in, so that every fault is an outage of its own.
An outage runs, in PBX time, from the fault to the next login. At the end the daemon is
stopped with SIGTERM and its journal compared with the capture's expected summary:

- a call *spanned an outage* when one overlaps its life (plus the grace period during which
  the daemon still holds it, plus, before a kill, the seconds of changes not saved yet);
  the others must be *exact*: one row with the expected direction, number, answered
  employees, status and recording names, and no ``approximate_end``;
- a call that spanned an outage may be exact, *approximate* (its end was not seen), *adopted*
  (its end was seen but its shape is what the PBX's channel list showed: who answered or the
  direction differ), or *missing* if it lived entirely where the daemon was blind: inside an
  outage, or begun so shortly before a kill that it was never saved (new conversations are
  saved every 0.25 s, between batches of writes and the 2 s save of the others);
- *duplicates* are expected calls with more than one row (a conversation split in two),
  *ghosts* rows that belong to no expected call, *left open* the ``open_conversations`` rows
  remaining although every call ended.

The run fails (exit status 1) when a call that spanned no outage is not exact (split in two
rows included), a call is missing that was seen or saved, a row is a ghost, something is left
open, the SQLite file fails ``PRAGMA integrity_check``, the daemon died on its own or logged
an error, or a resync claimed a PBX restart. The table goes to stdout and, with the machine and the
command, to ``docs/chaos.md``. ``--keep DIR`` keeps the capture, the daemon's log and the
journal; ``--analyse DIR`` compares a kept run again.

Run: ``python -m bench.chaos`` (``--postgres "$(scripts/test-postgres)"`` for PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import platform
import random
import shlex
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.daemons import child_env, free_port, pbxjournal_command, write_config
from bench.databases import scratch_database
from bench.synth import GRACE, build_capture, load_expected, load_templates, plan
from connector.assembly import Direction
from connector.fakepbx import FakePbx
from pbxjournal.writer import JournalWriter
from storage.engine import open_database
from storage.numbers import normalize_number

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "chaos.md"
USERNAME = "chaos"
SECRET = "chaos-secret"
PBX_NAME = "chaos"
_WRITER = inspect.signature(JournalWriter).parameters
#: Wall seconds between two saves of the open conversations that changed (the writer's).
PERSIST_SECONDS = float(_WRITER["persist_interval"].default)
#: Wall seconds a conversation the database has never seen may wait to be saved: the quick
#: save's interval (0.25 s), plus a batch of finished calls the writer may be busy with (up to
#: 0.5 s), plus a save of every changed open conversation (0.2-0.4 s with 300 open), plus the
#: daemon's lag behind the stream. Measured under this load: 0.3 s typically, 0.9 s at the
#: 99th percentile, 1 s at most.
PERSIST_NEW_SECONDS = 1.5
#: Wall seconds before a drop whose messages may never have been read (in flight, or read
#: and not yet handled by a loaded daemon).
IN_FLIGHT_SECONDS = 0.25


# --------------------------------------------------------------------------------------
# The PBX and the daemon


class ChaosPbx(FakePbx):
    """The fake PBX, noting the PBX time of every login."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.login_times: list[float] = []

    async def _login(self, client: Any, message: Any, response: Any) -> bool:
        accepted = await super()._login(client, message, response)
        if accepted:
            self.login_times.append(self.clock())
        return accepted

    def clock(self) -> float:
        """The PBX's time: that of the stream's position."""
        return self._pbx_time()

    @property
    def listening(self) -> bool:
        return bool(self._listeners())


class DaemonProcess:
    """``pbxjournal run --config`` as a subprocess; its JSON log lines are tallied."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._expect_exit = False
        self.starts = 0
        self.kills = 0
        #: Exit codes nobody asked for (a crash).
        self.unexpected_exits: list[int] = []
        self.errors: list[dict[str, Any]] = []
        self.resyncs: list[dict[str, Any]] = []
        self.restored: list[dict[str, Any]] = []
        self.call_lines = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *pbxjournal_command(),
            "run",
            "--config",
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=ROOT,
            env=child_env(),
        )
        self.starts += 1
        self._expect_exit = False
        self._reader = asyncio.create_task(self._read(self.process), name="daemon-log")

    async def kill(self) -> None:
        if self.process is None:
            return
        self._expect_exit = True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        if self._reader is not None:
            await self._reader
        self.kills += 1

    async def stop(self, wait: float = 60.0) -> int:
        """SIGTERM, then the exit code (SIGKILL after ``wait`` seconds, noted as an error)."""
        if self.process is None:
            return 0
        self._expect_exit = True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), wait)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
            self.errors.append({"event": f"did not stop within {wait:g} s of SIGTERM"})
        if self._reader is not None:
            await self._reader
        return code

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        with self.log_path.open("ab") as out:
            out.write(f"--- start {self.starts} pid {process.pid}\n".encode())
            while line := await process.stdout.readline():
                out.write(line)
                self._tally(line)
            code = await process.wait()
            out.write(f"--- exit {code}\n".encode())
        if not self._expect_exit:
            self.unexpected_exits.append(code)

    def _tally(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            self.errors.append({"event": "not a log line", "line": line.decode(errors="replace")})
            return
        if not isinstance(record, dict):
            return
        event = record.get("event")
        if event == "call":
            self.call_lines += 1
        elif event == "AMI resync":
            self.resyncs.append(record)
        elif event == "open conversations restored":
            self.restored.append(record)
        if record.get("level") in ("error", "critical") or "exception" in record:
            self.errors.append(record)


# --------------------------------------------------------------------------------------
# The run


@dataclass(slots=True)
class Outage:
    kind: str  # "drop" | "kill"
    start: float  # PBX time of the fault
    end: float | None  # PBX time of the next login
    #: A kill: the daemon's own PBX clock at its last save of open conversations (how far
    #: it had really got, whatever the fake had sent), and the conversations it had saved
    #: open, read from the journal it left.
    saved_at: float | None = None
    saved: frozenset[str] = frozenset()


@dataclass(slots=True)
class Result:
    counts: dict[str, int] = field(default_factory=dict)
    spanned: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


async def run(args: argparse.Namespace, workdir: Path) -> Result:
    began = time.perf_counter()
    rng = random.Random(args.seed)
    recordings = workdir / "recordings"
    recordings.mkdir(exist_ok=True)
    capture = workdir / "chaos.ami"
    say(f"building {args.calls} calls (concurrency {args.concurrency}, seed {args.seed})")
    synthetic = build_capture(
        capture,
        calls=args.calls,
        concurrency=args.concurrency,
        seed=args.seed,
        recvlog=False,
        journal_only=True,
    )
    url, drop_database = await scratch_database(args.postgres, workdir, "chaos")
    pbx = ChaosPbx([capture], username=USERNAME, secret=SECRET, speed=args.speed, keep_time=True)
    say(f"loading the fake PBX: {synthetic.events} messages")
    port = await pbx.start()
    config = workdir / "pbxjournal.toml"
    write_config(
        config,
        ami_port=port,
        username=USERNAME,
        secret=SECRET,
        pbx_name=PBX_NAME,
        grace=GRACE,
        url=url,
        recordings=recordings,
        http_port=free_port(),
        ami={
            "connect_timeout": "5s",
            "action_timeout": "10s",
            "ping_interval": "5s",
            "ping_timeout": "5s",
            "reconnect_min": 0.2,
            "reconnect_max": 1.0,
        },
        log={"numbers": "full"},
    )
    daemon = DaemonProcess(config, workdir / "daemon.log")
    length = pbx.stream_length
    low, high = int(length * 0.02), int(length * 0.98)
    faults = sorted(
        [(p, "drop") for p in rng.sample(range(low, high), args.drops)]
        + [(p, "kill") for p in rng.sample(range(low, high), args.kills)]
    )
    # kind, PBX time, index of the next login, (a kill) what the dead daemon had saved
    outages: list[tuple[str, float, int, tuple[float | None, list[str]]]] = []
    problems: list[str] = []
    stream_began = time.perf_counter()
    try:
        await daemon.start()
        say(f"streaming at speed {args.speed:g}; {len(faults)} faults")
        for number, (position, kind) in enumerate(faults, 1):
            await _until(lambda: pbx.position >= position, 3600.0, "the stream")  # noqa: B023
            await _until(lambda: pbx.listening, 60.0, "the daemon to log in")
            at, login = pbx.clock(), len(pbx.login_times)
            if kind == "drop":
                outages.append((kind, at, login, (None, [])))
                pbx.drop()
            else:
                await daemon.kill()
                outages.append((kind, at, login, await _saved(url)))
                await daemon.start()
            if number % 20 == 0:
                say(
                    f"  {number}/{len(faults)} faults, message {pbx.position}/{length}, "
                    f"{daemon.call_lines} calls logged, {pbx.events_lost} messages lost"
                )
        await pbx.wait_done()
        stream_seconds = time.perf_counter() - stream_began
        say(f"stream done in {stream_seconds:.0f} s; the last calls close, then SIGTERM")
        await _settle(daemon)
        code = await daemon.stop()
        if code != 0:
            problems.append(f"the daemon exited with {code} on SIGTERM")
    finally:
        if daemon.running:
            await daemon.kill()
        await pbx.close(grace=0.2)
    logins = pbx.login_times
    facts = {
        "speed": args.speed,
        "url": url,
        "outages": [
            [kind, start, logins[login] if login < len(logins) else None, *saved]
            for kind, start, login, saved in outages
        ],
        "stream messages": length,
        "messages lost in outages": pbx.events_lost,
        "AMI drops": sum(1 for kind, *_ in outages if kind == "drop"),
        "daemon SIGKILLs": daemon.kills,
        "logins": pbx.logins,
        "resynchronisations logged": len(daemon.resyncs),
        "conversations restored at start": sum(
            int(r.get("conversations", 0)) for r in daemon.restored
        ),
        "daemon error lines": len(daemon.errors),
        "streaming seconds": round(stream_seconds),
    }
    (workdir / "run.json").write_text(json.dumps(facts, indent=1), "utf-8")
    if daemon.unexpected_exits:
        problems.append(f"the daemon died on its own: exit codes {daemon.unexpected_exits}")
    if daemon.errors:
        problems.append(f"{len(daemon.errors)} error lines, the first: {daemon.errors[0]}")
    restarted = sum(1 for r in daemon.resyncs if r.get("pbx_restarted"))
    if restarted:
        problems.append(f"{restarted} resyncs claimed a PBX restart; there was none")
    try:
        result = await analyse(workdir, url)
    finally:
        if drop_database is not None and not args.keep:
            await drop_database()
    result.problems[:0] = problems
    result.notes["seconds"] = round(time.perf_counter() - began)
    return result


async def _saved(url: str) -> tuple[float | None, list[str]]:
    """What a killed daemon left in the journal: its PBX clock at its last save of open
    conversations, and the conversations it had saved open (a written row cannot go missing,
    so the rows need not be read)."""
    database = open_database(url)
    try:
        async with database.sessions() as session:
            saved_at = await session.scalar(
                sa.text("SELECT max(updated_at) FROM open_conversations")
            )
            keys = await session.execute(sa.text("SELECT key FROM open_conversations"))
            ids = [key.split("/", 1)[1] for key in keys.scalars()]
    finally:
        await database.dispose()
    return (None if saved_at is None else float(saved_at)), ids


async def _until(predicate: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting {limit:g} s for {what}")
        await asyncio.sleep(0.01)


async def _settle(daemon: DaemonProcess, quiet: float = 3.0, limit: float = 60.0) -> None:
    """Wait until the daemon has logged no call for ``quiet`` seconds (grace periods over)."""
    await asyncio.sleep(GRACE + 1.0)
    deadline = time.monotonic() + limit
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if daemon.call_lines != last:
            last, quiet_since = daemon.call_lines, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return
        await asyncio.sleep(0.2)


# --------------------------------------------------------------------------------------
# The comparison


@dataclass(slots=True)
class Expected:
    conversation_id: str
    start: float
    end: float
    direction: str
    #: Normalised, as the journal keeps it.
    number: str | None
    answered: bool
    employees: tuple[str, ...]
    #: File names, sorted.
    recordings: tuple[str, ...]
    status: str


@dataclass(slots=True)
class Row:
    conversation_id: str
    linkedids: list[str]
    direction: str
    number: str | None
    answered: bool
    approximate: bool
    status: str
    recordings: tuple[str, ...]
    employees: tuple[str, ...] = ()

    def shape(self) -> tuple[Any, ...]:
        return (
            self.direction,
            self.number,
            self.answered,
            self.employees,
            self.status,
            self.recordings,
        )


def expected_status(direction: str, answered: bool) -> str:
    """Every synthetic number is new and unregistered: no earlier call, no later contact."""
    if direction == Direction.INCOMING.value:
        return "answered" if answered else "lost"
    return "reached" if answered else "cancelled"


def expectations(workdir: Path) -> tuple[dict[str, Expected], dict[str, str]]:
    """What each copy must give, and every uniqueid of a copy → its conversation id."""
    summary = load_expected(workdir / "chaos.ami")
    templates = load_templates()
    instances = plan(
        templates,
        calls=summary["requested"]["calls"],
        concurrency=summary["concurrency"],
        seed=summary["seed"],
    )
    expected: dict[str, Expected] = {}
    owner: dict[str, str] = {}
    for instance, call in zip(instances, summary["calls"], strict=True):
        template = instance.template
        conversation_id = call["conversation_id"]
        assert instance.expected().conversation_id == conversation_id
        expected[conversation_id] = Expected(
            conversation_id=conversation_id,
            start=call["started_at"],
            end=call["started_at"] + template.span_us / 1e6,
            direction=call["direction"],
            number=normalize_number(call["number"], "RU") if call["number"] else None,
            answered=call["answered"],
            employees=tuple(call["employees_answered"]),
            recordings=tuple(sorted(call["recordings"])),
            status=expected_status(call["direction"], call["answered"]),
        )
        for (kind, _), value in zip(template.static_keys, instance.static, strict=True):
            if kind == "u":
                owner[value.decode()] = conversation_id
    return expected, owner


def _merged(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping windows as one: a daemon killed again before it could save anything
    extends the first kill's blindness."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


async def analyse(workdir: Path, url: str | None = None) -> Result:
    """Compare the journal of a run with its capture's expected summary."""
    facts = json.loads((workdir / "run.json").read_text("utf-8"))
    url = url or facts["url"]
    speed = float(facts["speed"])
    outages = [
        Outage(kind, start, end, saved[0] if saved else None, frozenset(saved[1] if saved else ()))
        for kind, start, end, *saved in facts["outages"]
    ]
    expected, owner = expectations(workdir)
    rows, left_open, integrity = await _read_journal(url)
    result = Result()

    # PBX seconds before a fault from which the daemon may lose what it learnt: what was in
    # flight for a drop; the changes not saved yet for a kill.
    # For a kill, counted from the daemon's last save if it was behind the stream (a loaded
    # daemon lags the wire: what it had not read yet when it died, it never knew).
    lag = {"drop": IN_FLIGHT_SECONDS * speed, "kill": (PERSIST_SECONDS + 0.5) * speed}
    # ... and from which it may not even know a call began (never saved).
    blind = {"drop": IN_FLIGHT_SECONDS * speed, "kill": PERSIST_NEW_SECONDS * speed}

    def known_until(o: Outage) -> float:
        return o.start if o.saved_at is None else min(o.start, o.saved_at)

    spans = _merged([(known_until(o) - lag[o.kind], (o.end or o.start) + 0.5) for o in outages])
    # An outage ends for the daemon when the channel list it asks for after the login comes
    # back: a call that ends in that round trip was never seen.
    after = IN_FLIGHT_SECONDS * speed
    blinds = _merged(
        [(known_until(o) - blind[o.kind], (o.end or o.start) + after) for o in outages]
    )
    # Every call a killed daemon had saved open.
    saved = {owner.get(i, i) for o in outages for i in o.saved}

    rows_of: dict[str, list[Row]] = {}
    ghosts: list[Row] = []
    for row in rows:
        target = row.conversation_id if row.conversation_id in expected else None
        for linkedid in row.linkedids:
            target = target or owner.get(linkedid)
        if target is None:
            ghosts.append(row)
        else:
            rows_of.setdefault(target, []).append(row)
    counts: Counter[str] = Counter()
    spanned: Counter[str] = Counter()
    wrong = 0  # calls that spanned no outage and are not exact
    for call in expected.values():
        life = (call.start, call.end + GRACE)
        hit = any(start <= life[1] and life[0] <= end for start, end in spans)
        tally = spanned if hit else Counter()
        spanned["spanned an outage" if hit else "spanned none"] += 1
        found = rows_of.get(call.conversation_id, [])
        if len(found) > 1:
            # A pickup or a transfer inside an outage: the two sides were never seen joined.
            counts["duplicates"] += 1
            tally["split in two rows"] += 1
            wrong += not hit
            result.examples.append(f"split {call.conversation_id}: {[r.shape() for r in found]}")
        if not found:
            counts["missing"] += 1
            if call.conversation_id in saved:
                # The database had it: nothing excuses losing it.
                tally["missing (saved, then lost)"] += 1
                result.examples.append(f"missing {call.conversation_id} (saved, then lost)")
            elif any(start <= call.start and call.end <= end for start, end in blinds):
                tally["missing (blind)"] += 1
            else:
                tally["missing (seen)"] += 1
                result.examples.append(f"missing {call.conversation_id} (seen)")
            wrong += not hit
            continue
        row = next((r for r in found if r.conversation_id == call.conversation_id), found[0])
        want = (
            call.direction,
            call.number,
            call.answered,
            call.employees,
            call.status,
            call.recordings,
        )
        same = row.shape() == want
        if same and not row.approximate:
            kind = "exact"
        elif row.approximate:
            kind = "approximate"
            tally["approximate, shape right" if same else "approximate, shape differs"] += 1
        else:
            kind = "adopted"
        counts[kind] += 1
        tally[kind] += 1
        if not hit and kind != "exact":
            wrong += 1
            result.examples.append(
                f"{call.conversation_id} spanned no outage: expected {want}, got "
                f"{row.shape()}{' approximate' if row.approximate else ''}"
            )
    result.counts = {
        "expected": len(expected),
        "written": len(rows),
        "exact": counts["exact"],
        "approximate": counts["approximate"],
        "adopted": counts["adopted"],
        "missing": counts["missing"],
        "duplicates": counts["duplicates"],
        "ghosts": len(ghosts),
        "left open": len(left_open),
    }
    result.spanned = dict(spanned)
    problems = result.problems
    if wrong:
        problems.append(f"{wrong} calls that spanned no outage are not exact")
    if spanned["missing (seen)"]:
        problems.append(f"{spanned['missing (seen)']} calls missing although the daemon saw them")
    if spanned["missing (saved, then lost)"]:
        problems.append(
            f"{spanned['missing (saved, then lost)']} calls missing although a killed daemon "
            "had saved them"
        )
    if ghosts:
        problems.append(
            f"{len(ghosts)} ghost rows: "
            + "; ".join(f"{g.conversation_id} {g.shape()}" for g in ghosts[:5])
        )
    if left_open:
        problems.append(f"{len(left_open)} open_conversations rows left: {left_open[:5]}")
    if integrity not in (None, "ok"):
        problems.append(f"PRAGMA integrity_check: {integrity}")
    result.notes.update(facts)
    result.notes["integrity"] = integrity
    result.notes["database"] = "SQLite" if url.startswith("sqlite") else "PostgreSQL"
    return result


async def _read_journal(url: str) -> tuple[list[Row], list[str], str | None]:
    """Every row of the journal, the open_conversations keys, SQLite's integrity check."""
    database = open_database(url)
    try:
        async with database.sessions() as session:
            result = await session.execute(
                sa.text(
                    "SELECT id, conversation_id, linkedids, direction, number, answered, "
                    "approximate_end, status, announced_recordings FROM calls WHERE pbx = :pbx"
                ),
                {"pbx": PBX_NAME},
            )
            by_id: dict[int, Row] = {}
            for row in result:
                announced = _json(row.announced_recordings)
                by_id[row.id] = Row(
                    conversation_id=row.conversation_id,
                    linkedids=list(_json(row.linkedids)),
                    direction=row.direction,
                    number=row.number,
                    answered=bool(row.answered),
                    approximate=bool(row.approximate_end),
                    status=row.status,
                    recordings=tuple(sorted(str(p[0]).rsplit("/", 1)[-1] for p in announced)),
                )
            answered = await session.execute(
                sa.text(
                    "SELECT call_id, extension FROM call_participants "
                    "WHERE answered_at IS NOT NULL ORDER BY call_id, ordinal"
                )
            )
            employees: dict[int, list[str]] = {}
            for call_id, extension in answered:
                employees.setdefault(call_id, []).append(extension)
            for call_id, extensions in employees.items():
                if call_id in by_id:
                    by_id[call_id].employees = tuple(extensions)
            keys = [
                str(k) for k in await session.scalars(sa.text("SELECT key FROM open_conversations"))
            ]
    finally:
        await database.dispose()
    integrity = None
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.split("///", 1)[1])) as connection:
            integrity = str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    return list(by_id.values()), keys, integrity


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


# --------------------------------------------------------------------------------------
# Output


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine() -> str:
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.0f} GB"
                break
    return (
        f"{cpu}, {os.cpu_count()} cores, {ram} RAM; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}"
    )


def table(rows: Sequence[tuple[str, Any]]) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'':<{width}} |  count |", f"|{'-' * (width + 2)}|-------:|"]
    lines.extend(f"| {name:<{width}} | {value:>6} |" for name, value in rows)
    return "\n".join(lines)


_SPANNED_ORDER = (
    "spanned none",
    "spanned an outage",
    "exact",
    "approximate",
    "approximate, shape right",
    "approximate, shape differs",
    "adopted",
    "missing (blind)",
    "missing (seen)",
    "missing (saved, then lost)",
    "split in two rows",
)


def report(result: Result, command: str) -> str:
    notes = result.notes
    spanned = [
        (name if name.startswith("spanned") else f"… {name}", result.spanned.get(name, 0))
        for name in _SPANNED_ORDER
    ]
    run_facts = [
        (name, notes[name])
        for name in (
            "stream messages",
            "messages lost in outages",
            "AMI drops",
            "daemon SIGKILLs",
            "logins",
            "resynchronisations logged",
            "conversations restored at start",
            "daemon error lines",
        )
        if name in notes
    ]
    verdict = "Passed" if not result.problems else "FAILED: " + "; ".join(result.problems)
    return f"""## Result

{table(list(result.counts.items()))}

The calls whose life an outage overlapped, and what became of them:

{table(spanned)}

The run:

{table(run_facts)}

{verdict}. {notes["database"]} journal, `PRAGMA integrity_check`: {notes["integrity"] or "n/a"};
{notes.get("streaming seconds", "?")} s of streaming, {notes.get("seconds", "?")} s in all.

- Machine: {machine()}
- Command: `{command}`
"""


PROSE = """# Chaos run

`bench/chaos.py` checks the promise of issue 6 end to end: whatever happens to the AMI link
or to the daemon, every conversation that ended is in the journal exactly once.

A synthetic capture of 10,000 calls (`bench.synth`: the real calls of `tests/data/ami-traces`,
renumbered and interleaved so that about 300 are open at once) is served by an in-process
`FakePbx` at twice the recorded pace. `pbxjournal run` is a real subprocess with its own
configuration file and a SQLite journal in a temporary directory. During the stream the AMI
connection is dropped at 100 random points (the fake keeps its clock, so what it sends while
nobody listens is lost, as in a real outage) and the daemon is SIGKILLed and started again 20
times. At the end the daemon gets SIGTERM and its journal is compared with the capture's
expected summary.

How to read the tables:

- **exact**: one row with the expected direction, number, answered employees, status and
  recording names, and no `approximate_end`. Every call that spanned no outage must be exact.
- **approximate**: the call spanned an outage and its end was not seen: `approximate_end` is
  set and the end is the moment the daemon lost sight of it. "Shape right": direction,
  employees and status are still those expected; "shape differs": something happened inside
  the outage (an answer, a transfer) that nothing afterwards could show.
- **adopted**: the end was seen but the resynchronisation rebuilt the call from the PBX's
  channel list, so its shape is what that list showed (a trunk born and gone inside the
  outage leaves an outgoing call looking internal).
- **missing**: no row. *Blind*: the call lived entirely where the daemon could not see it:
  inside an outage (or in the quarter second before a drop, in flight), or begun in the last
  1.5 s before a kill and over before the daemon was back: new conversations are saved every
  0.25 s, but between batches of writes (up to 0.5 s) and the 2 s save of the others, so under
  this load one may wait up to a second (docs/assembler.md, "Known limits"). For a kill, the
  1.5 s count back from whichever is earlier: the kill, or the daemon's own clock at its last
  save (read from the journal it left: a loaded daemon lags the wire, and what it had not
  read when it died it never knew). *Seen*: a failure. *Saved, then lost*: a killed daemon
  had saved the call (open, in `open_conversations`) and no later daemon wrote it: a failure
  whatever the timing.
- **duplicates**, **ghosts**, **left open**: calls written as two rows, rows of no call, and
  `open_conversations` rows remaining at the end. All must be 0.

A call *spanned an outage* when an outage (from the fault to the next login, in PBX time)
overlaps its life plus the grace period; for a kill the outage starts earlier by the changes
the daemon had not saved yet (every 2 s). At this density (120 faults over about six minutes
of PBX time with 300 calls open) almost every call spans one, so the exact count among those
is what shows how much the resynchronisation and the restore recover.
"""


def write_doc(path: Path, body: str) -> None:
    path.write_text(PROSE + "\n" + body, "utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="AMI drops and SIGKILLed daemons while synthetic calls stream in.",
    )
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=300, help="calls open at once")
    parser.add_argument("--speed", type=float, default=2.0, help="pace: 2 = twice the recorded")
    parser.add_argument("--drops", type=int, default=100, help="AMI connection drops")
    parser.add_argument("--kills", type=int, default=20, help="daemon SIGKILLs and restarts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--postgres", metavar="URL", default=None, help="journal in a fresh PostgreSQL database"
    )
    parser.add_argument(
        "--keep", metavar="DIR", type=Path, default=None, help="work there, keep it"
    )
    parser.add_argument("--analyse", metavar="DIR", type=Path, default=None, help="compare again")
    parser.add_argument("--doc", type=Path, default=DOC, help="where to write the result")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be > 0: outages lose events only while the fake keeps time")
    shown = list(argv if argv is not None else sys.argv[1:])
    if args.postgres:
        shown[shown.index(args.postgres)] = '"$(scripts/test-postgres)"'
    command = " ".join(
        ["python -m bench.chaos", *(shlex.quote(a) if "$" not in a else a for a in shown)]
    )
    if args.analyse is not None:
        result = asyncio.run(analyse(args.analyse))
    else:
        workdir = args.keep or Path(tempfile.mkdtemp(prefix="pbxjournal-chaos-"))
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            result = asyncio.run(run(args, workdir))
        finally:
            if args.keep is None:
                for path in sorted(workdir.rglob("*"), reverse=True):
                    path.unlink() if path.is_file() else path.rmdir()
                workdir.rmdir()
    body = report(result, command)
    print(body)
    for example in result.examples[:20]:
        print("  ", example)
    if not args.no_doc and args.analyse is None:
        write_doc(args.doc, body)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
