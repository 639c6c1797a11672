"""Transfer patterns × directions, built from real captures by relabelling channels.

No stream here is hand-made: each case is a real capture (ours from Asterisk 22, or a peer
capture of a chan_sip PBX) with some channels *renamed*, every header that names them
rewritten alike (``Channel``, ``DestChannel``, ``TransfererChannel``…). Renaming a phone's
channel to a trunk's name (or back) turns the same events into another direction of the same
flow: the caller of the internal ``A → B, A transfers B to C`` renamed to a trunk is a
customer doing that transfer (incoming); B renamed to a trunk is an employee who called out
and transferred the customer to a colleague (outgoing). What must hold in each: who placed,
who answered in order, and that talk lasts until the last two talkers hang up.

Cases covered (pattern × kind × direction): A transfers B to C blind × internal, incoming,
outgoing (peer ``xfer_blind_abacbc``); B transfers A to C blind × incoming, internal (our
capture 11); B transfers A to C attended × incoming, internal (peer ``xfer_abbcac_anon``).
Not covered yet: B transfers A to C outgoing, A transfers B to C attended, and every blonde
case (no capture of those shapes to relabel).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

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
