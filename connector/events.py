"""AMI messages: framing on raw bytes, header parsing, normalisation.

Theory of operation
-------------------
An AMI session is a byte stream: one banner line (``Asterisk Call Manager/11.0.0``), then
messages made of ``Key: Value`` lines ended by ``\\r\\n``, separated by an empty line.
TCP reads cut that stream anywhere, including inside a multi-byte UTF-8 character, so
:class:`MessageFramer` splits on the raw ``\\r\\n\\r\\n`` *before* anything is decoded. Each
complete message is then decoded as a whole, which keeps Cyrillic caller names intact.

Most of a live stream is noise for the journal (``VarSet``, ``Newexten``, ``CEL``, device
states...). :func:`is_journal_message` decides from the ``Event:`` line, and for ``VarSet``
from the variable name, whether a message is worth building a dict of; everything else is
counted and dropped without being parsed.

:func:`parse_message` turns the bytes of one message into :class:`AmiMessage` (ordered
headers, repeated headers kept). :func:`normalize` turns an event message into
:class:`AmiEvent`: ``<unknown>`` becomes empty, C-escaped caller names are unescaped, and the
``Timestamp`` header (``timestampevents = yes``) is the event time, the receive time
otherwise.

Nothing here does I/O: the transport, the capture reader and the fake PBX all share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BANNER_PREFIX",
    "JOURNAL_EVENTS",
    "JOURNAL_VARIABLES",
    "AmiEvent",
    "AmiMessage",
    "MalformedMessage",
    "MessageFramer",
    "MessageTriage",
    "c_unescape",
    "is_journal_message",
    "normalize",
    "parse_event",
    "parse_message",
]

BANNER_PREFIX = b"Asterisk Call Manager/"
MESSAGE_END = b"\r\n\r\n"
LINE_END = "\r\n"
UNKNOWN = "<unknown>"

#: Largest message accepted; anything longer is a broken peer, not an AMI event. A
#: ``CoreShowChannels`` entry or a ``Status`` with variables stays far below this.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024

#: Events the assembler, the recordings finder and resynchronisation look at.
JOURNAL_EVENTS: frozenset[str] = frozenset(
    {
        "Newchannel",
        "Newstate",
        "NewCallerid",
        "NewConnectedLine",
        "Rename",
        "Hangup",
        "DialBegin",
        "DialEnd",
        "BridgeCreate",
        "BridgeEnter",
        "BridgeLeave",
        "BridgeMerge",
        "BlindTransfer",
        "AttendedTransfer",
        "Pickup",
        "LocalBridge",
        "LocalOptimizationBegin",
        "LocalOptimizationEnd",
        "AgentCalled",
        "AgentConnect",
        "AgentComplete",
        "AgentRingNoAnswer",
        "QueueCallerJoin",
        "QueueCallerLeave",
        "QueueCallerAbandon",
        "MixMonitorStart",
        "MixMonitorStop",
        "OriginateResponse",
        "FullyBooted",
        "Shutdown",
        "Reload",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
        "Status",
        "StatusComplete",
        "VarSet",
    }
)

#: ``VarSet`` variables that matter (recording file names, FreePBX's employee marker).
#: Inherited variables arrive with their ``_``/``__`` prefix, which is stripped first.
JOURNAL_VARIABLES: frozenset[str] = frozenset(
    {"MIXMONITOR_FILENAME", "CALLFILENAME", "MONITOR_FILENAME", "AMPUSER"}
)

_ESCAPED_SUFFIXES = ("CallerIDName", "ConnectedLineName", "CallerIDNum", "ConnectedLineNum")
_C_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


class MalformedMessage(ValueError):
    """A message that is not ``Key: Value`` lines, or is too large to be one."""


@dataclass(frozen=True, slots=True)
class AmiMessage:
    """One AMI message as received: ordered headers, repeated keys kept."""

    headers: tuple[tuple[str, str], ...]

    def first(self, key: str, default: str = "") -> str:
        for k, v in self.headers:
            if k == key:
                return v
        return default

    @property
    def event(self) -> str:
        return self.first("Event")

    @property
    def response(self) -> str:
        return self.first("Response")


@dataclass(frozen=True, slots=True)
class AmiEvent:
    """A normalised AMI event: what the assembler consumes.

    ``headers`` holds the first value of every header; ``multi`` holds every header that
    appeared more than once (``ChanVariable``, ``Variable``) with all its values in order.
    """

    name: str
    time: float
    headers: Mapping[str, str]
    multi: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: True when ``time`` comes from the ``Timestamp`` header, False for the receive time.
    timestamped: bool = True
    #: The host's monotonic time when the message was received over a live session (0.0:
    #: not received live); the daemon's PBX clock dates unstamped events by it.
    received: float = 0.0

    def get(self, key: str, default: str = "") -> str:
        return self.headers.get(key, default)

    def get_all(self, key: str) -> tuple[str, ...]:
        values = self.multi.get(key)
        if values is not None:
            return values
        value = self.headers.get(key)
        return () if value is None else (value,)

    def variables(self) -> dict[str, str]:
        """``NAME=value`` pairs of ``ChanVariable``/``Variable`` headers as a dict."""
        result: dict[str, str] = {}
        for key in ("ChanVariable", "Variable"):
            for item in self.get_all(key):
                name, sep, value = item.partition("=")
                if sep:
                    result[name.strip()] = value
        return result


class MessageFramer:
    """Splits an AMI byte stream into raw messages, on bytes, before decoding.

    Feed it every chunk read from the socket (or a capture); it returns the complete
    messages found so far, without their terminating blank line. The banner line is
    recognised once at the start and kept in :attr:`banner`. A run of bytes longer than
    ``max_message_bytes`` without a message end is dropped and counted in
    :attr:`oversized`; the framer then resynchronises on the next message end.
    """

    __slots__ = (
        "_buffer",
        "_discarding",
        "_expect_banner",
        "banner",
        "max_message_bytes",
        "oversized",
        "sessions",
    )

    def __init__(
        self, *, expect_banner: bool = True, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self._buffer = bytearray()
        self._expect_banner = expect_banner
        self._discarding = False
        self.banner: str | None = None
        self.max_message_bytes = max_message_bytes
        self.oversized = 0
        #: Banners seen: 1 for a live session, more in a capture that spans reconnects.
        self.sessions = 0

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for the end of their message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        if self._expect_banner and not self._take_banner():
            return []
        messages: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(MESSAGE_END, start)
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                chunk = bytes(buffer[start:end]).lstrip(b"\r\n")
                if chunk.startswith(BANNER_PREFIX):
                    # A new session in a capture (the PBX restarted and we logged in again).
                    line, _, chunk = chunk.partition(b"\r\n")
                    self.banner = line.decode("utf-8", "replace")
                    self.sessions += 1
                # Asterisk never sends empty messages; stray blank lines are skipped.
                if chunk:
                    messages.append(chunk)
            start = end + len(MESSAGE_END)
        if start:
            del buffer[:start]
        if len(buffer) > self.max_message_bytes:
            # Keep the last three bytes: they may begin the next message end.
            del buffer[:-3]
            if not self._discarding:
                self.oversized += 1
                self._discarding = True
        return messages

    def _take_banner(self) -> bool:
        """Consume the banner line if the stream starts with one. False: need more bytes."""
        buffer = self._buffer
        probe = bytes(buffer[: len(BANNER_PREFIX)])
        if not BANNER_PREFIX.startswith(probe) or (
            len(probe) == len(BANNER_PREFIX) and probe != BANNER_PREFIX
        ):
            self._expect_banner = False  # no banner on this stream (a capture mid-session)
            return True
        if len(probe) < len(BANNER_PREFIX):
            return False
        eol = buffer.find(b"\r\n")
        if eol < 0:
            if len(buffer) > 1024:
                self._expect_banner = False
                return True
            return False
        self.banner = buffer[:eol].decode("utf-8", "replace")
        self.sessions += 1
        del buffer[: eol + 2]
        self._expect_banner = False
        return True


def is_journal_message(raw: bytes) -> bool:
    """Whether a raw message is worth parsing: responses always, events by name.

    Only the first line (and, for ``VarSet``, the ``Variable`` line) is looked at, so the
    80 % of a live stream that is noise costs a few byte comparisons.
    """
    if not raw.startswith(b"Event: "):
        return True  # responses, and anything odd, go to the parser
    eol = raw.find(b"\r\n")
    return _wanted(raw, _line_kind(raw if eol < 0 else raw[:eol]))


# What the first line of a message says about it, for is_journal_message.
_ODD = 0  # not an "Event: " line: a response, or anything odd; the parser decides
_JOURNAL = 1  # an event the journal needs
_VARSET = 2  # wanted for some variables only
_OTHER = 3  # noise, unless it answers one of our actions


def _line_kind(line: bytes) -> int:
    if not line.startswith(b"Event: "):
        return _ODD
    name = line[7:].decode("ascii", "replace").strip()
    if name not in JOURNAL_EVENTS:
        return _OTHER
    return _VARSET if name == "VarSet" else _JOURNAL


def _wanted(raw: bytes, kind: int) -> bool:
    if kind == _OTHER:
        # Events answering one of our actions (they carry an ActionID) always pass.
        return b"\r\nActionID: " in raw
    if kind != _VARSET:
        return True
    pos = raw.find(b"\r\nVariable: ")
    if pos < 0:
        return False
    start = pos + 12
    end = raw.find(b"\r\n", start)
    variable = raw[start:] if end < 0 else raw[start:end]
    return variable.lstrip(b"_").decode("ascii", "replace").strip() in JOURNAL_VARIABLES


class MessageTriage:
    """:func:`is_journal_message` and the event's name, remembered by the message's first line.

    The transport asks both for every message, the 80 % of noise included. A PBX sends a few
    dozen distinct ``Event:`` lines, so each is decoded once and then looked up. At most
    ``limit`` lines are remembered: a peer inventing names cannot make it grow.
    """

    __slots__ = ("_lines", "limit")

    def __init__(self, limit: int = 1024) -> None:
        self._lines: dict[bytes, tuple[str, int]] = {}
        self.limit = limit

    def sort(self, raw: bytes) -> tuple[str, bool]:
        """(the name on the message's ``Event:`` line, "" if it has none; whether the journal
        wants the message, as :func:`is_journal_message` says)."""
        eol = raw.find(b"\r\n")
        line = raw if eol < 0 else raw[:eol]
        known = self._lines.get(line)
        if known is None:
            name = line[6:].decode("ascii", "replace").strip() if line.startswith(b"Event:") else ""
            known = (name, _line_kind(line))
            if len(self._lines) < self.limit:
                self._lines[line] = known
        name, kind = known
        return name, _wanted(raw, kind)


def parse_message(raw: bytes) -> AmiMessage:
    """Parse one framed message into ordered ``(key, value)`` pairs.

    Lines without ``:`` are skipped (old ``Response: Follows`` bodies); a message with no
    header at all raises :class:`MalformedMessage`. Bytes that are not UTF-8 become U+FFFD
    rather than disappearing.
    """
    if len(raw) > DEFAULT_MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message of {len(raw)} bytes exceeds the limit")
    headers = _header_pairs(raw)
    if not headers:
        raise MalformedMessage("no 'Key: Value' header in message")
    return AmiMessage(tuple(headers))


def _header_pairs(raw: bytes, text: str | None = None) -> list[tuple[str, str]]:
    """The ``(key, value)`` lines of a message; the one place headers are parsed.

    Only ``\\r\\n`` ends a line. The key is stripped and must be non-empty and without a
    space; one space after the colon is dropped; a stray ``\\r`` or ``\\n`` at the end of a
    value is stripped. Comprehensions rather than a loop: this runs for every header of
    every journal event.
    """
    if text is None:
        text = raw.decode("utf-8", "replace")
    parts = [line.partition(":") for line in text.split(LINE_END)]
    pairs = [
        (key, value[1:] if value[:1] == " " else value)
        for raw_key, sep, value in parts
        if sep and (key := raw_key.strip()) and " " not in key
    ]
    crlf = raw.count(b"\r\n")
    if raw.count(b"\r") != crlf or raw.count(b"\n") != crlf:
        pairs = [(key, value.rstrip("\r\n")) for key, value in pairs]
    return pairs


def c_unescape(value: str) -> str:
    """Undo Asterisk's ``ast_escape_c`` (``\\n``, ``\\t``, ``\\\\``, ``\\"``...)."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == "\\" and i + 1 < n:
            nxt = value[i + 1]
            replacement = _C_ESCAPES.get(nxt)
            if replacement is not None:
                out.append(replacement)
                i += 2
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def _clean(key: str, value: str) -> str:
    if value == UNKNOWN:
        return ""
    if key.endswith(_ESCAPED_SUFFIXES):
        return c_unescape(value)
    return value


def normalize(message: AmiMessage, receive_time: float) -> AmiEvent:
    """Turn an event message into an :class:`AmiEvent`.

    Raises :class:`MalformedMessage` for a message without ``Event``.
    """
    return _event(message.headers, receive_time)


def parse_event(raw: bytes, receive_time: float, received: float = 0.0) -> AmiEvent:
    """``normalize(parse_message(raw), receive_time)`` in one pass, for the transport.

    The same event and the same :class:`MalformedMessage` errors, without building the
    :class:`AmiMessage` in between, and without looking at each value for ``<unknown>`` or
    C escapes when the message holds neither.
    """
    if len(raw) > DEFAULT_MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message of {len(raw)} bytes exceeds the limit")
    text = raw.decode("utf-8", "replace")
    pairs = _header_pairs(raw, text)
    if not pairs:
        raise MalformedMessage("no 'Key: Value' header in message")
    if b"\\" in raw:
        return _event(pairs, receive_time, received=received)
    if b"<unknown>" in raw:
        # Without a backslash there is nothing to unescape: only ``<unknown>`` to empty.
        pairs = [(key, "" if value == UNKNOWN else value) for key, value in pairs]
    return _event(pairs, receive_time, clean=False, received=received)


def _event(
    pairs: Sequence[tuple[str, str]],
    receive_time: float,
    *,
    clean: bool = True,
    received: float = 0.0,
) -> AmiEvent:
    headers = dict(pairs)
    multi: dict[str, list[str]] = {}
    if len(headers) != len(pairs):
        # A repeated header (ChanVariable, Variable): the first value is the header's.
        headers = {}
        for key, raw_value in pairs:
            value = _clean(key, raw_value)
            if key in headers:
                multi.setdefault(key, [headers[key]]).append(value)
            else:
                headers[key] = value
    elif clean:
        headers = {key: _clean(key, value) for key, value in pairs}
    name = headers.get("Event", "").strip()
    if not name:
        raise MalformedMessage("message has no Event header")
    time, timestamped = _event_time(headers.get("Timestamp", ""), receive_time)
    return AmiEvent(
        name=name,
        time=time,
        headers=headers,
        multi={k: tuple(v) for k, v in multi.items()},
        timestamped=timestamped,
        received=received,
    )


def _event_time(stamp: str, receive_time: float) -> tuple[float, bool]:
    if stamp:
        try:
            value = float(stamp)
        except ValueError:
            return receive_time, False
        # A finite epoch within a sane range; anything else is treated as absent.
        if 0.0 < value < 1e11:
            return value, True
    return receive_time, False
