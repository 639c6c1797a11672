"""The call assembler: normalised AMI events in, finished conversations out. Sans-IO.

Theory of operation
-------------------
Asterisk reports *channels*; a journal row is a *conversation*. One incoming call to a ring
group is a trunk channel plus one channel per phone rung; a transfer adds channels, a pickup
brings in a channel that started as a call of its own, a click-to-call starts with a Local
pair. The assembler keeps every live channel (keyed by ``Uniqueid``) in exactly one
:class:`_Conversation`. A channel comes into being only by its ``Newchannel``, by the
resynchronisation's snapshot of the PBX's channels, or by a restore of saved state; any other
event about a channel never created is counted (``stats.unknown_channel_events``) and
ignored, so a stray or forged event cannot invent a call. Conversations merge whenever the
PBX shows they are one:

* a channel event carrying a ``Linkedid`` already owned by another conversation;
* ``DialBegin``/``DialEnd`` between channels of two conversations (a pickup answers a
  dial with the picker's channel);
* ``BridgeEnter`` into a basic bridge that holds a channel of another conversation;
* ``Pickup``, ``AttendedTransfer``, ``LocalBridge`` and ``LocalOptimizationBegin``, which
  name channels of both sides.

Channels are classified once, from the endpoint in their name (``PJSIP/101-0000001a`` →
``101``): an employee *phone* when it matches the extension pattern (or is a configured
employee), a *technical* channel (``Local``, ``Snoop``, ``UnicastRTP``...) which is never a
party, and a *trunk* otherwise. Who talked is not guessed from states or ``DialEnd``: after
every bridge change the assembler walks the audio graph (bridge membership, plus the two
halves of each Local pair) from the *counterpart* — the caller's trunk channel for incoming
calls, the dialled trunk channels for outgoing calls, the caller's phone for internal calls —
and every employee phone it reaches is talking with the customer from that moment. That one
rule covers direct calls, ring groups, queues, IVRs, blind and attended transfers, pickups
and click-to-call without a table of scenarios.

A conversation is finished when all its channels have hung up *and* a grace period has passed
(late merges, recording files closing); :meth:`CallAssembler.expire` closes those, and gives
up on conversations that have been silent longer than ``max_call_duration`` (their end was
never seen: the end time is then marked approximate). The clock is always a parameter: the
assembler never reads the time, imports no I/O library, and keeps no state for a conversation
once it has been returned.
"""

from __future__ import annotations

import enum
import heapq
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from connector.events import AmiEvent

__all__ = [
    "TECHNICAL_TECHNOLOGIES",
    "AssemblerStats",
    "CallAssembler",
    "ChannelClassifier",
    "ChannelKind",
    "Direction",
    "FinishedCall",
    "Leg",
    "Participant",
    "RecordingPart",
    "Role",
    "TransferNote",
    "endpoint_of",
]

#: Channel technologies that are plumbing, never a party of a conversation.
TECHNICAL_TECHNOLOGIES: frozenset[str] = frozenset(
    {
        "Local",
        "Snoop",
        "UnicastRTP",
        "Message",
        "Announcer",
        "Recorder",
        "CBAnn",
        "CBRec",
        "Bridge",
        "Multicast",
        "MulticastRTP",
        "AudioSocket",
        "WebSocket",
    }
)

_RECENTLY_FINISHED = 20_000  # uniqueids remembered to ignore their late events
_BRIDGE_SWEEP_EVERY = 256  # conversations forgotten between two sweeps of empty bridges


class ChannelKind(enum.Enum):
    PHONE = "phone"
    TRUNK = "trunk"
    TECHNICAL = "technical"


class Direction(enum.Enum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"
    INTERNAL = "internal"


class Role(enum.Enum):
    """An employee's part in a conversation (DESIGN section 5)."""

    PLACED = "placed"
    ANSWERED = "answered"
    RANG = "rang"


@dataclass(frozen=True, slots=True)
class Participant:
    """One employee in a conversation, once, with everything they did in it."""

    extension: str
    role: Role
    placed: bool
    rang: bool
    #: When this employee's phone first joined the counterpart's audio (None: never did).
    answered_at: float | None
    rang_at: float | None
    talk_seconds: float
    #: Reached on their mobile (a trunk leg dialled to one of their numbers), not a desk
    #: phone: they talked there, or, if they never talked, were only rung there.
    mobile: bool = False


@dataclass(frozen=True, slots=True)
class Leg:
    """A stretch of time one employee phone was connected to the counterpart."""

    extension: str
    connected_at: float
    disconnected_at: float
    #: The employee was on their mobile (a trunk leg), not a desk phone.
    mobile: bool = False


@dataclass(frozen=True, slots=True)
class RecordingPart:
    """A recording file the PBX started for this conversation, as the PBX named it."""

    path: str
    started_at: float
    channel: str


@dataclass(frozen=True, slots=True)
class TransferNote:
    kind: str  # "blind" | "attended" | "blonde" | "pickup"
    at: float
    by: str | None  # extension of the transferer / the picker
    target: str | None  # extension transferred to / picked from, when known


@dataclass(frozen=True, slots=True)
class FinishedCall:
    """A conversation that is over: the only thing that leaves the connector."""

    #: Identity of the conversation: the ``Linkedid`` of its oldest channel.
    conversation_id: str
    linkedids: tuple[str, ...]
    started_at: float
    answered_at: float | None
    ended_at: float
    #: True when the end was not seen (expired or closed by a PBX restart).
    approximate_end: bool
    direction: Direction
    #: The external party's number as the PBX presented it (None for internal calls).
    external_number: str | None
    #: The number the call came in on (incoming calls).
    did: str | None
    answered: bool
    participants: tuple[Participant, ...]
    legs: tuple[Leg, ...]
    ring_seconds: float
    talk_seconds: float
    recordings: tuple[RecordingPart, ...]
    #: ``CALLFILENAME``/``MONITOR_FILENAME`` values, for PBXes that never announce
    #: ``MIXMONITOR_FILENAME``: the recordings finder tries them with each format.
    recording_hints: tuple[str, ...]
    queues: tuple[str, ...]
    transfers: tuple[TransferNote, ...]
    #: The caller withheld their number (presentation prohibited): ``external_number`` is
    #: the number as first seen, kept for calling back, never to be shown or logged as is.
    number_withheld: bool = False
    #: The journal id of the call this one returns: set by the daemon (never the assembler)
    #: on the conversation a click-to-call it placed became (``POST /api/v1/originate``).
    callback_of: int | None = None

    @property
    def employees_answered(self) -> tuple[str, ...]:
        return tuple(p.extension for p in self.participants if p.answered_at is not None)

    @property
    def employees_rang(self) -> tuple[str, ...]:
        return tuple(p.extension for p in self.participants if p.rang)


@dataclass(slots=True)
class AssemblerStats:
    events: int = 0
    ignored: int = 0
    bad_events: int = 0
    conversations_opened: int = 0
    conversations_finished: int = 0
    conversations_expired: int = 0
    merges: int = 0
    #: Conversations of technical channels only, dropped rather than written.
    ghosts_dropped: int = 0
    #: Events ignored, wholly or in part, because they named a channel never created (no
    #: ``Newchannel``, not in a resynchronisation's snapshot, not restored), nor recently
    #: finished: only those three create a channel, so such events open nothing.
    unknown_channel_events: int = 0


def endpoint_of(channel_name: str) -> tuple[str, str]:
    """(technology, endpoint): ``PJSIP/101-0000001a`` → (``PJSIP``, ``101``)."""
    tech, _, rest = channel_name.partition("/")
    if not rest:
        return tech, ""
    if tech == "Local":
        return tech, rest.split(";", 1)[0].rsplit("-", 1)[0]
    endpoint, sep, _suffix = rest.rpartition("-")
    return tech, endpoint if sep else rest


class ChannelClassifier:
    """Decides, from a channel's name, whether it is a phone, a trunk or plumbing; and whose
    mobile a number dialled over a trunk is.

    ``mobiles`` maps employees' external numbers, in the form ``normalize`` gives, to their
    extension; ``normalize`` (the journal's number normalisation, passed in: the assembler
    imports nothing of storage) turns a dialled number into that form (digits only without it).
    """

    def __init__(
        self,
        extension_pattern: str = r"^\d{2,6}$",
        trunks: Iterable[str] = (),
        extensions: Iterable[str] = (),
        *,
        mobiles: Mapping[str, str] | None = None,
        normalize: Callable[[str], str | None] | None = None,
    ) -> None:
        self._pattern = re.compile(extension_pattern)
        self._trunks = frozenset(trunks)
        self._extensions = frozenset(extensions)
        self._normalize = normalize or _digits_only
        self._mobiles = {self._normalize(n) or n: ext for n, ext in (mobiles or {}).items()}

    def mobile_owner(self, number: str) -> str | None:
        """The extension of the employee whose mobile ``number`` is (None: nobody's)."""
        if not number or not self._mobiles:
            return None
        key = self._normalize(number)
        return self._mobiles.get(key) if key else None

    def classify(self, channel_name: str) -> tuple[ChannelKind, str]:
        """(kind, endpoint) of a channel name."""
        tech, endpoint = endpoint_of(channel_name)
        if tech in TECHNICAL_TECHNOLOGIES or not endpoint:
            return ChannelKind.TECHNICAL, endpoint
        if endpoint in self._trunks:
            return ChannelKind.TRUNK, endpoint
        if endpoint in self._extensions or self._pattern.search(endpoint):
            return ChannelKind.PHONE, endpoint
        return ChannelKind.TRUNK, endpoint


# --------------------------------------------------------------------------------------
# Internal state


@dataclass(slots=True, eq=False)
class _Channel:
    uniqueid: str
    name: str
    kind: ChannelKind
    endpoint: str
    created_at: float
    linkedid: str
    conversation: _Conversation
    caller_num: str = ""
    exten: str = ""
    state: str = ""
    #: Set when the channel was created as the destination of a Dial (it did not call).
    dialled: bool = False
    dial_string: str = ""
    rang_at: float | None = None
    ring_ended_at: float | None = None
    bridge: str | None = None
    local_peer: str | None = None
    hungup_at: float | None = None
    #: The hangup was not seen: the channel vanished during an outage (resync).
    hangup_approximate: bool = False
    #: A trunk leg dialled to an employee's mobile: that employee's extension.
    mobile_of: str = ""
    #: The caller id was presented as prohibited (the caller withheld the number).
    withheld: bool = False


@dataclass(slots=True, eq=False)
class _Conversation:
    key: str
    started_at: float
    channels: dict[str, _Channel] = field(default_factory=dict)
    linkedids: set[str] = field(default_factory=set)
    last_event_at: float = 0.0
    #: extension → first time it rang
    rang: dict[str, float] = field(default_factory=dict)
    #: extension → first time it joined the counterpart's audio
    answered: dict[str, float] = field(default_factory=dict)
    #: extension → start of its current connection to the counterpart
    connected: dict[str, float] = field(default_factory=dict)
    legs: list[Leg] = field(default_factory=list)
    recordings: dict[str, RecordingPart] = field(default_factory=dict)
    recording_hints: dict[str, None] = field(default_factory=dict)
    pending_filename: dict[str, str] = field(default_factory=dict)
    queues: dict[str, None] = field(default_factory=dict)
    transfers: list[TransferNote] = field(default_factory=list)
    open_channels: int = 0
    closing_at: float | None = None
    #: Bumped whenever the conversation changes, so stale heap entries are recognised.
    generation: int = 0
    approximate_end: bool = False
    #: Bridges its channels entered (not saved: a restored one relies on the full sweep).
    bridges: set[str] = field(default_factory=set)
    #: Uniqueid of the channel that placed the call, pinned once known: a consultation leg
    #: merged in later is younger, not dialled, and must not become the placer.
    origin: str | None = None
    #: Transferees that took over the counterpart's part when the counterpart itself made
    #: the transfer (A→B, A transfers B to C: B is who C talks with).
    heirs: list[str] = field(default_factory=list)
    #: Extensions connected (now) / rung through a mobile leg.
    connected_mobile: set[str] = field(default_factory=set)
    rang_mobile: set[str] = field(default_factory=set)
    #: A transfer note whose target is the next employee to answer (a blind transfer names
    #: a dialplan extension, a blonde one a phone not answered yet).
    pending_target: TransferNote | None = None


class CallAssembler:
    """Turns normalised AMI events into :class:`FinishedCall` records.

    ``feed(event, now)`` consumes one event and returns the conversations that finished by
    ``now``; ``expire(now)`` only closes what is due (call it from a timer armed at
    :meth:`next_deadline`); ``close_all(now)`` ends everything (a PBX restart).
    """

    def __init__(
        self,
        classifier: ChannelClassifier | None = None,
        *,
        grace: float = 3.0,
        max_call_duration: float = 12 * 3600.0,
    ) -> None:
        #: Swapped on reload (SIGHUP); channels already known keep their kind.
        self.classifier = classifier or ChannelClassifier()
        self._grace = grace
        self._max_duration = max_call_duration
        self._channels: dict[str, _Channel] = {}
        self._by_linkedid: dict[str, _Conversation] = {}
        self._conversations: dict[str, _Conversation] = {}
        #: bridge id → uniqueids in it; only basic bridges merge conversations.
        self._bridges: dict[str, set[str]] = {}
        self._bridge_types: dict[str, str] = {}
        self._forgotten = 0
        self._closing: list[tuple[float, int, str]] = []
        self._finished_ids: OrderedDict[str, None] = OrderedDict()
        self._stale_check_at = 0.0
        #: Conversations changed, and keys merged away, since :meth:`take_changes`.
        self._dirty: set[str] = set()
        self._gone: set[str] = set()
        #: Conversations opened and never handed out by :meth:`take_changes` since.
        self._new: set[str] = set()
        #: With ``keep_finished`` (the daemon's): the last state of every conversation that
        #: finished, until :meth:`forget_finished` says its row is written, so that a restart
        #: in between takes it back whole rather than as it was at the last periodic save.
        self.keep_finished = False
        self._finishing: dict[str, dict[str, Any]] = {}
        self._finishing_unsent: set[str] = set()
        self.stats = AssemblerStats()
        self._handlers: Mapping[str, Callable[[AmiEvent], None]] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "NewCallerid": self._on_channel_touch,
            "NewConnectedLine": self._on_channel_touch,
            "Rename": self._on_rename,
            "Hangup": self._on_hangup,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "BridgeCreate": self._on_bridge_create,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "Pickup": self._on_pickup,
            "LocalBridge": self._on_local_bridge,
            "LocalOptimizationBegin": self._on_local_bridge,
            "AgentCalled": self._on_queue_event,
            "AgentConnect": self._on_queue_event,
            "QueueCallerJoin": self._on_queue_event,
            "VarSet": self._on_varset,
            "MixMonitorStart": self._on_mixmonitor_start,
            "Shutdown": self._on_shutdown,
        }
        self._now = 0.0
        self._out: list[FinishedCall] = []
        #: The event being handled named a channel never created (counted once per event).
        self._unknown_seen = False

    # -- public API -------------------------------------------------------------------

    @property
    def open_conversations(self) -> int:
        return len(self._conversations)

    @property
    def open_channels(self) -> int:
        return len(self._channels)

    @property
    def open_bridges(self) -> int:
        """Bridges known and not destroyed (an empty one goes with its last conversation)."""
        return len(self._bridges)

    def feed(self, event: AmiEvent, now: float) -> list[FinishedCall]:
        """Consume one event; return conversations finished by ``now``.

        A broken event (missing or impossible fields) is counted in ``stats.bad_events`` and
        skipped: it never raises and never corrupts the other conversations.
        """
        self.stats.events += 1
        self._now = now
        handler = self._handlers.get(event.name)
        if handler is None:
            self.stats.ignored += 1
        else:
            self._unknown_seen = False
            try:
                handler(event)
            except (KeyError, ValueError, TypeError, AttributeError):
                self.stats.bad_events += 1
            if self._unknown_seen:
                self.stats.unknown_channel_events += 1
        return self.expire(now)

    def expire(self, now: float) -> list[FinishedCall]:
        """Close conversations whose grace period is over, or that went silent too long."""
        self._now = max(self._now, now)
        out = self._out
        self._out = []
        closing = self._closing
        while closing and closing[0][0] <= now:
            _, generation, key = heapq.heappop(closing)
            conversation = self._conversations.get(key)
            if conversation is None or conversation.generation != generation:
                continue
            if conversation.open_channels == 0:
                out.extend(self._close(conversation))
        # (Also when the clock went back: a check scheduled by a later reading would wait.)
        if self._conversations and (
            now >= self._stale_check_at or self._stale_check_at - now > 1.0
        ):
            # A scan of everything open, at most once a second of PBX time.
            self._stale_check_at = now + 1.0
            stale_before = now - self._max_duration
            for conversation in list(self._conversations.values()):
                if conversation.last_event_at < stale_before:
                    conversation.approximate_end = True
                    self.stats.conversations_expired += 1
                    out.extend(self._close(conversation, end=conversation.last_event_at))
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do (None: nothing is closing)."""
        deadline: float | None = None
        for when, generation, key in self._closing:
            conversation = self._conversations.get(key)
            if conversation is not None and conversation.generation == generation:
                deadline = when if deadline is None else min(deadline, when)
        if self._conversations:
            oldest = min(c.last_event_at for c in self._conversations.values())
            stale = oldest + self._max_duration
            deadline = stale if deadline is None else min(deadline, stale)
        return deadline

    def next_closing(self) -> float | None:
        """When the next grace period runs out (None: none is running). Unlike
        :meth:`next_deadline` it costs next to nothing (the heap's top, entries made obsolete
        by a later change dropped on the way), so a timer can be re-armed with it often."""
        closing = self._closing
        while closing:
            when, generation, key = closing[0]
            conversation = self._conversations.get(key)
            if conversation is not None and conversation.generation == generation:
                return when
            heapq.heappop(closing)
        return None

    def close_all(self, now: float, *, approximate: bool = True) -> list[FinishedCall]:
        """End every open conversation at ``now`` (PBX restart, end of a replay)."""
        self._now = max(self._now, now)
        out = self._out
        self._out = []
        for conversation in list(self._conversations.values()):
            for channel in conversation.channels.values():
                if channel.hungup_at is None:
                    self._hang_up(channel, now)
                    conversation.approximate_end = approximate
            out.extend(self._close(conversation))
        return out

    def resync(
        self,
        snapshots: Iterable[AmiEvent],
        now: float,
        *,
        lost_since: float | None = None,
    ) -> list[FinishedCall]:
        """Align with the PBX's own list of live channels after a (re)login.

        ``snapshots`` are the ``CoreShowChannel`` events, applied at their place in the
        stream (after the live events received before them). A channel we hold that the PBX
        no longer has hung up while nobody listened: it is closed at ``lost_since`` (the
        disconnect), marked approximate. A channel we never saw (a call in progress when the
        daemon started, or one born during the outage) is adopted with its bridge, so that
        who talks with whom is known from now on.
        """
        self._now = max(self._now, now)
        alive: dict[str, AmiEvent] = {}
        for snapshot in snapshots:
            uniqueid = snapshot.get("Uniqueid")
            if uniqueid and snapshot.get("Channel"):
                alive[uniqueid] = snapshot
        closed_at = now if lost_since is None else min(lost_since, now)
        for gone in list(self._channels.values()):
            if gone.hungup_at is None and gone.uniqueid not in alive:
                gone.hangup_approximate = True
                self._hang_up(gone, closed_at)
        touched: dict[str, _Conversation] = {}
        for uniqueid, snapshot in alive.items():
            known = self._channels.get(uniqueid)
            if known is None and uniqueid in self._finished_ids:
                continue
            live = known if known is not None else self._adopt_snapshot(snapshot, now)
            self._apply_snapshot(live, snapshot, now)
            touched[live.conversation.key] = live.conversation
        for conversation in touched.values():
            if conversation.key in self._conversations:
                self._update_talk(conversation, now)
                self._dirty.add(conversation.key)
        return self.expire(now)

    def shift_clock(self, delta: float) -> None:
        """The PBX's clock was stepped by ``delta`` seconds (NTP, ``date -s``): move every
        time held for the open conversations by as much, so that the events stamped by the
        new clock follow theirs in order, durations count only the time that really passed,
        and neither a grace period nor ``max_call_duration`` runs out because of the step.
        A conversation open across the step is dated by the new clock as a whole."""
        if not delta:
            return
        for conversation in self._conversations.values():
            conversation.started_at += delta
            conversation.last_event_at += delta
            if conversation.closing_at is not None:
                conversation.closing_at += delta
            for times in (conversation.rang, conversation.answered, conversation.connected):
                for extension in times:
                    times[extension] += delta
            conversation.legs = [
                replace(
                    leg,
                    connected_at=leg.connected_at + delta,
                    disconnected_at=leg.disconnected_at + delta,
                )
                for leg in conversation.legs
            ]
            for path, part in conversation.recordings.items():
                conversation.recordings[path] = replace(part, started_at=part.started_at + delta)
            conversation.transfers = [replace(t, at=t.at + delta) for t in conversation.transfers]
            for channel in conversation.channels.values():
                channel.created_at += delta
                if channel.rang_at is not None:
                    channel.rang_at += delta
                if channel.ring_ended_at is not None:
                    channel.ring_ended_at += delta
                if channel.hungup_at is not None:
                    channel.hungup_at += delta
        # A uniform shift keeps the heap's order.
        self._closing = [(when + delta, gen, key) for when, gen, key in self._closing]
        self._now += delta
        self._stale_check_at += delta

    def adopt_recordings(self, variables: Mapping[str, Mapping[str, str]], now: float) -> None:
        """Recording files named by ``Status`` variables (``MIXMONITOR_FILENAME``) per uniqueid:
        parts started while nobody listened, dated when we learn of them (their true start
        lies somewhere in the outage)."""
        for uniqueid, names in variables.items():
            channel = self._channels.get(uniqueid)
            path = names.get("MIXMONITOR_FILENAME", "")
            if channel is not None and path and path not in channel.conversation.recordings:
                channel.conversation.recordings[path] = RecordingPart(
                    path=path, started_at=now, channel=channel.name
                )
                self._dirty.add(channel.conversation.key)

    # -- persistence: open conversations survive a restart of the daemon ------------------

    def take_changes(self, *, new_only: bool = False) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The state of every open conversation changed since the last call, and the keys
        of conversations merged into others or dropped since then (their saved state is
        obsolete). A finished conversation's row replaces its saved state; with
        ``keep_finished`` its last state is handed out once meanwhile (the writer may take
        seconds to reach it).

        ``new_only`` hands out only the conversations opened since they were last handed
        out, and no keys: a restart can lose a conversation the database has never seen
        altogether, so the writer saves those sooner than the rest.
        """
        states = {key: self._finishing[key] for key in self._finishing_unsent}
        self._finishing_unsent = set()
        if new_only:
            keys = self._new & self._conversations.keys()
            self._new = set()
            self._dirty -= keys
            states.update({k: _export(self._conversations[k], self._bridge_types) for k in keys})
            return states, set()
        states.update(
            {
                key: _export(self._conversations[key], self._bridge_types)
                for key in self._dirty
                if key in self._conversations
            }
        )
        gone = self._gone
        self._dirty, self._gone, self._new = set(), set(), set()
        return states, gone

    def forget_finished(self, keys: Iterable[str]) -> None:
        """The rows of these finished conversations are written (or given up): their last
        states need not be saved any more. Called by the journal writer."""
        for key in keys:
            self._finishing.pop(key, None)
            self._finishing_unsent.discard(key)

    def export_all(self) -> dict[str, dict[str, Any]]:
        """Every open conversation's state (at shutdown)."""
        self._dirty, self._gone, self._new = set(), set(), set()
        return {key: _export(c, self._bridge_types) for key, c in self._conversations.items()}

    def restore(self, states: Iterable[Mapping[str, Any]]) -> int:
        """Take back conversations saved by a previous run; return how many.

        A state that cannot be read (written by an incompatible version) is skipped and
        counted in ``stats.bad_events``; the resynchronisation that follows every login
        then settles what really happened to the restored channels.
        """
        restored = 0
        for state in states:
            try:
                conversation, bridges = _import(state)
            except (KeyError, TypeError, ValueError):
                self.stats.bad_events += 1
                continue
            if conversation.key in self._conversations or any(
                u in self._channels for u in conversation.channels
            ):
                continue
            self._conversations[conversation.key] = conversation
            for linkedid in conversation.linkedids:
                self._by_linkedid[linkedid] = conversation
            for channel in conversation.channels.values():
                self._channels[channel.uniqueid] = channel
                if channel.bridge is not None:
                    self._bridges.setdefault(channel.bridge, set()).add(channel.uniqueid)
            self._bridge_types.update(bridges)
            if conversation.open_channels <= 0:
                self._schedule_close(conversation, conversation.last_event_at)
            restored += 1
        return restored

    def _adopt_snapshot(self, snapshot: AmiEvent, now: float) -> _Channel:
        started = now - _duration_seconds(snapshot.get("Duration"))
        stamped = AmiEvent(
            name=snapshot.name, time=started, headers=snapshot.headers, timestamped=False
        )
        return self._adopt(
            snapshot.get("Uniqueid"),
            snapshot.get("Channel"),
            snapshot.get("Linkedid") or snapshot.get("Uniqueid"),
            stamped,
        )

    def _apply_snapshot(self, channel: _Channel, snapshot: AmiEvent, now: float) -> None:
        linkedid = snapshot.get("Linkedid")
        if linkedid and linkedid != channel.linkedid:
            channel.linkedid = linkedid
            self._join_linkedid(channel.conversation, linkedid)
        channel.state = snapshot.get("ChannelStateDesc") or channel.state
        if not channel.caller_num:
            # As from NewCallerid: a dialled trunk shows the number it calls from then on.
            channel.caller_num = snapshot.get("CallerIDNum")
        # Asterisk names a dialled channel's application AppDial (AppDial2/AppDialX for
        # originated legs) or AppQueue: it did not place the call. That holds for a channel
        # we knew too, whose DialBegin went unheard during the outage: it rang from its
        # creation on, as far as we can tell.
        application = snapshot.get("Application").lower()
        if application.startswith(("appdial", "appqueue")) and not channel.dialled:
            channel.dialled = True
            if channel.kind is ChannelKind.PHONE:
                self._mark_rang(channel, channel.created_at)
            elif channel.rang_at is None:
                channel.rang_at = channel.created_at
        bridge = snapshot.get("BridgeId")
        if bridge != (channel.bridge or ""):
            self._leave_bridge(channel)
            if bridge:
                members = self._bridges.setdefault(bridge, set())
                self._bridge_types.setdefault(bridge, "basic")
                for uniqueid in list(members):
                    other = self._channels.get(uniqueid)
                    if other is not None:
                        self._merge(channel.conversation, other.conversation)
                members.add(channel.uniqueid)
                channel.bridge = bridge
        channel.conversation.last_event_at = max(channel.conversation.last_event_at, now)

    # -- conversation bookkeeping -------------------------------------------------------

    def _channel_for(self, event: AmiEvent, prefix: str = "") -> _Channel | None:
        """The channel an event names (``prefix`` + ``Uniqueid``), None if there is none.

        Only ``Newchannel`` creates a channel here (and :meth:`resync` and :meth:`restore`
        elsewhere). Any other event about a channel never created is not evidence of a call:
        taking it as one turned each stray or forged event into an "incoming, lost, needs
        attention" row, and a flood of them into as many open conversations. It is counted
        in ``stats.unknown_channel_events`` and nothing is kept of it. A channel created
        before the daemon logged in is adopted by the resynchronisation that follows every
        login; its events received before the snapshot are ignored until then.
        """
        uniqueid = event.get(prefix + "Uniqueid")
        if not uniqueid:
            return None
        channel = self._channels.get(uniqueid)
        linkedid = event.get(prefix + "Linkedid")
        if channel is None:
            if uniqueid in self._finished_ids:
                return None  # a late event of a conversation already written
            if prefix or event.name != "Newchannel":
                self._unknown_seen = True
                return None
            name = event.get("Channel")
            if not name:
                return None
            channel = self._adopt(uniqueid, name, linkedid or uniqueid, event)
        elif event.name == "Newchannel" and event.time < channel.created_at:
            # Adopted from a snapshot, then its Newchannel came in the replayed buffer.
            channel.created_at = event.time
            conversation = channel.conversation
            conversation.started_at = min(conversation.started_at, event.time)
        elif linkedid and linkedid != channel.linkedid:
            # Inside a basic bridge every member silently takes the oldest linkedid.
            channel.linkedid = linkedid
            self._join_linkedid(channel.conversation, linkedid)
        conversation = channel.conversation
        conversation.last_event_at = max(conversation.last_event_at, event.time)
        self._dirty.add(conversation.key)
        return channel

    def _adopt(self, uniqueid: str, name: str, linkedid: str, event: AmiEvent) -> _Channel:
        conversation = self._by_linkedid.get(linkedid)
        if conversation is None:
            conversation = _Conversation(key=linkedid, started_at=event.time)
            conversation.last_event_at = event.time
            self._conversations[linkedid] = conversation
            self._by_linkedid[linkedid] = conversation
            conversation.linkedids.add(linkedid)
            self._new.add(linkedid)
            self.stats.conversations_opened += 1
        kind, endpoint = self.classifier.classify(name)
        channel = _Channel(
            uniqueid=uniqueid,
            name=name,
            kind=kind,
            endpoint=endpoint,
            created_at=event.time,
            linkedid=linkedid,
            conversation=conversation,
            caller_num=event.get("CallerIDNum"),
            exten=event.get("Exten"),
            state=event.get("ChannelStateDesc"),
        )
        if ";" in name and kind is ChannelKind.TECHNICAL:
            base, _, half = name.rpartition(";")
            peer_name = base + (";2" if half == "1" else ";1")
            for other in conversation.channels.values():
                if other.name == peer_name and other.hungup_at is None:
                    channel.local_peer = other.uniqueid
                    other.local_peer = uniqueid
        self._channels[uniqueid] = channel
        conversation.channels[uniqueid] = channel
        conversation.open_channels += 1
        conversation.started_at = min(conversation.started_at, event.time)
        self._reopen(conversation)
        return channel

    def _join_linkedid(self, conversation: _Conversation, linkedid: str) -> _Conversation:
        other = self._by_linkedid.get(linkedid)
        if other is None:
            self._by_linkedid[linkedid] = conversation
            conversation.linkedids.add(linkedid)
            return conversation
        return self._merge(conversation, other)

    def _merge(self, a: _Conversation, b: _Conversation) -> _Conversation:
        if a is b:
            return a
        # Keep the older conversation's identity; fold the younger one into it.
        if (b.started_at, b.key) < (a.started_at, a.key):
            a, b = b, a
        # Who placed the older conversation is settled before the younger one's channels
        # (a consultation leg, a picker) could look like an older, undialled origin.
        self._pin_origin(a, force=True)
        self.stats.merges += 1
        for channel in b.channels.values():
            channel.conversation = a
            a.channels[channel.uniqueid] = channel
        for linkedid in b.linkedids:
            self._by_linkedid[linkedid] = a
        a.linkedids |= b.linkedids
        a.open_channels += b.open_channels
        a.started_at = min(a.started_at, b.started_at)
        a.last_event_at = max(a.last_event_at, b.last_event_at)
        for ext, at in b.rang.items():
            if ext not in a.rang or at < a.rang[ext]:
                a.rang[ext] = at
        a.rang = dict(sorted(a.rang.items(), key=lambda item: item[1]))
        a.legs.extend(b.legs)
        for ext, at in b.answered.items():
            if ext not in a.answered or at < a.answered[ext]:
                a.answered[ext] = at
        for ext, at in b.connected.items():
            if ext not in a.connected or at < a.connected[ext]:
                a.connected[ext] = at
        for path, part in b.recordings.items():
            a.recordings.setdefault(path, part)
        a.recording_hints.update(b.recording_hints)
        a.pending_filename.update(b.pending_filename)
        a.queues.update(b.queues)
        a.bridges |= b.bridges
        a.transfers.extend(b.transfers)
        a.transfers.sort(key=lambda note: note.at)
        a.heirs.extend(h for h in b.heirs if h not in a.heirs)
        a.connected_mobile |= b.connected_mobile
        a.rang_mobile |= b.rang_mobile
        a.pending_target = a.pending_target or b.pending_target
        a.approximate_end = a.approximate_end or b.approximate_end
        del self._conversations[b.key]
        self._dirty.discard(b.key)
        self._new.discard(b.key)
        self._gone.add(b.key)
        self._dirty.add(a.key)
        # The counterpart may have changed with the union (a pickup brings a phone that
        # started a call of its own into an incoming call): walk the audio graph again.
        self._update_talk(a)
        self._reopen(a)
        return a

    def _reopen(self, conversation: _Conversation) -> None:
        conversation.generation += 1
        conversation.closing_at = None

    def _schedule_close(self, conversation: _Conversation, at: float) -> None:
        conversation.generation += 1
        conversation.closing_at = at + self._grace
        heapq.heappush(
            self._closing, (conversation.closing_at, conversation.generation, conversation.key)
        )

    def _hang_up(self, channel: _Channel, at: float) -> None:
        if channel.hungup_at is not None:
            return
        channel.hungup_at = at
        if channel.rang_at is not None and channel.ring_ended_at is None:
            channel.ring_ended_at = at
        conversation = channel.conversation
        self._leave_bridge(channel)
        if channel.local_peer is not None:
            peer = self._channels.get(channel.local_peer)
            if peer is not None:
                peer.local_peer = None
            channel.local_peer = None
        conversation.open_channels -= 1
        self._update_talk(conversation, at)
        if conversation.open_channels <= 0:
            self._schedule_close(conversation, at)

    # -- event handlers ---------------------------------------------------------------

    def _on_newchannel(self, event: AmiEvent) -> None:
        channel = self._channel_for(event)
        if channel is not None and channel.kind is ChannelKind.TRUNK:
            channel.withheld = channel.withheld or _presentation_prohibited(event)

    def _on_channel_touch(self, event: AmiEvent) -> None:
        channel = self._channel_for(event)
        if channel is None:
            return
        if event.name == "NewCallerid" and not channel.caller_num:
            channel.caller_num = event.get("CallerIDNum")
        if channel.kind is ChannelKind.TRUNK and _presentation_prohibited(event):
            # The PBX may mask the number from now on (+31260xxxxxx): the first number seen
            # stays the one kept, and the call is marked withheld.
            channel.withheld = True

    def _on_newstate(self, event: AmiEvent) -> None:
        channel = self._channel_for(event)
        if channel is None:
            return
        channel.state = event.get("ChannelStateDesc")
        if channel.state == "Ringing" and channel.kind is ChannelKind.PHONE:
            self._mark_rang(channel, event.time)

    def _on_rename(self, event: AmiEvent) -> None:
        channel = self._channel_for(event)
        new_name = event.get("Newname")
        if channel is not None and new_name:
            channel.name = new_name

    def _on_hangup(self, event: AmiEvent) -> None:
        channel = self._channel_for(event)
        if channel is not None:
            self._hang_up(channel, event.time)

    def _on_dial_begin(self, event: AmiEvent) -> None:
        caller = self._channel_for(event)
        dest = self._channel_for(event, "Dest")
        if dest is None:
            return
        dest.dialled = True
        dest.dial_string = event.get("DialString")
        if dest.kind is ChannelKind.TRUNK and not dest.mobile_of:
            number = _number_from_dial_string(dest.dial_string) or dest.exten
            dest.mobile_of = self.classifier.mobile_owner(number) or ""
        if caller is not None:
            self._merge(caller.conversation, dest.conversation)
        if _extension(dest) is not None:
            self._mark_rang(dest, event.time)
        elif dest.rang_at is None:
            dest.rang_at = event.time

    def _on_dial_end(self, event: AmiEvent) -> None:
        caller = self._channel_for(event)
        dest = self._channel_for(event, "Dest")
        if dest is None:
            return
        if caller is not None:
            self._merge(caller.conversation, dest.conversation)
        status = event.get("DialStatus")
        if (
            status
            and status not in ("RINGING", "PROGRESS", "PROCEEDING")
            and dest.ring_ended_at is None
        ):
            dest.ring_ended_at = event.time

    def _on_bridge_create(self, event: AmiEvent) -> None:
        bridge = event.get("BridgeUniqueid")
        if bridge:
            self._bridges.setdefault(bridge, set())
            self._bridge_types[bridge] = event.get("BridgeType")

    def _on_bridge_enter(self, event: AmiEvent) -> None:
        channel = self._channel_for(event)
        bridge = event.get("BridgeUniqueid")
        if channel is None or not bridge:
            return
        self._leave_bridge(channel)
        bridge_type = event.get("BridgeType") or self._bridge_types.get(bridge, "")
        self._bridge_types[bridge] = bridge_type
        members = self._bridges.setdefault(bridge, set())
        if bridge_type == "basic":
            for uniqueid in list(members):
                other = self._channels.get(uniqueid)
                if other is not None:
                    self._merge(channel.conversation, other.conversation)
        members.add(channel.uniqueid)
        channel.bridge = bridge
        channel.conversation.bridges.add(bridge)
        if channel.rang_at is not None and channel.ring_ended_at is None:
            channel.ring_ended_at = event.time
        self._update_talk(channel.conversation, event.time)

    def _on_bridge_leave(self, event: AmiEvent) -> None:
        channel = self._channel_for(event)
        if channel is None:
            return
        if channel.bridge == event.get("BridgeUniqueid"):
            self._leave_bridge(channel)
            self._update_talk(channel.conversation, event.time)

    def _leave_bridge(self, channel: _Channel) -> None:
        bridge = channel.bridge
        if bridge is None:
            return
        channel.bridge = None
        members = self._bridges.get(bridge)
        if members is not None:
            members.discard(channel.uniqueid)
            if not members and bridge not in self._bridge_types:
                del self._bridges[bridge]

    def _on_blind_transfer(self, event: AmiEvent) -> None:
        transferer = self._channels.get(event.get("TransfererUniqueid"))
        transferee = self._channels.get(event.get("TransfereeUniqueid"))
        anchor = transferer or transferee
        if anchor is None:
            return
        if transferer is not None and transferee is not None:
            self._merge(transferer.conversation, transferee.conversation)
        conversation = anchor.conversation
        note = TransferNote(
            kind="blind",
            at=event.time,
            by=_extension(transferer),
            target=event.get("Extension") or None,
        )
        conversation.transfers.append(note)
        # ``Extension`` is what was dialled (a dialplan extension, a ring group): the
        # employee who answers next is the target, when someone does.
        conversation.pending_target = note
        self._hand_over(conversation, transferer, transferee, event.time)

    def _on_attended_transfer(self, event: AmiEvent) -> None:
        involved = [
            self._channels.get(event.get(key))
            for key in (
                "OrigTransfererUniqueid",
                "SecondTransfererUniqueid",
                "TransfereeUniqueid",
                "TransferTargetUniqueid",
            )
        ]
        present = [c for c in involved if c is not None]
        if not present:
            return
        conversation = present[0].conversation
        for channel in present[1:]:
            conversation = self._merge(conversation, channel.conversation)
        transferer = involved[0] or involved[1]
        target = involved[3]
        target_ext = _extension(target)
        if target is not None and target_ext is None:
            # The target is usually a Local channel: name the phone behind it. The
            # transferee may already share its bridge (a DTMF transfer merges the bridges
            # first): it is not the target, nor is the transferer.
            behind = set(self._reachable_phones([target])) - {
                _extension(c) for c in (involved[0], involved[1], involved[2])
            }
            target_ext = min(behind) if len(behind) == 1 else None
        # Blonde: completed before the target answered. A phone's REFER while the
        # consultation leg still dials hands the transferee to the Dial application
        # (``DestType: App``) or names a second transferer not yet up; a DTMF transfer
        # (features ``atxfer``) merges the bridges as for an attended one (``DestType:
        # Bridge``, the transferer's channel ``Up``) with the target still ``Ringing``
        # (bridge_basic.c, blond_enter).
        blonde = (
            (event.get("DestType") == "App" and event.get("DestApp") == "Dial")
            or event.get("SecondTransfererChannelStateDesc") not in ("", "Up")
            or event.get("TransferTargetChannelStateDesc") not in ("", "Up")
        )
        note = TransferNote(
            kind="blonde" if blonde else "attended",
            at=event.time,
            by=_extension(transferer),
            # Until someone answers: the extension the target channel was dialled to
            # (``Local/104@from-internal`` → ``104``), if the PBX names it.
            target=target_ext or event.get("TransferTargetExten") or None,
        )
        conversation.transfers.append(note)
        if target_ext is None:
            conversation.pending_target = note
        self._hand_over(conversation, involved[0], involved[2], event.time)

    def _on_pickup(self, event: AmiEvent) -> None:
        picker = self._channel_for(event)
        target = self._channels.get(event.get("TargetUniqueid"))
        if picker is None or target is None:
            return
        conversation = self._merge(picker.conversation, target.conversation)
        conversation.transfers.append(
            TransferNote(
                kind="pickup", at=event.time, by=_extension(picker), target=_extension(target)
            )
        )

    def _on_local_bridge(self, event: AmiEvent) -> None:
        one = self._channel_for(event, "LocalOne")
        two = self._channel_for(event, "LocalTwo")
        if one is None or two is None:
            return
        self._merge(one.conversation, two.conversation)
        if one.hungup_at is None and two.hungup_at is None:
            one.local_peer = two.uniqueid
            two.local_peer = one.uniqueid

    def _on_queue_event(self, event: AmiEvent) -> None:
        channel = self._channel_for(event)
        if channel is None:
            return
        queue = event.get("Queue")
        if queue:
            channel.conversation.queues[queue] = None
        if event.name in ("AgentCalled", "AgentConnect"):
            dest = self._channel_for(event, "Dest")
            if dest is not None:
                self._merge(channel.conversation, dest.conversation)

    def _on_varset(self, event: AmiEvent) -> None:
        channel = self._channel_for(event)
        if channel is None:
            return
        variable = event.get("Variable").lstrip("_")
        value = event.get("Value")
        if not value:
            return
        conversation = channel.conversation
        if variable == "MIXMONITOR_FILENAME":
            conversation.pending_filename[channel.uniqueid] = value
        elif variable in ("CALLFILENAME", "MONITOR_FILENAME"):
            conversation.recording_hints[value] = None

    def _on_mixmonitor_start(self, event: AmiEvent) -> None:
        channel = self._channel_for(event)
        if channel is None:
            return
        conversation = channel.conversation
        path = conversation.pending_filename.pop(channel.uniqueid, "")
        if path and path not in conversation.recordings:
            conversation.recordings[path] = RecordingPart(
                path=path, started_at=event.time, channel=channel.name
            )

    def _on_shutdown(self, event: AmiEvent) -> None:
        # close_all hands over what _out held and starts a new list: evaluating
        # ``self._out.extend`` before it ran would put the calls into the discarded one.
        finished = self.close_all(event.time)
        self._out.extend(finished)

    # -- who talks with whom ------------------------------------------------------------

    def _mark_rang(self, channel: _Channel, at: float) -> None:
        if channel.rang_at is None:
            channel.rang_at = at
        extension = _extension(channel)
        if extension is None:
            return
        conversation = channel.conversation
        if channel.kind is not ChannelKind.PHONE:
            conversation.rang_mobile.add(extension)
        if extension not in conversation.rang:
            conversation.rang[extension] = at

    def _origin(self, conversation: _Conversation) -> _Channel | None:
        """The channel that placed the call: pinned once known, else the oldest party that
        was not dialled."""
        if conversation.origin is not None:
            pinned = conversation.channels.get(conversation.origin)
            if pinned is not None:
                return pinned
        best: _Channel | None = None
        for channel in conversation.channels.values():
            if channel.kind is ChannelKind.TECHNICAL or channel.dialled:
                continue
            if best is None or (channel.created_at, channel.uniqueid) < (
                best.created_at,
                best.uniqueid,
            ):
                best = channel
        return best

    def _pin_origin(self, conversation: _Conversation, *, force: bool = False) -> None:
        """Settle who placed the call. ``force``: now, whatever is known (before a merge);
        otherwise once an employee answered (the call is established)."""
        if conversation.origin is not None or not (force or conversation.answered):
            return
        origin = self._origin(conversation) or self._first_rung_phone(conversation)
        if origin is not None:
            conversation.origin = origin.uniqueid

    def _hand_over(
        self,
        conversation: _Conversation,
        transferer: _Channel | None,
        transferee: _Channel | None,
        at: float,
    ) -> None:
        """A transfer made by the counterpart itself (the caller of an internal call, a
        customer with the PBX's transfer feature): the transferee takes its part, so that the
        transfer target talks with someone the conversation still counts after it leaves."""
        if transferer is None or transferee is None or transferee is transferer:
            return
        _, _, counterparts = self._shape(conversation)
        if transferer in counterparts and transferee.uniqueid not in conversation.heirs:
            conversation.heirs.append(transferee.uniqueid)
            self._update_talk(conversation, at)

    def _first_rung_phone(self, conversation: _Conversation) -> _Channel | None:
        best: _Channel | None = None
        for channel in conversation.channels.values():
            if (
                channel.kind is ChannelKind.PHONE
                and channel.rang_at is not None
                and (
                    best is None
                    or (channel.rang_at, channel.uniqueid) < (best.rang_at or 0.0, best.uniqueid)
                )
            ):
                best = channel
        return best

    def _shape(
        self, conversation: _Conversation
    ) -> tuple[Direction, _Channel | None, list[_Channel]]:
        """(direction, the placing phone if any, the counterpart channels).

        A trunk leg dialled to an employee's mobile is that employee, not a trunk. The
        transferees that took over from a transferring counterpart count as counterparts.
        """
        origin = self._origin(conversation)
        trunks = [
            c
            for c in conversation.channels.values()
            if c.kind is ChannelKind.TRUNK and not c.mobile_of
        ]
        heirs = [conversation.channels[h] for h in conversation.heirs if h in conversation.channels]
        if origin is not None and origin.kind is ChannelKind.TRUNK:
            return Direction.INCOMING, None, [origin, *heirs]
        placer = origin if origin is not None else self._first_rung_phone(conversation)
        if trunks:
            dialled = [t for t in trunks if t.dialled] or trunks
            return Direction.OUTGOING, placer, [*dialled, *heirs]
        own = [placer] if placer is not None else []
        return Direction.INTERNAL, placer, [*own, *heirs]

    def _update_talk(self, conversation: _Conversation, at: float | None = None) -> None:
        when = self._now if at is None else at
        _, _, counterparts = self._shape(conversation)
        reached = self._reachable_phones(counterparts, set(conversation.heirs))
        connected = conversation.connected
        for ext in [e for e in connected if e not in reached]:
            start = connected.pop(ext)
            mobile = ext in conversation.connected_mobile
            conversation.connected_mobile.discard(ext)
            conversation.legs.append(
                Leg(extension=ext, connected_at=start, disconnected_at=when, mobile=mobile)
            )
        for ext, mobile in reached.items():
            if ext not in connected:
                connected[ext] = when
                if mobile:
                    conversation.connected_mobile.add(ext)
                if ext not in conversation.answered:
                    conversation.answered[ext] = when
                    self._settle_target(conversation, ext)
        self._pin_origin(conversation)

    @staticmethod
    def _settle_target(conversation: _Conversation, extension: str) -> None:
        note = conversation.pending_target
        if note is None or note.by == extension:
            return
        conversation.pending_target = None
        for index, item in enumerate(conversation.transfers):
            if item is note:
                conversation.transfers[index] = replace(note, target=extension)
                return

    def _reachable_phones(
        self, counterparts: list[_Channel], heirs: set[str] | frozenset[str] = frozenset()
    ) -> dict[str, bool]:
        """Employees sharing audio with any counterpart channel, right now: extension →
        whether only through their mobile. A counterpart is not reached by itself, except an
        heir (a transferee), which talks when anyone else is in its audio."""
        if not counterparts:
            return {}
        seen: set[str] = set()
        start_ids = {c.uniqueid for c in counterparts if c.hungup_at is None}
        phones: dict[str, bool] = {}
        channels = self._channels
        for start in counterparts:
            if start.hungup_at is not None or start.uniqueid in seen:
                continue
            component: list[_Channel] = []
            stack = [start]
            while stack:
                channel = stack.pop()
                if channel.uniqueid in seen:
                    continue
                seen.add(channel.uniqueid)
                component.append(channel)
                neighbours: Iterable[str] = ()
                if channel.bridge is not None:
                    neighbours = self._bridges.get(channel.bridge, ())
                for uniqueid in neighbours:
                    if uniqueid not in seen:
                        other = channels.get(uniqueid)
                        if other is not None and other.hungup_at is None:
                            stack.append(other)
                if channel.local_peer is not None and channel.local_peer not in seen:
                    peer = channels.get(channel.local_peer)
                    if peer is not None and peer.hungup_at is None:
                        stack.append(peer)
            parties = [c for c in component if c.kind is not ChannelKind.TECHNICAL]
            for channel in component:
                extension = _extension(channel)
                if extension is None:
                    continue
                if channel.uniqueid in start_ids and (
                    channel.uniqueid not in heirs or len(parties) < 2
                ):
                    continue
                mobile = channel.kind is not ChannelKind.PHONE
                phones[extension] = phones.get(extension, True) and mobile
        return phones

    # -- finishing ---------------------------------------------------------------------

    def _close(
        self, conversation: _Conversation, *, end: float | None = None
    ) -> list[FinishedCall]:
        """Finish a conversation; one made only of plumbing (a Local pair of an Originate
        that led nowhere) is forgotten instead: it would be a ghost row."""
        if all(c.kind is ChannelKind.TECHNICAL for c in conversation.channels.values()):
            self._forget(conversation)
            self._gone.add(conversation.key)  # no row will replace a state saved meanwhile
            self.stats.ghosts_dropped += 1
            return []
        if self.keep_finished:
            self._finishing[conversation.key] = _export(conversation, self._bridge_types)
            self._finishing_unsent.add(conversation.key)
        return [self._finish(conversation, end=end)]

    def _finish(self, conversation: _Conversation, *, end: float | None = None) -> FinishedCall:
        channels = list(conversation.channels.values())
        hangups = [c.hungup_at for c in channels if c.hungup_at is not None]
        ended_at = (
            end if end is not None else (max(hangups) if hangups else conversation.last_event_at)
        )
        # Close the legs still open (an expired conversation).
        for ext, start in conversation.connected.items():
            conversation.legs.append(
                Leg(
                    extension=ext,
                    connected_at=start,
                    disconnected_at=ended_at,
                    mobile=ext in conversation.connected_mobile,
                )
            )
        conversation.connected = {}
        conversation.connected_mobile = set()
        direction, placer, counterparts = self._shape(conversation)
        legs = sorted(conversation.legs, key=lambda leg: (leg.connected_at, leg.extension))
        answered_order = sorted(conversation.answered.items(), key=lambda item: item[1])
        answered_at = answered_order[0][1] if answered_order else None
        talk_end = max((leg.disconnected_at for leg in legs), default=ended_at)
        talk_seconds = max(0.0, talk_end - answered_at) if answered_at is not None else 0.0
        if answered_at is not None:
            ring_seconds = answered_at - conversation.started_at
        else:
            ring_ends = [
                c.ring_ended_at if c.ring_ended_at is not None else ended_at
                for c in channels
                if c.rang_at is not None and c.kind is not ChannelKind.TECHNICAL
            ]
            ring_seconds = (max(ring_ends) if ring_ends else ended_at) - conversation.started_at
        participants = self._participants(conversation, placer, answered_order, legs)
        external = self._external_number(direction, counterparts)
        did = None
        if direction is Direction.INCOMING and counterparts:
            did = counterparts[0].exten or None
        finished = FinishedCall(
            conversation_id=conversation.key,
            linkedids=tuple(sorted(conversation.linkedids)),
            started_at=conversation.started_at,
            answered_at=answered_at,
            ended_at=ended_at,
            approximate_end=conversation.approximate_end or _ended_unseen(channels),
            direction=direction,
            external_number=external,
            did=did,
            answered=answered_at is not None,
            participants=participants,
            legs=tuple(legs),
            ring_seconds=round(max(0.0, ring_seconds), 3),
            talk_seconds=round(talk_seconds, 3),
            recordings=tuple(sorted(conversation.recordings.values(), key=lambda p: p.started_at)),
            recording_hints=tuple(conversation.recording_hints),
            queues=tuple(conversation.queues),
            transfers=tuple(conversation.transfers),
            number_withheld=(
                direction is Direction.INCOMING and bool(counterparts) and counterparts[0].withheld
            ),
        )
        self._forget(conversation)
        self.stats.conversations_finished += 1
        return finished

    def _participants(
        self,
        conversation: _Conversation,
        placer: _Channel | None,
        answered_order: list[tuple[str, float]],
        legs: list[Leg],
    ) -> tuple[Participant, ...]:
        talk: dict[str, float] = {}
        talked_on_mobile: set[str] = set()
        for leg in legs:
            talk[leg.extension] = talk.get(leg.extension, 0.0) + (
                leg.disconnected_at - leg.connected_at
            )
            if leg.mobile:
                talked_on_mobile.add(leg.extension)
        answered = dict(answered_order)
        order: list[str] = []
        if placer is not None and placer.kind is ChannelKind.PHONE:
            order.append(placer.endpoint)
        order.extend(ext for ext, _ in answered_order if ext not in order)
        order.extend(ext for ext in conversation.rang if ext not in order)
        placed_ext = (
            placer.endpoint if placer is not None and placer.kind is ChannelKind.PHONE else None
        )
        result = []
        for ext in order:
            placed = ext == placed_ext
            answered_at = answered.get(ext)
            if placed:
                role = Role.PLACED
            elif answered_at is not None:
                role = Role.ANSWERED
            else:
                role = Role.RANG
            result.append(
                Participant(
                    extension=ext,
                    role=role,
                    placed=placed,
                    rang=ext in conversation.rang,
                    answered_at=answered_at,
                    rang_at=conversation.rang.get(ext),
                    talk_seconds=round(talk.get(ext, 0.0), 3),
                    mobile=(
                        ext in talked_on_mobile
                        if answered_at is not None
                        else ext in conversation.rang_mobile
                    ),
                )
            )
        return tuple(result)

    @staticmethod
    def _external_number(direction: Direction, counterparts: list[_Channel]) -> str | None:
        if direction is Direction.INTERNAL or not counterparts:
            return None
        trunk = counterparts[0]
        if direction is Direction.INCOMING:
            return trunk.caller_num or None
        number = _number_from_dial_string(trunk.dial_string)
        return number or trunk.caller_num or trunk.exten or None

    def _forget(self, conversation: _Conversation) -> None:
        touched = conversation.bridges
        for uniqueid, channel in conversation.channels.items():
            self._channels.pop(uniqueid, None)
            if channel.bridge is not None:
                touched.add(channel.bridge)
                self._leave_bridge(channel)
            self._finished_ids[uniqueid] = None
        while len(self._finished_ids) > _RECENTLY_FINISHED:
            self._finished_ids.popitem(last=False)
        for linkedid in conversation.linkedids:
            if self._by_linkedid.get(linkedid) is conversation:
                del self._by_linkedid[linkedid]
        self._conversations.pop(conversation.key, None)
        self._dirty.discard(conversation.key)
        self._new.discard(conversation.key)
        # Bridges emptied by this conversation and never destroyed must not pile up: those
        # its channels entered now, every empty one now and then (a restored conversation
        # does not know its past bridges; a bridge nobody entered). A sweep per conversation
        # would cost as many steps as there are live bridges, for every call.
        self._forgotten += 1
        if self._forgotten % _BRIDGE_SWEEP_EVERY == 0:
            touched = {b for b, members in self._bridges.items() if not members}
        for bridge in touched:
            if not self._bridges.get(bridge, True):
                del self._bridges[bridge]
                self._bridge_types.pop(bridge, None)
        # Its channels point back to it: without them it is freed at once, not by the
        # cycle collector (whose full passes over thousands of open conversations stall
        # the event loop for tens of milliseconds).
        conversation.channels.clear()


def _ended_unseen(channels: list[_Channel]) -> bool:
    """Whether the last channel to end vanished rather than hung up before our eyes."""
    ended = [c for c in channels if c.hungup_at is not None]
    if not ended:
        return False
    last = max(ended, key=lambda c: (c.hungup_at or 0.0, c.hangup_approximate))
    return last.hangup_approximate


def _duration_seconds(text: str) -> float:
    """``HH:MM:SS`` (CoreShowChannel's Duration) → seconds; 0 when unreadable."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        return 0.0
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return float(max(0, seconds))


def _extension(channel: _Channel | None) -> str | None:
    """The employee a channel is: a phone's extension, a mobile leg's owner, else None."""
    if channel is None:
        return None
    if channel.kind is ChannelKind.PHONE:
        return channel.endpoint
    return channel.mobile_of or None


def _digits_only(number: str) -> str | None:
    digits = "".join(ch for ch in number if ch.isdigit())
    return digits or None


#: ``CID-CallingPres``/``CallerIDNumPres`` value: presentation is bits 5–6 (``0x60``);
#: ``0x20`` is "prohibited" (``33 (Presentation Prohibited, Passed Screen)``).
_PRESENTATION_HEADERS = ("CID-CallingPres", "CallerIDNumPres", "CallerIDPres")


def _presentation_prohibited(event: AmiEvent) -> bool:
    for header in _PRESENTATION_HEADERS:
        value = event.get(header)
        if not value:
            continue
        if "prohibited" in value.lower():
            return True
        head = value.split(maxsplit=1)[0]
        if head.isdigit() and int(head) & 0x60 == 0x20:
            return True
    return False


_DIGITS = re.compile(r"\+?\d[\d\-\s()]*")


def _number_from_dial_string(dial_string: str) -> str:
    """``provider/79031234567`` or ``79031234567@provider`` → ``79031234567``."""
    if not dial_string:
        return ""
    text = dial_string.split(",", 1)[0]
    if "@" in text:
        text = text.split("@", 1)[0]
        text = text.rsplit("/", 1)[-1]
        text = text.removeprefix("sip:").removeprefix("tel:")
    elif "/" in text:
        text = text.rsplit("/", 1)[1]
    match = _DIGITS.fullmatch(text.strip())
    return match.group(0) if match else ""


_STATE_VERSION = 1
_CHANNEL_FIELDS = (
    "uniqueid",
    "name",
    "endpoint",
    "created_at",
    "linkedid",
    "caller_num",
    "exten",
    "state",
    "dialled",
    "dial_string",
    "rang_at",
    "ring_ended_at",
    "bridge",
    "local_peer",
    "hungup_at",
    "hangup_approximate",
    "mobile_of",
    "withheld",
)
#: Channel fields added after version 1 of the saved state, with their value when absent.
_LATER_CHANNEL_FIELDS: dict[str, Any] = {"mobile_of": "", "withheld": False}


def _export(conversation: _Conversation, bridge_types: Mapping[str, str]) -> dict[str, Any]:
    """A JSON-ready picture of an open conversation (see :meth:`CallAssembler.restore`)."""
    channels = []
    for channel in conversation.channels.values():
        item: dict[str, Any] = {name: getattr(channel, name) for name in _CHANNEL_FIELDS}
        item["kind"] = channel.kind.value
        channels.append(item)
    bridges = {
        c.bridge: bridge_types.get(c.bridge, "") for c in conversation.channels.values() if c.bridge
    }
    return {
        "v": _STATE_VERSION,
        "key": conversation.key,
        "started_at": conversation.started_at,
        "last_event_at": conversation.last_event_at,
        "linkedids": sorted(conversation.linkedids),
        "channels": channels,
        "bridges": bridges,
        "rang": conversation.rang,
        "answered": conversation.answered,
        "connected": conversation.connected,
        "legs": [
            [leg.extension, leg.connected_at, leg.disconnected_at, leg.mobile]
            for leg in conversation.legs
        ],
        "recordings": [[p.path, p.started_at, p.channel] for p in conversation.recordings.values()],
        "recording_hints": list(conversation.recording_hints),
        "pending_filename": conversation.pending_filename,
        "queues": list(conversation.queues),
        "transfers": [[t.kind, t.at, t.by, t.target] for t in conversation.transfers],
        "open_channels": conversation.open_channels,
        "approximate_end": conversation.approximate_end,
        "origin": conversation.origin,
        "heirs": list(conversation.heirs),
        "connected_mobile": sorted(conversation.connected_mobile),
        "rang_mobile": sorted(conversation.rang_mobile),
        "pending_target": (
            conversation.transfers.index(conversation.pending_target)
            if conversation.pending_target in conversation.transfers
            else None
        ),
    }


def _import(state: Mapping[str, Any]) -> tuple[_Conversation, dict[str, str]]:
    if state.get("v") != _STATE_VERSION:
        raise ValueError(f"unknown state version {state.get('v')!r}")
    conversation = _Conversation(key=str(state["key"]), started_at=float(state["started_at"]))
    conversation.last_event_at = float(state["last_event_at"])
    conversation.linkedids = {str(x) for x in state["linkedids"]}
    for item in state["channels"]:
        fields = {
            name: item[name] if name not in _LATER_CHANNEL_FIELDS else item.get(name, default)
            for name in _CHANNEL_FIELDS
            for default in (_LATER_CHANNEL_FIELDS.get(name),)
        }
        channel = _Channel(kind=ChannelKind(item["kind"]), conversation=conversation, **fields)
        conversation.channels[channel.uniqueid] = channel
    conversation.rang = {str(k): float(v) for k, v in state["rang"].items()}
    conversation.answered = {str(k): float(v) for k, v in state["answered"].items()}
    conversation.connected = {str(k): float(v) for k, v in state["connected"].items()}
    conversation.legs = [
        Leg(str(leg[0]), float(leg[1]), float(leg[2]), bool(leg[3]) if len(leg) > 3 else False)
        for leg in state["legs"]
    ]
    conversation.recordings = {
        str(path): RecordingPart(str(path), float(at), str(name))
        for path, at, name in state["recordings"]
    }
    conversation.recording_hints = dict.fromkeys(str(h) for h in state["recording_hints"])
    conversation.pending_filename = {str(k): str(v) for k, v in state["pending_filename"].items()}
    conversation.queues = dict.fromkeys(str(q) for q in state["queues"])
    conversation.transfers = [
        TransferNote(str(kind), float(at), by, target)
        for kind, at, by, target in state["transfers"]
    ]
    conversation.open_channels = int(state["open_channels"])
    conversation.approximate_end = bool(state["approximate_end"])
    # Saved by an earlier version without them: nothing pinned, nobody handed over.
    origin = state.get("origin")
    conversation.origin = str(origin) if origin is not None else None
    conversation.heirs = [str(h) for h in state.get("heirs", ())]
    conversation.connected_mobile = {str(e) for e in state.get("connected_mobile", ())}
    conversation.rang_mobile = {str(e) for e in state.get("rang_mobile", ())}
    pending = state.get("pending_target")
    if isinstance(pending, int) and 0 <= pending < len(conversation.transfers):
        conversation.pending_target = conversation.transfers[pending]
    return conversation, {str(k): str(v) for k, v in state["bridges"].items()}
