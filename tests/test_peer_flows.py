"""The peer captures (cacofonisk's fixtures of a chan_sip PBX, tests/data/ami-traces/peer)
through the real pipeline: every call as the README's table says.

The captures carry no ``Timestamp`` and no ``.recvlog``: every event would have the same
time. They are dated here at a synthetic pace, one second per journal event from a fixed
epoch (:func:`paced`), so that durations are counts of events: a talk time is then checked
against the times of the very events that must start and end it (the answer, the last of the
talkers' hangups), which is what tells "talk stopped when the transferer left" from "talk
lasted until the end".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from config import Settings, load_settings
from connector.assembly import FinishedCall
from connector.events import AmiEvent
from pbxjournal.logs import call_number_for_log
from pbxjournal.pipeline import build_pipeline, employee_directory
from storage.journal import JournalEntry, to_call_detail, to_call_object
from tests.scenarios import TRACES, events_of

PEER = TRACES / "peer"
EPOCH = 1_700_000_000.0
PACE = 1.0

#: README: a mobile "+31" + account belongs to the employee of that account. Written in
#: other forms than the PBX dials them, so that matching goes through normalisation.
MOBILES = {
    "260010001": ["+31 26 001 0001"],
    "150010001": ["0031-15-0010001"],
    "150010002": ["+31150010002"],
}


def paced(events: Iterable[AmiEvent]) -> Iterator[AmiEvent]:
    """The captured order, one second apart from ``EPOCH`` (the captures have no clock)."""
    for index, event in enumerate(events):
        yield replace(event, time=EPOCH + PACE * index, timestamped=True)


def peer_settings(tmp_path: Path) -> Settings:
    text = (PEER / "peer.toml").read_text("utf-8")
    lines = []
    for line in text.splitlines():
        extension, _, name = line.partition(" = ")
        mobile = json.dumps(MOBILES.get(extension))
        lines.append(
            f"{extension} = {{ name = {name}, mobile = {mobile} }}"
            if name and extension in MOBILES
            else line
        )
    path = tmp_path / "peer.toml"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return load_settings(path)


def peer_events(slug: str) -> list[AmiEvent]:
    return list(paced(events_of((PEER / f"{slug}.ami").read_bytes())))


def replay(settings: Settings, events: list[AmiEvent]) -> list[JournalEntry]:
    pipeline = build_pipeline(settings, recordings=[])
    rows: dict[int, JournalEntry] = {}
    for event in events:
        for entry in pipeline.feed(event, event.time):
            rows[entry.id] = entry
    for entry in pipeline.drain(events[-1].time):
        rows[entry.id] = entry
    assert pipeline.assembler.open_conversations == 0
    return list(rows.values())


def only_row(tmp_path: Path, slug: str) -> tuple[FinishedCall, dict[str, Any], list[AmiEvent]]:
    settings = peer_settings(tmp_path)
    events = peer_events(slug)
    (entry,) = replay(settings, events)
    detail = to_call_detail(entry, settings.pbx.tz, employee_directory(settings))
    return entry.call, detail, events


def roles(call: FinishedCall) -> list[tuple[str, str]]:
    return [(p.extension, p.role.value) for p in call.participants]


def hangup_at(events: list[AmiEvent], channel: str) -> float:
    return next(e.time for e in events if e.name == "Hangup" and e.get("Channel") == channel)


def talk_end(call: FinishedCall) -> float:
    assert call.answered_at is not None
    return call.answered_at + call.talk_seconds


def test_caller_blind_transfers_the_callee_and_hangs_up_abacbc(tmp_path: Path) -> None:
    call, detail, events = only_row(tmp_path, "xfer_blind__xfer_blind_abacbc")
    assert detail["direction"] == "internal" and detail["status"] == "reached"
    assert roles(call) == [
        ("150010001", "placed"),
        ("150010002", "answered"),
        ("150010003", "answered"),
    ]
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [
        ("blind", "150010001", "150010003")
    ]
    # Talk runs until 202 and 203 hang up, well after the transferer (201) left.
    a_left = hangup_at(events, "SIP/150010001-00000006")
    last = max(
        hangup_at(events, "SIP/150010002-00000007"), hangup_at(events, "SIP/150010003-00000008")
    )
    assert talk_end(call) == pytest.approx(last)
    assert talk_end(call) > a_left + 20 * PACE
    c = call.participants[2]
    assert c.answered_at is not None and c.answered_at > a_left and c.talk_seconds > 0


def test_click_to_call_then_callee_transfers_the_placer_to_203_abbcac(tmp_path: Path) -> None:
    call, detail, events = only_row(tmp_path, "originate__ctd-account-account-xfer-attn-abbcac")
    assert detail["direction"] == "internal"
    # 201 placed it (click-to-call on their behalf); the consultation leg of 202, younger
    # and undialled, merging in does not make 202 the placer.
    assert roles(call) == [
        ("150010001", "placed"),
        ("150010002", "answered"),
        ("150010003", "answered"),
    ]
    assert call.participants[0].rang  # the Originate rang 201 first
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [
        ("attended", "150010002", "150010003")
    ]
    # 201 and 203 talk after the transfer until 201 (the placer) hangs up.
    assert talk_end(call) == pytest.approx(
        min(
            hangup_at(events, "SIP/150010001-0000001d"),
            hangup_at(events, "SIP/150010003-00000020"),
        )
    )


@pytest.mark.parametrize("slug", ["mobile__simple_mobile", "mobile__acceptance_simple"])
def test_incoming_call_forwarded_to_an_employees_mobile_is_answered_there(
    tmp_path: Path, slug: str
) -> None:
    call, detail, events = only_row(tmp_path, slug)
    assert detail["direction"] == "incoming"
    assert detail["status"] == "answered" and detail["attention"] is False
    assert detail["number"] == "+31150010001"
    assert [(e["extension"], e["role"], e["on_mobile"]) for e in detail["employees"]] == [
        ("260010001", "answered", True)
    ]
    assert detail["timeline"]["legs"] and all(
        leg["on_mobile"] for leg in detail["timeline"]["legs"]
    )
    assert detail["timeline"]["participants"][0]["on_mobile"] is True
    # Answered when the mobile leg reached the caller's audio, not when the mobile went Up.
    mobile = next(
        c
        for c in ("SIP/voipgrid-siproute-docker-00000037", "SIP/voipgrid-siproute-docker-00000049")
        if any(e.get("Channel") == c for e in events)
    )
    caller_joined = next(
        e.time
        for e in events
        if e.name == "BridgeEnter" and e.get("Channel") == call_channel(events)
    )
    went_up = next(
        e.time
        for e in events
        if e.name == "Newstate" and e.get("Channel") == mobile and e.get("ChannelStateDesc") == "Up"
    )
    assert call.answered_at == pytest.approx(caller_joined)
    assert call.answered_at > went_up


def call_channel(events: list[AmiEvent]) -> str:
    return next(e.get("Channel") for e in events if e.name == "Newchannel")


@pytest.mark.parametrize("slug", ["mobile__simple_mobile", "mobile__acceptance_simple"])
def test_a_mobile_nobody_owns_stays_a_trunk_leg_and_the_call_is_lost(
    tmp_path: Path, slug: str
) -> None:
    settings = replace(peer_settings(tmp_path), employees=())
    (entry,) = replay(settings, peer_events(slug))
    call = to_call_object(entry, settings.pbx.tz, employee_directory(settings))
    assert call["status"] == "lost" and call["attention"] is True
    assert call["employees"] == []


def test_a_mobile_that_never_reaches_the_caller_only_rang(tmp_path: Path) -> None:
    """Call acceptance refused: the mobile answered (Up), sits in its acceptance bridge, and
    is never bridged to the caller. The capture cut just before the caller's channel enters
    the bridge that would connect them, then every channel hangs up in the captured order."""
    events = peer_events("mobile__acceptance_simple")
    caller = call_channel(events)
    cut = next(
        i for i, e in enumerate(events) if e.name == "BridgeEnter" and e.get("Channel") == caller
    )
    hangups = [e for e in events[cut:] if e.name == "Hangup"]
    tail = [replace(e, time=events[cut].time + PACE * (i + 1)) for i, e in enumerate(hangups)]
    settings = peer_settings(tmp_path)
    (entry,) = replay(settings, [*events[:cut], *tail])
    call = to_call_object(entry, settings.pbx.tz, employee_directory(settings))
    assert call["status"] == "lost" and call["attention"] is True
    assert [(e["extension"], e["role"], e["on_mobile"]) for e in call["employees"]] == [
        ("260010001", "rang", True)
    ]


def test_withheld_number_is_kept_and_marked(tmp_path: Path) -> None:
    call, detail, _ = only_row(tmp_path, "xfer_attended__xfer_abbcac_anon")
    assert detail["direction"] == "incoming" and detail["status"] == "answered"
    # The first number seen, not the mask the PBX put on it (+31260xxxxxx).
    assert detail["number_raw"] == "+31260010001"
    assert detail["number"] == "+31260010001"
    assert detail["number_withheld"] is True
    assert roles(call) == [("150010001", "answered"), ("150010003", "answered")]
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [
        ("attended", "150010001", "150010003")
    ]


def test_a_presented_number_is_not_withheld(tmp_path: Path) -> None:
    _, detail, _ = only_row(tmp_path, "mobile__simple_mobile")
    assert detail["number_withheld"] is False


def test_a_withheld_number_never_reaches_the_logs_even_in_full(tmp_path: Path) -> None:
    _, detail, _ = only_row(tmp_path, "xfer_attended__xfer_abbcac_anon")
    assert call_number_for_log(detail, "full") == "withheld"
    assert call_number_for_log(detail, "masked") == "withheld"
    _, shown, _ = only_row(tmp_path, "mobile__simple_mobile")
    assert call_number_for_log(shown, "full") == "+31150010001"
