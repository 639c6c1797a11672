"""The AMI transport: panoramisk's protocol class, wrapped (DESIGN 3.2).

Theory of operation
-------------------
This is the only module that imports panoramisk, and it uses it as a transport only.
:class:`AmiProtocol` subclasses panoramisk's ``AMIProtocol`` and is handed to
``loop.create_connection`` the way panoramisk's ``protocol_factory`` is, but replaces its
reading side: raw bytes go to :class:`~connector.events.MessageFramer`, which splits on
``\\r\\n\\r\\n`` before anything is decoded (panoramisk decodes each TCP chunk and loses UTF-8
characters split between reads). Every framed message is then routed without being parsed:

- a response or event carrying the ActionID of an action we are waiting for goes to that
  action. We match them ourselves rather than through panoramisk's ``Action`` /
  ``handle_message``: those guess list responses from message texts, keep unanswered actions
  to re-send them after a reconnect (never wanted here) and are untyped. The rule here is
  Asterisk's own: a response with ``EventList: start`` (or "will follow") opens a list that
  the event with ``EventList: Complete`` closes;
- an event the journal needs (:func:`~connector.events.is_journal_message`) goes to one plain
  callback that only puts ``(receive_time, monotonic_time, raw_bytes)`` on an ``asyncio.Queue``;
- everything else (noise events, late responses) is counted as skipped.

:class:`AmiSession` is one logged-in TCP connection: connect and banner within
``connect_timeout``, Login and every other action within ``action_timeout``, a clear
:class:`AmiLoginError` when the PBX rejects the login. ``capture.record_session`` uses it
directly, with a tap that sees every byte.

:class:`AmiConnector` is what the daemon runs. Its supervisor loop (not panoramisk's, which
never checks Ping answers and re-sends actions after reconnecting) opens a session, runs a
ping watchdog that aborts the transport when a ``Ping`` goes unanswered for ``ping_timeout``,
and reconnects after any disconnect with exponential backoff and jitter between
``reconnect_min`` and ``reconnect_max`` (a rejected login waits ``reconnect_max`` and logs an
error every time). The backoff grows with every failure in a row, and a session that ended
within ``min(30 s, reconnect_max)`` of its login is a failure too: only a session that stayed
up that long starts the next wait from ``reconnect_min`` again. Pending actions fail with
:class:`AmiDisconnected` and are never re-sent. One consumer task takes the queue in order,
parses and normalises each message and calls the handler synchronously; a malformed message
is counted and skipped, and the connection stays up (the first one is logged, then at most one
summary line every ``MALFORMED_LOG_INTERVAL`` seconds, :class:`ThrottledWarning`); a handler
exception is logged, counted and skipped. ``Shutdown`` is delivered and then treated as a
disconnect.

Session changes travel through the same queue as :class:`SessionEvent` markers, so that the
``on_session`` hook runs in order with the events: "connected" just before the
``FullyBooted`` that follows a login (its ``Uptime`` included), "disconnected" after the
last event of the connection. Events received while an async hook runs wait in the queue,
which is what resynchronisation (DESIGN 3.3) needs.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog
from panoramisk.ami_protocol import AMIProtocol

from connector.events import (
    AmiEvent,
    AmiMessage,
    MalformedMessage,
    MessageFramer,
    MessageTriage,
    parse_event,
    parse_message,
)

__all__ = [
    "AmiActionError",
    "AmiActionTimeout",
    "AmiConnector",
    "AmiDisconnected",
    "AmiError",
    "AmiLoginError",
    "AmiProtocol",
    "AmiSession",
    "AmiSettings",
    "AmiStats",
    "SessionEvent",
    "ThrottledWarning",
    "open_session",
]

log = structlog.get_logger(__name__)

Tap = Callable[[float, bytes], None]
ActionFields = Mapping[str, str | list[str]]

_ERROR_RESPONSES = frozenset({"error", "fail", "failure"})
_ACTION_ID_LINE = b"\r\nActionID: "

#: Malformed messages: the first is logged at once, then at most one summary line this often.
MALFORMED_LOG_INTERVAL = 10.0
#: A session that stayed up this long (or ``reconnect_max``, if shorter) was a healthy one:
#: the reconnect after it starts again from ``reconnect_min``.
STABLE_SESSION_SECONDS = 30.0
_MALFORMED = "malformed AMI message skipped"


class AmiSettings(Protocol):
    """The AMI settings this module reads (``Settings.ami`` of the config package)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def username(self) -> str: ...
    @property
    def secret(self) -> str: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def action_timeout(self) -> float: ...
    @property
    def ping_interval(self) -> float: ...
    @property
    def ping_timeout(self) -> float: ...
    @property
    def reconnect_min(self) -> float: ...
    @property
    def reconnect_max(self) -> float: ...


class AmiError(Exception):
    """Base of the errors raised by the AMI transport."""


class AmiLoginError(AmiError):
    """The PBX rejected our Login."""


class AmiDisconnected(AmiError, ConnectionError):
    """The connection is gone (or was never there); the action was not answered."""


class AmiActionTimeout(AmiError, TimeoutError):
    """An action got no complete answer within its timeout."""


class AmiActionError(AmiError):
    """The PBX answered an action with ``Response: Error`` (or Fail/Failure)."""

    def __init__(self, text: str, messages: list[AmiMessage]) -> None:
        super().__init__(text)
        self.messages = messages


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A change of the AMI session, passed to ``on_session`` in order with the events.

    ``at`` is a unix time; ``uptime`` is the ``Uptime`` of the ``FullyBooted`` that followed
    the login, in seconds (None when unknown or for "disconnected"). A restart of Asterisk
    shows as an uptime shorter than the outage.
    """

    kind: Literal["connected", "disconnected"]
    at: float
    reason: str
    uptime: float | None = None


#: What the transport hands to the consumer queue: a journal message with its receive time
#: (the host's wall clock, then its monotonic clock), or a session marker.
QueueItem = tuple[float, float, bytes] | SessionEvent
Sink = Callable[[QueueItem], None]
SessionHook = Callable[[SessionEvent], Awaitable[None] | None]


@dataclass(slots=True)
class AmiStats:
    """Counters of one connector (or one capture session); read them, do not write them."""

    #: Framed messages of any kind, responses included.
    messages_received: int = 0
    #: Messages handed to the consumer queue.
    journal_messages: int = 0
    #: Noise events and responses nobody waits for, dropped unparsed.
    skipped: int = 0
    #: Oversized messages, messages without headers, events without a name.
    malformed: int = 0
    #: Exceptions raised by the handler or the ``on_session`` hook.
    handler_errors: int = 0
    #: Connection attempts (TCP connect, banner, login), successful or not.
    connect_attempts: int = 0
    #: Logins rejected by the PBX.
    login_failures: int = 0
    #: Successful logins after the first one.
    reconnects: int = 0
    connected: bool = False
    #: Unix time of the last event received (any event, noise included).
    last_event_time: float | None = None
    #: Largest number of items ever waiting in the consumer queue.
    queue_high_water: int = 0


class ThrottledWarning:
    """A warning that a misbehaving peer could repeat thousands of times a second.

    The first :meth:`report` is logged at once (``skipped=1``); those that follow within
    ``interval`` seconds are only counted, and one summary line per interval says how many
    came since the previous line (``skipped``) and how many in all (``total``, the stats'
    counter), with the fields of the latest one. An interval that passes without any starts
    afresh: the next one is logged at once again. :meth:`flush` writes what is still
    counted (when the connector stops). The counters in :class:`AmiStats` stay exact; only
    the log lines are bounded.
    """

    def __init__(
        self,
        event: str,
        *,
        total: Callable[[], int],
        interval: Callable[[], float] = lambda: MALFORMED_LOG_INTERVAL,
    ) -> None:
        self.event = event
        self._total = total
        self._interval = interval
        self._suppressed = 0
        self._latest: dict[str, Any] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        """An interval is running: the next report is only counted."""
        return self._timer is not None

    def report(self, **fields: Any) -> None:
        if self._timer is None:
            log.warning(self.event, skipped=1, total=self._total(), **fields)
            self._arm()
        else:
            self._suppressed += 1
            self._latest = fields

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._summarise()

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._interval(), self._due)

    def _due(self) -> None:
        self._timer = None
        if self._suppressed:
            self._summarise()
            self._arm()

    def _summarise(self) -> None:
        if self._suppressed:
            log.warning(self.event, skipped=self._suppressed, total=self._total(), **self._latest)
            self._suppressed = 0


class _PendingAction:
    """An action waiting for its response, and for list actions its events."""

    __slots__ = ("future", "in_stream", "is_list", "messages", "name")

    def __init__(
        self, name: str, future: asyncio.Future[list[AmiMessage]], *, in_stream: bool = False
    ) -> None:
        self.name = name
        self.future = future
        self.messages: list[AmiMessage] = []
        self.is_list = False
        #: Also hand the answer's events to the consumer, in order with the live events.
        self.in_stream = in_stream

    def add(self, message: AmiMessage) -> bool:
        """Take one message for this action; True when the answer is complete."""
        self.messages.append(message)
        event_list = message.first("EventList").lower()
        if len(self.messages) == 1 and message.response:
            self.is_list = event_list == "start" or (
                "will follow" in message.first("Message").lower()
                and message.response.lower() not in _ERROR_RESPONSES
            )
            done = not self.is_list
        else:
            done = event_list == "complete" or message.event.endswith("Complete")
        if done and not self.future.done():
            self.future.set_result(self.messages)
        return done


class AmiProtocol(AMIProtocol):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's protocol with our reading side: framing on bytes, routing without parsing.

    panoramisk's ``send``, ``handle_message`` and ``close`` (which queues unanswered actions
    for re-sending) are not used.
    """

    def __init__(
        self,
        *,
        peer: str,
        stats: AmiStats,
        sink: Sink | None,
        tap: Tap | None,
        malformed_log: ThrottledWarning | None = None,
    ) -> None:
        super().__init__()
        self.peer = peer
        self.stats = stats
        #: Without one of the connector's, the protocol's own, flushed when it closes.
        self._own_malformed_log = malformed_log is None
        self._malformed_log = malformed_log or ThrottledWarning(
            _MALFORMED, total=lambda: stats.malformed
        )
        self.framer = MessageFramer()
        self._triage = MessageTriage()
        self._sink = sink
        self._tap = tap
        self._pending: dict[str, _PendingAction] = {}
        self._oversized_seen = 0
        self._announced = False
        self._closing = False
        self._close_reason: str | None = None
        loop = asyncio.get_running_loop()
        #: The banner line, or None when the connection closed before it came.
        self.banner: asyncio.Future[str | None] = loop.create_future()
        #: Why the connection ended, once it has.
        self.lost: asyncio.Future[str] = loop.create_future()
        #: The Uptime of the FullyBooted after login (None: unknown), once announced.
        self.booted: asyncio.Future[float | None] = loop.create_future()

    # -- asyncio.Protocol (connection_made is panoramisk's: it keeps the transport) ----

    def data_received(self, data: bytes) -> None:
        now = time.time()
        mono = time.monotonic()
        if self._tap is not None:
            try:
                self._tap(now, data)
            except Exception as exc:
                log.exception("AMI tap failed", peer=self.peer)
                self.abort(f"writing the received bytes failed: {exc}")
                return
        messages = self.framer.feed(data)
        if self.framer.oversized != self._oversized_seen:
            dropped = self.framer.oversized - self._oversized_seen
            self._oversized_seen = self.framer.oversized
            self.stats.malformed += dropped
            self._malformed_log.report(
                error=f"message over the size limit of {self.framer.max_message_bytes} bytes",
                peer=self.peer,
            )
        if self.framer.banner is not None and not self.banner.done():
            self.version = self.framer.banner.partition("/")[2].strip()
            self.banner.set_result(self.framer.banner)
        for raw in messages:
            if self._closing:
                break  # nothing after a Shutdown or an abort counts
            self._route(now, mono, raw)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True  # panoramisk's flag
        self.stats.connected = False
        if self._close_reason is not None:
            reason = self._close_reason
        elif exc is not None:
            reason = f"connection lost: {exc}"
        else:
            reason = "connection closed by the PBX"
        self._closing = True
        pending, self._pending = self._pending, {}
        for action in pending.values():
            if not action.future.done():
                action.future.set_exception(
                    AmiDisconnected(
                        f"AMI connection to {self.peer} lost before {action.name} was "
                        f"answered: {reason}"
                    )
                )
        if not self.banner.done():
            self.banner.set_result(None)
        if not self.lost.done():
            self.lost.set_result(reason)
        if self._announced and self._sink is not None:
            self._sink(SessionEvent("disconnected", time.time(), reason))
        if self._own_malformed_log:
            self._malformed_log.flush()

    # -- routing ---------------------------------------------------------------------

    def _route(self, now: float, mono: float, raw: bytes) -> None:
        stats = self.stats
        stats.messages_received += 1
        is_event = raw.startswith(b"Event:")
        if is_event:
            stats.last_event_time = now
        action_id = _action_id(raw) if self._pending else None
        if action_id is not None:
            action = self._pending.get(action_id)
            if action is not None:
                try:
                    message = parse_message(raw)
                except MalformedMessage as exc:
                    stats.malformed += 1
                    self._malformed_log.report(error=str(exc), size=len(raw), peer=self.peer)
                    return
                if action.add(message):
                    del self._pending[action_id]
                if action.in_stream and is_event and self._sink is not None:
                    # A snapshot (CoreShowChannels, Status) is only meaningful at its place
                    # in the stream: after the live events received before it.
                    stats.journal_messages += 1
                    self._sink((now, mono, raw))
                return
        if raw.startswith(b"Response:"):
            stats.skipped += 1  # the answer to an action that timed out
            return
        name, wanted = self._triage.sort(raw)
        if name == "FullyBooted" and not self._announced:
            self.announce(_uptime(raw))
        if self._sink is not None and wanted:
            stats.journal_messages += 1
            self._sink((now, mono, raw))
        else:
            stats.skipped += 1
        if name == "Shutdown":
            self.abort("Asterisk is shutting down (Shutdown event)")

    def announce(self, uptime: float | None) -> None:
        """Put the "connected" marker on the queue, once per connection."""
        if self._announced or self._closing:
            return
        self._announced = True
        if not self.booted.done():
            self.booted.set_result(uptime)
        if self._sink is not None:
            self._sink(SessionEvent("connected", time.time(), f"logged in to {self.peer}", uptime))

    # -- actions ---------------------------------------------------------------------

    def start_action(
        self, action_id: str, name: str, data: bytes, *, in_stream: bool = False
    ) -> _PendingAction:
        if self._closing or self.transport is None or self.transport.is_closing():
            raise AmiDisconnected(f"not connected to the AMI at {self.peer}")
        if action_id in self._pending:
            raise ValueError(f"an action with ActionID {action_id!r} is already pending")
        action = _PendingAction(
            name, asyncio.get_running_loop().create_future(), in_stream=in_stream
        )
        self._pending[action_id] = action
        self.transport.write(data)
        return action

    def forget_action(self, action_id: str) -> None:
        self._pending.pop(action_id, None)

    def abort(self, reason: str) -> None:
        """Drop the connection now; ``reason`` is what the disconnect reports."""
        if self._closing:
            return
        self._closing = True
        self._close_reason = reason
        if self.transport is not None:
            self.transport.abort()

    @property
    def is_closed(self) -> bool:
        return self.lost.done()


def _action_id(raw: bytes) -> str | None:
    if raw.startswith(b"ActionID: "):
        start = 10
    else:
        pos = raw.find(_ACTION_ID_LINE)
        if pos < 0:
            return None
        start = pos + len(_ACTION_ID_LINE)
    end = raw.find(b"\r\n", start)
    value = raw[start:] if end < 0 else raw[start:end]
    return value.decode("utf-8", "replace").strip()


def _uptime(raw: bytes) -> float | None:
    try:
        value = parse_message(raw).first("Uptime")
        return float(value) if value else None
    except (MalformedMessage, ValueError):
        return None


def _encode_action(action_id: str, fields: ActionFields) -> tuple[str, bytes]:
    """Serialise an action, ``Action`` first and our ``ActionID`` second."""
    name = ""
    lines: list[str] = []
    for key, value in fields.items():
        values = [value] if isinstance(value, str) else list(value)
        for item in [key, *values]:
            if "\r" in item or "\n" in item:
                raise ValueError(f"AMI action field {key!r} contains a line break")
        if key.lower() == "action":
            name = values[0] if values else ""
            continue
        if key.lower() == "actionid":
            continue
        lines.extend(f"{key}: {item}" for item in values)
    if not name:
        raise ValueError("an AMI action needs an 'Action' field")
    text = "\r\n".join([f"Action: {name}", f"ActionID: {action_id}", *lines]) + "\r\n\r\n"
    return name, text.encode("utf-8")


class AmiSession:
    """One TCP connection to the AMI, logged in. Made by :func:`open_session`."""

    _action_ids = itertools.count(1)

    def __init__(self, protocol: AmiProtocol, settings: AmiSettings, banner: str) -> None:
        self.protocol = protocol
        self.settings = settings
        self.peer = protocol.peer
        self.banner = banner

    async def send_action(
        self,
        fields: ActionFields,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - per action, applied inside
        in_stream: bool = False,
    ) -> list[AmiMessage]:
        """Send an action and return its response, followed by its events for a list action.

        With ``in_stream`` the answer's events also reach the event handler, at the place in
        the stream where they arrived (resynchronisation applies a ``CoreShowChannels``
        snapshot there, after the live events that preceded it).

        Raises :class:`AmiActionTimeout` after ``timeout`` (default ``action_timeout``),
        :class:`AmiDisconnected` if the connection goes first, :class:`AmiActionError` for
        an error response.
        """
        given = next((v for k, v in fields.items() if k.lower() == "actionid"), None)
        action_id = given if isinstance(given, str) else f"pbxjournal-{next(self._action_ids)}"
        name, data = _encode_action(action_id, fields)
        limit = self.settings.action_timeout if timeout is None else timeout
        action = self.protocol.start_action(action_id, name, data, in_stream=in_stream)
        try:
            async with asyncio.timeout(limit):
                messages = await action.future
        except TimeoutError:
            raise AmiActionTimeout(
                f"AMI action {name} (ActionID {action_id}) got no complete answer from "
                f"{self.peer} within {limit:g} s"
            ) from None
        finally:
            self.protocol.forget_action(action_id)
        first = messages[0]
        if first.response.lower() in _ERROR_RESPONSES:
            raise AmiActionError(
                f"AMI action {name} failed at {self.peer}: {first.first('Message') or '?'}",
                messages,
            )
        return messages

    async def login(self) -> None:
        settings = self.settings
        fields = {
            "Action": "Login",
            "Username": settings.username,
            "Secret": _secret_text(settings.secret),
            "Events": "on",
        }
        try:
            await self.send_action(fields)
        except AmiActionError as exc:
            reason = exc.messages[0].first("Message") or exc.messages[0].response
            raise AmiLoginError(
                f"AMI login rejected for user '{settings.username}' at {self.peer}: {reason}"
            ) from None
        self.protocol.stats.connected = not self.protocol.is_closed

    async def logoff(self) -> None:
        """Say goodbye and wait for the PBX to close the connection (bounded)."""
        try:
            await self.send_action({"Action": "Logoff"})
            async with asyncio.timeout(self.settings.action_timeout):
                await self.wait_closed()
        except (AmiError, TimeoutError):
            pass  # the connection is going away either way
        self.protocol.abort("logged off")

    def abort(self, reason: str) -> None:
        self.protocol.abort(reason)

    async def wait_closed(self) -> str:
        """Wait until the connection is gone; return why."""
        return await asyncio.shield(self.protocol.lost)

    async def close(self) -> None:
        self.protocol.abort("closed by pbxjournal")
        await self.wait_closed()

    @property
    def is_closed(self) -> bool:
        return self.protocol.is_closed

    @property
    def close_reason(self) -> str | None:
        lost = self.protocol.lost
        return lost.result() if lost.done() else None


def _secret_text(secret: object) -> str:
    # A settings loader may wrap secrets so that they do not show in reprs.
    reveal = getattr(secret, "get_secret_value", None)
    return str(reveal()) if callable(reveal) else str(secret)


async def open_session(
    settings: AmiSettings,
    *,
    sink: Sink | None = None,
    tap: Tap | None = None,
    stats: AmiStats | None = None,
    before_login: Callable[[AmiSession], None] | None = None,
    malformed_log: ThrottledWarning | None = None,
) -> AmiSession:
    """Connect, read the banner (both within ``connect_timeout``) and log in.

    ``sink`` receives journal messages and session markers; ``tap`` every raw read, banner
    included; ``before_login`` the session before Login is sent (the connector registers it
    there, so that an ``on_session`` hook woken by the ``FullyBooted`` that follows the
    login can already send actions on it); ``malformed_log`` reports malformed messages
    (the connector's, shared by its sessions; by default the session's own).

    Raises ``OSError``/``TimeoutError`` for connection failures, :class:`AmiLoginError` for
    a rejected login, :class:`AmiDisconnected` when the PBX hangs up during the handshake.
    """
    loop = asyncio.get_running_loop()
    peer = f"{settings.host}:{settings.port}"
    factory = functools.partial(
        AmiProtocol,
        peer=peer,
        stats=stats if stats is not None else AmiStats(),
        sink=sink,
        tap=tap,
        malformed_log=malformed_log,
    )
    protocol: AmiProtocol | None = None
    try:
        try:
            async with asyncio.timeout(settings.connect_timeout):
                _, protocol = await loop.create_connection(factory, settings.host, settings.port)
                banner = await protocol.banner
        except TimeoutError:
            stage = "connect to" if protocol is None else "get the banner of"
            raise TimeoutError(
                f"could not {stage} the AMI at {peer} within {settings.connect_timeout:g} s"
            ) from None
        if banner is None:
            raise AmiDisconnected(
                f"AMI at {peer} closed the connection before its banner: {protocol.lost.result()}"
            )
        session = AmiSession(protocol, settings, banner)
        if before_login is not None:
            before_login(session)
        await session.login()
    except BaseException:
        if protocol is not None:
            protocol.abort("handshake failed")
        raise
    return session


class AmiConnector:
    """Keeps an AMI session up and feeds its journal events, in order, to ``handler``.

    ``run()`` returns after ``close()``. ``handler`` is called synchronously from one
    consumer task; ``on_session`` (sync or async) with every :class:`SessionEvent`.
    ``tap`` sees every raw read (tests and diagnostics).
    """

    def __init__(
        self,
        settings: AmiSettings,
        handler: Callable[[AmiEvent], None],
        *,
        on_session: SessionHook | None = None,
        tap: Tap | None = None,
    ) -> None:
        self.settings = settings
        self.stats = AmiStats()
        self._handler = handler
        self._on_session = on_session
        self._tap = tap
        # ``None`` tells the consumer to stop.
        self._queue: asyncio.Queue[QueueItem | None] = asyncio.Queue()
        self._session: AmiSession | None = None
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._logins = 0
        #: Seconds between two summary lines of malformed messages (see ThrottledWarning).
        self.malformed_log_interval = MALFORMED_LOG_INTERVAL
        self._malformed_log = ThrottledWarning(
            _MALFORMED,
            total=lambda: self.stats.malformed,
            interval=lambda: self.malformed_log_interval,
        )
        #: A session up at least this long (or ``reconnect_max``, if shorter) resets the
        #: reconnect backoff; a shorter one counts as a failure (see :meth:`_supervise`).
        self.stable_session_seconds = STABLE_SESSION_SECONDS

    @property
    def malformed_log_pending(self) -> bool:
        """Malformed messages are being counted, to be summarised in one line."""
        return self._malformed_log.pending

    # -- public ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, stay connected and deliver events until :meth:`close`."""
        if self._running:
            raise RuntimeError("AmiConnector.run() is already running")
        self._running = True
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._consume(), name="ami-consumer")
                try:
                    await self._supervise()
                finally:
                    # The consumer drains what was received, then stops.
                    self._queue.put_nowait(None)
        finally:
            self._malformed_log.flush()
            self.stats.connected = False
            self._running = False
            self._stopped.set()

    async def send_action(
        self,
        fields: ActionFields,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - per action, applied inside
        in_stream: bool = False,
    ) -> list[AmiMessage]:
        """Send an action on the current session (see :meth:`AmiSession.send_action`)."""
        session = self._session
        if session is None or session.is_closed:
            raise AmiDisconnected(
                f"not connected to the AMI at {self.settings.host}:{self.settings.port}"
            )
        return await session.send_action(fields, timeout=timeout, in_stream=in_stream)

    async def close(self) -> None:
        """Stop reconnecting, drop the connection and wait until ``run()`` has returned."""
        self._closing.set()
        if self._session is not None:
            self._session.abort("connector closed")
        if self._running:
            await self._stopped.wait()

    # -- supervisor ------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, serve, wait, again, until :meth:`close`.

        The wait grows exponentially from ``reconnect_min`` to ``reconnect_max`` (with up to
        25 % jitter) with every failure in a row: a connection or login that failed, and a
        session that ended sooner than ``min(stable_session_seconds, reconnect_max)`` (30 s
        by default) after its login (a PBX that accepts the login and drops the connection
        at once is not retried every ``reconnect_min`` forever). A session that stayed up
        that long resets it: the next attempt comes after ``reconnect_min``. A rejected
        login always waits ``reconnect_max``.
        """
        settings = self.settings
        peer = f"{settings.host}:{settings.port}"
        failures = 0
        while not self._closing.is_set():
            self.stats.connect_attempts += 1
            try:
                session = await self._connect()
            except AmiLoginError as exc:
                self._session = None
                if self._closing.is_set():
                    break
                self.stats.login_failures += 1
                delay = settings.reconnect_max
                log.error(str(exc), peer=peer, retry_in=round(delay, 3))
            except (OSError, TimeoutError, AmiError) as exc:
                self._session = None
                if self._closing.is_set():
                    break
                failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "AMI connection failed", peer=peer, error=str(exc), retry_in=round(delay, 3)
                )
            else:
                if session is None:
                    break  # closed while connecting
                lasted = await self._serve(session)
                stable = min(self.stable_session_seconds, settings.reconnect_max)
                if lasted >= stable:
                    failures = 0
                else:
                    failures += 1
                delay = self._backoff(failures)
                if not self._closing.is_set():
                    log.info(
                        "AMI reconnecting",
                        peer=peer,
                        retry_in=round(delay, 3),
                        failures_in_a_row=failures,
                    )
            if self._closing.is_set():
                break
            try:
                async with asyncio.timeout(delay):
                    await self._closing.wait()
            except TimeoutError:
                pass

    async def _connect(self) -> AmiSession | None:
        """Open a session, or give up at once when ``close()`` is called (None)."""
        connect = asyncio.create_task(
            open_session(
                self.settings,
                sink=self._enqueue,
                tap=self._tap,
                stats=self.stats,
                before_login=self._attach,
                malformed_log=self._malformed_log,
            ),
            name="ami-connect",
        )
        closing = asyncio.create_task(self._closing.wait(), name="ami-closing")
        try:
            await asyncio.wait({connect, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            connect.cancel()  # a no-op once it is done
            await asyncio.gather(closing, connect, return_exceptions=True)
        if connect.cancelled():
            return None
        return connect.result()

    def _attach(self, session: AmiSession) -> None:
        self._session = session

    def _backoff(self, failures: int) -> float:
        """Exponential from ``reconnect_min`` to ``reconnect_max``, minus up to 25 % jitter."""
        low, high = self.settings.reconnect_min, self.settings.reconnect_max
        base = min(high, low * 2.0 ** min(failures, 64))  # 2.0**1024 would overflow
        return max(low, base * random.uniform(0.75, 1.0))

    async def _serve(self, session: AmiSession) -> float:
        """Watch one logged-in session until it is gone; return how long it was up (s)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self._logins:
            self.stats.reconnects += 1
        self._logins += 1
        log.info("AMI connected", peer=session.peer, banner=session.banner)
        helpers = [
            asyncio.create_task(self._await_boot(session), name="ami-boot"),
            asyncio.create_task(self._watch_ping(session), name="ami-ping"),
        ]
        try:
            if self._closing.is_set():
                session.abort("connector closed")
            reason = await session.wait_closed()
        finally:
            session.abort("connector stopped")  # a no-op unless run() itself was cancelled
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self.stats.connected = False
            self._session = None
        lasted = loop.time() - started
        log_method = log.info if self._closing.is_set() else log.warning
        log_method(
            "AMI disconnected",
            peer=session.peer,
            reason=reason,
            connected_for=round(lasted, 3),
        )
        return lasted

    async def _await_boot(self, session: AmiSession) -> None:
        """Announce the session without uptime if no FullyBooted follows the login."""
        try:
            async with asyncio.timeout(self.settings.action_timeout):
                await asyncio.shield(session.protocol.booted)
        except TimeoutError:
            log.warning(
                "no FullyBooted after login; Asterisk may still be booting", peer=session.peer
            )
            session.protocol.announce(None)

    async def _watch_ping(self, session: AmiSession) -> None:
        """Abort the transport when a Ping goes unanswered: a half-open TCP looks alive."""
        settings = self.settings
        while True:
            await asyncio.sleep(settings.ping_interval)
            try:
                await session.send_action({"Action": "Ping"}, timeout=settings.ping_timeout)
            except AmiActionTimeout:
                log.warning(
                    "AMI ping unanswered, dropping the connection",
                    peer=session.peer,
                    ping_timeout=settings.ping_timeout,
                )
                session.abort(f"no answer to Ping within {settings.ping_timeout:g} s")
                return
            except AmiActionError:
                continue  # an answer, even an error, proves the PBX is there
            except AmiDisconnected:
                return

    # -- consumer --------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Messages (and session markers) received and not yet handed to the handler."""
        return self._queue.qsize()

    def _enqueue(self, item: QueueItem) -> None:
        """The transport's only callback: put the message on the queue and return."""
        queue = self._queue
        queue.put_nowait(item)
        self.stats.queue_high_water = max(self.stats.queue_high_water, queue.qsize())

    async def _consume(self) -> None:
        queue = self._queue
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, SessionEvent):
                await self._notify_session(item)
            else:
                self._deliver(*item)

    def _deliver(self, receive_time: float, received: float, raw: bytes) -> None:
        try:
            event = parse_event(raw, receive_time, received)
        except MalformedMessage as exc:
            self.stats.malformed += 1
            self._malformed_log.report(error=str(exc), size=len(raw))
            return
        try:
            self._handler(event)
        except Exception:
            self.stats.handler_errors += 1
            log.exception(
                "AMI event handler failed",
                event_name=event.name,
                uniqueid=event.get("Uniqueid"),
            )

    async def _notify_session(self, event: SessionEvent) -> None:
        if self._on_session is None:
            return
        try:
            result = self._on_session(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.stats.handler_errors += 1
            log.exception("AMI session hook failed", kind=event.kind, reason=event.reason)
