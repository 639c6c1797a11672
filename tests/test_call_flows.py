"""Every conversation of the real captures comes out as its expected.json says.

Each test replays one capture from a real Asterisk 22 through the sans-IO assembler and
checks direction, number, who rang, who answered in order, talk time (±1 s), recording parts,
and that no other row appears (no ghosts from Local channels, ring-group or queue legs).
"""

from __future__ import annotations

import gc

import pytest

from connector.assembly import Direction, FinishedCall, Role
from connector.events import AmiEvent
from tests.scenarios import (
    assemble,
    assemble_capture,
    capture,
    check_call,
    events_of,
    expected,
    match_calls,
    new_assembler,
)


def only_call(slug: str) -> FinishedCall:
    replay = assemble_capture(slug)
    want = expected(slug)["calls"]
    assert len(replay.calls) == len(want) == 1, replay.calls
    check_call(replay.calls[0], want[0])
    assert replay.assembler.open_conversations == 0
    assert replay.assembler.open_channels == 0
    return replay.calls[0]


def roles(call: FinishedCall) -> list[tuple[str, str]]:
    return [(p.extension, p.role.value) for p in call.participants]


def test_incoming_call_answered_directly_by_101() -> None:
    call = only_call("01-incoming-answered-direct")
    assert roles(call) == [("101", "answered")]
    assert call.did == "74957770101"
    assert call.ring_seconds == pytest.approx(4.0, abs=0.2)


def test_incoming_call_to_ring_group_answered_by_102_others_only_rang() -> None:
    call = only_call("02-incoming-ringgroup-102-answers")
    assert roles(call)[0] == ("102", "answered")
    assert sorted(roles(call)[1:]) == [("101", "rang"), ("103", "rang")]


def test_incoming_call_not_answered_then_pbx_announcement_is_missed() -> None:
    call = only_call("03-incoming-noanswer-timeout")
    # The PBX answered the trunk for its announcement: that is not an employee answering.
    assert call.answered_at is None
    assert call.ring_seconds == pytest.approx(15.0, abs=0.5)
    assert roles(call) == [("101", "rang")]


def test_incoming_call_abandoned_while_ringing() -> None:
    call = only_call("04-incoming-abandoned-while-ringing")
    assert call.ring_seconds == pytest.approx(3.0, abs=0.5)
    assert call.talk_seconds == 0.0


def test_incoming_call_through_queue_answered_by_101() -> None:
    call = only_call("05-incoming-queue-101-answers")
    assert call.queues == ("sales",)
    assert roles(call) == [("101", "answered"), ("102", "rang")]


def test_incoming_call_abandoned_in_queue_while_members_ring() -> None:
    call = only_call("06-incoming-queue-abandoned")
    assert call.queues == ("sales",)
    assert {p.role for p in call.participants} == {Role.RANG}


def test_outgoing_call_answered_shows_the_number_sent_to_the_trunk() -> None:
    call = only_call("07-outgoing-answered")
    assert roles(call) == [("101", "placed")]
    assert call.talk_seconds == pytest.approx(8.0, abs=0.5)


def test_outgoing_call_cancelled_before_answer() -> None:
    call = only_call("08-outgoing-noanswer-cancelled")
    assert call.ring_seconds == pytest.approx(8.0, abs=0.5)
    assert roles(call) == [("101", "placed")]


def test_outgoing_call_to_busy_number_is_cancelled() -> None:
    call = only_call("09-outgoing-busy")
    assert not call.answered
    assert roles(call) == [("102", "placed")]


def test_internal_call_101_to_102() -> None:
    call = only_call("10-internal-101-to-102")
    assert call.direction is Direction.INTERNAL
    assert call.external_number is None
    assert roles(call) == [("101", "placed"), ("102", "answered")]


def test_incoming_call_blind_transferred_from_101_to_103() -> None:
    call = only_call("11-incoming-blind-transfer")
    assert roles(call) == [("101", "answered"), ("103", "answered")]
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [("blind", "101", "103")]
    assert len(call.recordings) == 2
    legs = [(leg.extension, round(leg.disconnected_at - leg.connected_at)) for leg in call.legs]
    assert legs == [("101", 10), ("103", 6)]


def test_incoming_call_attended_transfer_over_local_channels_from_101_to_104() -> None:
    call = only_call("12-incoming-attended-transfer")
    assert roles(call) == [("101", "answered"), ("104", "answered")]
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [("attended", "101", "104")]
    # The consultation 101 ↔ 104 is part of this conversation, not a row of its own.
    assert call.participants[1].talk_seconds == pytest.approx(8.0, abs=1.0)


def test_incoming_call_picked_up_by_105_from_ringing_101() -> None:
    call = only_call("13-incoming-pickup-by-105")
    assert roles(call) == [("105", "answered"), ("101", "rang")]
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [("pickup", "105", "101")]
    assert len(call.linkedids) == 2  # the picker's own linkedid was merged in


def test_two_overlapping_incoming_calls_stay_apart() -> None:
    slug = "14-two-overlapping-incoming"
    replay = assemble_capture(slug)
    want = expected(slug)["calls"]
    assert len(replay.calls) == len(want) == 2
    for call, item in match_calls(replay.calls, want):
        check_call(call, item)


def test_missed_call_then_call_back_are_two_rows() -> None:
    slug = "15-missed-then-callback"
    replay = assemble_capture(slug)
    want = expected(slug)["calls"]
    assert len(replay.calls) == 2
    for item in want:
        call = next(c for c in replay.calls if c.direction.value == item["direction"])
        check_call(call, item)


def test_incoming_call_through_ivr_and_local_channel_to_102() -> None:
    call = only_call("16-ivr-localchannel-to-102")
    assert roles(call) == [("102", "answered")]
    # IVR time is ring time, not talk time.
    assert call.ring_seconds == pytest.approx(6.2, abs=0.3)


def test_burst_of_50_mixed_calls_gives_50_rows_44_answered() -> None:
    slug = "17-burst-50-mixed"
    replay = assemble_capture(slug)
    want = expected(slug)["calls"]
    assert len(replay.calls) == 50
    assert sum(1 for c in replay.calls if c.answered) == 44
    for call, item in match_calls(replay.calls, want):
        check_call(call, item, planned=True)
    assert replay.assembler.open_conversations == 0


def test_click_to_call_originate_rings_101_first_then_dials_out() -> None:
    call = only_call("18-click-to-call-originate")
    assert call.direction is Direction.OUTGOING
    assert roles(call) == [("101", "placed")]
    assert call.participants[0].rang


def test_incoming_call_group_pickup_by_104_of_ringing_102() -> None:
    call = only_call("19-group-pickup-star8")
    assert roles(call) == [("104", "answered"), ("102", "rang")]
    assert [(t.kind, t.by, t.target) for t in call.transfers] == [("pickup", "104", "102")]


def test_pbx_restart_capture_leaves_nothing_open() -> None:
    replay = assemble_capture("00-connect-and-reconnect")
    assert replay.calls == []
    assert replay.assembler.open_conversations == 0


def test_calls_up_when_the_pbx_shuts_down_end_there_marked_approximate() -> None:
    events = list(events_of(capture("01-incoming-answered-direct").read_bytes()))
    answered = next(
        i
        for i, e in enumerate(events)
        if e.name == "BridgeEnter" and e.get("Channel").startswith("IAX2/provider")
    )
    shutdown_at = events[answered].time + 2.0
    shutdown = AmiEvent(
        name="Shutdown",
        time=shutdown_at,
        headers={"Event": "Shutdown", "Shutdown": "Cleanly", "Restart": "True"},
        timestamped=True,
    )
    assembler = new_assembler()
    for event in events[: answered + 1]:
        assert assembler.feed(event, event.time) == []
    (call,) = assembler.feed(shutdown, shutdown_at)
    assert call.approximate_end and call.ended_at == shutdown_at
    assert call.employees_answered == ("101",)
    assert assembler.open_conversations == 0
    assert assembler.expire(shutdown_at + 60) == []


@pytest.mark.parametrize(
    "slug",
    ["01-incoming-answered-direct", "12-incoming-attended-transfer", "16-ivr-localchannel-to-102"],
)
def test_bridges_go_with_their_conversation(slug: str) -> None:
    """The daemon does not read BridgeDestroy (not a journal event): the bridges go when
    their conversation is forgotten, and so does an empty bridge nobody entered, at the next
    sweep."""
    kept = list(events_of(capture(slug).read_bytes()))
    assert {"BridgeCreate", "BridgeEnter"} <= {e.name for e in kept}
    assert "BridgeDestroy" not in {e.name for e in kept}
    replay = assemble(kept)
    assert replay.calls and replay.assembler.open_conversations == 0
    assert replay.assembler.open_bridges == 0
    # A bridge created and never entered nor destroyed: gone after enough other calls.
    assembler = new_assembler()
    at = kept[0].time
    orphan = AmiEvent(
        name="BridgeCreate",
        time=at,
        headers={"Event": "BridgeCreate", "BridgeUniqueid": "orphan", "BridgeType": "basic"},
        timestamped=True,
    )
    assembler.feed(orphan, at)
    assert assembler.open_bridges == 1
    calls = 0
    for copy in range(300):
        for event in kept:
            headers = {
                k: (f"{v}-{copy}" if k.endswith(("niqueid", "inkedid")) else v)
                for k, v in event.headers.items()
            }
            copied = AmiEvent(event.name, event.time, headers, event.multi, event.timestamped)
            calls += len(assembler.feed(copied, at))
        calls += len(assembler.expire(kept[-1].time + 3600))
        if assembler.open_bridges == 0:
            break
    assert calls >= 1 and assembler.open_bridges == 0


def test_an_originate_that_leads_nowhere_leaves_no_ghost_row() -> None:
    # Only the Local pair of a click-to-call whose employee leg was never created.
    events = [
        e
        for e in events_of(capture("18-click-to-call-originate").read_bytes())
        if e.get("Channel").startswith("Local/")
        and e.name in ("Newchannel", "LocalBridge", "Hangup")
    ]
    replay = assemble(events)
    assert replay.calls == []
    assert replay.assembler.stats.ghosts_dropped == 1
    assert replay.assembler.open_conversations == 0


def test_a_finished_conversation_is_freed_without_the_cycle_collector() -> None:
    """Its channels point back to it; the assembler drops them as it forgets it, so memory
    does not wait for a full collection (a stall of the daemon's loop)."""

    def alive() -> int:
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "_Conversation")

    gc.collect()
    before = alive()
    gc.disable()
    try:
        replay = assemble_capture("14-two-overlapping-incoming")
        assert len(replay.calls) == 2 and replay.assembler.open_conversations == 0
        assert alive() == before
    finally:
        gc.enable()
