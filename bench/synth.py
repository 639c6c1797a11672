"""Synthetic AMI captures: the real calls of tests/data/ami-traces, cloned, renumbered and
interleaved, as many as a benchmark needs.

Theory of operation
-------------------
*Templates.* Every real capture is cut into conversations. The ids a message carries (any
``…Uniqueid``/``…Linkedid`` header, any bridge id) are joined with a union-find, so the
messages of one conversation are the ones whose ids end up in one set — which is also how the
assembler groups channels (pickups, transfers and Local pairs name both sides in one message).
A message without ids (``DeviceStateChange``, ``ExtensionStatus``, ``QueueMemberStatus``,
dialplan noise on ``Channel: none``) goes with the conversation of the message before it, so
the share of noise stays what the PBX sent. What belonged to the capturing session (banner,
responses, ``FullyBooted``, ``SuccessfulAuth``, ``Reload``, ``Shutdown``) is left out. Each
conversation is then assembled alone and kept only if it gives the call it gave in its capture.

*Compilation.* Each message of a template becomes a bytes ``%``-format with a placeholder for
every value that must differ between copies: the ``Timestamp``; every uniqueid/linkedid (in
any header, in recording paths, in CEL's JSON); every bridge id; the suffix of every channel
name (``IAX2/101-1455`` keeps ``IAX2/101-``; both halves of ``Local/…-0000002a;1/;2`` get the
same new suffix); and every external number — the ten digits after ``7``, ``8`` or ``+7``, so
``89161234567`` and ``+79161234567`` stay one customer and the number in a recording's file
name stays the caller's. The company's own numbers (``7495777…``) are kept.

*Instances.* ``concurrency`` lanes each run copies back to back: a lane takes the next random
template, starts it when its previous copy has ended plus a pause a little longer than the
assembler's grace period, so about ``concurrency`` conversations are open at any moment.
Each copy gets fresh ids from global counters and its times shifted by whole microseconds.
With ``rate`` instead, copies start at a steady pace, ``rate`` per second (each at a random
moment of its own 1/``rate`` slot), however long they last: the load of a PBX taking that
many calls a second, where the number open at once follows from the calls' lengths.

*Output.* The copies are merged by time (a heap over the copies that have started, so memory
holds only the open ones) and written as a ``.ami`` capture with the banner and login answer
a real capture starts with, an optional ``.recvlog`` (reads of a few milliseconds), and
``NAME.expected.json``: for every copy its conversation id, the template it came from, and the
direction, number, answered flag, employees who answered and recording file names that the
assembler must find. Everything is a function of the seed.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path, PurePosixPath
from typing import Any

from connector.assembly import CallAssembler, ChannelClassifier, FinishedCall
from connector.capture import iter_capture_messages, recvlog_path
from connector.events import MalformedMessage, is_journal_message, normalize, parse_message

__all__ = [
    "GRACE",
    "TRACES",
    "CallTemplate",
    "Instance",
    "SyntheticCall",
    "SyntheticCapture",
    "build_capture",
    "ensure_capture",
    "expected_path",
    "iter_plan",
    "load_expected",
    "load_templates",
    "plan",
    "render",
]

TRACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "ami-traces"
#: The assembler's grace period the lanes leave between two copies (the daemon's default).
GRACE = 3.0

_PREAMBLE = (
    b"Asterisk Call Manager/11.0.0\r\n"
    b"Response: Success\r\nActionID: synth-login\r\nMessage: Authentication accepted\r\n\r\n"
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 3600\r\nLastReload: 3600\r\n"
    b"Status: Fully Booted\r\n\r\n"
)
_END = b"\r\n\r\n"

#: Events that belong to the manager session or the whole PBX, not to a call.
_SESSION_EVENTS = frozenset(
    {
        "FullyBooted",
        "SuccessfulAuth",
        "FailedACL",
        "InvalidAccountID",
        "InvalidPassword",
        "ChallengeSent",
        "ChallengeResponseFailed",
        "RequestBadFormat",
        "RequestNotAllowed",
        "Reload",
        "Shutdown",
    }
)

#: NSNs (the ten digits after 7/8) of the company's own numbers: DIDs and the main number.
_COMPANY_PREFIX = b"495777"

_TECHNOLOGIES = rb"(?:PJSIP|SIP|IAX2|DAHDI|Local|Snoop|UnicastRTP|Announcer|Recorder|CBAnn|CBRec)"
_TOKENS = re.compile(
    rb"(?P<ts>(?<=\r\nTimestamp: )\d+\.\d{1,6}(?=\r\n|$))"
    rb"|(?P<uuid>(?<![0-9A-Za-z-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    rb"(?![0-9A-Za-z-]))"
    rb"|(?P<chan>(?<![\w/])" + _TECHNOLOGIES + rb"/[^\s,;&|\"'<>()/]+-)"
    rb"(?P<sfx>[0-9a-fA-F]+)(?!\w)"
    rb"|(?P<uid>(?<![\w.])\d{9,11}\.\d+(?!\d))"
    rb"|(?P<num>(?<![\w.+])\+?[78])(?P<nsn>\d{10})(?!\w)"
)

SlotKey = tuple[str, bytes]
Getter = Callable[[Sequence[bytes]], tuple[bytes, ...]]


# --------------------------------------------------------------------------------------
# Templates


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the assembler makes of a call, in the form the expected summary keeps."""

    conversation_id: str
    direction: str
    number: str | None
    answered: bool
    employees_answered: tuple[str, ...]
    recordings: tuple[str, ...]

    @classmethod
    def of(cls, call: FinishedCall) -> Outcome:
        return cls(
            conversation_id=call.conversation_id,
            direction=call.direction.value,
            number=call.external_number,
            answered=call.answered,
            employees_answered=call.employees_answered,
            recordings=tuple(PurePosixPath(r.path).name for r in call.recordings),
        )


@dataclass(frozen=True, slots=True)
class _Text:
    """A string with placeholders, rendered with an instance's values."""

    fmt: bytes
    getter: Getter

    def render(self, values: Sequence[bytes]) -> bytes:
        return self.fmt % self.getter(values)


@dataclass(frozen=True, slots=True)
class CallTemplate:
    """One real conversation, compiled for cloning."""

    name: str
    messages: tuple[_Text, ...]
    #: Microseconds from the template's start to each message, never decreasing.
    offsets: tuple[int, ...]
    #: Placeholders other than timestamps, in slot order.
    static_keys: tuple[SlotKey, ...]
    #: The original time (µs) of each timestamp placeholder; their slots follow the static ones.
    times: tuple[int, ...]
    start_us: int
    span_us: int
    outcome: Outcome
    number: _Text | None
    recordings: tuple[_Text, ...]
    conversation_slot: int
    #: Indexes of the messages the transport hands on (:func:`is_journal_message`).
    journal_indexes: tuple[int, ...]

    @property
    def events(self) -> int:
        return len(self.messages)


def _make_getter(indexes: Sequence[int]) -> Getter:
    if not indexes:
        return lambda values: ()
    if len(indexes) == 1:
        (only,) = indexes
        return lambda values: (values[only],)
    getter: Getter = itemgetter(*indexes)
    return getter


class _Compiler:
    """Turns the bytes of one template into formats over a shared table of slots."""

    def __init__(self, known_ids: set[bytes], numbers: set[bytes]) -> None:
        self.known_ids = known_ids
        self.static: dict[SlotKey, int] = {}
        self.times: list[int] = []
        self.tokens = _TOKENS
        if numbers:
            # The same numbers glued to other digits (FreePBX's ``OUTNUM=7495`` + number in a
            # dialplan expression): replaced too, at the lowest priority.
            alternatives = b"|".join(re.escape(n) for n in sorted(numbers))
            self.tokens = re.compile(_TOKENS.pattern + rb"|(?P<glued>" + alternatives + rb")")

    def split(self, data: bytes) -> tuple[bytes, list[SlotKey | int]]:
        """(format, slot references): a static key or the index of a timestamp."""
        pieces: list[bytes] = []
        refs: list[SlotKey | int] = []
        position = 0

        def literal(end: int) -> None:
            pieces.append(data[position:end].replace(b"%", b"%%"))

        for match in self.tokens.finditer(data):
            kind = match.lastgroup
            if kind == "ts":
                literal(match.start())
                refs.append(len(self.times))
                self.times.append(_micros(match.group()))
            elif kind == "uuid":
                literal(match.start())
                refs.append(("b", match.group()))
            elif kind == "sfx":
                literal(match.start("sfx"))
                tech = match.group("chan").split(b"/", 1)[0]
                refs.append(("c", tech + b"/" + match.group("sfx")))
            elif kind == "uid":
                if match.group() not in self.known_ids:
                    continue
                literal(match.start())
                refs.append(("u", match.group()))
            elif kind == "nsn":
                nsn = match.group("nsn")
                if nsn.startswith(_COMPANY_PREFIX):
                    continue
                literal(match.start("nsn"))
                refs.append(("n", nsn))
            elif kind == "glued":
                literal(match.start())
                refs.append(("n", match.group()))
            else:  # pragma: no cover - every alternative is named
                raise AssertionError(kind)
            position = match.end()
            pieces.append(b"%s")
        literal(len(data))
        for ref in refs:
            if not isinstance(ref, int):
                self.static.setdefault(ref, len(self.static))
        return b"".join(pieces), refs

    def finish(self, fmt: bytes, refs: list[SlotKey | int]) -> _Text:
        base = len(self.static)
        indexes = [base + ref if isinstance(ref, int) else self.static[ref] for ref in refs]
        return _Text(fmt, _make_getter(indexes))


def _micros(text: bytes) -> int:
    whole, _, fraction = text.partition(b".")
    return int(whole) * 1_000_000 + int(fraction.ljust(6, b"0")[:6] or b"0")


def _format_micros(value: int) -> bytes:
    return b"%d.%06d" % divmod(value, 1_000_000)


def _ids_of(headers: Iterable[tuple[str, str]]) -> tuple[list[bytes], list[bytes]]:
    """(uniqueids and linkedids, bridge ids) named by a message's headers."""
    ids: list[bytes] = []
    bridges: list[bytes] = []
    for key, value in headers:
        if not value or value == "none":
            continue
        lower = key.lower()
        if lower.endswith("bridgeuniqueid") or lower == "bridgeid":
            bridges.append(value.encode())
        elif lower.endswith(("uniqueid", "linkedid")):
            ids.append(value.encode())
    return ids, bridges


def _split_conversations(raws: Sequence[bytes]) -> list[list[bytes]]:
    """The messages of a capture, one list per conversation (see the module docstring)."""
    parent: dict[bytes, bytes] = {}

    def find(item: bytes) -> bytes:
        root = parent.setdefault(item, item)
        while root != parent[root]:
            root = parent[root]
        while item != root:  # path compression
            parent[item], item = root, parent[item]
        return root

    firsts: list[bytes | None] = []
    kept: list[bytes] = []
    for raw in raws:
        if not raw.startswith(b"Event:"):
            continue
        try:
            message = parse_message(raw)
        except MalformedMessage:
            continue
        if message.event in _SESSION_EVENTS:
            continue
        ids, bridges = _ids_of(message.headers)
        keys = [b"u" + i for i in ids] + [b"b" + b for b in bridges]
        for key in keys:
            parent[find(key)] = find(keys[0])
        kept.append(raw)
        firsts.append(keys[0] if keys else None)
    groups: dict[bytes, list[bytes]] = {}
    leading: list[bytes] = []
    current: list[bytes] | None = None
    for raw, first in zip(kept, firsts, strict=True):
        if first is not None:
            current = groups.setdefault(find(first), [])
            if leading:
                current.extend(leading)  # noise before the first call goes with it
                leading = []
        if current is None:
            leading.append(raw)
        else:
            current.append(raw)
    return list(groups.values())


def _assemble(raws: Iterable[bytes]) -> list[FinishedCall]:
    """The calls of a message stream, offline, with the daemon's default classifier."""
    assembler = CallAssembler(ChannelClassifier(), grace=GRACE)
    calls: list[FinishedCall] = []
    last = 0.0
    for raw in raws:
        if not is_journal_message(raw):
            continue
        try:
            message = parse_message(raw)
        except MalformedMessage:
            continue
        if not message.event:
            continue
        event = normalize(message, last)
        last = max(last, event.time)
        calls.extend(assembler.feed(event, last))
    calls.extend(assembler.expire(last + GRACE + 0.001))
    return calls


def _compile(name: str, raws: Sequence[bytes], outcome: Outcome) -> CallTemplate:
    known: set[bytes] = set()
    numbers: set[bytes] = set()
    for raw in raws:
        ids, _ = _ids_of(parse_message(raw).headers)
        known.update(ids)
        for match in _TOKENS.finditer(raw):
            nsn = match.group("nsn")
            if nsn and not nsn.startswith(_COMPANY_PREFIX):
                numbers.add(nsn)
    compiler = _Compiler(known, numbers)
    split_messages = [compiler.split(raw + _END) for raw in raws]
    # One Timestamp per message, so the time slot of message k is slot k of the times.
    if any(sum(isinstance(r, int) for r in refs) != 1 for _, refs in split_messages):
        raise ValueError(f"{name}: every message of a call must carry one Timestamp")
    split_number = compiler.split(outcome.number.encode()) if outcome.number else None
    split_recordings = [compiler.split(r.encode()) for r in outcome.recordings]
    conversation_key: SlotKey = ("u", outcome.conversation_id.encode())
    if conversation_key not in compiler.static:
        raise ValueError(f"{name}: the conversation id is in no header")
    times = compiler.times
    offsets: list[int] = []
    latest = times[0]
    for stamp in times:
        latest = max(latest, stamp)
        offsets.append(latest - times[0])
    return CallTemplate(
        name=name,
        messages=tuple(compiler.finish(*split) for split in split_messages),
        offsets=tuple(offsets),
        static_keys=tuple(compiler.static),
        times=tuple(times),
        start_us=times[0],
        span_us=offsets[-1],
        outcome=outcome,
        number=compiler.finish(*split_number) if split_number else None,
        recordings=tuple(compiler.finish(*split) for split in split_recordings),
        conversation_slot=compiler.static[conversation_key],
        journal_indexes=tuple(i for i, raw in enumerate(raws) if is_journal_message(raw)),
    )


def load_templates(
    traces: Path = TRACES, *, skipped: list[str] | None = None
) -> list[CallTemplate]:
    """Every conversation of the real captures that assembles alone as it did in its capture.

    The names of conversations left out (and why) are appended to ``skipped``.
    """
    templates: list[CallTemplate] = []
    for path in sorted(Path(traces).glob("*.ami")):
        raws = [captured.raw for captured in iter_capture_messages(path)]
        in_capture = {c.conversation_id: c for c in _assemble(raws)}
        by_linkedid = {lid: c for c in in_capture.values() for lid in c.linkedids}
        slug = path.name.removesuffix(".ami")
        for group in _split_conversations(raws):
            alone = _assemble(group)
            name = f"{slug}#{alone[0].conversation_id if alone else '?'}"
            if len(alone) != 1:
                if skipped is not None:
                    skipped.append(f"{name}: {len(alone)} calls when assembled alone")
                continue
            original = by_linkedid.get(alone[0].conversation_id)
            outcome = Outcome.of(alone[0])
            if original is None or Outcome.of(original) != outcome:
                if skipped is not None:
                    skipped.append(f"{name}: assembles differently outside its capture")
                continue
            templates.append(_compile(name, group, outcome))
    return templates


# --------------------------------------------------------------------------------------
# Instances


class _Allocator:
    """Fresh values for the placeholders of each copy, from global counters."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._uniqueids = 0
        self._channels = 0
        self._numbers = 0
        self._number_salt = rng.randrange(10**9)

    def values(self, keys: Sequence[SlotKey], shift_us: int) -> list[bytes]:
        seconds = shift_us // 1_000_000
        out: list[bytes] = []
        for kind, old in keys:
            if kind == "u":
                self._uniqueids += 1
                epoch = int(old.partition(b".")[0]) + seconds
                out.append(b"%d.%d" % (epoch, self._uniqueids))
            elif kind == "b":
                out.append(str(uuid.UUID(int=self._rng.getrandbits(128), version=4)).encode())
            elif kind == "c":
                self._channels += 1
                suffix = old.partition(b"/")[2]
                if len(suffix) == 8:  # PJSIP, SIP, Local: eight hex digits
                    out.append(b"%08x" % (self._channels % 2**32))
                else:  # IAX2 call numbers, 1..32767
                    out.append(b"%d" % (1 + self._channels % 32767))
            else:  # "n": ten digits, a mobile-looking 9XX number never handed out twice
                self._numbers += 1
                # 104729 is prime to 10**9: distinct counters give distinct numbers.
                out.append(b"9%09d" % ((self._numbers * 104_729 + self._number_salt) % 10**9))
        return out


@dataclass(frozen=True, slots=True)
class SyntheticCall:
    """One copy of a real call: what the journal must show for it."""

    conversation_id: str
    template: str
    started_at: float
    direction: str
    number: str | None
    answered: bool
    employees_answered: tuple[str, ...]
    recordings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Instance:
    """One copy of a template: when it starts and its placeholder values but the times."""

    number: int
    template: CallTemplate
    start_us: int
    static: tuple[bytes, ...]

    def expected(self) -> SyntheticCall:
        template = self.template
        outcome = template.outcome
        values = self.static
        return SyntheticCall(
            conversation_id=values[template.conversation_slot].decode(),
            template=template.name,
            started_at=self.start_us / 1e6,
            direction=outcome.direction,
            number=template.number.render(values).decode() if template.number else None,
            answered=outcome.answered,
            employees_answered=outcome.employees_answered,
            recordings=tuple(r.render(values).decode() for r in template.recordings),
        )


def plan(
    templates: Sequence[CallTemplate],
    *,
    calls: int | None = None,
    events: int | None = None,
    concurrency: int = 500,
    seed: int = 0,
    start: float | None = None,
    rate: float | None = None,
) -> list[Instance]:
    """The copies to make, in order of their start: ``calls`` of them, or enough to reach
    ``events`` messages (default one million); ``rate`` copies started per second instead
    of ``concurrency`` lanes."""
    return list(
        iter_plan(
            templates,
            calls=calls,
            events=events,
            concurrency=concurrency,
            seed=seed,
            start=start,
            rate=rate,
        )
    )


def iter_plan(
    templates: Sequence[CallTemplate],
    *,
    calls: int | None = None,
    events: int | None = None,
    concurrency: int = 500,
    seed: int = 0,
    start: float | None = None,
    rate: float | None = None,
) -> Iterator[Instance]:
    """:func:`plan`, one copy at a time (a million calls do not fit in memory as a list)."""
    if not templates:
        raise ValueError("no call templates")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    if calls is None and events is None:
        events = 1_000_000
    rng = random.Random(seed)
    allocator = _Allocator(rng)
    start_us = round(start * 1e6) if start is not None else min(t.start_us for t in templates)
    if rate is not None:
        yield from _steady(
            templates, rng, allocator, start_us=start_us, rate=rate, calls=calls, events=events
        )
        return
    mean_span = sum(t.span_us for t in templates) // len(templates)
    # Lanes start spread over one mean call, so the PBX ramps up instead of 500 calls at once.
    lanes = [(start_us + rng.randrange(mean_span + 1), lane) for lane in range(concurrency)]
    heapq.heapify(lanes)
    pause_min = int((GRACE + 0.2) * 1e6)
    pause_max = int((GRACE + 1.5) * 1e6)
    made = 0
    total = 0
    while (calls is not None and made < calls) or (
        calls is None and events is not None and total < events
    ):
        free_at, lane = heapq.heappop(lanes)
        template = templates[rng.randrange(len(templates))]
        shift = free_at - template.start_us
        static = tuple(allocator.values(template.static_keys, shift))
        yield Instance(made, template, free_at, static)
        made += 1
        total += template.events
        pause = rng.randrange(pause_min, pause_max)
        heapq.heappush(lanes, (free_at + template.span_us + pause, lane))


def _steady(
    templates: Sequence[CallTemplate],
    rng: random.Random,
    allocator: _Allocator,
    *,
    start_us: int,
    rate: float,
    calls: int | None,
    events: int | None,
) -> Iterator[Instance]:
    """Copies started ``rate`` per second, each at a random moment of its own slot."""
    slot = 1e6 / rate
    made = 0
    total = 0
    while (calls is not None and made < calls) or (
        calls is None and events is not None and total < events
    ):
        at = start_us + int(made * slot + rng.random() * slot)
        template = templates[rng.randrange(len(templates))]
        static = tuple(allocator.values(template.static_keys, at - template.start_us))
        yield Instance(made, template, at, static)
        made += 1
        total += template.events


def render(
    instances: Iterable[Instance], *, journal_only: bool = False
) -> Iterator[tuple[int, bytes]]:
    """Every message of every copy, merged by time: (µs, bytes ending in a blank line).

    ``instances`` come in order of their start, as :func:`iter_plan` makes them; only the
    copies that have started and not ended are held. With ``journal_only`` the noise the
    transport would drop unparsed is left out (a memory benchmark's millions of calls).
    """
    heap: list[tuple[int, int, int]] = []  # (time, copy, position in its message order)
    active: dict[int, tuple[CallTemplate, list[bytes], int, Sequence[int]]] = {}
    pending = iter(instances)
    upcoming = next(pending, None)
    while heap or upcoming is not None:
        while upcoming is not None and (not heap or upcoming.start_us <= heap[0][0]):
            template = upcoming.template
            order: Sequence[int] = (
                template.journal_indexes if journal_only else range(len(template.messages))
            )
            if order:
                shift = upcoming.start_us - template.start_us
                values = list(upcoming.static)
                if journal_only:
                    # Only the times of the messages rendered (slot k is message k's).
                    base = len(values)
                    times = template.times
                    values.extend([b""] * len(times))
                    for k in order:
                        values[base + k] = _format_micros(times[k] + shift)
                else:
                    values.extend(_format_micros(stamp + shift) for stamp in template.times)
                active[upcoming.number] = (template, values, upcoming.start_us, order)
                first = upcoming.start_us + template.offsets[order[0]]
                heapq.heappush(heap, (first, upcoming.number, 0))
            upcoming = next(pending, None)
        if not heap:
            break
        at, number, position = heap[0]
        template, values, start, steps = active[number]
        yield at, template.messages[steps[position]].render(values)
        position += 1
        if position < len(steps):
            heapq.heapreplace(heap, (start + template.offsets[steps[position]], number, position))
        else:
            heapq.heappop(heap)
            del active[number]


# --------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True, slots=True)
class SyntheticCapture:
    path: Path
    events: int
    calls: tuple[SyntheticCall, ...]
    concurrency: int
    seed: int
    bytes: int
    seconds: float


def expected_path(path: Path) -> Path:
    """``NAME.ami`` → ``NAME.expected.json``, as for the real captures."""
    return path.with_name(path.name.removesuffix(".ami") + ".expected.json")


def _write(
    instances: Sequence[Instance],
    path: Path,
    *,
    recvlog: bool,
    read_us: int = 2000,
    journal_only: bool = False,
) -> tuple[int, int]:
    """Write the capture (and its recvlog); return (messages, bytes)."""
    count = 0
    offset = 0
    log_lines: list[str] = []
    with path.open("wb", buffering=1 << 20) as out:
        out.write(_PREAMBLE)
        offset = len(_PREAMBLE)
        first_at = instances[0].start_us if instances else 0
        if recvlog:
            log_lines.append(f"{_format_micros(first_at - 500_000).decode()} 0 {offset}\n")
        read_start = offset
        read_first = None
        read_last = 0
        for at, data in render(instances, journal_only=journal_only):
            if (
                recvlog
                and read_first is not None
                and (at - read_first > read_us or offset - read_start > 16384)
            ):
                log_lines.append(
                    f"{_format_micros(read_last).decode()} {read_start} {offset - read_start}\n"
                )
                read_start = offset
                read_first = None
            if read_first is None:
                read_first = at
            read_last = at
            out.write(data)
            offset += len(data)
            count += 1
        if recvlog and offset > read_start:
            log_lines.append(
                f"{_format_micros(read_last).decode()} {read_start} {offset - read_start}\n"
            )
    log_path = recvlog_path(path)
    if recvlog:
        log_path.write_text("".join(log_lines), "ascii")
    elif log_path.exists():
        log_path.unlink()
    return count, offset


def build_capture(
    path: Path,
    *,
    calls: int | None = None,
    events: int | None = None,
    concurrency: int = 500,
    seed: int = 0,
    recvlog: bool = True,
    traces: Path = TRACES,
    templates: Sequence[CallTemplate] | None = None,
    journal_only: bool = False,
    rate: float | None = None,
) -> SyntheticCapture:
    """Write a synthetic capture and its expected summary; see :func:`plan`.

    ``templates`` saves loading them again from ``traces`` when several captures are built.
    ``journal_only`` leaves out the noise the transport drops unparsed (a fifth of the
    messages remain): for runs that stream the capture through a fake PBX in real time.
    """
    began = time.perf_counter()
    skipped: list[str] = []
    if templates is None:
        templates = load_templates(traces, skipped=skipped)
    instances = plan(
        templates, calls=calls, events=events, concurrency=concurrency, seed=seed, rate=rate
    )
    path = Path(path)
    count, size = _write(instances, path, recvlog=recvlog, journal_only=journal_only)
    expected = tuple(instance.expected() for instance in instances)
    uses: dict[str, int] = {}
    for call in expected:
        uses[call.template] = uses.get(call.template, 0) + 1
    summary = {
        "generator": "bench.synth",
        "seed": seed,
        "concurrency": concurrency,
        "rate": rate,
        "requested": {"calls": calls, "events": events},
        "journal_only": journal_only,
        "events": count,
        "call_count": len(expected),
        "bytes": size,
        "templates": dict(sorted(uses.items())),
        "templates_skipped": skipped,
        "calls": [_call_json(call) for call in expected],
    }
    expected_path(path).write_text(json.dumps(summary, ensure_ascii=False, indent=1), "utf-8")
    return SyntheticCapture(
        path=path,
        events=count,
        calls=expected,
        concurrency=concurrency,
        seed=seed,
        bytes=size,
        seconds=time.perf_counter() - began,
    )


def _call_json(call: SyntheticCall) -> dict[str, Any]:
    return {
        "conversation_id": call.conversation_id,
        "template": call.template,
        "started_at": round(call.started_at, 6),
        "direction": call.direction,
        "number": call.number,
        "answered": call.answered,
        "employees_answered": list(call.employees_answered),
        "recordings": list(call.recordings),
    }


def load_expected(path: Path) -> dict[str, Any]:
    """The expected summary written next to a synthetic capture."""
    data: dict[str, Any] = json.loads(expected_path(Path(path)).read_text("utf-8"))
    return data


def ensure_capture(
    path: Path, *, events: int, concurrency: int = 500, seed: int = 0
) -> dict[str, Any]:
    """Build the capture unless one made with the same parameters is already there."""
    path = Path(path)
    try:
        summary = load_expected(path)
    except (OSError, ValueError):
        summary = {}
    wanted = {"calls": None, "events": events}
    if (
        not path.exists()
        or summary.get("requested") != wanted
        or summary.get("seed") != seed
        or summary.get("concurrency") != concurrency
        or summary.get("bytes") != path.stat().st_size
    ):
        build_capture(path, events=events, concurrency=concurrency, seed=seed)
        summary = load_expected(path)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.synth",
        description="Build a large synthetic AMI capture from the real ones.",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .ami to write")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--events", type=int, help="at least this many messages (default 1e6)")
    size.add_argument("--calls", type=int, help="exactly this many calls")
    parser.add_argument("--concurrency", type=int, default=500, help="calls open at once")
    parser.add_argument(
        "--rate", type=float, help="calls started per second, instead of --concurrency"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-recvlog", action="store_true", help="write no .recvlog")
    parser.add_argument("--traces", type=Path, default=TRACES, help="the real captures")
    args = parser.parse_args(argv)
    result = build_capture(
        args.output,
        calls=args.calls,
        events=args.events,
        concurrency=args.concurrency,
        seed=args.seed,
        recvlog=not args.no_recvlog,
        traces=args.traces,
        rate=args.rate,
    )
    print(
        f"{result.path}: {result.events} events, {len(result.calls)} calls, "
        f"{result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s "
        f"(expected summary: {expected_path(result.path)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
