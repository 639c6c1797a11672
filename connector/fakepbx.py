"""A fake Asterisk: a real AMI TCP server that replays captures, for demos and tests.

Theory of operation
-------------------
:class:`FakePbx` loads captures into one stream of messages, dropping what belonged to the
capturing session rather than to the PBX: the banner, the responses (the captured login
answer) and ``FullyBooted`` (which Asterisk sends to each session on login; the fake sends
its own). Each message keeps a pace time, from the recvlog (the read that completed it) or
else from its ``Timestamp`` header.

A client gets the banner and may ``Login`` (checked against ``username``/``secret`` when
given; a mismatch is answered ``Authentication failed`` and the connection closed), then
receives ``FullyBooted`` with an ``Uptime`` and, from then on, the stream. It may ``Ping``,
``CoreShowChannels`` (the channels alive at the current point of the stream, tracked from
the events already streamed; a dialled channel shows ``AppDial`` as Asterisk does), ``Status``
with ``Variables`` (the last value of each variable set on each channel) and ``Logoff``;
``Originate`` when it was given a click-to-call capture (:mod:`connector.fakeoriginate`:
``Response: Success`` at once for ``Async: true``, then that capture's events rewritten for the
requested employee and number, paced like the stream, ending in ``OriginateResponse``);
anything else is an unknown command.

One streamer task walks the stream for the whole server, so its position never goes back.
It starts at the first login. Between two messages it waits their recorded gap divided by
``speed`` (gaps under a couple of milliseconds add up and are waited at once, so that a dense
stream keeps its pace); with ``speed=0`` there is no clock and it writes as fast as the socket
drains — one write per message, or with ``batch_bytes`` in pieces of that size (for
benchmarks). With ``loop`` the stream starts over when it ends; each lap after the first
renames the channels' ids (every ``…Uniqueid``/``…Linkedid`` header gets ``-<lap>``, see
:func:`lap_id`), because Asterisk never hands out an id twice: replayed as captured, the
second lap's calls would be the first lap's calls written again, not new calls.

Disconnects behave like a real PBX: nothing is ever re-sent. What was written to a
connection that :meth:`FakePbx.drop` aborted is lost with it. While nobody is logged in, the
stream keeps its clock at ``speed > 0`` and the messages that fall due are lost (counted in
``events_lost``); at ``speed=0`` there is no clock to keep, so the stream waits for the next
login. A captured ``Shutdown`` is sent, every connection closed, and the PBX "restarts": its
channels are forgotten, its uptime starts again from 0, and the stream waits for the next
login to continue after the Shutdown (capture 00 then plays as two sessions).

For tests: :attr:`FakePbx.ignore_actions` names actions that get no answer (a stalled PBX),
:attr:`FakePbx.originate_error` makes ``Originate`` fail as Asterisk refuses it
(``Response: Error`` with that message, e.g. ``Permission denied``),
:attr:`FakePbx.unanswered_extensions` are phones that ring out an originate unanswered,
:meth:`FakePbx.hold_when` pauses the stream after a given message,
:meth:`FakePbx.discard_until` loses messages as an outage would, :meth:`FakePbx.crash` kills
the PBX without a ``Shutdown``, :meth:`FakePbx.inject`
writes arbitrary bytes (malformed messages) to the clients, and ``chunker`` splits
each message written into pieces (to cut multi-byte characters between TCP reads). For
benchmarks, :attr:`FakePbx.on_sent` is told of each stream message once it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from connector.capture import iter_capture_messages
from connector.events import AmiMessage, MalformedMessage, MessageFramer, parse_message
from connector.fakeoriginate import SNAPSHOT_KEYS, ClickToCall, OriginateRequest, TemplateMessage

__all__ = ["BANNER", "FakePbx"]

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


Chunker = Callable[[bytes], Iterable[bytes]]

#: Pacing at ``speed > 0``: gaps are slept once they add up to this much...
_MIN_SLEEP = 0.002
#: ...and at most this much oversleeping is made up by sending without a pause (the
#: default of ``max_catch_up``).
_MAX_CATCH_UP = 0.05


@dataclass(frozen=True, slots=True)
class _StreamItem:
    """One message of the stream: pace time, bytes (without the blank line), parsed form."""

    at: float | None
    capture: int
    raw: bytes
    message: AmiMessage | None
    #: The captured ``Timestamp`` and where its value sits in ``raw`` (None: no stamp).
    stamp: float | None = None
    stamp_span: tuple[int, int] | None = None

    @property
    def event(self) -> str:
        return self.message.event if self.message is not None else ""


@dataclass(slots=True)
class _Channel:
    fields: dict[str, str]
    created: float | None
    application: str = ""
    application_data: str = ""
    bridge_id: str = ""
    variables: dict[str, str] = field(default_factory=dict)


def lap_id(key: str, value: str, lap: int) -> str:
    """A channel's or bridge's id as the ``lap``-th replay of the stream sends it (lap 0: as
    captured); other headers, empty ids and ``none`` are kept."""
    if lap == 0 or not value or value == "none":
        return value
    if not key.lower().endswith(("uniqueid", "linkedid")):
        return value
    return f"{value}-{lap}"


def _lap_message(raw: bytes, lap: int) -> bytes:
    """``raw`` with every id header renamed for ``lap`` (:func:`lap_id`)."""
    lines = raw.split(b"\r\n")
    for index, line in enumerate(lines):
        key, sep, value = line.partition(b": ")
        if sep and key.lower().endswith((b"uniqueid", b"linkedid")):
            renamed = lap_id(key.decode("latin-1"), value.decode("latin-1"), lap)
            lines[index] = key + sep + renamed.encode("latin-1")
    return b"\r\n".join(lines)


def _load_stream(captures: Sequence[Path]) -> list[_StreamItem]:
    items: list[_StreamItem] = []
    for index, path in enumerate(captures):
        previous_at: float | None = None
        for captured in iter_capture_messages(Path(path)):
            raw = captured.raw
            if raw.startswith(b"Response:"):
                continue  # the capturing session's login answer
            try:
                message: AmiMessage | None = parse_message(raw)
            except MalformedMessage:
                message = None
            if message is not None and message.event == "FullyBooted":
                continue  # sent by the fake itself after each login
            at = captured.receive_time
            if at is None and message is not None:
                at = _float_or_none(message.first("Timestamp"))
            if at is None:
                at = previous_at
            previous_at = at
            stamp, span = _stamp_of(raw)
            items.append(_StreamItem(at, index, raw, message, stamp, span))
    return items


_STAMP = re.compile(rb"(?:^|\r\n)Timestamp: *([0-9]+(?:\.[0-9]*)?) *(?=\r\n|$)")


def _stamp_of(raw: bytes) -> tuple[float | None, tuple[int, int] | None]:
    """A message's ``Timestamp`` value and its place in the bytes."""
    match = _STAMP.search(raw)
    if match is None:
        return None, None
    return float(match.group(1)), match.span(1)


def _first_stamps(items: Sequence[_StreamItem]) -> dict[int, float]:
    """Each capture's first ``Timestamp``."""
    first: dict[int, float] = {}
    for item in items:
        if item.stamp is not None:
            first.setdefault(item.capture, item.stamp)
    return first


def _gap(previous: _StreamItem | None, item: _StreamItem) -> float:
    """Recorded seconds between two messages of one capture; 0 across captures."""
    if previous is None or previous.capture != item.capture:
        return 0.0
    if previous.at is None or item.at is None:
        return 0.0
    return max(0.0, item.at - previous.at)


def _float_or_none(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _header(message: AmiMessage, key: str) -> str:
    """A header of an incoming action; Asterisk compares header names case-insensitively."""
    wanted = key.lower()
    for name, value in message.headers:
        if name.lower() == wanted:
            return value
    return ""


def _format(headers: Iterable[tuple[str, str]]) -> bytes:
    return "".join(f"{key}: {value}\r\n" for key, value in headers).encode() + b"\r\n"


class _Client:
    """One TCP connection to the fake; writes are serialised so pieces never interleave."""

    def __init__(self, writer: asyncio.StreamWriter, chunker: Chunker | None) -> None:
        self.writer = writer
        self.chunker = chunker
        self.logged_in = False
        self.lock = asyncio.Lock()

    @property
    def gone(self) -> bool:
        return self.writer.is_closing()

    async def send(self, data: bytes) -> bool:
        """Write one message; False when the connection is gone."""
        async with self.lock:
            if self.gone:
                return False
            try:
                if self.chunker is None:
                    self.writer.write(data)
                    await self.writer.drain()
                else:
                    for piece in self.chunker(data):
                        self.writer.write(piece)
                        await self.writer.drain()
                        await asyncio.sleep(0)  # let the reader see this piece alone
            except ConnectionError:
                return False
            return not self.gone

    def abort(self) -> None:
        self.writer.transport.abort()


class FakePbx:
    """An AMI server replaying captures; see the module docstring."""

    def __init__(
        self,
        captures: Sequence[Path],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str | None = None,
        secret: str | None = None,
        speed: float = 1.0,
        loop: bool = False,
        boot_uptime: float = 3600.0,
        chunker: Chunker | None = None,
        batch_bytes: int = 0,
        max_catch_up: float = _MAX_CATCH_UP,
        keep_time: bool = False,
        clock_offset: float = 0.0,
        click_to_call: Path | ClickToCall | None = None,
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        if batch_bytes < 0:
            raise ValueError(f"batch_bytes must be >= 0, got {batch_bytes}")
        if max_catch_up < 0:
            raise ValueError(f"max_catch_up must be >= 0, got {max_catch_up}")
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.speed = speed
        self.loop = loop
        self.chunker = chunker
        #: At ``speed=0`` without a chunker: write the stream in pieces of about this many
        #: bytes rather than one write per message (0: per message). A benchmark needs it:
        #: one system call per message caps this fake far below what a real Asterisk sends.
        self.batch_bytes = batch_bytes
        #: Seconds of oversleeping (a loaded machine) the stream makes up by sending without
        #: a pause. Small by default, so that a stall does not end in a burst; a benchmark that
        #: needs the PBX's clock (the events' ``Timestamp``) to keep up with the wall clock
        #: raises it.
        self.max_catch_up = max_catch_up
        #: Send the captured ``Timestamp``s as they are, rather than on a clock that starts
        #: when the stream does (today's time).
        self.keep_time = keep_time
        #: Seconds the fake PBX's clock is ahead of the host's (negative: behind); not with
        #: ``keep_time``.
        self.clock_offset = clock_offset
        #: Called with each stream message right after it was handed to the clients' sockets
        #: (with ``batch_bytes``: when its piece was), or lost while nobody listened; a
        #: benchmark notes there when the PBX "sent" an event. Must be quick.
        self.on_sent: Callable[[AmiMessage], None] | None = None
        self._batch: list[bytes] = []
        self._batch_messages: list[AmiMessage] = []
        self._batch_size = 0
        #: Lower-case action names the fake reads and never answers.
        self.ignore_actions: set[str] = set()
        #: The click-to-call ``Originate`` replays (None: ``Originate`` is an unknown command).
        self.click_to_call = (
            ClickToCall.from_capture(click_to_call)
            if isinstance(click_to_call, Path)
            else click_to_call
        )
        #: ``Originate`` is answered ``Response: Error`` with this message (None: accepted).
        self.originate_error: str | None = None
        #: Extensions whose phone rings out an originate without anybody picking up.
        self.unanswered_extensions: set[str] = set()
        #: Every originate accepted, in order.
        self.originates: list[OriginateRequest] = []
        self._originate_tasks: set[asyncio.Task[None]] = set()
        #: Every action received, in order, across connections.
        self.actions_received: list[AmiMessage] = []
        self.connections = 0
        self.logins = 0
        self.events_sent = 0
        self.events_lost = 0
        self._items = _load_stream(captures)
        self._position = 0
        #: How many times the stream started over (``loop``): ids are renamed for it.
        self._lap = 0
        self._channels: dict[str, _Channel] = {}
        self._stream_time: float | None = None
        #: The PBX's time when the stream started (fixed at the first need: a login).
        self._origin: float | None = None
        #: Recorded seconds streamed so far (the sum of the gaps), across captures and loops.
        self._stream_pos = 0.0
        #: Seconds added to the current capture's ``Timestamp``s, and the steps of the PBX's
        #: clock made by :meth:`step_clock` (kept across captures).
        self._shift = 0.0
        self._stepped = 0.0
        self._first_stamps = _first_stamps(self._items)
        #: When (loop time) the last paced message was due; None: the next starts afresh.
        self._due: float | None = None
        # The fake claims to have booted ``boot_uptime`` seconds before it started.
        self._boot_time = time.monotonic() - boot_uptime
        self._clients: set[_Client] = set()
        self._client_tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._streamer: asyncio.Task[None] | None = None
        self._logged_in = asyncio.Event()
        self._restarting = False
        self._started_stream = False
        self._released = asyncio.Event()
        self._released.set()
        self._held = asyncio.Event()
        self._hold_predicate: Callable[[AmiMessage], bool] | None = None
        self._discard_predicate: Callable[[AmiMessage], bool] | None = None
        self._hold_after_discard = False
        self._done = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> int:
        """Listen; return the bound port."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._streamer = asyncio.create_task(self._run_stream(), name="fakepbx-stream")
        return self.port

    async def wait_done(self) -> None:
        """Wait until every capture has been streamed once."""
        await self._done.wait()

    async def close(self, *, grace: float = 1.0) -> None:
        """Stop streaming and close every connection, letting written data reach the
        clients for up to ``grace`` seconds before aborting."""
        if self._server is not None:
            self._server.close()
        if self._streamer is not None:
            self._streamer.cancel()
            await asyncio.gather(self._streamer, return_exceptions=True)
        for task in list(self._originate_tasks):
            task.cancel()
        await asyncio.gather(*self._originate_tasks, return_exceptions=True)
        for client in list(self._clients):
            client.writer.close()  # flushes what is buffered, then closes
        clients = list(self._client_tasks)
        if clients:
            await asyncio.wait(clients, timeout=grace)
        for client in list(self._clients):
            client.abort()
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def drop(self) -> None:
        """Abort every client connection, as a network failure would."""
        for client in list(self._clients):
            client.logged_in = False
            client.abort()
        self._logged_in.clear()

    # -- test controls ---------------------------------------------------------------

    @property
    def position(self) -> int:
        """Index of the next stream message."""
        return self._position

    @property
    def stream_length(self) -> int:
        return len(self._items)

    def hold_when(self, predicate: Callable[[AmiMessage], bool]) -> None:
        """Pause the stream right after the next message matching ``predicate`` is sent."""
        self._hold_predicate = predicate

    def discard_until(
        self, predicate: Callable[[AmiMessage], bool], *, then_hold: bool = False
    ) -> None:
        """Lose the stream's messages up to and including the next one matching ``predicate``.

        The PBX lives on (its channels change as the messages say) but nobody hears it, as
        during a network outage; the messages are counted in ``events_lost``. With
        ``then_hold`` the stream pauses afterwards (until :meth:`release`), so that a test can
        look at the PBX as the outage left it.
        """
        self._discard_predicate = predicate
        self._hold_after_discard = then_hold

    def crash(self) -> None:
        """Asterisk dies without a word: connections drop, channels vanish, uptime restarts."""
        self.drop()
        self._channels.clear()
        self._boot_time = time.monotonic()

    def step_clock(self, seconds: float) -> None:
        """Step the PBX's clock by ``seconds`` (NTP, ``date -s``): every ``Timestamp`` from
        the next message on is that much later (earlier, when negative)."""
        self._stepped += seconds
        self._shift += seconds

    def hold(self) -> None:
        """Pause the stream before its next message."""
        self._released.clear()
        self._held.set()

    def release(self) -> None:
        self._held.clear()
        self._released.set()

    async def wait_held(self) -> None:
        await self._held.wait()

    async def inject(self, data: bytes) -> int:
        """Write ``data`` verbatim to every logged-in client; return how many took it."""
        delivered = 0
        for client in self._listeners():
            delivered += await client.send(data)
        return delivered

    # -- the stream ------------------------------------------------------------------

    async def _run_stream(self) -> None:
        previous: _StreamItem | None = None
        while True:
            if self._position >= len(self._items):
                await self._flush()
                self._done.set()
                if not self.loop or not self._items:
                    return
                self._position = 0
                self._lap += 1
                self._channels.clear()
                previous = None
            if not self._released.is_set():
                await self._flush()
                await self._released.wait()
                self._due = None  # a hold is not lag to make up
            if self._discard_predicate is not None:
                item = self._items[self._position]
                self._position += 1
                self._advance(previous, item)
                previous = item
                self.events_lost += 1
                self._track(item)
                if item.message is not None and self._discard_predicate(item.message):
                    self._discard_predicate = None
                    if self._hold_after_discard:
                        self.hold()
                continue
            if self.speed == 0 or self._restarting or not self._started_stream:
                if not self._listeners():
                    await self._flush()
                while not self._listeners():
                    self._logged_in.clear()
                    await self._logged_in.wait()
                    self._due = None  # nor is the wait for a client
                self._started_stream = True
            item = self._items[self._position]
            gap = _gap(previous, item)
            if self.speed > 0 and gap > 0:
                await self._pace(gap / self.speed)
            self._advance(previous, item)
            previous = item
            self._position += 1
            await self._broadcast(item)
            self._track(item)
            if item.event == "Shutdown":
                await self._flush()
                await self._restart()
            elif (
                self._hold_predicate is not None
                and item.message is not None
                and self._hold_predicate(item.message)
            ):
                self._hold_predicate = None
                self.hold()

    def _advance(self, previous: _StreamItem | None, item: _StreamItem) -> None:
        """Move the stream's clock to ``item``: a capture that begins continues the clock
        where the stream is (so captures recorded hours apart play as one day's calls)."""
        self._stream_pos += _gap(previous, item)
        if self.keep_time or (previous is not None and previous.capture == item.capture):
            return
        first = self._first_stamps.get(item.capture)
        if first is not None:
            self._shift = self._clock_origin() + self._stream_pos - first + self._stepped

    def _clock_origin(self) -> float:
        if self._origin is None:
            self._origin = time.time() + self.clock_offset
        return self._origin

    def _wire(self, item: _StreamItem) -> bytes:
        """The message as sent: its ``Timestamp`` on the fake PBX's clock, its ids renamed
        for the lap (:func:`lap_id`)."""
        raw = item.raw
        span = item.stamp_span
        if (
            span is not None
            and item.stamp is not None
            and not (self.keep_time and not self._stepped)
        ):
            stamp = f"{item.stamp + self._shift:.6f}".encode()
            raw = raw[: span[0]] + stamp + raw[span[1] :]
        return _lap_message(raw, self._lap) if self._lap else raw

    async def _pace(self, seconds: float) -> None:
        """Wait out a gap of the stream against a schedule: a message is due ``seconds``
        after the previous one was due, not after it was sent, so the time spent sending is
        not added to every gap (it was: 30 µs a message put the stream 2 s behind in a
        minute of 1,200 messages a second). A timer cannot sleep much less than a
        millisecond, so sub-millisecond gaps wait together. Falling behind (a loaded
        machine) is made up by sending without a pause, up to ``max_catch_up`` seconds;
        beyond that the schedule moves."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = (now if self._due is None else self._due) + seconds
        if now - due > self.max_catch_up:
            due = now - self.max_catch_up
        self._due = due
        if due - now >= _MIN_SLEEP:
            await asyncio.sleep(due - now)

    def _listeners(self) -> list[_Client]:
        return [c for c in self._clients if c.logged_in and not c.gone]

    async def _broadcast(self, item: _StreamItem) -> None:
        data = self._wire(item) + b"\r\n\r\n"
        if self.batch_bytes and self.speed == 0 and self.chunker is None:
            # Held back until the batch is full or the streamer is about to wait: every
            # place where other tasks could run is preceded by a flush, so they never see
            # the stream and the PBX's state disagree.
            self._batch.append(data)
            self._batch_size += len(data)
            if self.on_sent is not None and item.message is not None:
                self._batch_messages.append(item.message)
            if self._batch_size >= self.batch_bytes:
                await self._flush()
            return
        await self._send_stream(data, 1)
        if self.on_sent is not None and item.message is not None:
            self.on_sent(item.message)

    async def _flush(self) -> None:
        if not self._batch:
            return
        data = b"".join(self._batch)
        count = len(self._batch)
        self._batch = []
        self._batch_size = 0
        await self._send_stream(data, count)
        messages, self._batch_messages = self._batch_messages, []
        if self.on_sent is not None:
            for message in messages:
                self.on_sent(message)

    async def _send_stream(self, data: bytes, count: int) -> None:
        delivered = False
        for client in self._listeners():
            delivered = await client.send(data) or delivered
        if delivered:
            self.events_sent += count
        else:
            self.events_lost += count

    async def _restart(self) -> None:
        """After a Shutdown: close every connection gracefully, forget the channels."""
        for client in list(self._clients):
            client.logged_in = False
            async with client.lock:
                client.writer.close()
        self._logged_in.clear()
        self._channels.clear()
        self._restarting = True
        self._boot_time = time.monotonic()

    def _track(self, item: _StreamItem) -> None:
        """Follow channels through the stream, for CoreShowChannels."""
        message = item.message
        if message is None:
            return
        stamp = _float_or_none(message.first("Timestamp"))
        now = stamp if stamp is not None else item.at
        if now is not None:
            self._stream_time = now
        name = message.event
        lap = self._lap

        def first(key: str, default: str = "") -> str:
            return lap_id(key, message.first(key, default), lap)

        uniqueid = first("Uniqueid")
        if not uniqueid:
            return
        if name == "Newchannel":
            fields = {key: first(key) for key in SNAPSHOT_KEYS}
            self._channels[uniqueid] = _Channel(fields, now)
            return
        if name in ("DialBegin", "AgentCalled"):
            dest = self._channels.get(first("DestUniqueid"))
            if dest is not None:
                # What Asterisk shows for a dialled channel (app_dial / app_queue).
                dest.application = "AppDial" if name == "DialBegin" else "AppQueue"
                dest.application_data = "(Outgoing Line)"
        channel = self._channels.get(uniqueid)
        if channel is None:
            return
        if name == "VarSet":
            channel.variables[message.first("Variable").lstrip("_")] = message.first("Value")
        if name == "Hangup":
            del self._channels[uniqueid]
            return
        # Every channel event carries the channel's current snapshot (Newstate,
        # NewCallerid, NewConnectedLine, Newexten...); prefixed snapshots are other channels.
        for key, value in message.headers:
            if key in channel.fields:
                channel.fields[key] = lap_id(key, value, lap)
        if name == "Rename":
            channel.fields["Channel"] = message.first("Newname", channel.fields["Channel"])
        elif name == "Newexten" and not channel.application.startswith("App"):
            channel.application = message.first("Application")
            channel.application_data = message.first("AppData")
        elif name == "BridgeEnter":
            channel.bridge_id = first("BridgeUniqueid")
        elif name == "BridgeLeave":
            channel.bridge_id = ""

    # -- connections -----------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer), name="fakepbx-client")
        self._client_tasks.add(task)
        task.add_done_callback(self._client_tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        client = _Client(writer, self.chunker)
        self._clients.add(client)
        try:
            if not await client.send(BANNER):
                return
            framer = MessageFramer(expect_banner=False)
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for raw in framer.feed(data):
                    try:
                        message = parse_message(raw)
                    except MalformedMessage:
                        continue
                    if not await self._answer(client, message):
                        return
        except ConnectionError:
            pass
        finally:
            self._clients.discard(client)
            if not self._listeners():
                self._logged_in.clear()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, client: _Client, message: AmiMessage) -> bool:
        """Answer one action; False when the connection must close."""
        self.actions_received.append(message)
        action = _header(message, "Action").lower()
        action_id = _header(message, "ActionID")
        if action in self.ignore_actions:
            return True

        def response(status: str, *rest: tuple[str, str]) -> bytes:
            head = [("Response", status)]
            if action_id:
                head.append(("ActionID", action_id))
            return _format([*head, *rest])

        if action == "login":
            return await self._login(client, message, response)
        if action == "logoff":
            await client.send(response("Goodbye", ("Message", "Thanks for all the fish.")))
            return False
        if not client.logged_in:
            await client.send(response("Error", ("Message", "Permission denied")))
        elif action == "ping":
            stamp = f"{self._pbx_time():.6f}"
            await client.send(response("Success", ("Ping", "Pong"), ("Timestamp", stamp)))
        elif action == "coreshowchannels":
            await self._show_channels(client, action_id, response)
        elif action == "status":
            await self._status(client, action_id, message, response)
        elif action == "originate" and self.click_to_call is not None:
            await self._originate(client, message, response)
        elif action == "listcommands":
            await client.send(response("Success", *self._commands()))
        else:
            await client.send(response("Error", ("Message", "Invalid/unknown command")))
        return True

    async def _login(
        self, client: _Client, message: AmiMessage, response: Callable[..., bytes]
    ) -> bool:
        rejected = (
            self.username is not None and _header(message, "Username") != self.username
        ) or (self.secret is not None and _header(message, "Secret") != self.secret)
        if rejected:
            await client.send(response("Error", ("Message", "Authentication failed")))
            return False
        await client.send(response("Success", ("Message", "Authentication accepted")))
        uptime = str(int(time.monotonic() - self._boot_time))
        booted = _format(
            [
                ("Event", "FullyBooted"),
                ("Privilege", "system,all"),
                ("Uptime", uptime),
                ("LastReload", uptime),
                ("Status", "Fully Booted"),
            ]
        )
        if not await client.send(booted):
            return False
        client.logged_in = True
        self.logins += 1
        self._restarting = False
        self._logged_in.set()
        return True

    async def _show_channels(
        self, client: _Client, action_id: str, response: Callable[..., bytes]
    ) -> None:
        await client.send(
            response("Success", ("EventList", "start"), ("Message", "Channels will follow"))
        )
        id_header = [("ActionID", action_id)] if action_id else []
        channels = list(self._channels.values())
        for channel in channels:
            headers = [("Event", "CoreShowChannel"), *id_header]
            headers.extend((key, channel.fields.get(key, "")) for key in SNAPSHOT_KEYS)
            headers.extend(
                [
                    ("Application", channel.application),
                    ("ApplicationData", channel.application_data),
                    ("Duration", self._duration(channel)),
                    ("BridgeId", channel.bridge_id),
                ]
            )
            await client.send(_format(headers))
        await client.send(
            _format(
                [
                    ("Event", "CoreShowChannelsComplete"),
                    *id_header,
                    ("EventList", "Complete"),
                    ("ListItems", str(len(channels))),
                ]
            )
        )

    async def _status(
        self,
        client: _Client,
        action_id: str,
        message: AmiMessage,
        response: Callable[..., bytes],
    ) -> None:
        """``Status`` with ``Variables``: one ``Status`` event per channel, then the end."""
        await client.send(
            response("Success", ("EventList", "start"), ("Message", "Channel status will follow"))
        )
        wanted = [v.strip() for v in _header(message, "Variables").split(",") if v.strip()]
        id_header = [("ActionID", action_id)] if action_id else []
        channels = list(self._channels.values())
        for channel in channels:
            headers = [("Event", "Status"), *id_header]
            headers.extend((key, channel.fields.get(key, "")) for key in SNAPSHOT_KEYS)
            headers.extend(
                ("Variable", f"{name}={channel.variables.get(name, '')}") for name in wanted
            )
            headers.append(("BridgeID", channel.bridge_id))
            await client.send(_format(headers))
        await client.send(
            _format(
                [
                    ("Event", "StatusComplete"),
                    *id_header,
                    ("EventList", "Complete"),
                    ("ListItems", str(len(channels))),
                    ("Items", str(len(channels))),
                ]
            )
        )

    def _commands(self) -> list[tuple[str, str]]:
        """``ListCommands``: what this user may call, as Asterisk lists it (one header per
        action, ``Synopsis (Priv: ...)``); ``Originate`` only when the fake answers it and
        :attr:`originate_error` does not say it is refused."""
        commands = [
            ("Login", "Login Manager. (Priv: <none>)"),
            ("Logoff", "Logoff Manager. (Priv: <none>)"),
            ("Ping", "Keepalive command. (Priv: <none>)"),
            ("ListCommands", "List available manager commands. (Priv: <none>)"),
            ("CoreShowChannels", "List currently active channels. (Priv: system,reporting,all)"),
            ("Status", "List channel status. (Priv: system,call,reporting,all)"),
        ]
        if self.click_to_call is not None and self.originate_error is None:
            commands.append(("Originate", "Originate a call. (Priv: originate,all)"))
        return commands

    async def _originate(
        self, client: _Client, message: AmiMessage, response: Callable[..., bytes]
    ) -> None:
        """``Originate``: refused as Asterisk refuses it, or queued and played."""
        assert self.click_to_call is not None
        channel = _header(message, "Channel")
        if self.originate_error is not None:
            await client.send(response("Error", ("Message", self.originate_error)))
            return
        if "/" not in channel:
            await client.send(response("Error", ("Message", "Invalid channel")))
            return
        if not _header(message, "Exten") or not _header(message, "Context"):
            await client.send(response("Error", ("Message", "Exten and Context are required")))
            return
        if _header(message, "Async").lower() not in ("true", "yes", "1", "on"):
            await client.send(response("Error", ("Message", "the fake PBX answers Async only")))
            return
        try:
            timeout = int(_header(message, "Timeout") or "30000") / 1000.0
        except ValueError:
            timeout = 30.0
        request = OriginateRequest(
            action_id=_header(message, "ActionID"),
            channel=channel,
            context=_header(message, "Context"),
            exten=_header(message, "Exten"),
            timeout=timeout,
            caller_id=_header(message, "CallerID"),
            channel_id=_header(message, "ChannelId"),
            other_channel_id=_header(message, "OtherChannelId"),
        )
        self.originates.append(request)
        await client.send(response("Success", ("Message", "Originate successfully queued")))
        if request.extension in self.unanswered_extensions:
            messages = self.click_to_call.unanswered(request)
        else:
            messages = self.click_to_call.answered(request)
        task = asyncio.create_task(self._play_originate(messages), name="fakepbx-originate")
        self._originate_tasks.add(task)
        task.add_done_callback(self._originate_tasks.discard)

    async def _play_originate(self, messages: Sequence[TemplateMessage]) -> None:
        """Send an originate's events on the PBX's clock, paced like the stream."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        base = self._pbx_time()
        for item in messages:
            if self.speed > 0:
                delay = started + item.offset / self.speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            headers = [(k, v) for k, v in item.headers if k != "Timestamp"]
            stamp = ("Timestamp", f"{base + item.offset:.6f}")
            at = 2 if len(headers) > 1 and headers[1][0] == "Privilege" else 1
            wire = _format([*headers[:at], stamp, *headers[at:]])
            for listener in self._listeners():
                await listener.send(wire)
            # Followed for CoreShowChannels, without moving the stream's clock.
            self._track(_StreamItem(None, -1, b"", AmiMessage(tuple(headers))))

    def _pbx_time(self) -> float:
        """The replayed PBX's clock: the stream's time (its start before it starts)."""
        if self._stream_time is not None:
            return self._stream_time + self._shift
        if not self.keep_time:
            return self._clock_origin() + self._stepped
        for item in self._items:
            if item.stamp is not None:
                return item.stamp + self._stepped
        return time.time()

    def _duration(self, channel: _Channel) -> str:
        seconds = 0
        if channel.created is not None and self._stream_time is not None:
            seconds = max(0, int(self._stream_time - channel.created))
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
