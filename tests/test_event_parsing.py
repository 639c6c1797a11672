"""The fast paths of the transport say exactly what the plain code said.

``parse_message``/``parse_event`` (every journal event) and ``MessageTriage`` (every message)
are written for speed; the functions below are how they worked before, kept as oracles.
Every message of the real captures and any bytes hypothesis can think of must give the same
headers, the same event (header order and repeated headers included), the same errors, the
same event name and the same verdict on whether the journal wants the message.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.capture import iter_capture_messages
from connector.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    JOURNAL_EVENTS,
    JOURNAL_VARIABLES,
    AmiEvent,
    MalformedMessage,
    MessageTriage,
    is_journal_message,
    normalize,
    parse_event,
    parse_message,
)

TRACES = Path(__file__).resolve().parent / "data" / "ami-traces"


def reference_headers(raw: bytes) -> tuple[tuple[str, str], ...]:
    """The header loop as it was: the oracle."""
    if len(raw) > DEFAULT_MAX_MESSAGE_BYTES:
        raise MalformedMessage("too large")
    text = raw.decode("utf-8", "replace")
    headers: list[tuple[str, str]] = []
    for line in text.split("\r\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if not key or " " in key:
            continue
        if value.startswith(" "):
            value = value[1:]
        headers.append((key, value.rstrip("\r\n")))
    if not headers:
        raise MalformedMessage("no header")
    return tuple(headers)


def outcome(parse: object, raw: bytes) -> object:
    """What a parser returns, in comparable form, or the kind of error it raises."""
    try:
        result = parse(raw)  # type: ignore[operator]
    except MalformedMessage:
        return MalformedMessage
    if isinstance(result, AmiEvent):
        return (
            result.name,
            result.time,
            list(result.headers.items()),  # the order counts too
            {k: list(v) for k, v in result.multi.items()},
            result.timestamped,
        )
    return result


def reference_journal(raw: bytes) -> bool:
    """is_journal_message as it was."""
    if not raw.startswith(b"Event: "):
        return True
    eol = raw.find(b"\r\n")
    name = raw[7:eol] if eol >= 0 else raw[7:]
    name_text = name.decode("ascii", "replace").strip()
    if name_text not in JOURNAL_EVENTS:
        return b"\r\nActionID: " in raw
    if name_text != "VarSet":
        return True
    pos = raw.find(b"\r\nVariable: ")
    if pos < 0:
        return False
    start = pos + 12
    end = raw.find(b"\r\n", start)
    variable = raw[start:] if end < 0 else raw[start:end]
    return variable.lstrip(b"_").decode("ascii", "replace").strip() in JOURNAL_VARIABLES


def reference_name(raw: bytes) -> str:
    """The transport's event name as it was (for FullyBooted and Shutdown)."""
    if not raw.startswith(b"Event:"):
        return ""
    end = raw.find(b"\r\n")
    line = raw if end < 0 else raw[:end]
    return line[6:].decode("ascii", "replace").strip()


TRIAGE = MessageTriage(limit=64)  # shared, so that remembered lines are exercised too


def check(raw: bytes) -> None:
    assert outcome(lambda r: parse_message(r).headers, raw) == outcome(reference_headers, raw)
    slow = outcome(lambda r: normalize(parse_message(r), 12.5), raw)
    assert outcome(lambda r: parse_event(r, 12.5), raw) == slow
    verdict = reference_journal(raw)
    assert is_journal_message(raw) is verdict
    assert TRIAGE.sort(raw) == (reference_name(raw), verdict)
    assert TRIAGE.sort(raw) == (reference_name(raw), verdict)  # now from memory


def real_messages() -> list[bytes]:
    return [m.raw for path in sorted(TRACES.glob("*.ami")) for m in iter_capture_messages(path)]


def test_every_message_of_the_real_captures_parses_as_before() -> None:
    messages = real_messages()
    assert len(messages) > 10_000
    for raw in messages:
        check(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'Event: Newchannel\r\nCallerIDName: \\"Ivanov\\" <unknown>\r\nCallerIDNum: <unknown>',
        b"Event: Status\r\nVariable: A=1\r\nVariable: B=<unknown>\r\nVariable: C=\\n",
        b"Event: X\r\nKey:no space\r\n Spaced : v\r\nin ner: v\r\n: empty key\r\nnocolon",
        b"Event: X\r\nValue: a\rb\r\r\nOther: c\n\r\nLast: d\r",
        b"Event: X\r\nConnectedLineName: \xd0\x98\xd0\r\nCallerIDNum: \xff<unknown>",
        b"Response: Follows\r\nPrivilege: Command\r\nbody line\r\n--END COMMAND--",
        b"Event:\r\nUniqueid: 1.1",
        b"no header at all",
        b"",
        b"Event:Shutdown",
        b"Event:  FullyBooted \r\nUptime: 5",
        b"Event: VarSet\r\nVariable: __MIXMONITOR_FILENAME\r\nValue: /x.wav",
        b"Event: VarSet\r\nVariable: OTHER",
        b"Event: VarSet",
        b"Event: Newexten\r\nActionID: 7",
        b"Event: Newexten \r\nUniqueid: 1",
        b"Event: \xd0\x9f\r\nA: b",
        b"Event: VarSet\r\nValue: " + b"x" * DEFAULT_MAX_MESSAGE_BYTES,
    ],
)
def test_odd_messages_parse_as_before(raw: bytes) -> None:
    check(raw)


_KEYS = st.sampled_from(
    [
        "Event",
        "Uniqueid",
        "CallerIDName",
        "ConnectedLineNum",
        "Variable",
        "ActionID",
        " Key",
        "Ke y",
        "",
    ]
)
_VALUES = st.sampled_from(
    [
        "",
        " ",
        "<unknown>",
        " <unknown>",
        "\\n",
        "a\\\\b",
        "Иван",
        "x:y",
        "\r",
        "\n",
        "1.5",
        "VarSet",
        "Newexten",
        "Hangup ",
        "MIXMONITOR_FILENAME",
        "__AMPUSER",
    ]
)
_LINE = st.one_of(
    st.tuples(_KEYS, st.sampled_from([":", ": ", ":  "]), _VALUES).map("".join),
    st.text(max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINE, max_size=12), st.sampled_from(["\r\n", "\n", "\r\r\n"]))
def test_generated_messages_parse_as_before(lines: list[str], joiner: str) -> None:
    check(joiner.join(lines).encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_parse_as_before(raw: bytes) -> None:
    check(raw)
