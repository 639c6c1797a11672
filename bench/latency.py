"""Latency (issue 7): from a conversation's last ``Hangup`` on the wire to its row in the
answer of a ``GET /changes?wait=`` long-poll, under a steady load of calls.

Theory of operation
-------------------
A synthetic capture (:mod:`bench.synth` with ``rate``: copies of the real calls started at a
steady ``--rate`` per second, each at a random moment of its own slot) is served by an
in-process :class:`~connector.fakepbx.FakePbx` at the recorded pace (``speed=1``, stalls
made up: the daemon's grace period runs on the PBX's clock, the events' ``Timestamp``). The
capture holds only the messages the transport hands on (the noise it drops unparsed would
only load the fake; ``--full`` keeps it). The fake's :attr:`~connector.fakepbx.FakePbx.on_sent`
notes the moment each ``Hangup`` was handed to the socket.

``pbxjournal run --config`` is a real subprocess with its own configuration file in a
temporary directory, logging at info (one line per call, as in production) to a file there,
and a SQLite journal there (``--postgres URL``: a fresh database made next to the one in the
URL). A client, another subprocess (``python -m bench.latency client``), long-polls
``GET /api/v1/changes?since=N&wait=25&limit=500`` over HTTP without a pause, as 1C does, and
notes for every ``linkedid`` the moment the answer that first held it was read.

Both moments are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process of the
machine). For each call, the template it was copied from tells which ``Hangup`` is its last
(the one that leaves no channel of the conversation alive); the latency is the moment its
row was read minus the moment that ``Hangup`` was sent. It contains the grace period
(``pbx.hangup_grace``, the wait for late merges and recording files) by design; the table
also shows it minus the grace period: the daemon's own delay.

The stream is held until the daemon is logged in and the client's first long-poll is
waiting. Calls are measured when their last ``Hangup`` was sent in the window of
``--seconds`` that follows ``--warmup`` seconds of stream (the open conversations need a
mean call's length to build up), and the stream goes on for the grace period and a little
more after the window, so that the load stays steady until the last measured call is seen.

Run: ``python -m bench.latency`` (``--postgres "$(scripts/test-postgres)"`` for PostgreSQL);
the table goes to stdout and, with the machine and the command, to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import gc
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import report
from bench.daemons import child_env, free_port, pbxjournal_command, write_config
from bench.databases import scratch_database
from bench.synth import CallTemplate, Instance, build_capture, load_templates, plan
from config.settings import PbxSettings
from connector.events import AmiMessage, parse_message
from connector.fakepbx import FakePbx

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
SECTION = "bench.latency"
USERNAME = "latency"
SECRET = "latency-secret"
#: Seconds of stalls (a loaded machine) the fake PBX makes up by sending without a pause.
CATCH_UP = 5.0
HTTP_USER = "1c"
HTTP_PASSWORD = "latency-secret"
PBX_NAME = "latency"
#: The daemon's default grace period, which the goal is stated against.
GRACE = float(PbxSettings().hangup_grace)
#: Goal (issue 7): p99 of the latency at most the grace period plus this.
GOAL_OVERHEAD = 0.1
#: The client's long-poll, as docs/1c.md has 1C poll.
POLL_WAIT = 25
POLL_LIMIT = 500
#: Stream played after the measured window: the grace period, then this much more.
TAIL_SECONDS = 3.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# What the fake PBX sent, and which Hangup ends which call


@dataclass(slots=True)
class Wire:
    """Moments (monotonic) the fake sent things: the first message, every Hangup."""

    first_at: float | None = None
    first_stamp: float | None = None
    #: Uniqueid → (monotonic send time, the event's PBX Timestamp).
    hangups: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: Every message's send time and PBX Timestamp: the PBX's clock as the wire shows it.
    times: list[float] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)

    def sent(self, message: AmiMessage) -> None:
        now = time.monotonic()
        stamp = _stamp(message)
        if self.first_at is None:
            self.first_at = now
            self.first_stamp = stamp
        if not math.isnan(stamp):
            self.times.append(now)
            self.stamps.append(stamp)
        if message.event == "Hangup":
            self.hangups[message.first("Uniqueid")] = (now, stamp)

    def passed(self, stamp: float) -> float | None:
        """When the wire's PBX clock first showed ``stamp`` or later (None: never)."""
        index = bisect.bisect_left(self.stamps, stamp)
        return self.times[index] if index < len(self.times) else None


def _stamp(message: AmiMessage) -> float:
    try:
        return float(message.first("Timestamp"))
    except ValueError:
        return math.nan


def _last_hangup(template: CallTemplate) -> int:
    """Index of the template's message that is its last Hangup (the messages are in time
    order, and a copy's messages of one moment go out in that order)."""
    for index in reversed(range(template.events)):
        if _message(template, index, ()).event == "Hangup":
            return index
    raise ValueError(f"{template.name}: no Hangup")


def _message(template: CallTemplate, index: int, static: Sequence[bytes]) -> AmiMessage:
    values = list(static) or [b"x"] * len(template.static_keys)
    values.extend([b"0.000000"] * len(template.times))
    raw = template.messages[index].render(values)
    return parse_message(raw.removesuffix(b"\r\n\r\n"))


def last_hangups(instances: Sequence[Instance]) -> dict[str, str]:
    """Conversation id → Uniqueid of the Hangup that ends it, for every copy."""
    indexes: dict[str, int] = {}
    out: dict[str, str] = {}
    for instance in instances:
        template = instance.template
        if template.name not in indexes:
            indexes[template.name] = _last_hangup(template)
        hangup = _message(template, indexes[template.name], instance.static)
        out[instance.expected().conversation_id] = hangup.first("Uniqueid")
    return out


# --------------------------------------------------------------------------------------
# The daemon, the client


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A subprocess of this benchmark: its stdout read line by line."""

    def __init__(self, name: str, on_line: Callable[[bytes], None] | None = None) -> None:
        self.name = name
        self.on_line = on_line
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, *argv: str, stdout: Any = asyncio.subprocess.PIPE) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=stdout,
            stderr=None if stdout is asyncio.subprocess.PIPE else asyncio.subprocess.STDOUT,
            cwd=ROOT,
            env=child_env(),
        )
        if self.process.stdout is not None:
            self._reader = asyncio.create_task(self._read(), name=f"{self.name}-stdout")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            if self.on_line is not None:
                self.on_line(line)

    async def stop(self, how: str, wait: float = 60.0) -> int:
        """End it (``"signal"``: SIGTERM; ``"stdin"``: close its stdin); its exit code."""
        if self.process is None:
            return 0
        if how == "stdin" and self.process.stdin is not None:
            self.process.stdin.close()
        else:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), wait)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
            say(f"{self.name} did not stop within {wait:g} s: killed")
        if self._reader is not None:
            await self._reader
        return code


async def client_main(base: str) -> dict[str, Any]:
    """The 1C side: long-poll ``/changes`` until stdin closes; note when each call appeared.

    Prints ``ready`` after its first answer, then the number of calls seen after each answer
    that brought new ones; returns ``{"seen": {linkedid: monotonic}, ...}``.
    """
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    closed = asyncio.create_task(stdin.read(), name="stdin-closed")
    seen: dict[str, float] = {}
    polls = 0
    errors: list[str] = []
    since = 0
    credentials = base64.b64encode(f"{HTTP_USER}:{HTTP_PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    timeout = aiohttp.ClientTimeout(total=POLL_WAIT + 30)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
        while not closed.done():
            wait = POLL_WAIT if polls else 0  # the first answer says the client is up
            params = {"since": str(since), "wait": str(wait), "limit": str(POLL_LIMIT)}
            poll = asyncio.create_task(_poll(http, f"{base}/api/v1/changes", params))
            await asyncio.wait([poll, closed], return_when=asyncio.FIRST_COMPLETED)
            if not poll.done():
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll
                break
            try:
                items, since = poll.result()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.1)
                continue
            now = time.monotonic()
            polls += 1
            before = len(seen)
            for item in items:
                seen.setdefault(item["linkedid"], now)
            if polls == 1:
                print("ready", flush=True)
            if len(seen) > before:
                print(len(seen), flush=True)
    return {"seen": seen, "polls": polls, "errors": errors}


async def _poll(
    http: aiohttp.ClientSession, url: str, params: dict[str, str]
) -> tuple[list[dict[str, Any]], int]:
    async with http.get(url, params=params) as response:
        response.raise_for_status()
        body = await response.json()
    return body["items"], int(body["last_version"])


# --------------------------------------------------------------------------------------
# The run


@dataclass(slots=True)
class Result:
    rate: float
    latencies: list[float] = field(default_factory=list)
    #: Visible minus the moment the wire's PBX clock passed the call's last Hangup + grace.
    after_deadline: list[float] = field(default_factory=list)
    not_seen: int = 0
    calls: int = 0
    events: int = 0
    #: How far the fake fell behind the capture's pace at the measured Hangups (s).
    pace_lag: list[float] = field(default_factory=list)
    daemon_cpu: float = math.nan
    client_cpu: float = math.nan
    window: float = 0.0
    logins: int = 0
    connections: int = 0
    events_lost: int = 0
    polls: int = 0
    client_errors: list[str] = field(default_factory=list)
    daemon_errors: list[str] = field(default_factory=list)
    daemon_exit: int = 0
    calls_logged: int = 0
    database: str = "SQLite"
    #: Every measured call: (conversation, Hangup sent relative to the window, latency,
    #: after the PBX deadline), for a look at where the tail is (``--keep``).
    per_call: list[tuple[str, float, float, float | None]] = field(default_factory=list)


async def _until(predicate: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {limit:g} s")
        await asyncio.sleep(0.05)


async def _healthy(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def run(args: argparse.Namespace, rate: float, workdir: Path) -> Result:
    result = Result(rate=rate)
    for stale in ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm", "seen.json"):
        (workdir / stale).unlink(missing_ok=True)  # a kept directory used again
    templates = load_templates()
    seconds = args.warmup + args.seconds + args.grace + TAIL_SECONDS
    calls = math.ceil(rate * seconds)
    say(f"building {calls} calls at {rate:g}/s (seed {args.seed})")
    capture = workdir / "latency.ami"
    synthetic = build_capture(
        capture,
        calls=calls,
        seed=args.seed,
        rate=rate,
        recvlog=False,
        journal_only=not args.full,
        templates=templates,
    )
    result.events = synthetic.events
    ends = last_hangups(plan(templates, calls=calls, seed=args.seed, rate=rate))
    url, drop_database = await scratch_database(args.postgres, workdir, "latency")
    if args.postgres:
        result.database = "PostgreSQL"
    (workdir / "recordings").mkdir(exist_ok=True)
    wire = Wire()
    # The daemon runs on the PBX's clock: a fake that never made up a stall would stretch
    # the grace period in wall time.
    pbx = FakePbx(
        [capture],
        username=USERNAME,
        secret=SECRET,
        speed=1.0,
        max_catch_up=CATCH_UP,
        keep_time=True,
    )
    pbx.on_sent = wire.sent
    pbx.hold()  # until the daemon and the client are ready
    ami_port = await pbx.start()
    # The capture, the plan and the fake's stream are hundreds of MB of objects: a full
    # collection over them stalls this process (the PBX) for a second and more, and the
    # stream then arrives in a burst. Asterisk does not pause so; nothing here is garbage.
    gc.collect()
    gc.freeze()
    http_port = free_port()
    config = workdir / "pbxjournal.toml"
    write_config(
        config,
        ami_port=ami_port,
        username=USERNAME,
        secret=SECRET,
        pbx_name=PBX_NAME,
        grace=args.grace,
        url=url,
        recordings=workdir / "recordings",
        http_port=http_port,
        http_clients={"name": "1c", "username": HTTP_USER, "password": HTTP_PASSWORD},
    )
    log_path = workdir / "daemon.log"
    seen_count = 0

    def client_line(line: bytes) -> None:
        nonlocal seen_count
        text = line.strip()
        if text.isdigit():
            seen_count = int(text)
        elif text == b"ready":
            seen_count = max(seen_count, 0)
            client_ready.set()

    client_ready = asyncio.Event()
    daemon = Child("daemon")
    client = Child("client", client_line)
    seen_path = workdir / "seen.json"
    try:
        with log_path.open("wb") as log_file:
            await daemon.start(
                *pbxjournal_command(), "run", "--config", str(config), stdout=log_file
            )
        await _until(lambda: pbx.logins > 0 or not daemon.running, 60.0, "the daemon to log in")
        deadline = time.monotonic() + 60.0
        while not await _healthy(http_port):
            if time.monotonic() > deadline or not daemon.running:
                raise RuntimeError("the daemon's HTTP API did not come up")
            await asyncio.sleep(0.1)
        await client.start(
            sys.executable,
            "-m",
            "bench.latency",
            "client",
            f"http://127.0.0.1:{http_port}",
            str(seen_path),
        )
        await asyncio.wait_for(client_ready.wait(), 30.0)
        await asyncio.sleep(0.5)  # its second long-poll is waiting
        say(f"streaming {synthetic.events:,} messages over {seconds:.0f} s")
        pbx.release()
        await _until(lambda: wire.first_at is not None, 10.0, "the stream to start")
        assert wire.first_at is not None
        window_start = wire.first_at + args.warmup
        window_end = window_start + args.seconds
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        cpu = (_cpu_seconds(daemon.pid), _cpu_seconds(client.pid))
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        result.daemon_cpu = (_cpu_seconds(daemon.pid) - cpu[0]) / args.seconds
        result.client_cpu = (_cpu_seconds(client.pid) - cpu[1]) / args.seconds
        say("window over; waiting for the end of the stream")
        await pbx.wait_done()
        with contextlib.suppress(RuntimeError):  # a daemon far behind: counted as not seen
            await _until(
                lambda: seen_count >= calls or not daemon.running,
                args.grace + 30.0,
                "the client to see every call",
            )
    finally:
        await client.stop("stdin")
        result.daemon_exit = await daemon.stop("signal")
        await pbx.close()
        gc.unfreeze()
        if drop_database is not None:
            await drop_database()
    result.logins = pbx.logins
    result.connections = pbx.connections
    result.events_lost = pbx.events_lost
    client_data = json.loads(seen_path.read_text("utf-8"))
    seen: dict[str, float] = client_data["seen"]
    result.polls = client_data["polls"]
    result.client_errors = client_data["errors"]
    for line in log_path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            result.daemon_errors.append(line.decode(errors="replace")[:200])
            continue
        if record.get("event") == "call":
            result.calls_logged += 1
        if record.get("level") in ("error", "critical") or "exception" in record:
            result.daemon_errors.append(str(record)[:200])
    assert wire.first_at is not None and wire.first_stamp is not None
    for conversation, uniqueid in ends.items():
        sent = wire.hangups.get(uniqueid)
        if sent is None or not window_start <= sent[0] < window_end:
            continue
        result.calls += 1
        result.pace_lag.append((sent[0] - wire.first_at) - (sent[1] - wire.first_stamp))
        visible = seen.get(conversation)
        if visible is None:
            result.not_seen += 1
        else:
            result.latencies.append(visible - sent[0])
            due = wire.passed(sent[1] + args.grace)
            if due is not None:
                result.after_deadline.append(visible - due)
            result.per_call.append(
                (
                    conversation,
                    round(sent[0] - window_start, 4),
                    round(visible - sent[0], 4),
                    None if due is None else round(visible - due, 4),
                )
            )
    if args.keep:
        (workdir / "latencies.json").write_text(json.dumps(result.per_call), "utf-8")
    result.window = args.seconds
    return result


# --------------------------------------------------------------------------------------
# The report


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1): a value that was measured."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def render(results: Sequence[Result], args: argparse.Namespace, load: tuple[float, float]) -> str:
    goal = args.grace + GOAL_OVERHEAD
    rows = []
    verdicts = []
    for result in results:
        figures = [percentile(result.latencies, share) for share in (0.5, 0.9, 0.99, 1.0)]
        p99 = figures[2]
        met = result.not_seen == 0 and p99 <= goal
        dropped = result.connections > 1 or result.logins > 1 or result.events_lost > 0
        rows.append(
            [
                f"{result.rate:g}",
                f"{result.calls / result.window:,.0f}",
                f"{result.calls:,}",
                f"{result.not_seen:,}",
                *(_ms(v) for v in figures),
                _ms(p99 - args.grace),
                _ms(percentile(result.after_deadline, 0.5)),
                _ms(percentile(result.after_deadline, 0.99)),
                f"{result.daemon_cpu:.0%}",
                _ms(percentile(result.pace_lag, 0.99)),
                (
                    f"{result.connections} connections, {result.logins} logins, "
                    f"{result.events_lost} lost"
                    if dropped
                    else "none"
                ),
                "met" if met else "NOT met",
            ]
        )
        verdicts.append(
            f"{result.rate:g} calls/s: p99 {_ms(p99)}"
            + (f", {result.not_seen:,} calls never seen" if result.not_seen else "")
            + f" ({'met' if met else 'NOT met'})"
        )
    table = report.table(
        [
            "calls/s started",
            "ended/s in window",
            "calls measured",
            "not seen",
            "p50",
            "p90",
            "p99",
            "max",
            "p99 − grace",
            "after PBX deadline p50",
            "p99",
            "daemon CPU",
            "fake behind (p99)",
            "AMI sessions dropped",
            "goal",
        ],
        rows,
    )
    first = results[0]
    stream = (
        ""
        if args.full
        else (", only the messages the transport hands on (the noise it drops unparsed left out)")
    )
    poll = f"GET /api/v1/changes?since=N&wait={POLL_WAIT}&limit={POLL_LIMIT}"
    intro = report.prose(
        f"""
Machine: {report.machine()}. Load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after:
other work shares the machine.

Command: `{report.command_line()}`

Load: calls started at a steady rate (`bench.synth` with `rate`, seed {args.seed}: copies of
the real calls{stream}), played by `FakePbx` at the recorded pace (on a schedule: stalls of
a loaded machine made up, up to {CATCH_UP:g} s, so that the PBX's clock keeps to the wall
clock) from the benchmark's process to `pbxjournal run` as a subprocess ({first.database}
journal in a temporary directory, logging one JSON line per call at info to a file,
`pbx.hangup_grace` {args.grace:g} s, everything else default), while a third process
long-polls `{poll}` over HTTP without a pause, as 1C does. Latency: the moment the client
read the answer that first held a call, minus the moment the fake PBX handed the call's last
`Hangup` to the socket (CLOCK_MONOTONIC, one clock for the three processes). Measured: the
calls whose last Hangup was sent in the {args.seconds:g} s after {args.warmup:g} s of stream
(the warm-up lets the open conversations build up); the stream then goes on for the grace
period and {TAIL_SECONDS:g} s more. "not seen": measured calls the client had not seen
{args.grace + 30:g} s after the end of the stream. "daemon CPU": its user + system time over
the window, in cores (the event loop's thread and the SQLite batch thread share one
interpreter lock). "fake behind": how far the fake PBX had fallen behind the capture's pace
when it sent a measured Hangup; the daemon's clock is the PBX's (the events' `Timestamp`),
so a fake that falls behind stretches the grace period in wall time. "after PBX deadline"
takes that out: the moment the client saw a call minus the moment the fake sent the first
event stamped at or after the call's last Hangup plus the grace period, the earliest the
daemon may close it.
"""
    )
    verdict = report.prose(
        f"""
Goal (issue 7): p99 ≤ grace period + {GOAL_OVERHEAD * 1000:.0f} ms = {_ms(goal)}.
{"; ".join(verdicts)}.
"""
    )
    return (
        "## Latency: last Hangup on the wire to the row in a `/changes` long-poll\n\n"
        f"{intro}\n\n{table}\n\n{verdict}\n"
    )


# --------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"]:
        if len(argv) != 3:
            print("usage: python -m bench.latency client BASE_URL OUT.json", file=sys.stderr)
            return 2
        seen = asyncio.run(client_main(argv[1]))
        Path(argv[2]).write_text(json.dumps(seen), "utf-8")
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rates", default="200", help="calls started per second: one run each (comma list)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=15.0, help="stream before the window")
    parser.add_argument("--grace", type=float, default=GRACE, help="pbx.hangup_grace (s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="stream the noise too")
    parser.add_argument("--postgres", help="a PostgreSQL URL (scripts/test-postgres)")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the capture, log, journal and each call's latency (latencies.json) here",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    load_before = os.getloadavg()[0]
    results = []
    for rate in rates:
        if args.keep:
            workdir = args.keep / f"rate-{rate:g}"
            workdir.mkdir(parents=True, exist_ok=True)
            results.append(asyncio.run(run(args, rate, workdir)))
        else:
            with tempfile.TemporaryDirectory(prefix="pbxjournal-latency-") as temporary:
                results.append(asyncio.run(run(args, rate, Path(temporary))))
        result = results[-1]
        say(
            f"{rate:g} calls/s: p99 {_ms(percentile(result.latencies, 0.99))}, "
            f"{result.not_seen} not seen, daemon exit {result.daemon_exit}"
        )
        for line in result.daemon_errors[:5] + result.client_errors[:5]:
            say(f"problem: {line}")
    text = render(results, args, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.no_docs:
        report.update_section(SECTION, text)
        say(f"written to {report.BENCHMARKS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
