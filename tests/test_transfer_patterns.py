"""Transfer patterns × directions, built from real captures by relabelling channels.

No stream here is hand-made: each case is a real capture (ours from Asterisk 22, or a peer
capture of a chan_sip PBX) with some channels *renamed*, every header that names them
rewritten alike (``Channel``, ``DestChannel``, ``TransfererChannel``…). Renaming a phone's
channel to a trunk's name (or back) turns the same events into another direction of the same
flow: the caller of the internal ``A → B, A transfers B to C`` renamed to a trunk is a
customer doing that transfer (incoming); B renamed to a trunk is an employee who called out
and transferred the customer to a colleague (outgoing). What must hold in each: who placed,
who answered in order, and that talk lasts until the last two talkers hang up.

Cases covered (pattern × kind × direction), all 18:

- A transfers B to C blind × internal, incoming, outgoing: peer ``xfer_blind_abacbc``;
- B transfers A to C blind × incoming, internal, outgoing: our capture 11 (outgoing: the
  caller renamed to a phone, 101 to a trunk: a customer using the PBX's blind transfer);
- B transfers A to C attended × incoming, internal: peer ``xfer_abbcac_anon``; outgoing: the
  same (a phone's REFER) and our capture 12 (DTMF *2), renamed the same way;
- A transfers B to C attended × incoming, internal, outgoing: capture 12 with the two
  parties' identities exchanged from the consultation on (:func:`swap_parties`);
- blonde × both patterns × the three directions: capture 12 with the target's answer moved
  after the transfer (:func:`blonde`), and again with the target never answering (it only
  rang).

What the transformations do to the PBX's events is described where they are defined.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from connector.assembly import CallAssembler, ChannelClassifier, FinishedCall
from connector.events import AmiEvent
from tests.scenarios import TRACES, assemble, events_of

PEER = TRACES / "peer"
PEER_TRUNK = "SIP/voipgrid-siproute-docker-"


def relabel(events: Iterable[AmiEvent], names: Mapping[str, str]) -> list[AmiEvent]:
    """The events with every header value equal to a renamed channel rewritten."""
    out = []
    for event in events:
        headers = {k: names.get(v, v) for k, v in event.headers.items()}
        out.append(replace(event, headers=headers))
    return out


def paced(events: list[AmiEvent]) -> list[AmiEvent]:
    """Peer captures have no clock: one second per event (see tests/test_peer_flows.py)."""
    return [replace(e, time=1_700_000_000.0 + i, timestamped=True) for i, e in enumerate(events)]


def peer(slug: str, names: Mapping[str, str]) -> tuple[list[AmiEvent], CallAssembler]:
    events = paced(relabel(events_of((PEER / f"{slug}.ami").read_bytes()), names))
    classifier = ChannelClassifier(r"^\d{9}$", trunks=["voipgrid-siproute-docker"])
    return events, CallAssembler(classifier, grace=3.0)


def ours(slug: str, names: Mapping[str, str]) -> tuple[list[AmiEvent], CallAssembler]:
    events = relabel(events_of((TRACES / f"{slug}.ami").read_bytes()), names)
    return events, CallAssembler(ChannelClassifier(r"^\d{2,6}$"), grace=3.0)


def hangup_at(events: list[AmiEvent], channel: str) -> float:
    return next(e.time for e in events if e.name == "Hangup" and e.get("Channel") == channel)


def only_call(events: list[AmiEvent], assembler: CallAssembler) -> FinishedCall:
    replay = assemble(events, assembler)
    assert len(replay.calls) == 1, replay.calls
    assert replay.assembler.open_conversations == 0
    return replay.calls[0]


A, B, C = "SIP/150010001-00000006", "SIP/150010002-00000007", "SIP/150010003-00000008"
ABACBC = "xfer_blind__xfer_blind_abacbc"


@pytest.mark.parametrize(
    ("direction", "names", "roles"),
    [
        (
            "internal",
            {},
            [("150010001", "placed"), ("150010002", "answered"), ("150010003", "answered")],
        ),
        (
            "incoming",
            {A: PEER_TRUNK + "90000006"},
            [("150010002", "answered"), ("150010003", "answered")],
        ),
        (
            "outgoing",
            {B: PEER_TRUNK + "90000007"},
            [("150010001", "placed"), ("150010003", "answered")],
        ),
    ],
)
def test_a_calls_b_a_blind_transfers_b_to_c(
    direction: str, names: dict[str, str], roles: list[tuple[str, str]]
) -> None:
    events, assembler = peer(ABACBC, names)
    call = only_call(events, assembler)
    assert call.direction.value == direction
    assert [(p.extension, p.role.value) for p in call.participants] == roles
    assert [t.kind for t in call.transfers] == ["blind"]
    b, c = names.get(B, B), names.get(C, C)
    assert call.answered_at is not None
    assert call.answered_at + call.talk_seconds == pytest.approx(
        max(hangup_at(events, b), hangup_at(events, c))
    )
    assert call.answered_at + call.talk_seconds > hangup_at(events, names.get(A, A))


@pytest.mark.parametrize(
    ("direction", "names", "roles"),
    [
        ("incoming", {}, [("101", "answered"), ("103", "answered")]),
        (
            "internal",
            {"IAX2/provider-3590": "IAX2/109-3590"},
            [("109", "placed"), ("101", "answered"), ("103", "answered")],
        ),
    ],
)
def test_a_calls_b_b_blind_transfers_a_to_c(
    direction: str, names: dict[str, str], roles: list[tuple[str, str]]
) -> None:
    events, assembler = ours("11-incoming-blind-transfer", names)
    call = only_call(events, assembler)
    assert call.direction.value == direction
    assert [(p.extension, p.role.value) for p in call.participants] == roles
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [("blind", "101", "103")]
    caller = names.get("IAX2/provider-3590", "IAX2/provider-3590")
    assert call.answered_at is not None
    assert call.answered_at + call.talk_seconds == pytest.approx(
        min(hangup_at(events, caller), hangup_at(events, "IAX2/103-2137")), abs=0.01
    )


def test_a_calls_b_b_blind_transfers_a_to_c_outgoing() -> None:
    """Capture 11 with the caller renamed to a phone (109) and 101 to a trunk: 109 calls a
    customer, who transfers 109 (blind, the PBX's ``#``) to 103 and hangs up."""
    names = {"IAX2/provider-3590": "IAX2/109-3590", "IAX2/101-1455": "IAX2/provider-1455"}
    events, assembler = ours("11-incoming-blind-transfer", names)
    call = only_call(events, assembler)
    assert call.direction.value == "outgoing"
    assert [(p.extension, p.role.value) for p in call.participants] == [
        ("109", "placed"),
        ("103", "answered"),
    ]
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [("blind", None, "103")]
    assert "103" in call.employees_rang
    assert call.answered_at is not None
    assert call.answered_at + call.talk_seconds == pytest.approx(
        min(hangup_at(events, "IAX2/109-3590"), hangup_at(events, "IAX2/103-2137")), abs=0.01
    )
    assert call.answered_at + call.talk_seconds > hangup_at(events, "IAX2/provider-1455")


ANON = "xfer_attended__xfer_abbcac_anon"
CUSTOMER = "SIP/voipgrid-siproute-docker-00000027"


@pytest.mark.parametrize(
    ("direction", "names", "roles"),
    [
        ("incoming", {}, [("150010001", "answered"), ("150010003", "answered")]),
        (
            "internal",
            {CUSTOMER: "SIP/150010009-00000027"},
            [("150010009", "placed"), ("150010001", "answered"), ("150010003", "answered")],
        ),
    ],
)
def test_a_calls_b_b_attended_transfers_a_to_c(
    direction: str, names: dict[str, str], roles: list[tuple[str, str]]
) -> None:
    events, assembler = peer(ANON, names)
    call = only_call(events, assembler)
    assert call.direction.value == direction
    assert [(p.extension, p.role.value) for p in call.participants] == roles
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [
        ("attended", "150010001", "150010003")
    ]
    customer = names.get(CUSTOMER, CUSTOMER)
    assert call.answered_at is not None
    assert call.answered_at + call.talk_seconds == pytest.approx(
        min(hangup_at(events, customer), hangup_at(events, "SIP/150010003-0000002a"))
    )


def test_relabelling_changes_only_names(tmp_path: Path) -> None:
    """The helper rewrites whole header values only: the stream keeps its events and order."""
    plain = events_of((PEER / f"{ABACBC}.ami").read_bytes())
    renamed = relabel(plain, {A: PEER_TRUNK + "90000006"})
    again = events_of((PEER / f"{ABACBC}.ami").read_bytes())
    assert [e.name for e in renamed] == [e.name for e in again]
    assert sum(v == PEER_TRUNK + "90000006" for e in renamed for v in e.headers.values()) > 10
    assert not any(v == A for e in renamed for v in e.headers.values())


# -- attended and blonde from capture 12 ---------------------------------------------------
#
# Capture 12 (ours, Asterisk 22): the trunk calls 101, 101 answers; 101 presses *2 (features
# ``atxfer``), the PBX puts the trunk on hold and dials ``Local/104@from-internal`` from a
# bridge of its own (the consultation: 101 leaves the call's bridge for it), 104 answers,
# 101 completes (``AttendedTransfer`` with ``DestType: Bridge``: the consultation bridge is
# merged into the call's) and hangs up; the Local pair optimises away, the trunk and 104
# talk until they hang up. Callee-side (B transfers A to C), incoming as captured.
#
# Caller-side (A transfers B to C): until the consultation starts, the two parties of the
# call are alike (one bridge, both Up); only who dialled whom tells the caller. From the
# moment 101 leaves the bridge to consult on, :func:`swap_parties` exchanges the two
# parties' identities (channel name and uniqueid in every header naming them; linkedids
# stay): the same events then say that the *caller* (the trunk's channel, the one that
# dialled) left to consult, transferred and hung up, while the callee (101's channel)
# waited on hold and ends up with 104. Renaming the caller to a phone and/or the callee to a
# trunk gives the other directions, as above.
#
# Blonde (:func:`blonde`): the same transfer completed while 104 still rings. Asterisk's
# DTMF atxfer does it in ``blond_enter`` (main/bridge_basic.c): the very bridge merge and
# ``publish_transfer_success`` of a completed attended transfer, with ``ringing()`` sent to
# the target instead of the answer. So the stream is capture 12 with the target's answer
# (104's and the Local halves' ``Newstate Up``, the ``DialEnd ANSWER``s, the bridge 104
# entered) taken from before the transfer and the ``AttendedTransfer`` saying the target
# is ``Ringing`` (state 5): the transferer's own channel is ``Up`` as in any DTMF transfer.
# Then either the answer comes after the transfer (moved there, as it was) or never: the
# Local pair and 104 give up (a ``DialEnd NOANSWER``) and the caller hangs up.

TWELVE = "12-incoming-attended-transfer"
TRUNK12, PHONE101 = "IAX2/provider-1953", "IAX2/101-3681"
UID_TRUNK12, UID_101 = "1795837521.45", "1795837521.46"
PHONE104 = "IAX2/104-15735"
LOCAL104 = ("Local/104@from-internal-00000000;1", "Local/104@from-internal-00000000;2")


def swap_parties(
    events: list[AmiEvent], one: tuple[str, str], other: tuple[str, str], start: int
) -> list[AmiEvent]:
    """From ``events[start]`` on, the two channels ``(name, uniqueid)`` exchange identities
    (every header but the linkedids)."""
    names = {one[0]: other[0], other[0]: one[0], one[1]: other[1], other[1]: one[1]}
    out = events[:start]
    for event in events[start:]:
        headers = {
            k: v if k.endswith("Linkedid") else names.get(v, v) for k, v in event.headers.items()
        }
        out.append(replace(event, headers=headers))
    return out


def consultation_start(events: list[AmiEvent]) -> int:
    """The index of the transferer's ``BridgeLeave`` that starts the consultation."""
    return next(
        i for i, e in enumerate(events) if e.name == "BridgeLeave" and e.get("Channel") == PHONE101
    )


def blonde(events: list[AmiEvent], *, answers: bool) -> list[AmiEvent]:
    """Capture 12 with the transfer completed while the target rings (see above)."""
    target = {PHONE104, *LOCAL104}
    target_bridge = next(
        e.get("BridgeUniqueid")
        for e in events
        if e.name == "BridgeEnter" and e.get("Channel") == PHONE104
    )
    xfer = next(i for i, e in enumerate(events) if e.name == "AttendedTransfer")
    transferer_gone = next(
        i
        for i, e in enumerate(events)
        if i > xfer and e.name == "Hangup" and e.get("Channel") == PHONE101
    )

    def is_answer(e: AmiEvent) -> bool:
        return (
            (
                e.name == "Newstate"
                and e.get("Channel") in target
                and e.get("ChannelStateDesc") == "Up"
            )
            or (
                e.name == "DialEnd"
                and e.get("DestChannel") in target
                and e.get("DialStatus") == "ANSWER"
            )
            or (
                e.name in ("BridgeCreate", "BridgeEnter")
                and e.get("BridgeUniqueid") == target_bridge
            )
        )

    before = [e for e in events[:xfer] if not is_answer(e)]
    answer = [e for e in events[:xfer] if is_answer(e)]
    ringing = {"TransferTargetChannelState": "5", "TransferTargetChannelStateDesc": "Ringing"}
    transfer = replace(events[xfer], headers={**events[xfer].headers, **ringing})
    middle = events[xfer + 1 : transferer_gone + 1]
    rest = events[transferer_gone + 1 :]
    if answers:
        at = events[transferer_gone].time + 0.2
        moved = [replace(e, time=at) for e in answer]
        return [*before, transfer, *middle, *moved, *rest]
    # Nobody answers: the optimisation (which needs 104 in a bridge) and everything in the
    # bridge 104 would have entered never happen; the Dial gives up before 104 hangs up.
    dial = next(e for e in answer if e.name == "DialEnd" and e.get("DestChannel") == PHONE104)
    tail: list[AmiEvent] = []
    for e in rest:
        if e.name.startswith("LocalOptimization") or e.get("BridgeUniqueid") == target_bridge:
            continue
        if e.name == "Hangup" and e.get("Channel") == PHONE104:
            noanswer = {"DialStatus": "NOANSWER", "DestChannelStateDesc": "Ringing"}
            tail.append(replace(dial, time=e.time, headers={**dial.headers, **noanswer}))
        tail.append(e)
    return [*before, transfer, *middle, *tail]


def twelve(
    names: Mapping[str, str], *, caller_side: bool, kind: str = "attended", answers: bool = True
) -> tuple[list[AmiEvent], CallAssembler]:
    events = list(events_of((TRACES / f"{TWELVE}.ami").read_bytes()))
    if kind == "blonde":
        events = blonde(events, answers=answers)
    if caller_side:
        events = swap_parties(
            events, (TRUNK12, UID_TRUNK12), (PHONE101, UID_101), consultation_start(events)
        )
    return relabel(events, names), CallAssembler(ChannelClassifier(r"^\d{2,6}$"), grace=3.0)


def left_bridge_at(events: list[AmiEvent], channel: str) -> float:
    return next(e.time for e in events if e.name == "BridgeLeave" and e.get("Channel") == channel)


AS_109 = {TRUNK12: "IAX2/109-1953"}
AS_109_OUT = {TRUNK12: "IAX2/109-1953", PHONE101: "IAX2/provider-3681"}

#: (pattern, direction, names, roles with the target answering, the transferer's extension)
TWELVE_CASES: list[tuple[str, str, dict[str, str], list[tuple[str, str]], str | None]] = [
    ("caller", "incoming", {}, [("101", "answered"), ("104", "answered")], None),
    (
        "caller",
        "internal",
        AS_109,
        [("109", "placed"), ("101", "answered"), ("104", "answered")],
        "109",
    ),
    ("caller", "outgoing", AS_109_OUT, [("109", "placed"), ("104", "answered")], "109"),
    ("callee", "incoming", {}, [("101", "answered"), ("104", "answered")], "101"),
    (
        "callee",
        "internal",
        AS_109,
        [("109", "placed"), ("101", "answered"), ("104", "answered")],
        "101",
    ),
    ("callee", "outgoing", AS_109_OUT, [("109", "placed"), ("104", "answered")], None),
]


def cases(pattern: str | None = None) -> list[Any]:
    return [
        pytest.param(*c, id=f"{c[0]}-side-{c[1]}") for c in TWELVE_CASES if pattern in (None, c[0])
    ]


@pytest.mark.parametrize(
    ("pattern", "direction", "names", "roles", "by"),
    cases("caller"),
)
def test_a_calls_b_a_attended_transfers_b_to_c(
    pattern: str,
    direction: str,
    names: dict[str, str],
    roles: list[tuple[str, str]],
    by: str | None,
) -> None:
    events, assembler = twelve(names, caller_side=True)
    call = only_call(events, assembler)
    assert call.direction.value == direction
    assert [(p.extension, p.role.value) for p in call.participants] == roles
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [("attended", by, "104")]
    assert "104" in call.employees_rang
    # The caller (the transferer) hung up at the transfer; the callee and 104 talk on.
    transferer, transferee = names.get(TRUNK12, TRUNK12), names.get(PHONE101, PHONE101)
    assert hangup_at(events, transferer) < hangup_at(events, PHONE104)
    assert call.answered_at is not None
    assert call.answered_at + call.talk_seconds == pytest.approx(
        min(hangup_at(events, transferee), hangup_at(events, PHONE104)), abs=0.01
    )


def test_a_calls_b_b_attended_transfers_a_to_c_outgoing_dtmf() -> None:
    """Capture 12 with 101's part played by a customer: 109 calls out, the customer uses the
    PBX's transfer feature (*2) and hands 109 over to 104."""
    events, assembler = twelve(AS_109_OUT, caller_side=False)
    call = only_call(events, assembler)
    assert call.direction.value == "outgoing"
    assert [(p.extension, p.role.value) for p in call.participants] == [
        ("109", "placed"),
        ("104", "answered"),
    ]
    assert [(t.kind, t.target) for t in call.transfers] == [("attended", "104")]
    assert call.answered_at is not None
    assert call.answered_at + call.talk_seconds == pytest.approx(
        min(hangup_at(events, "IAX2/109-1953"), hangup_at(events, PHONE104)), abs=0.01
    )


ANON_OUT = {
    CUSTOMER: "SIP/150010009-00000027",
    "SIP/150010001-00000028": PEER_TRUNK + "00000028",
    "SIP/150010001-00000029": PEER_TRUNK + "00000029",
}


def test_a_calls_b_b_attended_transfers_a_to_c_outgoing_refer() -> None:
    """The peer ``xfer_abbcac_anon`` (a phone's REFER, two channels of the transferer) with
    the caller renamed to a phone and the transferer's two channels to trunk channels:
    150010009 calls a customer, who consults 150010003 on a second line and transfers."""
    events, assembler = peer(ANON, ANON_OUT)
    call = only_call(events, assembler)
    assert call.direction.value == "outgoing"
    assert [(p.extension, p.role.value) for p in call.participants] == [
        ("150010009", "placed"),
        ("150010003", "answered"),
    ]
    assert [(t.kind, t.target) for t in call.transfers] == [("attended", "150010003")]
    assert call.answered_at is not None
    assert call.answered_at + call.talk_seconds == pytest.approx(
        min(hangup_at(events, ANON_OUT[CUSTOMER]), hangup_at(events, "SIP/150010003-0000002a"))
    )


@pytest.mark.parametrize(("pattern", "direction", "names", "roles", "by"), cases())
def test_blonde_transfer_target_answers_after_the_transfer(
    pattern: str,
    direction: str,
    names: dict[str, str],
    roles: list[tuple[str, str]],
    by: str | None,
) -> None:
    events, assembler = twelve(names, caller_side=pattern == "caller", kind="blonde")
    xfer = next(e for e in events if e.name == "AttendedTransfer")
    answer = next(
        e
        for e in events
        if e.name == "Newstate"
        and e.get("Channel") == PHONE104
        and e.get("ChannelStateDesc") == "Up"
    )
    assert xfer.get("TransferTargetChannelStateDesc") == "Ringing"
    assert xfer.get("SecondTransfererChannelStateDesc") == "Up"
    assert xfer.get("DestType") == "Bridge"
    assert answer.time > xfer.time
    call = only_call(events, assembler)
    assert call.direction.value == direction
    assert [(p.extension, p.role.value) for p in call.participants] == roles
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [("blonde", by, "104")]
    participant = next(p for p in call.participants if p.extension == "104")
    assert participant.answered_at == pytest.approx(answer.time, abs=0.01)
    transferee = PHONE101 if pattern == "caller" else TRUNK12
    transferee = names.get(transferee, transferee)
    assert call.answered_at is not None
    assert call.answered_at + call.talk_seconds == pytest.approx(
        min(hangup_at(events, transferee), hangup_at(events, PHONE104)), abs=0.01
    )


@pytest.mark.parametrize(("pattern", "direction", "names", "roles", "by"), cases())
def test_blonde_transfer_target_never_answers(
    pattern: str,
    direction: str,
    names: dict[str, str],
    roles: list[tuple[str, str]],
    by: str | None,
) -> None:
    events, assembler = twelve(names, caller_side=pattern == "caller", kind="blonde", answers=False)
    assert not any(
        e.name == "Newstate" and e.get("Channel") == PHONE104 and e.get("ChannelStateDesc") == "Up"
        for e in events
    )
    call = only_call(events, assembler)
    assert call.direction.value == direction
    rang_only = [(ext, role) for ext, role in roles if ext != "104"] + [("104", "rang")]
    assert [(p.extension, p.role.value) for p in call.participants] == rang_only
    # Nobody answered: the target is the extension as dialled (``TransferTargetExten``).
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [("blonde", by, "104")]
    # Talk ended when the transferer left the transferee to consult; nobody talked after.
    transferer = TRUNK12 if pattern == "caller" else PHONE101
    transferer = names.get(transferer, transferer)
    assert call.answered_at is not None
    assert call.answered_at + call.talk_seconds == pytest.approx(
        left_bridge_at(events, transferer), abs=0.01
    )
