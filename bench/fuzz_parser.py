"""Fuzzing the AMI input path (issue 6, "bad input"): hostile bytes in, no exception out.

Theory of operation
-------------------
A seeded generator writes one long AMI byte stream out of units of these kinds:

* ``random_bytes`` — noise, sometimes with line ends and message ends in it;
* ``truncated`` — a real message cut anywhere (mid-header, mid-UTF-8 character);
* ``huge`` — a message far over the framer's limit, or a header value just under it;
* ``binary`` — a real message with bytes that are not UTF-8 in keys and values;
* ``unknown_event`` — well-formed events Asterisk never sends;
* ``mutated`` — a real event with headers dropped, doubled, renamed, emptied, swapped with
  another call's ids, given absurd timestamps, escapes, Cyrillic or control characters;
* ``reordered`` — a stretch of a real capture's journal events shuffled, reversed, doubled
  or thinned;
* ``synthetic`` — events of every kind the assembler handles, on a small pool of uniqueids,
  linkedids and bridges, in random order (transfers of channels that never existed, a
  Local pair bridged with itself, hangups before births...).

The stream goes, in reads of random size, through the same path as live input:
:class:`~connector.events.MessageFramer`, :func:`~connector.events.is_journal_message`,
:func:`~connector.events.parse_message`, :func:`~connector.events.normalize`,
:meth:`CallAssembler.feed <connector.assembly.CallAssembler.feed>` (with ``expire`` now and
then), and the finished calls into :class:`storage.memory.MemoryJournal`; and, separately,
through the transport's own routing (:class:`connector.ami.AmiProtocol`, which frames, looks
for ActionIDs and Shutdowns and filters by event name before anything is parsed).

The only exception allowed out is :class:`~connector.events.MalformedMessage`, from
``parse_message`` (no header, over the size limit) and ``normalize`` (no ``Event``), as their
docstrings say. At the end the assembler expires far in the future and must hold nothing.

    python -m bench.fuzz_parser --messages 200000 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from config import Settings
from connector.ami import AmiProtocol, AmiStats, QueueItem
from connector.assembly import CallAssembler, ChannelClassifier, FinishedCall
from connector.capture import iter_capture_messages
from connector.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    JOURNAL_EVENTS,
    MalformedMessage,
    MessageFramer,
    is_journal_message,
    normalize,
    parse_message,
)
from connector.recordings import RecordingFinder
from storage.memory import MemoryJournal
from storage.rules import AttentionWindow

__all__ = ["FuzzReport", "fuzz", "main"]

TRACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "ami-traces"
END = b"\r\n\r\n"
#: Later than any time a message can claim (``normalize`` takes timestamps below 1e11).
FAR_FUTURE = 1e12

KINDS = (
    "random_bytes",
    "truncated",
    "huge",
    "binary",
    "unknown_event",
    "mutated",
    "reordered",
    "synthetic",
)
# How often each kind is drawn; "huge" is rare because every unit is hundreds of KiB.
WEIGHTS = (10, 10, 0.5, 8, 8, 35, 1, 25)

_HANDLED = (
    "Newchannel",
    "Newstate",
    "NewCallerid",
    "NewConnectedLine",
    "Rename",
    "Hangup",
    "DialBegin",
    "DialEnd",
    "BridgeCreate",
    "BridgeDestroy",
    "BridgeEnter",
    "BridgeLeave",
    "BlindTransfer",
    "AttendedTransfer",
    "Pickup",
    "LocalBridge",
    "LocalOptimizationBegin",
    "AgentCalled",
    "AgentConnect",
    "QueueCallerJoin",
    "VarSet",
    "MixMonitorStart",
    "Shutdown",
)
_PREFIXES = (
    "",
    "Dest",
    "Target",
    "Transferer",
    "Transferee",
    "TransferTarget",
    "OrigTransferer",
    "SecondTransferer",
    "LocalOne",
    "LocalTwo",
)
_CHANNELS = (
    "PJSIP/101-00000001",
    "PJSIP/102-00000002",
    "IAX2/103-77",
    "IAX2/provider-9127",
    "SIP/trunk-0000000a",
    "Local/104@from-internal-00000001;1",
    "Local/104@from-internal-00000001;2",
    "Local/104@from-internal-00000001",
    "Snoop/1.1-00000001",
    "Message/ast_msg_queue",
    "PJSIP/",
    "/",
    "",
    "IAX2/101-1455<ZOMBIE>",
    "Local/;1",
)
_STRANGE = (
    "",
    "<unknown>",
    "none",
    "nan",
    "inf",
    "-1",
    "0",
    "1e400",
    "99999999999",
    "1795837371.0",
    "\\",
    "\\x",
    '\\"Иванова\\" \\n',
    "Петров Иван",
    "\x00\x01\x7f",
    "a:b:c",
    " leading",
    "trailing ",
    "😀",
    "x" * 5000,
    "Answer",
    "ANSWER",
    "basic",
    "holding",
    "Ringing",
    "Up",
    "MIXMONITOR_FILENAME",
    "__MIXMONITOR_FILENAME",
    "/var/spool/asterisk/monitor/2026/11/28/x.wav",
)


@dataclass(slots=True)
class FuzzReport:
    units: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    reads: int = 0
    framed: int = 0
    oversized: int = 0
    journal: int = 0
    parsed: int = 0
    malformed_parse: int = 0
    malformed_normalize: int = 0
    events_fed: int = 0
    bad_events: int = 0
    calls_finished: int = 0
    calls_expired: int = 0
    journal_rows: int = 0
    transport_messages: int = 0
    transport_routed: int = 0
    transport_shutdowns: int = 0
    escaped: list[str] = field(default_factory=list)
    left_open: tuple[int, int] = (0, 0)


class _Corpus:
    """Real messages to cut and mutate, and the ids they use."""

    def __init__(self, traces: Path) -> None:
        self.messages: list[bytes] = []
        self.journal: list[bytes] = []
        self.calls: list[list[bytes]] = []
        self.ids: list[str] = []
        for path in sorted(traces.glob("*.ami")):
            call: list[bytes] = []
            for captured in iter_capture_messages(path):
                raw = captured.raw
                self.messages.append(raw)
                if raw.startswith(b"Event:") and is_journal_message(raw):
                    self.journal.append(raw)
                    call.append(raw)
            self.calls.append(call)
        seen: set[str] = set()
        for raw in self.journal:
            for key, value in parse_message(raw).headers:
                if key.endswith(("niqueid", "inkedid")) and value not in seen:
                    seen.add(value)
                    self.ids.append(value)


class _Generator:
    def __init__(self, corpus: _Corpus, rng: random.Random) -> None:
        self.corpus = corpus
        self.rng = rng
        self.pool_ids = [f"900.{i}" for i in range(12)] + corpus.ids[:8]
        self.bridges = [f"bridge-{i}" for i in range(4)]
        self.kinds: dict[str, Callable[[], tuple[int, bytes]]] = {
            "random_bytes": self.random_bytes,
            "truncated": self.truncated,
            "huge": self.huge,
            "binary": self.binary,
            "unknown_event": self.unknown_event,
            "mutated": self.mutated,
            "reordered": self.reordered,
            "synthetic": self.synthetic,
        }

    def unit(self) -> tuple[str, int, bytes]:
        """(kind, how many messages it counts as, bytes)."""
        kind = self.rng.choices(KINDS, WEIGHTS)[0]
        count, data = self.kinds[kind]()
        return kind, count, data

    # -- kinds ------------------------------------------------------------------------

    def random_bytes(self) -> tuple[int, bytes]:
        rng = self.rng
        size = rng.choice((1, 2, 5, 40, 300, 2000))
        alphabet = rng.choice((b"\r\n:", b"\r\n: abcXYZ019", bytes(range(256))))
        data = bytes(rng.choice(alphabet) for _ in range(size))
        return 1, data + (END if rng.random() < 0.7 else b"")

    def truncated(self) -> tuple[int, bytes]:
        raw = self.rng.choice(self.corpus.messages)
        cut = self.rng.randrange(0, len(raw) + 1)
        return 1, raw[:cut] + (END if self.rng.random() < 0.8 else b"")

    def huge(self) -> tuple[int, bytes]:
        rng = self.rng
        if rng.random() < 0.5:
            # Over the limit: the framer drops it and resynchronises at the next message end.
            body = b"Event: VarSet\r\nValue: " + b"A" * (DEFAULT_MAX_MESSAGE_BYTES + 10)
        else:
            # Just under it: a legal, absurd message that must be parsed.
            body = (
                b"Event: Newchannel\r\nUniqueid: 900.1\r\nChannel: PJSIP/101-1\r\n"
                b"CallerIDName: " + "Я".encode() * (DEFAULT_MAX_MESSAGE_BYTES // 2 - 200)
            )
        return 1, body + END

    def binary(self) -> tuple[int, bytes]:
        raw = bytearray(self.rng.choice(self.corpus.journal))
        for _ in range(self.rng.randrange(1, 8)):
            position = self.rng.randrange(len(raw))
            raw[position] = self.rng.choice((0x00, 0x80, 0xC3, 0xD0, 0xFF, 0xE2, 0x0D, 0x0A))
        return 1, bytes(raw) + END

    def unknown_event(self) -> tuple[int, bytes]:
        rng = self.rng
        name = rng.choice(
            (
                "Bogus",
                "NewChannel",
                "newchannel",
                "Hangup ",
                " Hangup",
                "Hangup\x00",
                "Ev:ent",
                "VarSet2",
                "",
                "Cdr",
                "CEL",
                "UserEvent",
                "Ща",
            )
        )
        headers = [("Event", name), *self._random_headers(rng.randrange(0, 6))]
        if rng.random() < 0.2:
            headers.append(("ActionID", rng.choice(("x", "1", ""))))
        return 1, _serialise(headers) + END

    def mutated(self) -> tuple[int, bytes]:
        rng = self.rng
        headers = list(parse_message(rng.choice(self.corpus.journal)).headers)
        for _ in range(rng.randrange(1, 4)):
            self._mutate(headers)
        line_end = b"\r\n" if rng.random() < 0.95 else rng.choice((b"\n", b"\r", b"\r\r\n"))
        return 1, _serialise(headers, line_end) + END

    def reordered(self) -> tuple[int, bytes]:
        rng = self.rng
        capture = rng.choice([c for c in self.corpus.calls if c])
        start = rng.randrange(len(capture))
        events = capture[start : start + rng.randrange(5, 60)]
        how = rng.choice(("shuffle", "reverse", "double", "thin", "windows"))
        if how == "shuffle":
            rng.shuffle(events)
        elif how == "reverse":
            events.reverse()
        elif how == "double":
            events = [e for e in events for _ in (0, 1)]
        elif how == "thin":
            events = [e for e in events if rng.random() < 0.6]
        else:
            for start in range(0, len(events), 5):
                window = events[start : start + 5]
                rng.shuffle(window)
                events[start : start + 5] = window
        return len(events), b"".join(e + END for e in events)

    def synthetic(self) -> tuple[int, bytes]:
        rng = self.rng
        headers = [("Event", rng.choice(_HANDLED))]
        if rng.random() < 0.9:
            headers.append(("Timestamp", f"{1795837000 + rng.random() * 600:.6f}"))
        for prefix in rng.sample(_PREFIXES, rng.randrange(1, 4)):
            headers.append((prefix + "Uniqueid", rng.choice(self.pool_ids)))
            headers.append((prefix + "Linkedid", rng.choice(self.pool_ids)))
            headers.append((prefix + "Channel", rng.choice(_CHANNELS)))
        for key in rng.sample(
            (
                "BridgeUniqueid",
                "BridgeType",
                "ChannelStateDesc",
                "DialStatus",
                "DialString",
                "Variable",
                "Value",
                "CallerIDNum",
                "Exten",
                "Queue",
                "Newname",
                "Extension",
            ),
            rng.randrange(0, 5),
        ):
            headers.append((key, self._value_for(key)))
        return 1, _serialise(headers) + END

    # -- helpers ----------------------------------------------------------------------

    def _value_for(self, key: str) -> str:
        rng = self.rng
        if key == "BridgeUniqueid":
            return rng.choice(self.bridges)
        if key == "BridgeType":
            return rng.choice(("basic", "holding", "", "BASIC"))
        if key == "ChannelStateDesc":
            return rng.choice(("Ringing", "Up", "Ring", "Down", ""))
        if key == "DialStatus":
            return rng.choice(("ANSWER", "CANCEL", "RINGING", "BUSY", "", "NOANSWER"))
        if key == "Variable":
            return rng.choice(("MIXMONITOR_FILENAME", "__CALLFILENAME", "AMPUSER", "X", ""))
        if key == "DialString":
            return rng.choice(("provider/79161234567", "79161234567@trunk", "101", "", "/", "@"))
        return rng.choice(_STRANGE)

    def _random_headers(self, count: int) -> list[tuple[str, str]]:
        keys = ("Uniqueid", "Linkedid", "Channel", "Value", "Foo", "DestUniqueid", "X-Y")
        return [(self.rng.choice(keys), self.rng.choice(_STRANGE)) for _ in range(count)]

    def _mutate(self, headers: list[tuple[str, str]]) -> None:
        rng = self.rng
        if not headers:
            headers.append(("Event", rng.choice(_HANDLED)))
            return
        index = rng.randrange(len(headers))
        key, value = headers[index]
        action = rng.randrange(11)
        if action == 0:
            del headers[index]
        elif action == 1:
            headers.insert(rng.randrange(len(headers) + 1), (key, rng.choice(_STRANGE)))
        elif action == 2:
            headers[index] = (key, rng.choice(_STRANGE))
        elif action == 3:
            headers[index] = (
                rng.choice((key.lower(), key.upper(), f" {key}", f"{key} ", "")),
                value,
            )
        elif action == 4:
            headers[index] = (key, rng.choice(self.corpus.ids + self.pool_ids))
        elif action == 5:
            headers[:] = [h for h in headers if h[0] != "Event"]
        elif action == 6:
            headers.insert(0, ("Event", rng.choice(_HANDLED + tuple(sorted(JOURNAL_EVENTS)))))
        elif action == 7:
            headers[:] = [
                ("Timestamp", rng.choice((*_STRANGE, "1e10", "-5", "1.5", "99999999999.9")))
                if k == "Timestamp"
                else (k, v)
                for k, v in headers
            ]
        elif action == 8:
            headers.insert(index, (rng.choice(("no colon here", "", ":", "::")), ""))
        elif action == 9:
            other = rng.randrange(len(headers))
            headers[index], headers[other] = headers[other], headers[index]
        else:
            headers[index] = (key, value + rng.choice(("\\", "\\n", "\r", "\n", ": x")))


def _serialise(headers: list[tuple[str, str]], line_end: bytes = b"\r\n") -> bytes:
    lines = []
    for key, value in headers:
        if key in ("no colon here", ""):
            lines.append((key + value).encode("utf-8", "surrogatepass"))
        else:
            lines.append(f"{key}: {value}".encode("utf-8", "surrogatepass"))
    return line_end.join(lines)


def _stream(generator: _Generator, messages: int, report: FuzzReport) -> Iterator[bytes]:
    made = 0
    while made < messages:
        kind, count, data = generator.unit()
        report.units[kind] += count
        made += count
        yield data


class _NullTransport:
    """Stands in for the socket: an abort (on Shutdown) ends the connection at once."""

    def __init__(self) -> None:
        self.protocol: AmiProtocol | None = None
        self.closing = False

    def write(self, data: bytes) -> None:
        return None

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True
        if self.protocol is not None:
            self.protocol.connection_lost(None)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


async def fuzz(messages: int, seed: int, traces: Path = TRACES) -> FuzzReport:
    report = FuzzReport()
    rng = random.Random(seed)
    generator = _Generator(_Corpus(traces), rng)
    framer = MessageFramer(expect_banner=False)
    assembler = CallAssembler(ChannelClassifier(), grace=3.0)
    settings = Settings()
    journal = MemoryJournal(pbx="fuzz", window=AttentionWindow.fixed(86400.0, settings.pbx.tz))
    finder = RecordingFinder([], settings.recordings.formats)
    sink: list[QueueItem] = []
    stats = AmiStats()
    protocol = _new_protocol(stats, sink)
    # The daemon's clock: the newest event time, never going back.
    latest = 1795837000.0

    @contextmanager
    def catching(where: str) -> Iterator[None]:
        try:
            yield
        except Exception:  # every escape is a finding, not the end of the run
            report.escaped.append(f"{where}: {traceback.format_exc(limit=6)}")

    def write(calls: list[FinishedCall]) -> None:
        for call in calls:
            report.calls_finished += 1
            with catching("MemoryJournal.write"):
                journal.write(call, finder.find(call), latest)

    buffer = b""
    for data in _stream(generator, messages, report):
        buffer += data
        report.bytes += len(data)
        while len(buffer) > 1 or (buffer and rng.random() < 0.5):
            size = min(len(buffer), rng.choice((1, 3, 17, 512, 4096, 65536)))
            chunk, buffer = buffer[:size], buffer[size:]
            report.reads += 1
            # The transport's own routing of the same bytes; a Shutdown ends its session.
            with catching("AmiProtocol.data_received"):
                protocol.data_received(chunk)
            if protocol.is_closed:
                report.transport_shutdowns += 1
                report.transport_messages += stats.messages_received
                report.transport_routed += stats.journal_messages
                stats = AmiStats()
                protocol = _new_protocol(stats, sink)
            sink.clear()
            # The parser and the assembler, on every framed message.
            raws: list[bytes] = []
            with catching("MessageFramer.feed"):
                raws = framer.feed(chunk)
            for raw in raws:
                report.framed += 1
                wanted = False
                with catching("is_journal_message"):
                    wanted = is_journal_message(raw)
                try:
                    message = parse_message(raw)
                except MalformedMessage:
                    report.malformed_parse += 1
                    continue
                except Exception:
                    report.escaped.append(f"parse_message: {traceback.format_exc(limit=6)}")
                    continue
                report.parsed += 1
                if not wanted:
                    continue
                # What the transport hands on is normalised as it is (AmiConnector._deliver).
                report.journal += 1
                try:
                    event = normalize(message, latest)
                except MalformedMessage:
                    report.malformed_normalize += 1
                    continue
                except Exception:
                    report.escaped.append(f"normalize: {traceback.format_exc(limit=6)}")
                    continue
                latest = max(latest, event.time)
                report.events_fed += 1
                with catching("CallAssembler.feed"):
                    write(assembler.feed(event, latest))
            if rng.random() < 0.01:
                with catching("CallAssembler.expire"):
                    write(assembler.expire(latest))
            if rng.random() < 0.001:
                latest += rng.choice((1.0, 10.0, 3600.0))
    report.transport_messages += stats.messages_received
    report.transport_routed += stats.journal_messages
    report.oversized = framer.oversized
    with catching("CallAssembler.expire(far future)"):
        write(assembler.expire(FAR_FUTURE))
    report.bad_events = assembler.stats.bad_events
    report.calls_expired = assembler.stats.conversations_expired
    report.journal_rows = len(journal.entries())
    report.left_open = (assembler.open_conversations, assembler.open_channels)
    if assembler.next_deadline() is not None:
        report.escaped.append(f"a deadline is still armed: {assembler.next_deadline()}")
    return report


def _new_protocol(stats: AmiStats, sink: list[QueueItem]) -> AmiProtocol:
    protocol = AmiProtocol(peer="fuzz", stats=stats, sink=sink.append, tap=None)
    transport = _NullTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_parser", description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    report = asyncio.run(fuzz(args.messages, args.seed))
    seconds = time.perf_counter() - began
    total = sum(report.units.values())
    print(
        f"{total:,} generated messages (seed {args.seed}) in {seconds:.1f} s, "
        f"{report.bytes / 1e6:.1f} MB in {report.reads:,} reads"
    )
    for kind in KINDS:
        print(f"  {kind:<14} {report.units[kind]:>9,}")
    print(
        f"framer: {report.framed:,} messages framed, {report.oversized:,} oversized dropped\n"
        f"parser: {report.parsed:,} parsed, {report.malformed_parse:,} MalformedMessage; "
        f"{report.journal:,} journal events, {report.malformed_normalize:,} without Event\n"
        f"assembler: {report.events_fed:,} events fed, {report.bad_events:,} counted as bad, "
        f"{report.calls_finished:,} calls finished ({report.calls_expired:,} expired), "
        f"{report.journal_rows:,} journal rows\n"
        f"transport routing: {report.transport_messages:,} messages, "
        f"{report.transport_routed:,} handed on, {report.transport_shutdowns:,} Shutdowns "
        f"(each a new session)\n"
        f"after expire far in the future: {report.left_open[0]} conversations, "
        f"{report.left_open[1]} channels open\n"
        f"escaped exceptions: {len(report.escaped)}"
    )
    for finding in report.escaped[:10]:
        print("\n" + finding)
    ok = not report.escaped and report.left_open == (0, 0) and total >= args.messages
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
