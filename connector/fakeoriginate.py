"""The fake PBX's answer to ``Originate``: a real click-to-call, replayed for new numbers.

Theory of operation
-------------------
Asterisk answers ``Originate`` with ``Async: true`` at once (``Response: Success``,
``Message: Originate successfully queued``) and then does the work: it creates the channel
named by ``Channel`` (for FreePBX ``Local/101@from-internal``, whose second half dials the
phone), and when that channel answers it sends ``OriginateResponse`` (with the action's
``ActionID``, ``Response: Success``, ``Reason: 4``) and continues it in ``Context``/``Exten``,
which dials the customer through a trunk. When the phone does not answer within ``Timeout``
(milliseconds) the originate fails: ``OriginateResponse`` with ``Response: Failure`` and
``Reason: 3`` (the channel was ringing), ``Uniqueid: <null>``. A user without the
``originate`` write permission gets ``Response: Error``, ``Message: Permission denied``.

:class:`ClickToCall` holds a captured click-to-call (capture 18, a real Asterisk doing it)
and :meth:`ClickToCall.answered` / :meth:`ClickToCall.unanswered` rewrite it for one request:
every uniqueid and bridge id new (``ChannelId``/``OtherChannelId`` become the Local pair's
uniqueids, as Asterisk 13+ does), every channel name new, the captured employee's extension
replaced by the requested one (the endpoint of ``Channel``: ``101`` of ``PJSIP/101`` or of
``Local/101@from-internal``; the channels stay the capture's, a FreePBX's Local pair
dialling the phone, whatever technology the request names), the dialled digits by ``Exten``, the
number sent to the trunk by the same number in the trunk's form (an 11-digit ``8...`` becomes
``7...``, as the capture's outbound route did), and the ``OriginateResponse`` given the
request's ``ActionID``. Each message keeps its offset from the start of the capture; the fake
PBX stamps and paces them on its own clock.

Not answered is the captured start up to the phone ringing, then ``DialEnd NOANSWER``, the
hangups (cause 19, no answer) and the failed ``OriginateResponse``, made from the channels'
last snapshots.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from connector.capture import iter_capture_messages
from connector.events import MalformedMessage, parse_message

__all__ = ["SNAPSHOT_KEYS", "ClickToCall", "OriginateRequest", "TemplateMessage"]

#: Channel snapshot headers, in the order Asterisk writes them.
SNAPSHOT_KEYS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)
#: Headers never rewritten: times.
_KEEP = frozenset({"Timestamp", "EventTV", "EventTime", "SessionTV"})
_SKIP_EVENTS = frozenset({"FullyBooted", "SuccessfulAuth"})
_ENDPOINT = re.compile(r"^[A-Za-z0-9]+/([^@/;-]+)")


@dataclass(frozen=True, slots=True)
class TemplateMessage:
    """One message of the click-to-call: seconds after the first, and its headers."""

    offset: float
    headers: tuple[tuple[str, str], ...]

    def first(self, key: str) -> str:
        for name, value in self.headers:
            if name == key:
                return value
        return ""


@dataclass(frozen=True, slots=True)
class OriginateRequest:
    """What an ``Originate`` action asked for (the fields the fake uses)."""

    action_id: str
    channel: str
    context: str
    exten: str
    timeout: float
    caller_id: str = ""
    channel_id: str = ""
    other_channel_id: str = ""

    @property
    def extension(self) -> str:
        match = _ENDPOINT.match(self.channel)
        return match.group(1) if match else self.channel


def _trunk_form(digits: str) -> str:
    """The number as the capture's outbound route sent it to the trunk."""
    plain = "".join(ch for ch in digits if ch.isdigit())
    if len(plain) == 11 and plain.startswith("8"):
        return "7" + plain[1:]
    return plain


class ClickToCall:
    """A captured click-to-call, to be replayed for new requests."""

    _ids = itertools.count(1)

    def __init__(self, messages: Sequence[TemplateMessage]) -> None:
        self.messages = tuple(messages)
        response = next((m for m in self.messages if m.first("Event") == "OriginateResponse"), None)
        if response is None:
            raise ValueError("the click-to-call capture has no OriginateResponse")
        self._response_at = self.messages.index(response)
        endpoint = _ENDPOINT.match(response.first("Channel"))
        if endpoint is None:
            raise ValueError("the click-to-call capture's OriginateResponse names no channel")
        self.extension = endpoint.group(1)
        self.exten = response.first("Exten")
        self.trunk_number = _trunk_form(self.exten)
        newchannels = [m for m in self.messages if m.first("Event") == "Newchannel"]
        self.uniqueids = [m.first("Uniqueid") for m in newchannels]
        self.channels = [m.first("Channel") for m in newchannels]
        self.bridges = sorted(
            {m.first("BridgeUniqueid") for m in self.messages if m.first("BridgeUniqueid")}
        )
        # The phone: the first channel dialled that is not a Local half.
        self._phone = next(
            (
                m.first("DestUniqueid")
                for m in self.messages
                if m.first("Event") == "DialBegin"
                and not m.first("DestChannel").startswith("Local/")
            ),
            "",
        )

    @classmethod
    def from_capture(cls, path: Path) -> ClickToCall:
        messages: list[TemplateMessage] = []
        start: float | None = None
        for captured in iter_capture_messages(path):
            raw = captured.raw
            if not raw.startswith(b"Event:"):
                continue
            try:
                message = parse_message(raw)
            except MalformedMessage:
                continue
            if message.event in _SKIP_EVENTS:
                continue
            stamp = message.first("Timestamp")
            at = float(stamp) if stamp else (captured.receive_time or 0.0)
            if start is None:
                start = at
            messages.append(TemplateMessage(max(0.0, at - start), message.headers))
        return cls(messages)

    # -- rewriting -------------------------------------------------------------------

    def _mapping(self, request: OriginateRequest) -> dict[str, str]:
        """Old token → new token (applied longest first)."""
        serial = next(self._ids)
        tokens: dict[str, str] = {}
        new_ids = [
            request.channel_id or "",
            request.other_channel_id or "",
        ]
        base = f"{1900000000 + serial}"
        for index, old in enumerate(self.uniqueids):
            given = new_ids[index] if index < len(new_ids) else ""
            tokens[old] = given or f"{base}.{index}"
        for old in self.bridges:
            tokens[old] = str(uuid.uuid4())
        for old in self.channels:
            head = old.partition(";")[0]
            prefix, dash, _sequence = head.rpartition("-")
            if not dash:
                continue
            if old.startswith("Local/"):
                # The capture's Local pair, for the requested employee: the fake replays a
                # FreePBX, whatever technology the request names.
                local = prefix.replace(f"/{self.extension}@", f"/{request.extension}@", 1)
                new_head = f"{local}-{serial:08x}"
            else:
                tech, _, endpoint = prefix.partition("/")
                if endpoint == self.extension:
                    endpoint = request.extension
                new_head = f"{tech}/{endpoint}-{serial:04x}"
            tokens[head] = new_head
        tokens[self.exten] = request.exten
        tokens[self.trunk_number] = _trunk_form(request.exten)
        return tokens

    def _rewrite(
        self,
        message: TemplateMessage,
        pattern: re.Pattern[str],
        tokens: dict[str, str],
        request: OriginateRequest,
    ) -> TemplateMessage:
        extension = re.compile(rf"(?<![0-9.]){re.escape(self.extension)}(?![0-9])")
        headers: list[tuple[str, str]] = []
        for name, captured in message.headers:
            value = captured
            if name not in _KEEP:
                value = pattern.sub(lambda m: tokens[m.group(0)], value)
                if request.extension != self.extension:
                    value = extension.sub(request.extension, value)
            if name == "ActionID" and message.first("Event") == "OriginateResponse":
                if not request.action_id:
                    continue
                value = request.action_id
            headers.append((name, value))
        return TemplateMessage(message.offset, tuple(headers))

    def _messages(
        self, request: OriginateRequest, until: int | None = None
    ) -> list[TemplateMessage]:
        tokens = self._mapping(request)
        keys = sorted(tokens, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(k) for k in keys if k))
        chosen = self.messages if until is None else self.messages[: until + 1]
        return [self._rewrite(m, pattern, tokens, request) for m in chosen]

    def answered(self, request: OriginateRequest) -> list[TemplateMessage]:
        """The whole click-to-call for ``request``: the employee answers, the customer too."""
        return self._messages(request)

    def unanswered(self, request: OriginateRequest) -> list[TemplateMessage]:
        """The employee's phone rings for ``request.timeout`` and nobody picks up."""
        # Up to the phone ringing and dialled (its Newstate and the DialBegin to it).
        ringing = [
            index
            for index, m in enumerate(self.messages[: self._response_at])
            if (m.first("Uniqueid") == self._phone and m.first("ChannelStateDesc") == "Ringing")
            or (m.first("Event") == "DialBegin" and m.first("DestUniqueid") == self._phone)
        ]
        head = self._messages(request, until=max(ringing, default=self._response_at - 1))
        end = head[-1].offset + request.timeout
        snapshots: dict[str, dict[str, str]] = {}
        dial: TemplateMessage | None = None
        for message in head:
            uniqueid = message.first("Uniqueid")
            if uniqueid and message.first("Event") not in ("CEL", "Cdr"):
                snapshot = snapshots.setdefault(uniqueid, {})
                for key, value in message.headers:
                    if key in SNAPSHOT_KEYS:
                        snapshot[key] = value
            if message.first("Event") == "DialBegin" and not message.first(
                "DestChannel"
            ).startswith("Local/"):
                dial = message
        tail: list[TemplateMessage] = []
        if dial is not None:
            caller = [(k, v) for k, v in dial.headers if k in SNAPSHOT_KEYS]
            dest = [(k, v) for k, v in dial.headers if k.startswith("Dest")]
            tail.append(
                TemplateMessage(
                    end,
                    (
                        ("Event", "DialEnd"),
                        ("Privilege", "call,all"),
                        *caller,
                        *dest,
                        ("DialStatus", "NOANSWER"),
                    ),
                )
            )
        # The phone first, then the Local halves (;2 then ;1), as Asterisk hangs them up.
        for uniqueid in reversed(list(snapshots)):
            snapshot = snapshots[uniqueid]
            tail.append(
                TemplateMessage(
                    end,
                    (
                        ("Event", "Hangup"),
                        ("Privilege", "call,all"),
                        *[(key, snapshot.get(key, "")) for key in SNAPSHOT_KEYS],
                        ("Cause", "19"),
                        ("Cause-txt", "No answer"),
                    ),
                )
            )
        response: list[tuple[str, str]] = [
            ("Event", "OriginateResponse"),
            ("Privilege", "call,all"),
        ]
        if request.action_id:
            response.append(("ActionID", request.action_id))
        response += [
            ("Response", "Failure"),
            ("Channel", request.channel),
            ("Context", request.context),
            ("Exten", request.exten),
            ("Reason", "3"),
            ("Uniqueid", "<null>"),
            ("CallerIDNum", "<unknown>"),
            ("CallerIDName", "<unknown>"),
        ]
        tail.append(TemplateMessage(end, tuple(response)))
        return head + tail
