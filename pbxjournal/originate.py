"""Click-to-call: the daemon's side of ``POST /api/v1/originate`` (issue 17).

Theory of operation
-------------------
:meth:`Originator.originate` sends one AMI ``Originate`` on the daemon's session, ``Async:
true`` with our ``ActionID``: ``Channel`` (``originate.channel``, the employee's phone) rings
first for ``originate.timeout``, showing ``CallerID`` (the customer's name or the number);
once it answers, the PBX continues it in ``originate.context`` at ``Exten`` (the customer's
number as ``originate.exten`` writes it). ``ChannelId``/``OtherChannelId`` give the new
channel (both halves of a Local channel) uniqueids we chose, so the conversation's linkedid
is known before anything rings: ``/live`` and the state below follow it from the first event.

A request then moves through :class:`~httpd.protocols.OriginateState`:

- ``ringing_employee``: the PBX queued it (``Response: Success``);
- ``dialling_customer``: ``OriginateResponse`` ``Success`` (``Reason: 4``, the phone was
  answered); its ``Uniqueid`` is the linkedid (for an Asterisk older than 13, which ignores
  ``ChannelId``);
- ``talking``: the live conversation shows the employee connected to the customer;
- ``finished``: the conversation's journal row was written (``call_id``);
- ``failed``: the PBX refused the action (``Response: Error``: its ``Message``, e.g.
  ``Permission denied`` when the AMI user lacks the ``originate`` permission), or
  ``OriginateResponse`` ``Failure`` (``Reason`` 3: no answer, 5: busy, 8: congestion, 1: hung
  up, 0: the channel could not be created), or no word from the PBX long after the ring
  timeout (the session dropped and the response with it).

A session that is down is :class:`~httpd.protocols.OriginateUnavailable` (503: nothing was
sent, retry). An action the PBX does not answer within ``ami.action_timeout`` was sent and
may ring: it is followed like any other rather than reported as unavailable, which would
invite a second click and a second ring.

``OriginateResponse`` reaches :meth:`observe` through the connector's consumer, in order with
the events (the transport passes events carrying an ``ActionID`` on). The daemon asks
:meth:`tag` for every finished call before the writer takes it: the conversation a
click-to-call became carries ``callback_of`` (the call it returns) into its journal row.

Requests live in memory, at most :data:`MAX_REQUESTS`, each for :data:`RETENTION_SECONDS`
after it ended (and :data:`ABANDON_SECONDS` at most while it runs): a status is for the
minutes after the click, the journal keeps the call. One log line per request, when its
outcome is known: who asked (the client, the employee's extension), the number masked as
``log.numbers`` says, the result and the reason.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from config import Settings
from connector.ami import AmiActionError, AmiActionTimeout, AmiDisconnected, AmiError
from connector.assembly import FinishedCall
from connector.events import AmiEvent, AmiMessage
from connector.live import LiveConversation
from httpd.protocols import OriginateOrder, OriginateState, OriginateStatus, OriginateUnavailable
from pbxjournal.logs import WITHHELD, mask_number
from storage.journal import JournalEntry

__all__ = [
    "ABANDON_SECONDS",
    "MAX_REQUESTS",
    "REASONS",
    "RETENTION_SECONDS",
    "Originator",
    "callback_of_channel",
    "channel_id_for",
    "originate_fields",
]

log = structlog.get_logger("pbxjournal.originate")

MAX_REQUESTS = 1000
RETENTION_SECONDS = 3600.0
ABANDON_SECONDS = 6 * 3600.0
#: After the ring timeout, how long the ``OriginateResponse`` may take before the request is
#: given up as failed (the PBX answers it the moment the ring ends).
RESPONSE_GRACE_SECONDS = 30.0

#: ``OriginateResponse`` ``Reason`` (Asterisk's ``AST_CONTROL_*`` of the outcome).
REASONS: Mapping[int, str] = {
    0: "the PBX could not ring the phone (no such channel, or it is unavailable)",
    1: "the phone hung up",
    3: "no answer",
    4: "answered",
    5: "busy",
    8: "congestion",
}

SendAction = Callable[[Mapping[str, str | list[str]]], Awaitable[list[AmiMessage]]]
LiveSource = Callable[[], Sequence[LiveConversation]]


@dataclass(slots=True)
class _Request:
    id: str
    action_id: str
    channel_id: str
    order: OriginateOrder
    created_at: float
    created_mono: float
    updated_at: float
    updated_mono: float
    state: OriginateState = OriginateState.RINGING_EMPLOYEE
    reason: str | None = None
    reason_code: int | None = None
    linkedid: str | None = None
    call_id: int | None = None
    logged: bool = False

    def view(self) -> OriginateStatus:
        return OriginateStatus(
            id=self.id,
            state=self.state,
            order=self.order,
            created_at=self.created_at,
            updated_at=self.updated_at,
            reason=self.reason,
            reason_code=self.reason_code,
            linkedid=self.linkedid,
            call_id=self.call_id,
        )


_CALLBACK_CHANNEL = re.compile(r"pbxjournal-[0-9a-f]{16}-cb([1-9][0-9]{0,17})")


def channel_id_for(request_id: str, callback_of: int | None) -> str:
    """The ``ChannelId`` of a click-to-call: the uniqueid, and so the linkedid, of its call.

    It names the call returned (``-cb<id>``), so that the journal row links to it even when
    the daemon that sent the Originate is not the one that sees the call end (a restart in the
    middle of the call back: the open conversation is restored, the request is not)."""
    if callback_of is None:
        return f"pbxjournal-{request_id}"
    return f"pbxjournal-{request_id}-cb{callback_of}"


def callback_of_channel(conversation_id: str, linkedids: Iterable[str]) -> int | None:
    """The call a click-to-call returns, read from its channel id (:func:`channel_id_for`)."""
    for linkedid in (conversation_id, *linkedids):
        match = _CALLBACK_CHANNEL.fullmatch(linkedid)
        if match is not None:
            return int(match.group(1))
    return None


def _caller_id(display: str, number: str) -> str:
    """``"name" <number>`` with what would break the header or its quoting taken out."""
    name = "".join(ch for ch in display if ch.isprintable() and ch not in '"<>\\')
    return f'"{name.strip()[:80]}" <{number}>'


def originate_fields(
    settings: Settings, order: OriginateOrder, action_id: str, channel_id: str, request_id: str
) -> dict[str, str | list[str]]:
    """The ``Originate`` action for ``order``."""
    originate = settings.originate
    variables = [
        # FreePBX's dialplan reads the caller's extension from AMPUSER (outbound caller id,
        # recording rules); elsewhere it is a harmless channel variable.
        f"__AMPUSER={order.extension}",
        f"PBXJOURNAL_ORIGINATE={request_id}",
    ]
    if order.callback_of is not None:
        variables.append(f"PBXJOURNAL_CALLBACK_OF={order.callback_of}")
    return {
        "Action": "Originate",
        "ActionID": action_id,
        "Channel": originate.channel.format(extension=order.extension),
        "Context": originate.context,
        "Exten": order.exten,
        "Priority": "1",
        "Timeout": str(int(originate.timeout * 1000)),
        # A withheld number is dialled, never shown: not on the phone's screen either.
        "CallerID": _caller_id(order.display, "" if order.withheld else order.exten),
        "Async": "true",
        "ChannelId": channel_id,
        "OtherChannelId": f"{channel_id};2",
        "Variable": variables,
    }


class Originator:
    """Click-to-call requests of one daemon (implements :class:`httpd.protocols.Originator`)."""

    def __init__(
        self,
        settings: Settings,
        send_action: SendAction,
        live: LiveSource,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._send = send_action
        self._live = live
        self._clock = clock
        self._mono = monotonic
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._by_action: dict[str, str] = {}
        self._by_linkedid: dict[str, str] = {}
        #: After the ring timeout, how long to wait for a word of the PBX before failing.
        self.response_grace = RESPONSE_GRACE_SECONDS

    def __len__(self) -> int:
        return len(self._requests)

    # -- the API's side --------------------------------------------------------------

    async def originate(self, order: OriginateOrder) -> OriginateStatus:
        self._prune()
        request_id = secrets.token_hex(8)
        action_id = f"pbxjournal-originate-{request_id}"
        channel_id = channel_id_for(request_id, order.callback_of)
        now, mono = self._clock(), self._mono()
        request = _Request(
            id=request_id,
            action_id=action_id,
            channel_id=channel_id,
            order=order,
            created_at=now,
            created_mono=mono,
            updated_at=now,
            updated_mono=mono,
            linkedid=channel_id,
        )
        # Known before the action is sent: its events may overtake the answer's handling.
        self._requests[request_id] = request
        self._by_action[action_id] = request_id
        self._by_linkedid[channel_id] = request_id
        fields = originate_fields(self.settings, order, action_id, channel_id, request_id)
        try:
            await self._send(fields)
        except AmiDisconnected as exc:
            self._forget(request)
            self._log(request, result="ami_unavailable", reason=str(exc))
            raise OriginateUnavailable(str(exc)) from None
        except AmiActionTimeout:
            # The action went out; the PBX may well ring the phone. Saying "retry" could ring
            # it twice: the request is followed as sent, and fails if nothing ever comes.
            log.warning("originate not confirmed in time; following it", originate_id=request_id)
        except AmiActionError as exc:
            first = exc.messages[0] if exc.messages else None
            reason = (first.first("Message") if first else "") or "refused by the PBX"
            self._finish(request, OriginateState.FAILED, reason=reason)
        except AmiError as exc:  # pragma: no cover - the transport raises only the above
            self._forget(request)
            self._log(request, result="ami_error", reason=str(exc))
            raise OriginateUnavailable(str(exc)) from None
        return request.view()

    def status(self, originate_id: str) -> OriginateStatus | None:
        request = self._requests.get(originate_id)
        if request is None:
            return None
        self._refresh(request)
        return request.view()

    def for_conversation(self, linkedid: str) -> OriginateStatus | None:
        request_id = self._by_linkedid.get(linkedid)
        return self.status(request_id) if request_id is not None else None

    # -- the daemon's side -----------------------------------------------------------

    def observe(self, event: AmiEvent) -> bool:
        """Take an ``OriginateResponse`` of ours; True when the event was one."""
        if event.name != "OriginateResponse":
            return False
        request_id = self._by_action.get(event.get("ActionID"))
        request = self._requests.get(request_id) if request_id is not None else None
        if request is None or request.state.final:
            return True
        try:
            code: int | None = int(event.get("Reason"))
        except ValueError:
            code = None
        if event.get("Response").lower() == "success":
            uniqueid = event.get("Uniqueid")
            if uniqueid and uniqueid not in ("<null>", request.linkedid):
                self._by_linkedid[uniqueid] = request.id
                request.linkedid = uniqueid
            if request.state is OriginateState.RINGING_EMPLOYEE:
                self._move(request, OriginateState.DIALLING_CUSTOMER)
            request.reason_code = code
        else:
            reason = REASONS.get(code, f"failed (reason {code})") if code is not None else None
            self._finish(
                request, OriginateState.FAILED, reason=reason or "failed", reason_code=code
            )
        return True

    def tag(self, call: FinishedCall) -> FinishedCall:
        """``call`` with ``callback_of`` when it is the conversation a click-to-call became.

        The request, while this process remembers it; otherwise the channel id the Originate
        gave the call (:func:`channel_id_for`), which the PBX keeps as the conversation's
        linkedid: a daemon restarted while the call back ran still links it."""
        request = self._request_of(call.conversation_id, call.linkedids)
        callback_of = (
            request.order.callback_of
            if request is not None
            else callback_of_channel(call.conversation_id, call.linkedids)
        )
        if callback_of is None:
            return call
        return dataclasses.replace(call, callback_of=callback_of)

    def written(self, entries: Iterable[JournalEntry]) -> None:
        """Journal rows committed: a click-to-call's conversation is finished."""
        if not self._by_linkedid:
            return
        for entry in entries:
            request = self._request_of(entry.call.conversation_id, entry.call.linkedids)
            if request is None:
                continue
            request.call_id = entry.id
            if not request.state.final:
                self._finish(request, OriginateState.FINISHED, reason=None)
            elif not request.logged:  # pragma: no cover - logged when final
                self._log(request)

    # -- internals -------------------------------------------------------------------

    def _request_of(self, conversation_id: str, linkedids: Iterable[str]) -> _Request | None:
        for linkedid in (conversation_id, *linkedids):
            request_id = self._by_linkedid.get(linkedid)
            if request_id is not None:
                return self._requests.get(request_id)
        return None

    def _refresh(self, request: _Request) -> None:
        """What the live conversation or the clock says since the last event."""
        if request.state.final:
            return
        live = None
        if request.linkedid is not None:
            live = next((c for c in self._live() if c.id == request.linkedid), None)
        if live is not None and live.state == "talking":
            if request.state is not OriginateState.TALKING:
                self._move(request, OriginateState.TALKING)
            return
        waited = self._mono() - request.created_mono
        lost = (
            request.state is OriginateState.RINGING_EMPLOYEE
            and live is None
            and waited > self.settings.originate.timeout + self.response_grace
        )
        if lost:
            self._finish(request, OriginateState.FAILED, reason="no word from the PBX about it")

    def _move(self, request: _Request, state: OriginateState) -> None:
        request.state = state
        request.updated_at, request.updated_mono = self._clock(), self._mono()

    def _finish(
        self,
        request: _Request,
        state: OriginateState,
        *,
        reason: str | None,
        reason_code: int | None = None,
    ) -> None:
        request.reason = reason
        if reason_code is not None:
            request.reason_code = reason_code
        self._move(request, state)
        self._log(request)

    def _log(
        self, request: _Request, *, result: str | None = None, reason: str | None = None
    ) -> None:
        if request.logged:
            return
        request.logged = True
        order = request.order
        log.info(
            "originate",
            originate_id=request.id,
            client=order.client,
            employee=order.extension,
            number=WITHHELD
            if order.withheld
            else mask_number(order.number, self.settings.log.numbers),
            callback_of=order.callback_of,
            result=result or request.state.value,
            reason=reason if reason is not None else request.reason,
            reason_code=request.reason_code,
            call_id=request.call_id,
            seconds=round(self._mono() - request.created_mono, 3),
        )

    def _forget(self, request: _Request) -> None:
        self._requests.pop(request.id, None)
        self._by_action.pop(request.action_id, None)
        for linkedid in [k for k, v in self._by_linkedid.items() if v == request.id]:
            del self._by_linkedid[linkedid]

    def _prune(self) -> None:
        """Drop what is no longer asked about: ended long ago, abandoned, or too many."""
        mono = self._mono()
        for request in list(self._requests.values()):
            ended = request.state.final and mono - request.updated_mono > RETENTION_SECONDS
            abandoned = mono - request.created_mono > ABANDON_SECONDS
            if ended or abandoned:
                if not request.logged:
                    self._log(request, result="unknown", reason="no outcome seen")
                self._forget(request)
        while len(self._requests) >= MAX_REQUESTS:
            oldest = next(iter(self._requests.values()))
            if not oldest.logged:
                self._log(oldest, result="unknown", reason="forgotten: too many requests")
            self._forget(oldest)
