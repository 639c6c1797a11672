"""Shared helpers for tests that replay the real captures (tests/data/ami-traces)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from connector.assembly import CallAssembler, ChannelClassifier, FinishedCall
from connector.events import AmiEvent, MessageFramer, is_journal_message, normalize, parse_message

TRACES = Path(__file__).parent / "data" / "ami-traces"
RECORDINGS = TRACES / "recordings"
GRACE = 3.0

EMPLOYEES = {
    "101": "Ivanova Anna",
    "102": "Petrov Ivan",
    "103": "Sidorova Maria",
    "104": "Kuznetsov Dmitry",
    "105": "Smirnova Olga",
}


def capture(slug: str) -> Path:
    return TRACES / f"{slug}.ami"


def expected(slug: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TRACES / f"{slug}.expected.json").read_text("utf-8"))
    return data


def all_slugs() -> list[str]:
    return sorted(p.name.removesuffix(".ami") for p in TRACES.glob("*.ami"))


def events_of(data: bytes, *, chunk: int | None = None) -> Iterator[AmiEvent]:
    """Normalised journal events of a byte stream, framed in chunks of ``chunk`` bytes."""
    framer = MessageFramer()
    last = 0.0
    step = chunk or len(data) or 1
    for start in range(0, len(data), step):
        for raw in framer.feed(data[start : start + step]):
            if not is_journal_message(raw):
                continue
            message = parse_message(raw)
            if not message.event:
                continue
            event = normalize(message, last)
            last = max(last, event.time)
            yield event


def new_assembler() -> CallAssembler:
    return CallAssembler(ChannelClassifier(r"^\d{2,6}$"), grace=GRACE)


@dataclass
class Replay:
    calls: list[FinishedCall]
    assembler: CallAssembler


def assemble(events: Iterable[AmiEvent], assembler: CallAssembler | None = None) -> Replay:
    """Feed events with the event time as the clock; let the last grace period run out."""
    assembler = assembler or new_assembler()
    calls: list[FinishedCall] = []
    last = 0.0
    for event in events:
        last = max(last, event.time)
        calls.extend(assembler.feed(event, last))
    calls.extend(assembler.expire(last + GRACE + 0.001))
    return Replay(calls, assembler)


def assemble_capture(slug: str) -> Replay:
    return assemble(events_of(capture(slug).read_bytes()))


def _employee_options(value: str) -> set[str]:
    """Expected employee spellings: ``102?`` (102 expected), ``101|102`` (either)."""
    return set(value.rstrip("?").split("|"))


def _call_key(
    direction: str, number: str | None, placer: str | None, callee: str | None
) -> tuple[Any, ...]:
    if direction == "internal":
        return (direction, placer, callee)
    return (direction, number)


def match_calls(
    calls: list[FinishedCall], wants: list[dict[str, Any]]
) -> list[tuple[FinishedCall, dict[str, Any]]]:
    """Pair assembled calls with expected ones: same direction and number (internal: same
    placer and callee); several alike are paired in the order they started."""
    got: dict[tuple[Any, ...], list[FinishedCall]] = {}
    for call in sorted(calls, key=lambda c: c.started_at):
        callee = next((p.extension for p in call.participants if not p.placed), None)
        placer = call.participants[0].extension if call.participants else None
        key = _call_key(call.direction.value, call.external_number, placer, callee)
        got.setdefault(key, []).append(call)
    pairs = []
    for want in wants:
        key = _call_key(
            want["direction"],
            want["external_number"],
            want.get("employee"),
            want.get("callee_employee"),
        )
        candidates = got.get(key, [])
        assert candidates, f"no call for {want.get('tag', want)}"
        pairs.append((candidates.pop(0), want))
    leftovers = [c for rest in got.values() for c in rest]
    assert not leftovers, f"calls nobody expected: {leftovers}"
    return pairs


def check_call(call: FinishedCall, want: dict[str, Any], *, planned: bool = False) -> None:
    """Assert one assembled call against its expected.json entry."""
    assert call.direction.value == want["direction"]
    assert call.external_number == want["external_number"]
    assert call.answered is want["answered"]
    want_answered = [_employee_options(e) for e in want["employees_answered"]]
    got_answered = list(call.employees_answered)
    assert len(got_answered) == len(want_answered), (got_answered, want_answered)
    for got, options in zip(got_answered, want_answered, strict=True):
        assert got in options, (got_answered, want["employees_answered"])
    got_rang = set(call.employees_rang)
    if planned:
        # The plan names who *could* ring; the PBX rings only free members of a queue.
        allowed = set().union(*(_employee_options(e) for e in want["employees_rang"]))
        assert got_rang <= allowed, (got_rang, want["employees_rang"])
    else:
        assert got_rang == set(want["employees_rang"])
    if want["talk_seconds"] is not None:
        assert abs(call.talk_seconds - float(want["talk_seconds"])) <= 1.0, call.talk_seconds
    if not planned:
        want_files = [r["file"] for r in want["recording_files"]]
        assert [Path(r.path).name for r in call.recordings] == want_files
    placer = want.get("employee")
    if want["direction"] in ("outgoing", "internal"):
        assert call.participants[0].extension == placer
        assert call.participants[0].role.value == "placed"


def shift_call(call: FinishedCall, delta: float) -> FinishedCall:
    """The same call with every time in it ``delta`` seconds later: a capture replayed on
    another clock (the fake PBX's "today", a PBX clock days off) must give exactly this."""

    def later(value: float | None) -> float | None:
        return None if value is None else value + delta

    return replace(
        call,
        started_at=call.started_at + delta,
        answered_at=later(call.answered_at),
        ended_at=call.ended_at + delta,
        participants=tuple(
            replace(p, answered_at=later(p.answered_at), rang_at=later(p.rang_at))
            for p in call.participants
        ),
        legs=tuple(
            replace(
                leg,
                connected_at=leg.connected_at + delta,
                disconnected_at=leg.disconnected_at + delta,
            )
            for leg in call.legs
        ),
        recordings=tuple(replace(r, started_at=r.started_at + delta) for r in call.recordings),
        transfers=tuple(replace(t, at=t.at + delta) for t in call.transfers),
    )


def same_call_on_another_clock(live: FinishedCall, offline: FinishedCall) -> float:
    """How much later ``live`` is dated than ``offline`` (to the microsecond the PBX stamps
    with), asserting that nothing else differs: every time moved by as much, every duration
    the same (within 2 µs: a time near 1.8e9 s is a float good to a quarter microsecond)."""
    delta = round(live.started_at - offline.started_at, 6)
    _assert_close(live, shift_call(offline, delta), 2e-6, "call")
    return delta


def assert_moved_call(live: FinishedCall, offline: FinishedCall, *, tolerance: float) -> float:
    """``live`` is ``offline`` dated ``delta`` seconds later (returned), each time and
    duration within ``tolerance``: a capture replayed in real time, whose unstamped events
    the daemon dated by their arrival. Everything else must be equal."""
    delta = live.started_at - offline.started_at
    _assert_close(live, shift_call(offline, delta), tolerance, "call")
    return delta


def _assert_close(got: Any, want: Any, tolerance: float, where: str) -> None:
    if is_dataclass(got) and not isinstance(got, type):
        assert type(got) is type(want), where
        for item in fields(got):
            _assert_close(
                getattr(got, item.name),
                getattr(want, item.name),
                tolerance,
                f"{where}.{item.name}",
            )
    elif isinstance(got, tuple):
        assert isinstance(want, tuple) and len(got) == len(want), where
        for index, (a, b) in enumerate(zip(got, want, strict=True)):
            _assert_close(a, b, tolerance, f"{where}[{index}]")
    elif isinstance(got, float) and isinstance(want, float):
        assert abs(got - want) <= tolerance, f"{where}: {got} != {want} ± {tolerance}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"
